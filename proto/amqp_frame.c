/*
 * amqp_frame: protocol header check, resumable frame decoder and frame
 * encoders (see amqp_frame.h for the wire format).
 */
#include "proto/amqp_frame.h"

#include <string.h>

int amqp_frame_check_protocol_header(const void *data, size_t len)
{
    size_t n =
        len < AMQP_PROTOCOL_HEADER_SIZE ? len : AMQP_PROTOCOL_HEADER_SIZE;

    /* Answer a mismatch as soon as it is visible: an HTTP client or a
     * 0-8 client would otherwise wait for bytes that never come. */
    if (memcmp(data, AMQP_PROTOCOL_HEADER, n) != 0) {
        return AMQP_EPROTOCOL_HEADER;
    }
    return n < AMQP_PROTOCOL_HEADER_SIZE ? 1 : 0;
}

void amqp_frame_decoder_init(struct amqp_frame_decoder *d, size_t frame_max)
{
    memset(d, 0, sizeof(*d));
    buf_init(&d->body);
    amqp_frame_decoder_set_max(d, frame_max);
}

void amqp_frame_decoder_set_max(struct amqp_frame_decoder *d, size_t frame_max)
{
    d->frame_max = frame_max ? frame_max : AMQP_FRAME_MAX_DEFAULT;
}

void amqp_frame_decoder_close(struct amqp_frame_decoder *d)
{
    buf_free(&d->body);
}

static uint32_t hdr_size(const struct amqp_frame_decoder *d)
{
    return ((uint32_t)d->hdr[3] << 24) | ((uint32_t)d->hdr[4] << 16) |
           ((uint32_t)d->hdr[5] << 8) | d->hdr[6];
}

/* Validate a complete frame header; 0 or an AMQP_EFRAME_* code. */
static int check_header(const struct amqp_frame_decoder *d)
{
    uint8_t type = d->hdr[0];
    uint16_t channel = (uint16_t)((d->hdr[1] << 8) | d->hdr[2]);
    uint32_t size = hdr_size(d);

    if (type != AMQP_FRAME_METHOD && type != AMQP_FRAME_HEADER &&
        type != AMQP_FRAME_BODY && type != AMQP_FRAME_HEARTBEAT) {
        return AMQP_EFRAME_TYPE;
    }
    if ((uint64_t)size + AMQP_FRAME_OVERHEAD > d->frame_max) {
        return AMQP_EFRAME_TOO_BIG;
    }
    if (type == AMQP_FRAME_HEARTBEAT && (channel != 0 || size != 0)) {
        return AMQP_EFRAME_HEARTBEAT;
    }
    return 0;
}

static void set_frame(const struct amqp_frame_decoder *d,
                      const uint8_t *payload,
                      struct amqp_frame *frame)
{
    frame->type = d->hdr[0];
    frame->channel = (uint16_t)((d->hdr[1] << 8) | d->hdr[2]);
    frame->payload = payload;
    frame->size = hdr_size(d);
}

int amqp_frame_decoder_feed(struct amqp_frame_decoder *d,
                            const void *data,
                            size_t len,
                            size_t *consumed,
                            struct amqp_frame *frame)
{
    const uint8_t *in = data;
    size_t off = 0;
    size_t want, n;
    int rv;

    *consumed = 0;
    if (d->error != 0) {
        return d->error;
    }
    if (d->hdr_len < AMQP_FRAME_HEADER_SIZE) {
        n = AMQP_FRAME_HEADER_SIZE - d->hdr_len;
        if (n > len) {
            n = len;
        }
        memcpy(d->hdr + d->hdr_len, in, n);
        d->hdr_len += n;
        off += n;
        if (d->hdr_len < AMQP_FRAME_HEADER_SIZE) {
            *consumed = off;
            return 0;
        }
        rv = check_header(d);
        if (rv != 0) {
            d->error = rv;
            *consumed = off;
            return rv;
        }
    }

    /* Payload plus end octet. */
    want = (size_t)hdr_size(d) + 1;
    if (d->body.len == 0 && len - off >= want) {
        /* Whole rest of the frame in this feed: no copy. */
        const uint8_t *payload = in + off;
        off += want;
        *consumed = off;
        if (payload[want - 1] != AMQP_FRAME_END) {
            d->error = AMQP_EFRAME_END;
            return d->error;
        }
        set_frame(d, payload, frame);
        d->hdr_len = 0;
        return 1;
    }
    n = want - d->body.len;
    if (n > len - off) {
        n = len - off;
    }
    buf_append(&d->body, in + off, n);
    off += n;
    *consumed = off;
    if (d->body.len < want) {
        return 0;
    }
    if ((uint8_t)d->body.data[want - 1] != AMQP_FRAME_END) {
        d->error = AMQP_EFRAME_END;
        return d->error;
    }
    set_frame(d, (const uint8_t *)d->body.data, frame);
    d->hdr_len = 0;
    /* The payload stays in d->body until the next call. */
    d->body.len = 0;
    return 1;
}

size_t amqp_frame_begin(struct buf *out, uint8_t type, uint16_t channel)
{
    size_t start = out->len;

    amqp_put_u8(out, type);
    amqp_put_u16(out, channel);
    amqp_put_u32(out, 0);
    return start;
}

int amqp_frame_finish(struct buf *out, size_t start, size_t frame_max)
{
    size_t size = out->len - start - AMQP_FRAME_HEADER_SIZE;

    if (size > UINT32_MAX ||
        (frame_max != 0 && size + AMQP_FRAME_OVERHEAD > frame_max)) {
        out->len = start;
        return AMQP_EFRAME_TOO_BIG;
    }
    amqp_patch_u32(out, start + 3, (uint32_t)size);
    amqp_put_u8(out, AMQP_FRAME_END);
    return 0;
}

int amqp_frame_encode(struct buf *out,
                      uint8_t type,
                      uint16_t channel,
                      const void *payload,
                      size_t len,
                      size_t frame_max)
{
    size_t start;

    if (len > UINT32_MAX ||
        (frame_max != 0 && len + AMQP_FRAME_OVERHEAD > frame_max)) {
        return AMQP_EFRAME_TOO_BIG;
    }
    start = amqp_frame_begin(out, type, channel);
    if (len > 0) {
        buf_append(out, payload, len);
    }
    return amqp_frame_finish(out, start, frame_max);
}

void amqp_frame_encode_heartbeat(struct buf *out)
{
    amqp_frame_encode(out, AMQP_FRAME_HEARTBEAT, 0, NULL, 0, 0);
}

void amqp_frame_encode_body(struct buf *out,
                            uint16_t channel,
                            const void *body,
                            size_t len,
                            size_t frame_max)
{
    const uint8_t *p = body;
    size_t chunk;

    if (frame_max <= AMQP_FRAME_OVERHEAD) {
        frame_max = AMQP_FRAME_MAX_DEFAULT;
    }
    chunk = frame_max - AMQP_FRAME_OVERHEAD;
    if (chunk > UINT32_MAX) {
        chunk = UINT32_MAX;
    }
    while (len > 0) {
        size_t n = len < chunk ? len : chunk;
        amqp_frame_encode(out, AMQP_FRAME_BODY, channel, p, n, 0);
        p += n;
        len -= n;
    }
}
