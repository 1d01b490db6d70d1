/*
 * amqp_publish: basic.publish of a channel once its content is complete:
 * route, enqueue, return, confirm. Below amqp_channel.c, which assembles
 * the content and starts the op; its end reaches the channel through
 * chan_wake().
 */
#ifndef RINGMQ_AMQP_PUBLISH_H
#define RINGMQ_AMQP_PUBLISH_H

#include "edge/amqp_chan.h"

/* The publish op's content is complete (op->blob): route, enqueue,
 * confirm. */
void chan_start_publish(struct chan_op *op);

#endif
