/* node_rpc: see node_rpc.h. */
#include "node/node_rpc.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "node/rpc_server.h"
#include "common/ring.h"
#include "proto/cache_pb.h"

#define DEFAULT_GROUP "cache"

struct node_rpc {
    const struct node_config *cfg;
    struct cache_svc *const *groups;
    unsigned n_groups;
    struct rpc_server *server;
    struct ring *ring; /* from the cluster map; NULL without one */
};

/* A cache op received over RPC, on its way through a group. */
struct rpc_cache_call {
    struct cache_call call;
    struct node_rpc *rpc;
    struct rpc_server_req *req;
    unsigned group;
};

static int find_group(const struct node_rpc *r, const char *name)
{
    unsigned g;

    if (name == NULL || *name == '\0') {
        name = DEFAULT_GROUP;
    }
    for (g = 0; g < r->n_groups; g++) {
        if (strcmp(r->cfg->groups[g].name, name) == 0) {
            return (int)g;
        }
    }
    return -1;
}

static void reply_code(struct rpc_server_req *req, Ringmq__RpcCode code,
                       const char *error)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;

    resp.code = code;
    resp.error = (char *)error;
    rpc_server_reply(req, &resp);
}

static void cache_call_done(struct cache_call *call)
{
    struct rpc_cache_call *c = call->data;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__CacheResult result;

    switch (call->result.status) {
    case CACHE_NOT_LEADER:
        resp.code = RINGMQ__RPC_CODE__RPC_NOT_LEADER;
        resp.leader_id = cache_svc_leader_id(c->rpc->groups[c->group]);
        resp.leader_rpc = (char *)node_config_member_rpc(
            c->rpc->cfg, c->group, resp.leader_id);
        if (resp.leader_rpc == NULL) {
            resp.leader_rpc = "";
        }
        resp.error = "not leader";
        break;
    case CACHE_UNAVAILABLE:
        /* Nothing or something was applied: the caller must not assume. */
        resp.code = RINGMQ__RPC_CODE__RPC_UNAVAILABLE;
        resp.error = "leadership lost or closing: outcome unknown";
        break;
    default:
        resp.code = RINGMQ__RPC_CODE__RPC_OK;
        cache_result_to_pb(&call->result, &result);
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
        resp.cache = &result;
        break;
    }
    rpc_server_reply(c->req, &resp);
    cache_result_clear(&call->result);
    free(c);
}

/* DESIGN.md: a node refuses work for a key its shard does not own at the
 * request's epoch, so a router with a stale map never writes to the wrong
 * shard. Epoch 0 (ringmqctl, tests) and nodes without a map skip the check.
 * Returns NULL if the request may proceed, else the reason. */
static const char *ownership_error(const struct node_rpc *r,
                                   const Ringmq__RpcRequest *msg, int g)
{
    const struct cluster_map *map = r->cfg->cluster;
    const Ringmq__CacheOp *op = msg->cache;
    unsigned owner;

    if (msg->epoch == 0 || map == NULL) {
        return NULL;
    }
    if (msg->epoch != map->epoch) {
        return "cluster map epoch differs from this node's";
    }
    if (op->type == CACHE_OP_FLUSH_ALL) {
        return NULL;
    }
    owner = ring_lookup(r->ring, op->key.data, op->key.len);
    if (strcmp(map->shards[owner].name, r->cfg->groups[g].name) != 0) {
        return "key not owned by this shard at this epoch";
    }
    return NULL;
}

static void handle_cache(struct node_rpc *r, struct rpc_server_req *req,
                         const Ringmq__RpcRequest *msg)
{
    struct rpc_cache_call *c;
    int g = find_group(r, msg->group);
    const char *why;

    if (g < 0) {
        reply_code(req, RINGMQ__RPC_CODE__RPC_NO_GROUP, "no such group here");
        return;
    }
    why = ownership_error(r, msg, g);
    if (why != NULL) {
        reply_code(req, RINGMQ__RPC_CODE__RPC_WRONG_EPOCH, why);
        return;
    }
    c = xcalloc(1, sizeof(*c));
    if (cache_op_from_pb(msg->cache, &c->call.op) != 0) {
        free(c);
        reply_code(req, RINGMQ__RPC_CODE__RPC_BAD_REQUEST, "unknown cache op");
        return;
    }
    c->rpc = r;
    c->req = req;
    c->group = (unsigned)g;
    c->call.cb = cache_call_done;
    c->call.data = c;
    /* op key/value point into msg, which lives until the reply. */
    cache_svc_submit(r->groups[g], &c->call);
}

static void handle_status(struct node_rpc *r, struct rpc_server_req *req)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__StatusReply reply = RINGMQ__STATUS_REPLY__INIT;
    Ringmq__GroupStatus gs[NODE_MAX_GROUPS];
    Ringmq__GroupStatus *gsp[NODE_MAX_GROUPS];
    unsigned g;

    for (g = 0; g < r->n_groups; g++) {
        struct cache_svc_status st;
        const char *leader_rpc;

        cache_svc_status(r->groups[g], &st, true);
        ringmq__group_status__init(&gs[g]);
        gs[g].name = (char *)r->cfg->groups[g].name;
        gs[g].id = st.raft.id;
        gs[g].state = (char *)st.raft.state;
        gs[g].ready = st.raft.ready;
        gs[g].leader_id = st.raft.leader_id;
        leader_rpc = node_config_member_rpc(r->cfg, g, st.raft.leader_id);
        gs[g].leader_rpc = (char *)(leader_rpc ? leader_rpc : "");
        gs[g].term = st.raft.term;
        gs[g].commit_index = st.raft.commit_index;
        gs[g].last_applied = st.raft.last_applied;
        gs[g].last_index = st.raft.last_index;
        gs[g].snapshot_index = st.raft.snapshot_index;
        gs[g].digest = st.digest;
        gs[g].items = st.sm.curr_items;
        gs[g].bytes = st.sm.bytes;
        gs[g].evictions = st.sm.evictions;
        gs[g].limit_maxbytes = st.sm.limit_maxbytes;
        gs[g].snapshots_taken = st.raft.snapshots_taken;
        gs[g].snapshots_restored = st.raft.snapshots_restored;
        gs[g].batches_proposed = st.raft.batches_proposed;
        gs[g].cmds_proposed = st.raft.cmds_proposed;
        gsp[g] = &gs[g];
    }
    reply.node_id = r->cfg->id;
    reply.n_groups = r->n_groups;
    reply.groups = gsp;
    resp.code = RINGMQ__RPC_CODE__RPC_OK;
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_STATUS;
    resp.status = &reply;
    rpc_server_reply(req, &resp);
}

static void on_request(void *data, struct rpc_server_req *req,
                       const Ringmq__RpcRequest *msg)
{
    struct node_rpc *r = data;

    switch (msg->body_case) {
    case RINGMQ__RPC_REQUEST__BODY_CACHE:
        handle_cache(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_STATUS:
        handle_status(r, req);
        break;
    default:
        reply_code(req, RINGMQ__RPC_CODE__RPC_BAD_REQUEST, "empty request");
        break;
    }
}

struct node_rpc *node_rpc_new(uv_loop_t *loop, const struct node_config *cfg,
                              struct cache_svc *const *groups,
                              unsigned n_groups, char *err, size_t errlen)
{
    struct node_rpc *r = xcalloc(1, sizeof(*r));
    struct rpc_server_config sc = {0};
    char host[NODE_ADDR_MAX];
    char sub[256];

    r->cfg = cfg;
    r->groups = groups;
    r->n_groups = n_groups;
    if (cfg->cluster != NULL) {
        struct ring_node nodes[CLUSTER_MAX_SHARDS];
        unsigned i;

        for (i = 0; i < cfg->cluster->n_shards; i++) {
            nodes[i].name = cfg->cluster->shards[i].name;
            nodes[i].weight = cfg->cluster->shards[i].weight;
        }
        r->ring = ring_new(nodes, cfg->cluster->n_shards, sub, sizeof(sub));
        if (r->ring == NULL) {
            snprintf(err, errlen, "cluster map: %s", sub);
            goto err;
        }
    }
    if (node_config_split_addr(cfg->rpc, host, sizeof(host), &sc.port) != 0) {
        snprintf(err, errlen, "rpc: bad address '%s'", cfg->rpc);
        goto err;
    }
    sc.host = host;
    r->server = rpc_server_new(loop, &sc, on_request, r, sub, sizeof(sub));
    if (r->server == NULL) {
        snprintf(err, errlen, "rpc %s: %s", cfg->rpc, sub);
        goto err;
    }
    return r;
err:
    ring_free(r->ring);
    free(r);
    return NULL;
}

struct close_ctx {
    struct node_rpc *rpc;
    void (*cb)(void *data);
    void *data;
};

static void server_closed(void *data)
{
    struct close_ctx *ctx = data;
    void (*cb)(void *) = ctx->cb;
    void *cb_data = ctx->data;

    ring_free(ctx->rpc->ring);
    free(ctx->rpc);
    free(ctx);
    if (cb != NULL) {
        cb(cb_data);
    }
}

void node_rpc_close(struct node_rpc *r, void (*cb)(void *data), void *data)
{
    struct close_ctx *ctx = xmalloc(sizeof(*ctx));

    ctx->rpc = r;
    ctx->cb = cb;
    ctx->data = data;
    rpc_server_close(r->server, server_closed, ctx);
}
