/*
 * amqp_declare: queue.declare, queue.purge and queue.delete of a channel:
 * one queue command each to the queue's shard. Below amqp_channel.c, which
 * starts them; their end reaches the channel through chan_wake().
 */
#ifndef RINGMQ_AMQP_DECLARE_H
#define RINGMQ_AMQP_DECLARE_H

#include "edge/amqp_chan.h"
#include "proto/amqp_method.h"

void chan_start_queue_declare(struct chan_op *op,
                              const struct amqp_queue_declare *q);
/* queue.purge or queue.delete (op->method). */
void chan_start_queue_simple(struct chan_op *op, const struct amqp_method *m);

#endif
