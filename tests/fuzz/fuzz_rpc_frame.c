/*
 * fuzz_rpc_frame: libFuzzer target for the RPC frame decoder and the
 * protobuf unpack behind it (what a node or router does with bytes from the
 * network), and for what a queue replica reads of its peers' and its own
 * body bytes (node/mq_store.h, node/mq_ranges.h).
 *
 * Input: byte 0 picks the feed chunk size (so frames straddle feeds in many
 * ways), the rest is the byte stream. Every complete frame is unpacked as a
 * request and as a response; decoded requests are re-encoded (with a low
 * compression threshold) and decoded again, which must succeed and keep the
 * known fields. The bytes of a segment (an MqSegmentData response's, and
 * the stream itself) go through mq_store_check_records, as they are and
 * with every record's crc made right (so the walk past a first record is
 * reached); the stream with its last 4 bytes made the right crc goes
 * through mq_ranges_decode (the bodies/missing file).
 * Seeds: tests/fuzz/corpus_rpc_frame/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "common/buf.h"
#include "common/le.h"
#include "node/mq_ranges.h"
#include "node/mq_store.h"
#include "proto/pb_arena.h"
#include "proto/rpc_frame.h"

/* Small enough to keep iterations fast, large enough for lz4 frames. */
#define FUZZ_MAX_FRAME (1u << 20)

/* Unknown fields anywhere in @m (nested messages included): protobuf-c
 * keeps those of non-canonical input and may not re-encode them. */
static int has_unknown(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    unsigned i;

    if (m->n_unknown_fields > 0) {
        return 1;
    }
    for (i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        const char *base = (const char *)m;

        if (fd->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + fd->quantifier_offset);
            ProtobufCMessage *const *v =
                *(ProtobufCMessage *const *const *)(base + fd->offset);
            size_t k;

            for (k = 0; k < n; k++) {
                if (v[k] && has_unknown(v[k])) {
                    return 1;
                }
            }
        } else {
            const ProtobufCMessage *sub =
                *(const ProtobufCMessage *const *)(base + fd->offset);

            if (sub && has_unknown(sub)) {
                return 1;
            }
        }
    }
    return 0;
}

static void roundtrip(const Ringmq__RpcRequest *req)
{
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    Ringmq__RpcRequest *again;
    struct buf b;
    size_t used;

    buf_init(&b);
    /* low threshold: exercise the compressing encoder too */
    if (rpc_frame_encode_request(&b, req, 64, FUZZ_MAX_FRAME) != 0) {
        buf_free(&b);
        return;
    }
    rpc_frame_decoder_init(&d, FUZZ_MAX_FRAME);
    if (rpc_frame_decoder_feed(&d, b.data, b.len, &used, &f) != 1 ||
        used != b.len) {
        abort();
    }
    if (rpc_frame_unpack_request(&f, &again) != 0) {
        /* protobuf-c keeps unknown fields of non-canonical input (e.g. tag 0
         * written as an overlong varint), at any depth, and re-encodes their
         * tags canonically, which it then rejects. Only those may fail. */
        if (!has_unknown(&req->base)) {
            abort();
        }
        goto out;
    }
    /* Known fields must survive (packed sizes may differ, see above). */
    if (again->id != req->id || again->epoch != req->epoch ||
        strcmp(again->group, req->group) != 0 ||
        again->body_case != req->body_case) {
        abort();
    }
    if (req->body_case == RINGMQ__RPC_REQUEST__BODY_CACHE &&
        (again->cache->type != req->cache->type ||
         again->cache->key.len != req->cache->key.len ||
         again->cache->value.len != req->cache->value.len ||
         (req->cache->value.len &&
          memcmp(again->cache->value.data, req->cache->value.data,
                 req->cache->value.len) != 0) ||
         again->cache->exptime != req->cache->exptime ||
         again->cache->delta != req->cache->delta)) {
        abort();
    }
    ringmq__rpc_request__free_unpacked(again, NULL);
out:
    rpc_frame_decoder_close(&d);
    buf_free(&b);
}

/* The contract of mq_store_check_records on @p (@len). */
static void check_records(const unsigned char *p, uint32_t len,
                          uint32_t want_whole)
{
    uint32_t whole = 7;
    uint64_t need = 7;
    int rv = mq_store_check_records(p, len, &whole, &need);

    if (rv == 0) {
        if (whole == 0 || whole > len || whole % MQ_STORE_REC_ALIGN != 0 ||
            (want_whole != UINT32_MAX && whole != want_whole)) {
            abort();
        }
    } else if (rv == 1) {
        if (whole != 0 || need <= len || need < MQ_STORE_REC_HDR ||
            (want_whole != UINT32_MAX && want_whole != 0)) {
            abort();
        }
    } else if (rv != -1 || whole != 0 || want_whole != UINT32_MAX) {
        abort(); /* records with right crcs always check */
    }
}

/* Segment bytes as received, then with every record's crc (zlib crc32 of
 * the 4 length bytes and the body) made right: then exactly the whole
 * records are whole. */
static void fuzz_segment_bytes(const unsigned char *p, size_t size)
{
    uint32_t len = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
    unsigned char *fixed;
    uint64_t at = 0;

    check_records(p, len, UINT32_MAX);
    fixed = malloc(len > 0 ? len : 1);
    if (fixed == NULL) {
        return;
    }
    memcpy(fixed, p, len);
    while (at + MQ_STORE_REC_HDR <= len) {
        uint32_t body_len = le_load_u32(fixed + at);
        uint64_t rec = MQ_STORE_REC_BYTES(body_len);
        uLong crc;

        if (at + rec > len) {
            break;
        }
        crc = crc32(0L, fixed + at, 4);
        crc = crc32(crc, fixed + at + MQ_STORE_REC_HDR, body_len);
        le_put_u32(fixed + at + 4, (uint32_t)crc);
        at += rec;
    }
    check_records(fixed, len, (uint32_t)at);
    free(fixed);
}

/* The bodies/missing form with a right crc: what decodes encodes back to
 * the same ranges. */
static void fuzz_missing_form(const unsigned char *p, size_t size)
{
    struct mq_ranges r = {0}, again = {0};
    unsigned char *form, *enc = NULL, *enc2 = NULL;
    size_t enc_len = 0, enc2_len = 0;

    if (size < 4 || size > 64 * 1024) {
        return;
    }
    form = malloc(size);
    if (form == NULL) {
        return;
    }
    memcpy(form, p, size);
    le_put_u32(form + size - 4, (uint32_t)crc32(0L, form, (uInt)(size - 4)));
    if (mq_ranges_decode(&r, form, size) == 0) {
        mq_ranges_encode(&r, &enc, &enc_len);
        if (mq_ranges_decode(&again, enc, enc_len) != 0 ||
            again.n != r.n ||
            mq_ranges_bytes(&again) != mq_ranges_bytes(&r)) {
            abort();
        }
        mq_ranges_encode(&again, &enc2, &enc2_len);
        if (enc2_len != enc_len || memcmp(enc, enc2, enc_len) != 0) {
            abort();
        }
    } else if (r.n != 0) {
        abort(); /* refused: left empty */
    }
    free(enc);
    free(enc2);
    mq_ranges_clear(&r);
    mq_ranges_clear(&again);
    free(form);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    Ringmq__RpcRequest *req;
    Ringmq__RpcResponse *resp, *in_arena;
    struct pb_arena arena;
    size_t chunk;
    size_t off;
    size_t used;
    int rv = 0;

    if (size < 1) {
        return 0;
    }
    chunk = (size_t)data[0] + 1;
    data++;
    size--;
    fuzz_segment_bytes(data, size);
    fuzz_missing_form(data, size);
    rpc_frame_decoder_init(&d, FUZZ_MAX_FRAME);
    for (off = 0; off < size && rv >= 0;) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t p = 0;

        while (p < n) {
            rv = rpc_frame_decoder_feed(&d, data + off + p, n - p, &used, &f);
            p += used;
            if (rv < 0) {
                break;
            }
            if (rv == 0) {
                if (p != n) {
                    abort(); /* must consume everything when no frame */
                }
                break;
            }
            if (f.len > FUZZ_MAX_FRAME) {
                abort();
            }
            if (rpc_frame_unpack_request(&f, &req) == 0) {
                roundtrip(req);
                ringmq__rpc_request__free_unpacked(req, NULL);
            }
            /* through an arena (how rpc_client unpacks) as with malloc:
             * the same verdict and the same message */
            pb_arena_init(&arena);
            in_arena = NULL;
            (void)rpc_frame_unpack_response(&f, pb_arena_allocator(&arena),
                                            &in_arena);
            if (rpc_frame_unpack_response(&f, NULL, &resp) == 0) {
                if (in_arena == NULL ||
                    ringmq__rpc_response__get_packed_size(in_arena) !=
                        ringmq__rpc_response__get_packed_size(resp)) {
                    abort();
                }
                if (resp->body_case == RINGMQ__RPC_RESPONSE__BODY_MQ_SEGMENT &&
                    resp->mq_segment->data.len > 0) {
                    fuzz_segment_bytes(resp->mq_segment->data.data,
                                       resp->mq_segment->data.len);
                }
                ringmq__rpc_response__free_unpacked(resp, NULL);
            } else if (in_arena != NULL) {
                abort();
            }
            pb_arena_close(&arena);
        }
        off += n;
    }
    if (rv < 0 && rpc_frame_decoder_feed(&d, data, size, &used, &f) != rv) {
        abort(); /* errors are sticky */
    }
    rpc_frame_decoder_close(&d);
    return 0;
}
