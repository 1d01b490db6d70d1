/*
 * node_http: the node's /healthz and /metrics (common/http_admin).
 *
 * /healthz is 200 "ok" when every cache group this node replicates knows a
 * leader and every one it leads serves; 503 with the reason otherwise.
 * /healthz?live is 200 while the process serves HTTP.
 * /readyz (the Kubernetes readiness probe) is 200 "ready" when every group
 * on the node, cache, queues (node_http_set_amqp) and meta, has a known
 * leader, this replica is a voter of it, and: as its leader, serves (the
 * post-election barrier is applied); as a follower, has applied the
 * entries it knows committed (within NODE_HTTP_READY_LAG). A follower
 * knows the commit index its leader last sent it, so a replica that a
 * leader has not reached yet since it started can look caught up until
 * the first append. 503 with the first reason otherwise.
 * /metrics is Prometheus text with one series per cache group.
 *
 * @cfg, @groups and the AMQP services are borrowed for the lifetime of the
 * object. Errors: node_http_new returns NULL with @err. Freed before the
 * close cb runs.
 */
#ifndef RINGMQ_NODE_HTTP_H
#define RINGMQ_NODE_HTTP_H

#include <uv.h>

#include "node/cache_svc.h"
#include "node/config.h"
#include "node/meta_svc.h"
#include "node/mq_svc.h"

/* Entries a follower may still have to apply and be ready. */
#define NODE_HTTP_READY_LAG 100

struct node_http;

struct node_http *node_http_new(uv_loop_t *loop, const struct node_config *cfg,
                                struct cache_svc *const *groups,
                                unsigned n_groups, char *err, size_t errlen);
/* The queue groups and the meta group (NULL if this node runs none) that
 * /readyz checks beside the cache groups. */
void node_http_set_amqp(struct node_http *h, struct mq_svc *const *mq,
                        unsigned n_mq, struct meta_svc *meta);
void node_http_close(struct node_http *h, void (*cb)(void *data), void *data);

#endif
