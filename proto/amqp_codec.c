/*
 * amqp_codec: error codes and primitive wire domains shared by the AMQP
 * 0-9-1 codec (see amqp_codec.h). All integers on the wire are big-endian.
 */
#include "proto/amqp_codec.h"

#include <string.h>

const char *amqp_codec_strerror(int rv)
{
    switch (rv) {
        case AMQP_OK:
            return "ok";
        case AMQP_EFRAME_END:
            return "bad frame-end octet";
        case AMQP_EFRAME_TYPE:
            return "unknown frame type";
        case AMQP_EFRAME_TOO_BIG:
            return "frame larger than frame_max";
        case AMQP_EFRAME_HEARTBEAT:
            return "heartbeat frame on a channel or with a payload";
        case AMQP_EPROTOCOL_HEADER:
            return "bad protocol header";
        case AMQP_ESYNTAX:
            return "malformed method, content header or field";
        case AMQP_ETABLE_TYPE:
            return "unknown field table value type";
        case AMQP_ETABLE_DEPTH:
            return "field tables nested too deep";
        case AMQP_EUNKNOWN_METHOD:
            return "unknown class or method id";
        case AMQP_ETOO_LONG:
            return "value too long for its field";
        default:
            return "unknown error";
    }
}

int amqp_codec_reply_code(int rv)
{
    switch (rv) {
        case AMQP_EFRAME_END:
        case AMQP_EFRAME_TYPE:
        case AMQP_EFRAME_TOO_BIG:
        case AMQP_EFRAME_HEARTBEAT:
            return AMQP_REPLY_FRAME_ERROR;
        case AMQP_EPROTOCOL_HEADER:
            return 0;
        case AMQP_EUNKNOWN_METHOD:
            return AMQP_REPLY_NOT_IMPLEMENTED;
        default:
            return AMQP_REPLY_SYNTAX_ERROR;
    }
}

struct amqp_bytes amqp_cstr(const char *s)
{
    struct amqp_bytes b = {(const uint8_t *)s, s ? strlen(s) : 0};
    return b;
}

int amqp_bytes_eq(struct amqp_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.data, s, n) == 0);
}

void amqp_reader_init(struct amqp_reader *r, const void *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->pos = 0;
}

static int need(const struct amqp_reader *r, size_t n)
{
    return r->len - r->pos >= n ? 0 : AMQP_ESYNTAX;
}

int amqp_get_u8(struct amqp_reader *r, uint8_t *v)
{
    if (need(r, 1) != 0) {
        return AMQP_ESYNTAX;
    }
    *v = r->data[r->pos++];
    return 0;
}

int amqp_get_u16(struct amqp_reader *r, uint16_t *v)
{
    const uint8_t *p;

    if (need(r, 2) != 0) {
        return AMQP_ESYNTAX;
    }
    p = r->data + r->pos;
    *v = (uint16_t)((p[0] << 8) | p[1]);
    r->pos += 2;
    return 0;
}

int amqp_get_u32(struct amqp_reader *r, uint32_t *v)
{
    const uint8_t *p;

    if (need(r, 4) != 0) {
        return AMQP_ESYNTAX;
    }
    p = r->data + r->pos;
    *v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | p[3];
    r->pos += 4;
    return 0;
}

int amqp_get_u64(struct amqp_reader *r, uint64_t *v)
{
    uint32_t hi = 0;
    uint32_t lo = 0;

    if (need(r, 8) != 0) {
        return AMQP_ESYNTAX;
    }
    (void)amqp_get_u32(r, &hi);
    (void)amqp_get_u32(r, &lo);
    *v = ((uint64_t)hi << 32) | lo;
    return 0;
}

int amqp_get_bytes(struct amqp_reader *r, size_t n, struct amqp_bytes *v)
{
    if (need(r, n) != 0) {
        return AMQP_ESYNTAX;
    }
    v->data = r->data + r->pos;
    v->len = n;
    r->pos += n;
    return 0;
}

int amqp_get_shortstr(struct amqp_reader *r, struct amqp_bytes *v)
{
    size_t start = r->pos;
    uint8_t n;

    if (amqp_get_u8(r, &n) != 0 || amqp_get_bytes(r, n, v) != 0) {
        r->pos = start;
        return AMQP_ESYNTAX;
    }
    return 0;
}

int amqp_get_longstr(struct amqp_reader *r, struct amqp_bytes *v)
{
    size_t start = r->pos;
    uint32_t n;

    if (amqp_get_u32(r, &n) != 0 || amqp_get_bytes(r, n, v) != 0) {
        r->pos = start;
        return AMQP_ESYNTAX;
    }
    return 0;
}

void amqp_put_u8(struct buf *out, uint8_t v)
{
    buf_append(out, &v, 1);
}

void amqp_put_u16(struct buf *out, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    buf_append(out, b, 2);
}

void amqp_put_u32(struct buf *out, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                    (uint8_t)v};
    buf_append(out, b, 4);
}

void amqp_put_u64(struct buf *out, uint64_t v)
{
    amqp_put_u32(out, (uint32_t)(v >> 32));
    amqp_put_u32(out, (uint32_t)v);
}

void amqp_patch_u32(struct buf *out, size_t off, uint32_t v)
{
    uint8_t *p = (uint8_t *)out->data + off;

    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int amqp_put_shortstr(struct buf *out, struct amqp_bytes s)
{
    if (s.len > UINT8_MAX) {
        return AMQP_ETOO_LONG;
    }
    amqp_put_u8(out, (uint8_t)s.len);
    if (s.len > 0) {
        buf_append(out, s.data, s.len);
    }
    return 0;
}

int amqp_put_longstr(struct buf *out, struct amqp_bytes s)
{
    if (s.len > UINT32_MAX) {
        return AMQP_ETOO_LONG;
    }
    amqp_put_u32(out, (uint32_t)s.len);
    if (s.len > 0) {
        buf_append(out, s.data, s.len);
    }
    return 0;
}
