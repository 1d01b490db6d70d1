/*
 * amqp_dead_letter: republishing a dead letter to its dead-letter exchange.
 *
 * Dead letters come back in the result of whatever command removed the
 * message (reject, expiry, max-length); the edge that got the result routes
 * them on the broker's meta view with an x-death header, as RabbitMQ does,
 * without dedup (a retried drop may dead-letter twice: at least once).
 */
#ifndef RINGMQ_AMQP_DEAD_LETTER_H
#define RINGMQ_AMQP_DEAD_LETTER_H

#include "edge/amqp_calls.h"

/* One ENQUEUE of @d, with x-death added, per queue its exchange routes it
 * to; each call completes in @done (the caller acts on its result).
 * Nothing is sent when @d does not decode or there is no meta view. */
void edge_dead_letter(struct edge_calls *k, const struct mq_sm_dead_letter *d,
                      void (*done)(struct edge_call *ec));

#endif
