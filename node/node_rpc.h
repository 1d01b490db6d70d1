/*
 * node_rpc: the node's internal RPC service: decodes requests from the RPC
 * listener (rpc/rpc_server) and dispatches them to the groups.
 *
 * Cache ops go to the named group's cache_svc, queue commands to the named
 * "<shard>.mq" group's mq_svc, meta commands and watches to the meta_svc;
 * a follower answers RPC_NOT_LEADER with the leader's id and RPC address as
 * a hint (a meta watch is served by any replica: versions only grow; so is
 * a segment read, from the group's body store: bytes are the same on every
 * replica that has them). Status requests describe every group (state,
 * indexes, digest) for ringmqctl.
 * A request whose deadline (RpcRequest.budget_ms, rpc_server_req_deadline)
 * has passed when it is dispatched is answered RPC_UNAVAILABLE and not
 * started: its sender has reported it failed, or is about to.
 *
 * @groups is borrowed and must outlive the service. node_rpc_close stops
 * listening; replies to calls still in a group are dropped. Freed before cb.
 */
#ifndef RINGMQ_NODE_RPC_H
#define RINGMQ_NODE_RPC_H

#include <uv.h>

#include "node/cache_svc.h"
#include "common/watermark.h"
#include "node/config.h"
#include "node/meta_svc.h"
#include "node/mq_store.h"
#include "node/mq_svc.h"

struct node_rpc;

struct node_rpc *node_rpc_new(uv_loop_t *loop, const struct node_config *cfg,
                              struct cache_svc *const *groups,
                              unsigned n_groups, char *err, size_t errlen);
/* The queue groups ("<shard>.mq") and the meta group this node runs, for
 * the AMQP requests of routers (MqCommand, MetaCommand, MetaWatch); without
 * them those get RPC_NO_GROUP. Borrowed like @groups; @meta may be NULL. */
void node_rpc_set_amqp(struct node_rpc *r, struct mq_svc *const *mq,
                       unsigned n_mq, struct meta_svc *meta);

/* The body store of queue group @group ("<shard>.mq"), for peers' segment
 * reads (MqSegmentRead: node/mq_fetch.h), served by any replica; NULL
 * forgets it. Borrowed until forgotten or node_rpc_close. A group without
 * one is answered RPC_NO_GROUP. At most NODE_MAX_GROUPS. */
void node_rpc_set_mq_store(struct node_rpc *r, const char *group,
                           struct mq_store *st);

/* Report this watermark in every queue-group answer (publishers_blocked),
 * so routers block AMQP publishers. Borrowed; NULL = never blocked. */
void node_rpc_set_watermark(struct node_rpc *r, struct watermark *w);

void node_rpc_close(struct node_rpc *r, void (*cb)(void *data), void *data);

#endif
