/*
 * amqp_dead_letter: republishing a dead letter to its dead-letter exchange.
 *
 * Dead letters come back in the result of whatever command removed the
 * message (reject, expiry, max-length), and again in EXPIRE results while
 * their shard's outbox keeps them unsettled (sm/mq_sm.h "Dead letters").
 * The edge that got one routes it on the broker's meta view with an
 * x-death header, as RabbitMQ does. A kept one (outbox_id != 0) is
 * published with a dedup id of its own: the client id
 * edge_dead_letter_client() and seq = its outbox id, so a second republish
 * of it is DUPLICATE at a target queue, within that queue shard's dedup
 * window for the client (older: STALE, which amqp_after answers with a
 * copy without dedup).
 */
#ifndef RINGMQ_AMQP_DEAD_LETTER_H
#define RINGMQ_AMQP_DEAD_LETTER_H

#include "edge/amqp_calls.h"

/* One ENQUEUE of @d, with x-death added, per queue its exchange routes it
 * to; each call completes in @done (the caller acts on its result) and
 * carries @data (edge_dead_letter_data()). Returns how many ENQUEUEs were
 * submitted: 0 when it routes nowhere or does not decode (it never will),
 * -1 when there is no meta view yet (nothing sent: try later). */
int edge_dead_letter(struct edge_calls *k, const struct mq_sm_dead_letter *d,
                     void (*done)(struct edge_call *ec), void *data);
void *edge_dead_letter_data(const struct edge_call *ec);

/* The publisher client id of @d's republish: one per source queue
 * incarnation (vhost, queue, gen), so with the outbox id (one shard's
 * counter: a queue that moves gets a new gen) it names one dead letter. */
uint64_t edge_dead_letter_client(const struct mq_sm_dead_letter *d);

#endif
