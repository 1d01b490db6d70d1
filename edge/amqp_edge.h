/*
 * amqp_edge: the AMQP edge's limits, shared by its files; private (users
 * see amqp_server.h). How the files call each other is drawn at the top of
 * amqp_server.c.
 */
#ifndef RINGMQ_AMQP_EDGE_H
#define RINGMQ_AMQP_EDGE_H

#define EDGE_VHOST "/"
#define EDGE_VHOST_LEN 1
/* A held CHECKOUT is answered by the broker within this many ms. */
#define EDGE_CHECKOUT_WAIT_MS 10000
#define EDGE_CHECKOUT_MAX 64
/* Enqueues retried after UNAVAILABLE for this long, then nacked. */
#define EDGE_ENQUEUE_RETRY_MS 10000
#define EDGE_RETRY_TICK_MS 100
/* A publish waits this long for a routable view (amqp_broker.h), then is
 * nacked; the same bound as its enqueue's retries. */
#define EDGE_ROUTE_WAIT_MS EDGE_ENQUEUE_RETRY_MS
/* Largest message body; a Raft entry holds it with room to spare. */
#define EDGE_MESSAGE_MAX (4u * 1024 * 1024 - 64 * 1024)
/* Enqueues in flight per connection before it stops reading; below the
 * queue state machine's dedup window (MQ_SM_DEDUP_WINDOW_DEFAULT). */
#define EDGE_INFLIGHT_ENQUEUES 512
#define EDGE_OUT_HIGH (4u * 1024 * 1024)

#endif
