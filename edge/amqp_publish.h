/*
 * amqp_publish: basic.publish of a channel once its content is complete:
 * route, enqueue, return, confirm. Below amqp_channel.c, which assembles
 * the content and starts the op; its end reaches the channel through
 * chan_wake().
 */
#ifndef RINGMQ_AMQP_PUBLISH_H
#define RINGMQ_AMQP_PUBLISH_H

#include "edge/amqp_chan.h"

/* Whether the publish @op may start now: the broker's view is routable
 * (amqp_broker.h), or it has waited EDGE_ROUTE_WAIT_MS (it starts to be
 * nacked). A publish that may not start holds the channel's later
 * publishes and barriers behind it, and is noted in its edge's calls
 * (publishes_held) for the owner to wake. */
bool chan_publish_may_start(const struct chan_op *op);

/* The publish op's content is complete (op->blob): route, enqueue,
 * confirm; nacked (not routed) if the view is not routable. */
void chan_start_publish(struct chan_op *op);

#endif
