/*
 * node: one ringmq-node process: its groups (cache_svc each, plus the AMQP
 * groups: mq_svc per shard and meta_svc, see node.c), the RPC listener, the
 * optional memcached edge and, standalone, the AMQP edge, all on one loop.
 *
 * Errors: node_new returns NULL with @err (for example an unusable data
 * directory, an address in use). node_stop closes everything; the node is
 * freed before @cb runs.
 */
#ifndef RINGMQ_NODE_H
#define RINGMQ_NODE_H

#include <stdbool.h>

#include <uv.h>

#include "node/config.h"

struct node;

/* @cfg is copied. */
struct node *node_new(uv_loop_t *loop, const struct node_config *cfg,
                      char *err, size_t errlen);

/* true once every group knows a leader, and every group this node leads has
 * applied its post-election barrier (serves reads and writes); standalone
 * with AMQP, also once BOOT is applied and the meta group leads. */
bool node_ready(const struct node *n);

void node_stop(struct node *n, void (*cb)(void *data), void *data);

#endif
