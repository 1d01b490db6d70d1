/*
 * amqp_after: broker work that outlives whoever caused it: what a queue
 * command did beyond its own answer (dead letters to republish, bindings of
 * deleted queues to drop), and RETURNs of deliveries nobody will take.
 * Used by the server's tick, connections and channel operations; every
 * call made here is its own (no connection, no op).
 */
#ifndef RINGMQ_AMQP_AFTER_H
#define RINGMQ_AMQP_AFTER_H

#include "edge/amqp_calls.h"

/* Republish the dead letters of @r, the result of a command applied at
 * @shard, settling each kept one there (DL_SETTLE) once every ENQUEUE of
 * it is confirmed (OK, DUPLICATE, or NOT_FOUND: the queue went) or it
 * routes nowhere on a routable view (RabbitMQ drops those); one not
 * confirmed stays in the shard's outbox, which hands it out again
 * (mq_sm.h "Dead letters"). Drop the bindings of the queues @r deleted.
 * Nothing once the edge is closing (the outbox keeps the dead letters). */
void edge_after_result(struct edge_calls *k, unsigned shard,
                       const struct mq_sm_result *r);
/* RETURN with @scope (CHANNEL/CONNECTION) of @who to every shard, and drop
 * the bindings of queues the return deleted. These RETURNs, and those of
 * edge_return_deliveries(), are sent again until applied, however long a
 * shard is out (nothing else gives the messages back while this router
 * lives); only the edge closing, or the shard leaving the map, ends them. */
void edge_return_everywhere(struct edge_calls *k, enum mq_sm_scope scope,
                            const struct mq_sm_who *who);
/* Send the by-tag SETTLE, RETURN or DROP @bc again, as a call of its own,
 * until applied as the RETURNs above: for one whose operation stopped
 * waiting (after its retries' deadline) with its outcome unknown. An ack
 * left unapplied would keep its message out, and counted against its
 * consumer's prefetch, for as long as the channel lives. */
void edge_settle_detached(struct edge_calls *k,
                          const struct amqp_broker_call *bc);
/* RETURN (scope TAG) every delivery of CHECKOUT result @r on @shard to
 * @who: deliveries that reached no consumer (it or its channel went). */
void edge_return_deliveries(struct edge_calls *k, unsigned shard,
                            const struct mq_sm_who *who,
                            const struct mq_sm_result *r);

#endif
