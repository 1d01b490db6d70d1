/*
 * amqp_exchange: the methods of a channel that change the meta group's
 * exchanges and bindings: exchange.declare, delete, bind, unbind, and
 * queue.bind, queue.unbind. Below amqp_channel.c, which starts them; their
 * end reaches the channel through chan_wake().
 */
#ifndef RINGMQ_AMQP_EXCHANGE_H
#define RINGMQ_AMQP_EXCHANGE_H

#include "edge/amqp_chan.h"
#include "proto/amqp_method.h"

/* exchange.declare, delete, bind or unbind (op->method). */
void chan_start_exchange(struct chan_op *op, const struct amqp_method *m);
/* queue.bind or queue.unbind (op->method). */
void chan_start_queue_bind(struct chan_op *op, const struct amqp_method *m);

#endif
