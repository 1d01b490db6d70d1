/* rpc_frame: see rpc_frame.h. */
#include "proto/rpc_frame.h"

#include <stdlib.h>
#include <string.h>

#include "common/lz.h"
#include "sm/outcome.h"

/* RpcCode is sm/outcome.h's vocabulary on the wire: one set of numbers. */
_Static_assert((int)RINGMQ__RPC_CODE__RPC_OK == OUTCOME_OK, "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_NOT_LEADER == OUTCOME_NOT_LEADER,
               "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_NO_GROUP == OUTCOME_NO_GROUP,
               "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_BAD_REQUEST == OUTCOME_BAD_REQUEST,
               "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_UNAVAILABLE == OUTCOME_UNAVAILABLE,
               "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_WRONG_EPOCH == OUTCOME_WRONG_EPOCH,
               "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_TOO_LARGE == OUTCOME_TOO_LARGE,
               "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_CLOSING == OUTCOME_CLOSING,
               "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_BUSY == OUTCOME_BUSY, "RpcCode");
_Static_assert((int)RINGMQ__RPC_CODE__RPC_EXPIRED == OUTCOME_EXPIRED,
               "RpcCode");
_Static_assert(OUTCOME__COUNT == 10, "a new outcome needs its RpcCode");

/* A partial-frame buffer larger than this is released after its frame
 * instead of being kept for the next one. */
#define BODY_KEEP_MAX ((size_t)1 << 20)

/* lz4 cannot expand one input byte into more than 255 output bytes; a header
 * claiming more is corrupt (checked before allocating the output). */
#define LZ4_RATIO_MAX 255

const char *rpc_frame_strerror(int rv)
{
    switch (rv) {
        case RPC_FRAME_OK:
            return "ok";
        case RPC_FRAME_ETOOBIG:
            return "frame too large";
        case RPC_FRAME_EFLAGS:
            return "bad frame flags or length";
        case RPC_FRAME_ELZ4:
            return "corrupt lz4 payload";
        case RPC_FRAME_EPROTO:
            return "undecodable protobuf message";
        default:
            return "unknown frame error";
    }
}

static size_t clamp_max(size_t max_frame)
{
    if (max_frame == 0) {
        return RPC_FRAME_MAX_DEFAULT;
    }
    return max_frame > UINT32_MAX ? UINT32_MAX : max_frame;
}

/* Frames the @size bytes of payload placed after room for the header at
 * the end of @out (reserved by the caller): compresses them if that pays,
 * writes the header and appends the frame. */
static int frame_payload(struct buf *out,
                         size_t size,
                         size_t compress_min,
                         size_t max_frame)
{
    uint8_t *hdr = (uint8_t *)out->data + out->len;
    size_t body = size;
    uint8_t flags = 0;
    void *z;
    size_t zlen;

    if (compress_min == 0) {
        compress_min = RPC_FRAME_COMPRESS_MIN_DEFAULT;
    }
    if (size >= compress_min &&
        lz_compress(hdr + RPC_FRAME_HEADER_SIZE, size, NULL, &z, &zlen) == 0) {
        if (zlen < size) {
            memcpy(hdr + RPC_FRAME_HEADER_SIZE, z, zlen);
            body = zlen;
            flags = RPC_FRAME_FLAG_LZ4;
        }
        free(z);
    }
    if (body + 1 > max_frame) {
        return RPC_FRAME_ETOOBIG; /* out->len untouched: nothing appended */
    }
    hdr[0] = (uint8_t)((body + 1) >> 24);
    hdr[1] = (uint8_t)((body + 1) >> 16);
    hdr[2] = (uint8_t)((body + 1) >> 8);
    hdr[3] = (uint8_t)(body + 1);
    hdr[4] = flags;
    out->len += RPC_FRAME_HEADER_SIZE + body;
    return 0;
}

int rpc_frame_encode(struct buf *out,
                     const ProtobufCMessage *msg,
                     size_t compress_min,
                     size_t max_frame)
{
    size_t size = protobuf_c_message_get_packed_size(msg);

    max_frame = clamp_max(max_frame);
    /* The decoder bounds the decompressed payload by max_frame too. */
    if (size > max_frame) {
        return RPC_FRAME_ETOOBIG;
    }
    buf_reserve(out, RPC_FRAME_HEADER_SIZE + size);
    protobuf_c_message_pack(msg, (uint8_t *)out->data + out->len +
                                     RPC_FRAME_HEADER_SIZE);
    return frame_payload(out, size, compress_min, max_frame);
}

int rpc_frame_encode_packed(struct buf *out,
                            const void *packed,
                            size_t len,
                            const void *more,
                            size_t more_len,
                            size_t compress_min,
                            size_t max_frame)
{
    uint8_t *payload;

    max_frame = clamp_max(max_frame);
    if (len > max_frame || more_len > max_frame - len) {
        return RPC_FRAME_ETOOBIG;
    }
    buf_reserve(out, RPC_FRAME_HEADER_SIZE + len + more_len);
    payload = (uint8_t *)out->data + out->len + RPC_FRAME_HEADER_SIZE;
    if (len > 0) {
        memcpy(payload, packed, len);
    }
    if (more_len > 0) {
        memcpy(payload + len, more, more_len);
    }
    return frame_payload(out, len + more_len, compress_min, max_frame);
}

int rpc_frame_encode_request(struct buf *out,
                             const Ringmq__RpcRequest *req,
                             size_t compress_min,
                             size_t max_frame)
{
    return rpc_frame_encode(out, &req->base, compress_min, max_frame);
}

int rpc_frame_encode_response(struct buf *out,
                              const Ringmq__RpcResponse *resp,
                              size_t compress_min,
                              size_t max_frame)
{
    return rpc_frame_encode(out, &resp->base, compress_min, max_frame);
}

void rpc_frame_decoder_init(struct rpc_frame_decoder *d, size_t max_frame)
{
    memset(d, 0, sizeof(*d));
    d->max_frame = clamp_max(max_frame);
    buf_init(&d->body);
}

void rpc_frame_decoder_close(struct rpc_frame_decoder *d)
{
    buf_free(&d->body);
    free(d->raw);
    d->raw = NULL;
    d->hdr_len = 0;
}

static int fail(struct rpc_frame_decoder *d, int rv)
{
    d->error = rv;
    return rv;
}

/* Turns a complete payload into *frame, decompressing when flagged. */
static int finish(struct rpc_frame_decoder *d,
                  const uint8_t *payload,
                  size_t len,
                  struct rpc_frame *frame)
{
    uint8_t flags = d->hdr[4];
    uint64_t raw_len = 0;
    void *raw;
    size_t n;
    int i;

    frame->flags = flags;
    if (!(flags & RPC_FRAME_FLAG_LZ4)) {
        frame->payload = payload;
        frame->len = len;
        return 1;
    }
    if (!lz_is_compressed(payload, len)) {
        return fail(d, RPC_FRAME_ELZ4);
    }
    for (i = 0; i < 8; i++) {
        raw_len |= (uint64_t)payload[4 + i] << (8 * i);
    }
    if (raw_len > d->max_frame) {
        return fail(d, RPC_FRAME_ETOOBIG);
    }
    if (raw_len > (uint64_t)(len - LZ_HEADER_SIZE) * LZ4_RATIO_MAX) {
        return fail(d, RPC_FRAME_ELZ4);
    }
    if (lz_decompress(payload, len, d->max_frame, NULL, &raw, &n) != 0) {
        return fail(d, RPC_FRAME_ELZ4);
    }
    d->raw = raw;
    frame->payload = raw;
    frame->len = n;
    return 1;
}

int rpc_frame_decoder_feed(struct rpc_frame_decoder *d,
                           const void *data,
                           size_t len,
                           size_t *consumed,
                           struct rpc_frame *frame)
{
    const uint8_t *p = data;
    size_t n = 0;
    size_t take;
    uint32_t flen;

    *consumed = 0;
    if (d->error) {
        return d->error;
    }
    /* Whatever the previous frame lent out is released now. */
    free(d->raw);
    d->raw = NULL;
    if (d->hdr_len == 0) {
        if (d->body.cap > BODY_KEEP_MAX) {
            buf_free(&d->body);
        }
        buf_reset(&d->body);
    }

    if (d->hdr_len < RPC_FRAME_HEADER_SIZE) {
        take = RPC_FRAME_HEADER_SIZE - d->hdr_len;
        if (take > len) {
            take = len;
        }
        if (take > 0) {
            memcpy(d->hdr + d->hdr_len, p, take);
        }
        d->hdr_len += take;
        n += take;
        if (d->hdr_len < RPC_FRAME_HEADER_SIZE) {
            *consumed = n;
            return 0;
        }
        flen = (uint32_t)d->hdr[0] << 24 | (uint32_t)d->hdr[1] << 16 |
               (uint32_t)d->hdr[2] << 8 | (uint32_t)d->hdr[3];
        if (flen == 0 || (d->hdr[4] & ~RPC_FRAME_FLAG_LZ4) != 0) {
            *consumed = n;
            return fail(d, RPC_FRAME_EFLAGS);
        }
        if (flen > d->max_frame) {
            *consumed = n;
            return fail(d, RPC_FRAME_ETOOBIG);
        }
        d->body_len = flen - 1;
    }

    if (d->body.len == 0 && len - n >= d->body_len) {
        /* Whole payload in this input: lend it without copying. */
        const uint8_t *payload = d->body_len ? p + n : (const uint8_t *)"";
        n += d->body_len;
        *consumed = n;
        d->hdr_len = 0;
        return finish(d, payload, d->body_len, frame);
    }
    take = d->body_len - d->body.len;
    if (take > len - n) {
        take = len - n;
    }
    if (take > 0) {
        buf_append(&d->body, p + n, take);
    }
    n += take;
    *consumed = n;
    if (d->body.len < d->body_len) {
        return 0;
    }
    d->hdr_len = 0; /* body is reset by the next call */
    return finish(d, (const uint8_t *)d->body.data, d->body.len, frame);
}

int rpc_frame_unpack_request(const struct rpc_frame *frame,
                             Ringmq__RpcRequest **out)
{
    *out = ringmq__rpc_request__unpack(NULL, frame->len, frame->payload);
    return *out ? 0 : RPC_FRAME_EPROTO;
}

int rpc_frame_unpack_response(const struct rpc_frame *frame,
                              ProtobufCAllocator *alloc,
                              Ringmq__RpcResponse **out)
{
    *out = ringmq__rpc_response__unpack(alloc, frame->len, frame->payload);
    return *out ? 0 : RPC_FRAME_EPROTO;
}
