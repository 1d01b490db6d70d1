/*
 * amqp_fail: failing a channel op after a broker call, with RabbitMQ's
 * reply texts: the queue state machine gives a code and a text without
 * names; the names are added here. Used by the per-method files.
 */
#ifndef RINGMQ_AMQP_FAIL_H
#define RINGMQ_AMQP_FAIL_H

#include "edge/amqp_chan.h"

/* A queue command's error (@r->status not OK) for op->queue. */
void chan_fail_queue(struct chan_op *op, const struct mq_sm_result *r);
/* The broker could not apply the command (leader lost, closing). */
void chan_fail_unavailable(struct chan_op *op);

#endif
