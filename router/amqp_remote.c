/*
 * amqp_remote: see amqp_remote.h.
 */
#include "router/amqp_remote.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/ring.h"
#include "proto/mq_pb.h"
#include "rpc/rpc_client.h"

#define GROUP_NAME_MAX (CLUSTER_NAME_MAX + 8)
#define MAX_NODES (CLUSTER_MAX_SHARDS * CLUSTER_MAX_MEMBERS)
#define RETRY_BACKOFF_MS 30
#define RETRY_TICK_MS 10
/* A CHECKOUT long poll gets its wait plus this for the round trip. */
#define WAIT_SLACK_MS 3000
#define WATCH_WAIT_MS 10000
#define WATCH_RETRY_MS 200

struct rnode {
    struct rpc_client *client;
};

/* One remote Raft group: a shard's queue group, or the meta group. */
struct rgrp {
    char name[GROUP_NAME_MAX];
    unsigned n_members;
    unsigned node[CLUSTER_MAX_MEMBERS]; /* index into amqp_remote.nodes */
    uint64_t member_id[CLUSTER_MAX_MEMBERS];
    const char *member_rpc[CLUSTER_MAX_MEMBERS]; /* into the map copy */
    unsigned leader;                             /* our guess */
    bool blocked;        /* the last answer asked to block publishers */
    uint64_t blocked_at; /* when that answer came */
};

/* One call on its way; retried until executed or the deadline. */
struct rreq {
    struct amqp_remote *r;
    struct amqp_broker_call *call;
    struct rgrp *g;
    unsigned member;
    uint64_t deadline;
    uint64_t wake_at; /* when parked for a retry */
    struct rreq *next;
};

struct amqp_remote {
    uv_loop_t *loop;
    struct cluster_map map;
    struct amqp_remote_config cfg;
    struct ring *ring;
    struct rgrp *groups; /* n_shards queue groups, then the meta group */
    unsigned n_shards;
    struct rnode nodes[MAX_NODES];
    const char *node_addr[MAX_NODES];
    unsigned n_nodes;

    struct meta_sm *view;
    bool view_loaded;
    unsigned watch_member;
    bool watch_inflight;
    uv_timer_t watch_timer;

    struct rreq *parked; /* waiting for a retry, unordered */
    uv_timer_t retry_timer;

    bool closing;
    unsigned handles_open; /* timers + clients still closing */
    void (*close_cb)(void *data);
    void *close_data;
};

static struct rgrp *meta_group(struct amqp_remote *r)
{
    return &r->groups[r->n_shards];
}

static struct rpc_client *member_client(struct amqp_remote *r,
                                        const struct rgrp *g, unsigned m)
{
    return r->nodes[g->node[m]].client;
}

static int member_of(const struct rgrp *g, uint64_t id, const char *rpc)
{
    unsigned i;

    for (i = 0; i < g->n_members; i++) {
        if ((id != 0 && g->member_id[i] == id) ||
            (rpc != NULL && rpc[0] != '\0' &&
             strcmp(g->member_rpc[i], rpc) == 0)) {
            return (int)i;
        }
    }
    return -1;
}

/* ---- completion -------------------------------------------------------- */

static void finish(struct rreq *q, enum amqp_broker_status st)
{
    struct amqp_broker_call *call = q->call;

    if (st != AMQP_BROKER_OK && call->kind == AMQP_BROKER_MQ) {
        mq_sm_result_clear(&call->mq_result);
    }
    call->status = st;
    free(q);
    call->cb(call);
}

static void attempt(struct rreq *q);
static void on_retry_tick(uv_timer_t *t);

static void park(struct rreq *q, unsigned delay_ms)
{
    struct amqp_remote *r = q->r;

    q->wake_at = uv_now(r->loop) + delay_ms;
    q->next = r->parked;
    r->parked = q;
    if (!uv_is_active((uv_handle_t *)&r->retry_timer)) {
        uv_timer_start(&r->retry_timer, on_retry_tick, RETRY_TICK_MS,
                       RETRY_TICK_MS);
    }
}

/* ---- the meta view ----------------------------------------------------- */

static void view_update(struct amqp_remote *r, const void *state, size_t len,
                        uint64_t version)
{
    if (r->view_loaded && version <= meta_sm_version(r->view)) {
        return;
    }
    if (meta_sm_restore(r->view, state, len) != 0) {
        log_warn("router: amqp: meta snapshot v%" PRIu64
                 " (%zu bytes) does not restore; keeping v%" PRIu64,
                 version, len, meta_sm_version(r->view));
        return;
    }
    if (!r->view_loaded) {
        log_info("router: amqp: meta view loaded (v%" PRIu64 ")", version);
    }
    r->view_loaded = true;
}

/* ---- one attempt and its verdict ---------------------------------------- */

static bool never_sent(int status)
{
    if (status == UV_ECONNREFUSED || status == UV_EADDRNOTAVAIL) {
        return true;
    }
    return status <= UV_EAI_ADDRFAMILY && status >= UV_EAI_PROTOCOL;
}

static void next_member(struct rreq *q)
{
    struct rgrp *g = q->g;

    if (g->leader == q->member) {
        g->leader = (q->member + 1) % g->n_members;
    }
    q->member = g->leader;
}

static void on_reply(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct rreq *q = data;
    struct amqp_remote *r = q->r;
    struct amqp_broker_call *call = q->call;
    int hint;

    if (status == UV_ECANCELED || r->closing) {
        finish(q, AMQP_BROKER_CLOSING);
        return;
    }
    if (status < 0) {
        if (never_sent(status)) {
            next_member(q);
            park(q, RETRY_BACKOFF_MS);
            return;
        }
        log_debug("router: amqp: group %s member %" PRIu64 ": %s",
                  q->g->name, q->g->member_id[q->member],
                  uv_strerror(status));
        next_member(q);
        finish(q, AMQP_BROKER_UNAVAILABLE);
        return;
    }
    switch (resp->code) {
        case RINGMQ__RPC_CODE__RPC_OK:
            if (call->kind == AMQP_BROKER_MQ) {
                q->g->blocked = resp->publishers_blocked;
                q->g->blocked_at = uv_now(r->loop);
                if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_MQ ||
                    mq_pb_result_from_pb(resp->mq, &call->mq_result) != 0) {
                    log_warn("router: amqp: group %s: reply without a "
                             "queue result",
                             q->g->name);
                    finish(q, AMQP_BROKER_UNAVAILABLE);
                    return;
                }
            } else {
                if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_META ||
                    mq_pb_meta_result_from_pb(resp->meta,
                                              &call->meta_result) != 0) {
                    log_warn("router: amqp: meta: reply without a result");
                    finish(q, AMQP_BROKER_UNAVAILABLE);
                    return;
                }
                if (resp->meta->snapshot != NULL) {
                    view_update(r, resp->meta->snapshot->state.data,
                                resp->meta->snapshot->state.len,
                                resp->meta->snapshot->version);
                }
            }
            finish(q, AMQP_BROKER_OK);
            return;
        case RINGMQ__RPC_CODE__RPC_NOT_LEADER:
            hint = member_of(q->g, resp->leader_id, resp->leader_rpc);
            if (hint >= 0 && (unsigned)hint != q->member) {
                q->g->leader = (unsigned)hint;
                q->member = (unsigned)hint;
                attempt(q);
                return;
            }
            next_member(q);
            park(q, RETRY_BACKOFF_MS);
            return;
        case RINGMQ__RPC_CODE__RPC_NO_GROUP:
            next_member(q);
            park(q, RETRY_BACKOFF_MS);
            return;
        case RINGMQ__RPC_CODE__RPC_WRONG_EPOCH:
            log_warn("router: amqp: group %s refused epoch %" PRIu64
                     ": this router's cluster map is stale (%s)",
                     q->g->name, r->map.epoch, resp->error ? resp->error : "");
            finish(q, AMQP_BROKER_UNAVAILABLE);
            return;
        default: /* UNAVAILABLE: outcome unknown; BAD_REQUEST: our bug */
            finish(q, AMQP_BROKER_UNAVAILABLE);
            return;
    }
}

static void attempt(struct rreq *q)
{
    struct amqp_remote *r = q->r;
    struct amqp_broker_call *call = q->call;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    struct mq_pb_cmd_buf mqb;
    struct mq_pb_meta_buf metab;
    uint64_t now = uv_now(r->loop);
    uint64_t timeout;
    int rv;

    if (r->closing) {
        finish(q, AMQP_BROKER_CLOSING);
        return;
    }
    if (now >= q->deadline) {
        finish(q, AMQP_BROKER_UNAVAILABLE);
        return;
    }
    timeout = q->deadline - now;
    req.epoch = r->map.epoch;
    req.group = q->g->name;
    if (call->kind == AMQP_BROKER_MQ) {
        if (mq_pb_cmd_to_pb(&call->mq, call->wait_ms, &mqb) != 0) {
            finish(q, AMQP_BROKER_UNAVAILABLE);
            return;
        }
        req.body_case = RINGMQ__RPC_REQUEST__BODY_MQ;
        req.mq = &mqb.pb;
        if (call->wait_ms > 0) {
            timeout = (uint64_t)call->wait_ms + WAIT_SLACK_MS;
        }
    } else {
        if (mq_pb_meta_cmd_to_pb(&call->meta, &metab) != 0) {
            finish(q, AMQP_BROKER_UNAVAILABLE);
            return;
        }
        req.body_case = RINGMQ__RPC_REQUEST__BODY_META;
        req.meta = &metab.pb;
    }
    rv = rpc_client_call(member_client(r, q->g, q->member), &req,
                         (unsigned)timeout, on_reply, q, NULL);
    if (call->kind == AMQP_BROKER_MQ) {
        mq_pb_cmd_buf_clear(&mqb);
    } else {
        mq_pb_meta_buf_clear(&metab);
    }
    if (rv != 0) {
        finish(q, rv == UV_ECANCELED ? AMQP_BROKER_CLOSING
                                     : AMQP_BROKER_UNAVAILABLE);
    }
}

static void on_retry_tick(uv_timer_t *t)
{
    struct amqp_remote *r = t->data;
    uint64_t now = uv_now(r->loop);
    struct rreq *due = NULL;
    struct rreq **pp = &r->parked;

    while (*pp != NULL) {
        struct rreq *q = *pp;
        if (q->wake_at <= now) {
            *pp = q->next;
            q->next = due;
            due = q;
        } else {
            pp = &q->next;
        }
    }
    if (r->parked == NULL) {
        uv_timer_stop(&r->retry_timer);
    }
    while (due != NULL) {
        struct rreq *q = due;
        due = q->next;
        attempt(q);
    }
}

/* ---- broker table -------------------------------------------------------- */

static unsigned op_shard_count(void *self)
{
    struct amqp_remote *r = self;
    return r->n_shards;
}

static unsigned op_shard_of(void *self, const char *vhost, size_t vhost_len,
                            const char *queue, size_t queue_len)
{
    struct amqp_remote *r = self;
    char key[2 * META_SM_NAME_MAX + 2];
    size_t len = ring_queue_key(vhost, vhost_len, queue, queue_len, key,
                                sizeof(key));

    return ring_lookup(r->ring, key, len);
}

static void op_submit(void *self, struct amqp_broker_call *call)
{
    struct amqp_remote *r = self;
    struct rreq *q;

    mq_sm_result_init(&call->mq_result);
    memset(&call->meta_result, 0, sizeof(call->meta_result));
    if (r->closing) {
        call->status = AMQP_BROKER_CLOSING;
        call->cb(call);
        return;
    }
    q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->call = call;
    if (call->kind == AMQP_BROKER_MQ) {
        if (call->shard >= r->n_shards) {
            free(q);
            call->status = AMQP_BROKER_UNAVAILABLE;
            call->cb(call);
            return;
        }
        q->g = &r->groups[call->shard];
    } else {
        q->g = meta_group(r);
    }
    q->member = q->g->leader;
    q->deadline = uv_now(r->loop) + r->cfg.request_timeout_ms +
                  (call->kind == AMQP_BROKER_MQ ? call->wait_ms : 0);
    attempt(q);
}

static const struct meta_sm *op_meta_view(void *self)
{
    struct amqp_remote *r = self;
    return r->view;
}

/* A shard whose node said "blocked" in an answer of the last few seconds
 * (EXPIRE ticks give every shard an answer a second). */
static bool op_should_block(void *self)
{
    struct amqp_remote *r = self;
    uint64_t now = uv_now(r->loop);
    unsigned i;

    for (i = 0; i < r->n_shards; i++) {
        if (r->groups[i].blocked && now - r->groups[i].blocked_at < 5000) {
            return true;
        }
    }
    return false;
}

static bool op_ready(void *self)
{
    return ((struct amqp_remote *)self)->view_loaded;
}

static const struct amqp_broker_ops remote_ops = {
    .shard_count = op_shard_count,
    .shard_of = op_shard_of,
    .submit = op_submit,
    .meta_view = op_meta_view,
    .should_block = op_should_block,
    .ready = op_ready,
};

struct amqp_broker amqp_remote_broker(struct amqp_remote *r)
{
    struct amqp_broker b = {.ops = &remote_ops, .self = r};
    return b;
}

bool amqp_remote_meta_ready(const struct amqp_remote *r)
{
    return r->view_loaded;
}

/* ---- meta watch ---------------------------------------------------------- */

static void watch_send(struct amqp_remote *r);
static void on_watch_timer(uv_timer_t *t);

static void watch_later(struct amqp_remote *r, unsigned ms)
{
    if (!r->closing) {
        uv_timer_start(&r->watch_timer, on_watch_timer, ms, 0);
    }
}

static void on_watch(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct amqp_remote *r = data;
    struct rgrp *g = meta_group(r);
    int hint;

    r->watch_inflight = false;
    if (r->closing || status == UV_ECANCELED) {
        return;
    }
    if (status < 0) {
        r->watch_member = (r->watch_member + 1) % g->n_members;
        watch_later(r, WATCH_RETRY_MS);
        return;
    }
    switch (resp->code) {
        case RINGMQ__RPC_CODE__RPC_OK:
            if (resp->body_case ==
                RINGMQ__RPC_RESPONSE__BODY_META_SNAPSHOT) {
                view_update(r, resp->meta_snapshot->state.data,
                            resp->meta_snapshot->state.len,
                            resp->meta_snapshot->version);
            }
            g->leader = r->watch_member;
            watch_send(r);
            return;
        case RINGMQ__RPC_CODE__RPC_NOT_LEADER:
            hint = member_of(g, resp->leader_id, resp->leader_rpc);
            if (hint >= 0 && (unsigned)hint != r->watch_member) {
                r->watch_member = (unsigned)hint;
                watch_send(r);
                return;
            }
            /* fall through */
        default:
            r->watch_member = (r->watch_member + 1) % g->n_members;
            watch_later(r, WATCH_RETRY_MS);
            return;
    }
}

static void watch_send(struct amqp_remote *r)
{
    struct rgrp *g = meta_group(r);
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MetaWatch w = RINGMQ__META_WATCH__INIT;
    int rv;

    if (r->closing || r->watch_inflight) {
        return;
    }
    w.known_version = r->view_loaded ? meta_sm_version(r->view) : 0;
    w.wait_ms = r->view_loaded ? WATCH_WAIT_MS : 0;
    req.epoch = r->map.epoch;
    req.group = g->name;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_META_WATCH;
    req.meta_watch = &w;
    rv = rpc_client_call(member_client(r, g, r->watch_member), &req,
                         WATCH_WAIT_MS + WAIT_SLACK_MS, on_watch, r, NULL);
    if (rv == 0) {
        r->watch_inflight = true;
    } else {
        watch_later(r, WATCH_RETRY_MS);
    }
}

static void on_watch_timer(uv_timer_t *t)
{
    watch_send(t->data);
}

/* ---- construction -------------------------------------------------------- */

static int node_index(struct amqp_remote *r, const char *addr, char *errmsg,
                      size_t errlen)
{
    struct rpc_client_config cc = {0};
    unsigned i;

    for (i = 0; i < r->n_nodes; i++) {
        if (strcmp(r->node_addr[i], addr) == 0) {
            return (int)i;
        }
    }
    if (r->n_nodes == MAX_NODES) {
        snprintf(errmsg, errlen, "too many node addresses");
        return -1;
    }
    cc.address = addr;
    r->nodes[i].client = rpc_client_new(r->loop, &cc, errmsg, errlen);
    if (r->nodes[i].client == NULL) {
        return -1;
    }
    r->node_addr[i] = addr;
    r->n_nodes++;
    return (int)i;
}

static int group_init(struct amqp_remote *r, struct rgrp *g,
                      const struct cluster_shard *s, const char *suffix,
                      char *errmsg, size_t errlen)
{
    unsigned m;

    snprintf(g->name, sizeof(g->name), "%s%s", suffix[0] == '\0' ? "" : s->name,
             suffix[0] == '\0' ? "meta" : suffix);
    g->n_members = s->n_members;
    for (m = 0; m < s->n_members; m++) {
        int n = node_index(r, s->members[m].rpc, errmsg, errlen);
        if (n < 0) {
            return -1;
        }
        g->node[m] = (unsigned)n;
        g->member_id[m] = s->members[m].id;
        g->member_rpc[m] = s->members[m].rpc;
    }
    return 0;
}

static void on_handle_closed(uv_handle_t *h);
static void on_client_closed(void *data);

struct amqp_remote *amqp_remote_new(uv_loop_t *loop,
                                    const struct amqp_remote_config *cfg,
                                    char *errmsg, size_t errlen)
{
    struct amqp_remote *r = xcalloc(1, sizeof(*r));
    struct ring_node rn[CLUSTER_MAX_SHARDS];
    unsigned i;

    r->loop = loop;
    r->map = *cfg->map;
    r->cfg = *cfg;
    r->cfg.map = &r->map;
    if (r->cfg.request_timeout_ms == 0) {
        r->cfg.request_timeout_ms = 5000;
    }
    r->n_shards = r->map.n_shards;
    if (r->n_shards == 0) {
        snprintf(errmsg, errlen, "amqp: the cluster map has no shard");
        free(r);
        return NULL;
    }
    for (i = 0; i < r->n_shards; i++) {
        rn[i].name = r->map.shards[i].name;
        rn[i].weight = r->map.shards[i].weight;
    }
    r->ring = ring_new(rn, r->n_shards, errmsg, errlen);
    if (r->ring == NULL) {
        free(r);
        return NULL;
    }
    r->view = meta_sm_new();
    r->groups = xcalloc(r->n_shards + 1, sizeof(*r->groups));
    uv_timer_init(loop, &r->retry_timer);
    r->retry_timer.data = r;
    uv_timer_init(loop, &r->watch_timer);
    r->watch_timer.data = r;
    uv_timer_start(&r->watch_timer, on_watch_timer, 0, 0);
    for (i = 0; i < r->n_shards; i++) {
        if (group_init(r, &r->groups[i], &r->map.shards[i], ".mq", errmsg,
                       errlen) != 0) {
            goto err;
        }
    }
    if (group_init(r, meta_group(r), &r->map.shards[0], "", errmsg,
                   errlen) != 0) {
        goto err;
    }
    return r;

err:
    amqp_remote_close(r, NULL, NULL);
    return NULL;
}

/* ---- close ----------------------------------------------------------------- */

static void maybe_free(struct amqp_remote *r)
{
    void (*cb)(void *) = r->close_cb;
    void *data = r->close_data;

    if (r->handles_open > 0) {
        return;
    }
    ring_free(r->ring);
    meta_sm_free(r->view);
    free(r->groups);
    free(r);
    if (cb != NULL) {
        cb(data);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct amqp_remote *r = h->data;

    r->handles_open--;
    maybe_free(r);
}

static void on_client_closed(void *data)
{
    struct amqp_remote *r = data;

    r->handles_open--;
    maybe_free(r);
}

void amqp_remote_close(struct amqp_remote *r, void (*cb)(void *data),
                       void *data)
{
    unsigned i;

    r->closing = true;
    r->close_cb = cb;
    r->close_data = data;
    r->handles_open = 2 + r->n_nodes + 1; /* + 1 guard */
    while (r->parked != NULL) {
        struct rreq *q = r->parked;
        r->parked = q->next;
        finish(q, AMQP_BROKER_CLOSING);
    }
    uv_close((uv_handle_t *)&r->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->watch_timer, on_handle_closed);
    for (i = 0; i < r->n_nodes; i++) {
        rpc_client_close(r->nodes[i].client, on_client_closed, r);
    }
    r->handles_open--; /* drop the guard */
    maybe_free(r);
}
