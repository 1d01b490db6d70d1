/*
 * fuzz_rpc_frame: libFuzzer target for the RPC frame decoder and the
 * protobuf unpack behind it (what a node or router does with bytes from the
 * network).
 *
 * Input: byte 0 picks the feed chunk size (so frames straddle feeds in many
 * ways), the rest is the byte stream. Every complete frame is unpacked as a
 * request and as a response; decoded requests are re-encoded (with a low
 * compression threshold) and decoded again, which must succeed and keep the
 * known fields.
 * Seeds: tests/fuzz/corpus_rpc_frame/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    Ringmq__RpcRequest *req;
    Ringmq__RpcResponse *resp;
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
            if (rpc_frame_unpack_response(&f, &resp) == 0) {
                ringmq__rpc_response__free_unpacked(resp, NULL);
            }
        }
        off += n;
    }
    if (rv < 0 && rpc_frame_decoder_feed(&d, data, size, &used, &f) != rv) {
        abort(); /* errors are sticky */
    }
    rpc_frame_decoder_close(&d);
    return 0;
}
