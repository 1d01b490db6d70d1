/*
 * node_http: the node's /healthz and /metrics (common/http_admin).
 *
 * /healthz is 200 "ok" when every group this node replicates knows a leader
 * and every group it leads serves; 503 with the reason otherwise.
 * /metrics is Prometheus text with one series per group.
 *
 * @cfg and @groups are borrowed for the lifetime of the object. Errors:
 * node_http_new returns NULL with @err. Freed before the close cb runs.
 */
#ifndef RINGMQ_NODE_HTTP_H
#define RINGMQ_NODE_HTTP_H

#include <uv.h>

#include "node/cache_svc.h"
#include "node/config.h"

struct node_http;

struct node_http *node_http_new(uv_loop_t *loop, const struct node_config *cfg,
                                struct cache_svc *const *groups,
                                unsigned n_groups, char *err, size_t errlen);
void node_http_close(struct node_http *h, void (*cb)(void *data), void *data);

#endif
