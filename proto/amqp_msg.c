/*
 * amqp_msg: see amqp_msg.h.
 */
#include "proto/amqp_msg.h"

#define AMQP_MSG_VERSION 1

int amqp_msg_encode(struct buf *out, struct amqp_bytes exchange,
                    struct amqp_bytes routing_key, struct amqp_bytes header,
                    struct amqp_bytes body)
{
    if (exchange.len > 255 || routing_key.len > 255 ||
        header.len > UINT32_MAX) {
        return AMQP_ETOO_LONG;
    }
    buf_reserve(out, 1 + 2 + exchange.len + routing_key.len + 4 + header.len +
                         body.len);
    amqp_put_u8(out, AMQP_MSG_VERSION);
    (void)amqp_put_shortstr(out, exchange);
    (void)amqp_put_shortstr(out, routing_key);
    (void)amqp_put_longstr(out, header);
    buf_append(out, body.data, body.len);
    return 0;
}

int amqp_msg_decode(const void *data, size_t len, struct amqp_msg_view *out)
{
    struct amqp_reader r;
    uint8_t version;

    amqp_reader_init(&r, data, len);
    if (amqp_get_u8(&r, &version) != 0 || version != AMQP_MSG_VERSION ||
        amqp_get_shortstr(&r, &out->exchange) != 0 ||
        amqp_get_shortstr(&r, &out->routing_key) != 0 ||
        amqp_get_longstr(&r, &out->header) != 0) {
        return -1;
    }
    out->body.data = r.data + r.pos;
    out->body.len = r.len - r.pos;
    return 0;
}
