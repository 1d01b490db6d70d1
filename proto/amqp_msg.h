/*
 * amqp_msg: the bytes a queue keeps for one published message: what the edge
 * needs to deliver it, return it or dead-letter it later, on any edge.
 *
 *   u8 version (1) | shortstr exchange | shortstr routing-key |
 *   u32 length + content header payload (as received) | body
 *
 * The content header is kept as the publisher sent it (class, weight, body
 * size, property flags and properties), so a delivery re-emits it without
 * re-encoding; only dead-lettering rewrites it (x-death).
 *
 * Errors: amqp_msg_decode returns -1 on bytes that are not a message (a
 * corrupt or foreign log entry); the views then must not be used.
 * Ownership: decode views borrow the encoded bytes.
 */
#ifndef RINGMQ_AMQP_MSG_H
#define RINGMQ_AMQP_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "proto/amqp_codec.h"

struct amqp_msg_view {
    struct amqp_bytes exchange;
    struct amqp_bytes routing_key;
    struct amqp_bytes header; /* content header frame payload */
    struct amqp_bytes body;
};

/* Append the encoding to @out. Returns 0, or AMQP_ETOO_LONG (out unchanged)
 * when a name exceeds 255 bytes. */
int amqp_msg_encode(struct buf *out, struct amqp_bytes exchange,
                    struct amqp_bytes routing_key, struct amqp_bytes header,
                    struct amqp_bytes body);

int amqp_msg_decode(const void *data, size_t len, struct amqp_msg_view *out);

#endif
