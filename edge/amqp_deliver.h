/*
 * amqp_deliver: a channel's consumers and their deliveries: basic.consume,
 * basic.cancel, the CHECKOUTs each consumer with credit keeps on their way
 * to the broker, basic.deliver, and basic.get. Below amqp_channel.c, which
 * starts these ops and arms the consumers; what the channel must do next
 * it learns through chan_wake().
 */
#ifndef RINGMQ_AMQP_DELIVER_H
#define RINGMQ_AMQP_DELIVER_H

#include "edge/amqp_chan.h"
#include "proto/amqp_method.h"

/* Keep CHECKOUTs on their way for @cs while it has credit: up to 4,
 * each asked once a quarter of its window is free, while its queue has
 * messages for it; one long poll, alone, once it ran dry. Not while acks
 * of the channel wait to be sent: they go first (the channel's pump arms
 * again after sending them). */
void chan_cons_arm(struct amqp_channel *ch, struct consumer *cs);
/* Free @cs (unlinked from @ch): deliveries the edge holds for it go back
 * to its queue; its CHECKOUTs still on their way find no consumer when
 * they come back and give back what they took. */
void chan_cons_free(struct amqp_channel *ch, struct consumer *cs);
/* chan_cons_arm() every consumer of @ch (credit came back, output
 * drained, flow or qos changed). */
void chan_arm_all(struct amqp_channel *ch);
void chan_start_consume(struct chan_op *op,
                        const struct amqp_basic_consume *c);
void chan_start_cancel(struct chan_op *op, const struct amqp_basic_cancel *c);
void chan_start_get(struct chan_op *op, const struct amqp_basic_get *g);

#endif
