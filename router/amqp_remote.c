/*
 * amqp_remote: see amqp_remote.h.
 *
 * What is the AMQP side's own here: turning broker calls into RpcRequests
 * and their answers into results, the publishers-blocked flag, the meta
 * view and its watch. Leader tracking, retries, backoff and deadlines are
 * router/leader's: an rreq is a leader_req (never retried when its outcome
 * is unknown: the edge decides) plus the call.
 *
 * The broker contract's shard index is the index of a queue group in
 * all[], which only grows, so an index the edge keeps (with a delivery)
 * names the same shard for good; cur[i] is the queue group of the current
 * map's shards[i]. Where a queue lives is the
 * meta group's queue directory (docs/resharding.md), which the meta view
 * holds; a name without an entry is the queue ring's (the first map's
 * ring: queues from before the directory, and names nobody declared).
 * Commands that name their queue are routed by that name at every
 * attempt, not by the edge's index (the queue may have moved since), and
 * the shard used is written back into the call. A declare of a queue the
 * directory lacks first PLACEs it (proposing the ring of serving shards'
 * choice). Answers that executed nothing because the queue is in a move
 * (MOVING, MOVED) are sent again 10 ms later, looked up again; a create
 * refused for a stale generation (PLACE_STALE) is placed again. A newer
 * map replaces cur and the rings; queue groups, once made, live until
 * close (calls in flight point at them; a shard that comes back finds its
 * group by name).
 */
#include "router/amqp_remote.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/container_of.h"
#include "common/log.h"
#include "common/ring.h"
#include "proto/mq_pb.h"
#include "proto/rpc_frame.h"
#include "router/leader.h"
#include "sm/meta_changes.h"
#include "rpc/rpc_client.h"

/* A queue in a move, or whose shard is not in our map yet: asked again
 * this much later, within the call's deadline. */
#define MOVING_RETRY_MS 10
/* A CHECKOUT long poll gets its wait plus this for the round trip. */
#define WAIT_SLACK_MS 3000
#define WATCH_RETRY_MS 200

/* One remote Raft group: a shard's queue group, or the meta group. */
struct rgrp {
    struct leader_group *g;
    char shard[CLUSTER_NAME_MAX]; /* "" for the meta group */
    unsigned id;                  /* its index in all[]: the broker's
                                   * shard index, stable for good */
    bool in_map;                  /* the current map has the shard */
    bool blocked;                 /* the last answer asked to block
                                   * publishers */
    uint64_t blocked_at;          /* when that answer came */
};

/* A watch call on its way: the answer to a watch sent to the meta group's
 * previous members only feeds the view. */
struct watch_call {
    struct amqp_remote *r;
    unsigned gen;
    uint64_t sent_ms; /* an answer gives a lease from here */
};

/* One call on its way. A queue.declare that creates a queue not in the
 * directory goes in two steps: a PLACE to the meta group, then the
 * DECLARE to the shard the directory answered. */
struct rreq {
    struct leader_req lq;
    struct amqp_remote *r;
    struct amqp_broker_call *call;
    struct rgrp *grp;
    bool placing;         /* this attempt is the PLACE */
    bool placed;          /* pl is the PLACE's answer */
    struct meta_sm_placement pl;
    uint64_t replace_gen; /* PLACE: the gen the shard found stale, or 0 */
    char proposed[CLUSTER_NAME_MAX]; /* PLACE: the shard we propose */
};

struct amqp_remote {
    uv_loop_t *loop;
    struct cluster_map map;        /* our own copy: the current map */
    struct amqp_remote_config cfg; /* .map = &map */
    struct ring *ring;             /* of map.queue_ring */
    unsigned *qshard;              /* ring node -> map shard index */
    /* Where a new queue goes: the ring of the serving shards (joining
     * and draining ones take no new queue); place_shard[node] = map
     * index. NULL when no shard serves. */
    struct ring *place_ring;
    unsigned *place_shard;
    struct leader_engine *engine;
    /* Every queue group made, freed at close. The broker contract's shard
     * index is an index here: the edge keeps it with deliveries (acks go
     * to the shard that delivered), and map indexes shift when a shard
     * leaves the map. */
    struct rgrp **all;
    unsigned n_all, cap_all;
    struct rgrp **cur; /* cur[i]: the queue group of map.shards[i] */
    struct rgrp meta;  /* members: map.meta */

    struct meta_sm *view;
    bool view_loaded;
    uint64_t lease_until; /* the view routes publishes until (uv_now) */
    bool map_confirmed; /* the map is the meta group's, not the file's */
    unsigned watch_member;
    bool watch_inflight; /* a watch of generation watch_gen */
    unsigned watch_gen;  /* +1 when the meta group's members change */
    uv_timer_t watch_timer;

    bool closing;
    unsigned handles_open; /* the watch timer + the engine still closing */
    void (*close_cb)(void *data);
    void *close_data;
};

static struct rgrp *meta_group(struct amqp_remote *r)
{
    return &r->meta;
}

/* ---- completion -------------------------------------------------------- */

static void finish(struct rreq *q, enum outcome st)
{
    struct amqp_broker_call *call = q->call;

    if (st != OUTCOME_OK && call->kind == AMQP_BROKER_MQ) {
        mq_sm_result_clear(&call->mq_result);
    }
    call->status = st;
    free(q);
    call->cb(call);
}

/* ---- the meta view ----------------------------------------------------- */

/* The version the meta group is asked to answer from: 0 (the whole
 * state) until the view holds one. */
static uint64_t view_version(const struct amqp_remote *r)
{
    return r->view_loaded ? meta_sm_version(r->view) : 0;
}

/* An answer of the meta group (the whole state, or the changes since the
 * view's version, or nothing new) into the view (sm/meta_changes.h). */
static void view_update(struct amqp_remote *r,
                        const Ringmq__MetaSnapshot *snap)
{
    const void *state = snap->state.len > 0 ? snap->state.data : NULL;
    const void *changes = snap->changes.len > 0 ? snap->changes.data : NULL;
    int rv;

    if (!r->view_loaded) {
        if (state == NULL) {
            return; /* changes to a view we do not hold */
        }
        /* loaded whole, whatever the version of what it held */
        rv = meta_sm_restore(r->view, state, snap->state.len);
    } else {
        rv = meta_changes_take(r->view, snap->version, state,
                               snap->state.len, changes, snap->changes.len);
    }
    if (rv != 0) {
        if (!r->view_loaded || state != NULL) {
            log_warn("router: amqp: meta snapshot v%" PRIu64
                     " (%zu bytes) does not restore; keeping v%" PRIu64,
                     snap->version, snap->state.len,
                     meta_sm_version(r->view));
            return;
        }
        /* Part of them may be in: only a whole state is sure again. */
        log_warn("router: amqp: meta changes to v%" PRIu64
                 " do not continue the view (v%" PRIu64 "): reloading it",
                 snap->version, meta_sm_version(r->view));
        r->view_loaded = false;
        return;
    }
    if (!r->view_loaded) {
        log_info("router: amqp: meta view loaded (v%" PRIu64 ")",
                 snap->version);
    }
    r->view_loaded = true;
}

/* A meta command's answer into @mr, the state it carries into the view.
 * 0, or -1 (logged): no result in it. */
static int meta_answer(struct amqp_remote *r, const Ringmq__RpcResponse *resp,
                       struct meta_sm_result *mr)
{
    if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_META ||
        mq_pb_meta_result_from_pb(resp->meta, mr) != 0) {
        log_warn("router: amqp: meta: reply without a result");
        return -1;
    }
    if (resp->meta->snapshot != NULL) {
        view_update(r, resp->meta->snapshot);
    }
    return 0;
}

/* ---- where a queue lives ------------------------------------------------ */

/* The queue ring's shard for (@vhost, @queue): where queues declared
 * before the directory live, and where a name nobody declared goes (its
 * shard then answers as for a queue that does not exist). */
static unsigned ring_shard(const struct amqp_remote *r, const char *vhost,
                           size_t vhost_len, const char *queue,
                           size_t queue_len)
{
    char key[2 * META_SM_NAME_MAX + 2];
    size_t len = ring_queue_key(vhost, vhost_len, queue, queue_len, key,
                                sizeof(key));

    return r->qshard[ring_lookup(r->ring, key, len)];
}

/*
 * The map index of the shard holding (@vhost, @queue) in our view: its
 * directory entry (*@pl, if not NULL, gets it; gen 0 when there is none),
 * else the queue ring. -1: the entry names a shard not in our map yet.
 */
static int queue_shard(const struct amqp_remote *r, const char *vhost,
                       size_t vhost_len, const char *queue, size_t queue_len,
                       struct meta_sm_placement *pl)
{
    struct meta_sm_placement scratch;

    if (pl == NULL) {
        pl = &scratch;
    }
    if (meta_sm_queue_lookup(r->view, vhost, vhost_len, queue, queue_len,
                             pl) == 0) {
        return cluster_map_find(&r->map, pl->shard);
    }
    memset(pl, 0, sizeof(*pl));
    return (int)ring_shard(r, vhost, vhost_len, queue, queue_len);
}

/* The MQ commands addressed by their queue's name: routed by name at
 * each attempt, not by the edge's shard index, which may be from before
 * the queue moved. */
static bool routed_by_name(const struct amqp_broker_call *call)
{
    if (call->kind != AMQP_BROKER_MQ || call->mq.queue_len == 0) {
        return false;
    }
    switch (call->mq.type) {
        case MQ_SM_DECLARE:
        case MQ_SM_DELETE:
        case MQ_SM_PURGE:
        case MQ_SM_ENQUEUE:
        case MQ_SM_CONSUME:
        case MQ_SM_CHECKOUT:
        case MQ_SM_CANCEL:
            return true;
        default:
            return false;
    }
}

/* A queue.declare that may create its queue. */
static bool may_create(const struct amqp_broker_call *call)
{
    return call->kind == AMQP_BROKER_MQ && call->mq.type == MQ_SM_DECLARE &&
           !call->mq.passive;
}

static void route(struct rreq *q, bool start);

static void reroute(struct leader_req *lq)
{
    route(container_of(lq, struct rreq, lq), false);
}

/*
 * Send @q (started, or about to be: @start) where its queue lives now: the
 * PLACE first for a declare of a queue the directory does not hold; parked
 * for MOVING_RETRY_MS, then routed again, while the directory names a
 * shard our map does not have yet.
 */
static void route(struct rreq *q, bool start)
{
    struct amqp_remote *r = q->r;
    struct amqp_broker_call *call = q->call;
    unsigned budget = r->cfg.request_timeout_ms +
                      (call->kind == AMQP_BROKER_MQ ? call->wait_ms : 0);
    struct meta_sm_placement pl;
    struct rgrp *grp;
    int s = 0;

    q->placing = false;
    if (routed_by_name(call)) {
        s = queue_shard(r, call->mq.vhost, call->mq.vhost_len,
                        call->mq.queue, call->mq.queue_len, &pl);
        if (q->placed && may_create(call)) {
            /* the PLACE's own answer: our view may not show it yet */
            pl = q->pl;
            s = cluster_map_find(&r->map, pl.shard);
        }
        if (may_create(call)) {
            call->mq.place_gen = pl.gen;
            q->placing = pl.gen == 0 || q->replace_gen != 0;
        }
    }
    if (q->placing || call->kind == AMQP_BROKER_META) {
        grp = meta_group(r);
    } else if (!routed_by_name(call)) {
        grp = r->all[call->shard]; /* checked at submit */
    } else if (s < 0) {
        q->grp = r->cur[0]; /* never sent there: routed again first */
        if (start) {
            leader_req_start_later(q->grp->g, &q->lq, budget, false,
                                   MOVING_RETRY_MS, reroute);
        } else {
            leader_req_wait(&q->lq, MOVING_RETRY_MS, reroute);
        }
        return;
    } else {
        grp = r->cur[s];
        call->shard = grp->id;
    }
    q->grp = grp;
    if (start) {
        leader_req_start(grp->g, &q->lq, budget, false);
    } else {
        leader_req_again(&q->lq, grp->g);
    }
}

/* The PLACE of @q: the shard a new queue goes to, proposed by the ring of
 * serving shards; the meta group keeps an existing entry over it. */
static int place_build(struct rreq *q, struct mq_pb_meta_buf *metab)
{
    struct amqp_remote *r = q->r;
    const struct mq_sm_cmd *mq = &q->call->mq;
    struct meta_sm_cmd c = {0};
    char key[2 * META_SM_NAME_MAX + 2];
    size_t len;

    if (r->place_ring == NULL) {
        return UV_EAGAIN;
    }
    len = ring_queue_key(mq->vhost, mq->vhost_len, mq->queue, mq->queue_len,
                         key, sizeof(key));
    snprintf(q->proposed, sizeof(q->proposed), "%s",
             r->map.shards[r->place_shard[ring_lookup(r->place_ring, key,
                                                      len)]]
                 .name);
    c.type = META_SM_QUEUE_PLACE;
    c.vhost = mq->vhost;
    c.vhost_len = mq->vhost_len;
    c.dest = mq->queue;
    c.dest_len = mq->queue_len;
    c.shard = q->proposed;
    c.shard_len = strlen(q->proposed);
    c.gen = q->replace_gen;
    if (mq_pb_meta_cmd_to_pb(&c, metab) != 0) {
        return UV_EINVAL;
    }
    metab->pb.view_version = view_version(r);
    return 0;
}

/* ---- one call ----------------------------------------------------------- */

/*
 * An answer that executed nothing and asks to be sent again: the queue is
 * in a move (MOVING: its old shard holds it frozen; MOVED: it left), or a
 * create found its directory entry stale. Sends @q again and returns true,
 * or returns false: the answer is the call's.
 */
static bool again(struct rreq *q)
{
    struct amqp_broker_call *call = q->call;
    enum mq_sm_status st = call->mq_result.status;

    if (!routed_by_name(call)) {
        return false;
    }
    if (st == MQ_SM_MOVING || st == MQ_SM_MOVED) {
        /* looked up again when it is sent again: the directory may have
         * switched meanwhile */
        mq_sm_result_clear(&call->mq_result);
        q->placed = false;
        leader_req_wait(&q->lq, MOVING_RETRY_MS, reroute);
        return true;
    }
    if (st == MQ_SM_PLACE_STALE && may_create(call)) {
        mq_sm_result_clear(&call->mq_result);
        q->replace_gen = call->mq.place_gen;
        q->placed = false;
        route(q, false);
        return true;
    }
    return false;
}

/* The answer to the PLACE of @q: send its DECLARE to the shard placed. */
static void placed(struct rreq *q, const Ringmq__RpcResponse *resp)
{
    struct meta_sm_result mr;

    if (meta_answer(q->r, resp, &mr) != 0) {
        finish(q, OUTCOME_UNAVAILABLE);
        return;
    }
    if (mr.reply_code != 0) {
        /* the shard we proposed does not serve (any more): our map is
         * behind the meta group's; propose again when it has caught up */
        log_debug("router: amqp: PLACE on %s refused: %s", q->proposed,
                  mr.reply_text);
        leader_req_wait(&q->lq, MOVING_RETRY_MS, reroute);
        return;
    }
    q->pl = mr.placement;
    q->placed = true;
    q->replace_gen = 0;
    route(q, false);
}

/*
 * What leader.h leaves to us. Only calls the node certainly did not execute
 * are retried (by the engine); an unknown outcome completes UNAVAILABLE and
 * the edge decides (ENQUEUE carries its dedup id, so the edge retries it).
 * A leader still busy at the deadline completes BUSY: never proposed, so
 * the edge may send the call again as it is.
 */
static void answered(struct rreq *q, const Ringmq__RpcResponse *resp)
{
    struct amqp_remote *r = q->r;
    struct amqp_broker_call *call = q->call;
    const char *group = leader_group_name(q->grp->g);

    switch (rpc_outcome(resp->code)) {
        case OUTCOME_OK:
            if (q->placing) {
                placed(q, resp);
                return;
            }
            if (call->kind == AMQP_BROKER_MQ) {
                q->grp->blocked = resp->publishers_blocked;
                q->grp->blocked_at = uv_now(r->loop);
                if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_MQ ||
                    mq_pb_result_from_pb(resp->mq, &call->mq_result) != 0) {
                    log_warn("router: amqp: group %s: reply without a "
                             "queue result",
                             group);
                    finish(q, OUTCOME_UNAVAILABLE);
                    return;
                }
                if (again(q)) {
                    return;
                }
            } else if (meta_answer(r, resp, &call->meta_result) != 0) {
                finish(q, OUTCOME_UNAVAILABLE);
                return;
            }
            finish(q, OUTCOME_OK);
            return;
        case OUTCOME_BUSY:
            finish(q, OUTCOME_BUSY);
            return;
        case OUTCOME_WRONG_EPOCH:
            log_warn("router: amqp: group %s refused epoch %" PRIu64
                     ": this router's cluster map is stale (%s)",
                     group, r->map.epoch, resp->error ? resp->error : "");
            finish(q, OUTCOME_UNAVAILABLE);
            return;
        default: /* BAD_REQUEST: our bug */
            finish(q, OUTCOME_UNAVAILABLE);
            return;
    }
}

static void on_done(struct leader_req *lq,
                    enum leader_end end,
                    int err,
                    const Ringmq__RpcResponse *resp)
{
    struct rreq *q = container_of(lq, struct rreq, lq);

    (void)err;
    if (end == LEADER_ANSWERED) {
        answered(q, resp);
        return;
    }
    /* Deadline, not sent, maybe applied: the edge decides. */
    finish(q, end == LEADER_CLOSING ? OUTCOME_CLOSING
                                    : OUTCOME_UNAVAILABLE);
}

static int send_call(struct leader_req *lq, unsigned timeout_ms)
{
    struct rreq *q = container_of(lq, struct rreq, lq);
    struct amqp_broker_call *call = q->call;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    struct mq_pb_cmd_buf mqb;
    struct mq_pb_meta_buf metab;
    int rv;

    if (q->placing) {
        rv = place_build(q, &metab);
        if (rv != 0) {
            return rv;
        }
        req.body_case = RINGMQ__RPC_REQUEST__BODY_META;
        req.meta = &metab.pb;
        rv = leader_req_call(lq, &req, timeout_ms);
        mq_pb_meta_buf_clear(&metab);
        return rv;
    }
    if (call->kind == AMQP_BROKER_MQ) {
        if (mq_pb_cmd_to_pb(&call->mq, call->wait_ms, &mqb) != 0) {
            return UV_EINVAL;
        }
        req.body_case = RINGMQ__RPC_REQUEST__BODY_MQ;
        req.mq = &mqb.pb;
        if (call->wait_ms > 0) {
            timeout_ms = call->wait_ms + WAIT_SLACK_MS;
        }
    } else {
        if (mq_pb_meta_cmd_to_pb(&call->meta, &metab) != 0) {
            return UV_EINVAL;
        }
        metab.pb.view_version = view_version(q->r);
        req.body_case = RINGMQ__RPC_REQUEST__BODY_META;
        req.meta = &metab.pb;
    }
    rv = leader_req_call(lq, &req, timeout_ms);
    if (call->kind == AMQP_BROKER_MQ) {
        mq_pb_cmd_buf_clear(&mqb);
    } else {
        mq_pb_meta_buf_clear(&metab);
    }
    return rv;
}

static const struct leader_ops rreq_ops = {
    .send = send_call,
    .done = on_done,
};

/* ---- broker table -------------------------------------------------------- */

static unsigned op_shard_count(void *self)
{
    struct amqp_remote *r = self;
    return r->n_all;
}

static unsigned op_shard_of(void *self, const char *vhost, size_t vhost_len,
                            const char *queue, size_t queue_len)
{
    struct amqp_remote *r = self;
    int s = queue_shard(r, vhost, vhost_len, queue, queue_len, NULL);

    /* an entry naming a shard our map lacks yet: the call is routed
     * again at submit (route()) */
    if (s < 0) {
        s = (int)ring_shard(r, vhost, vhost_len, queue, queue_len);
    }
    return r->cur[s]->id;
}

static void op_submit(void *self, struct amqp_broker_call *call)
{
    struct amqp_remote *r = self;
    struct rreq *q;

    mq_sm_result_init(&call->mq_result);
    memset(&call->meta_result, 0, sizeof(call->meta_result));
    if (r->closing) {
        call->status = OUTCOME_CLOSING;
        call->cb(call);
        return;
    }
    q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->call = call;
    /* A shard that left the map answers nothing (its deliveries went
     * with it); calls routed by name do not use the index. */
    if (call->kind == AMQP_BROKER_MQ && !routed_by_name(call) &&
        (call->shard >= r->n_all || !r->all[call->shard]->in_map)) {
        free(q);
        call->status = OUTCOME_UNAVAILABLE;
        call->cb(call);
        return;
    }
    route(q, true);
}

static const struct meta_sm *op_meta_view(void *self)
{
    struct amqp_remote *r = self;
    return r->view;
}

/* A shard whose node said "blocked" in an answer of the last few seconds
 * (EXPIRE ticks give every shard an answer a second). answered() records
 * the flag before the call completes: the edge asks right after. */
static bool op_should_block(void *self)
{
    struct amqp_remote *r = self;
    uint64_t now = uv_now(r->loop);
    unsigned i;

    for (i = 0; i < r->map.n_shards; i++) {
        if (r->cur[i]->blocked && now - r->cur[i]->blocked_at < 5000) {
            return true;
        }
    }
    return false;
}

static bool op_routable(void *self)
{
    struct amqp_remote *r = self;

    return r->view_loaded && uv_now(r->loop) < r->lease_until;
}

static bool op_ready(void *self)
{
    const struct amqp_remote *r = self;

    /* queues are placed by the meta group's queue ring: a file may differ */
    return r->view_loaded && r->map_confirmed;
}

static const struct amqp_broker_ops remote_ops = {
    .shard_count = op_shard_count,
    .shard_of = op_shard_of,
    .submit = op_submit,
    .meta_view = op_meta_view,
    .should_block = op_should_block,
    .ready = op_ready,
    .routable = op_routable,
};

struct amqp_broker amqp_remote_broker(struct amqp_remote *r)
{
    struct amqp_broker b = {.ops = &remote_ops, .self = r};
    return b;
}

bool amqp_remote_meta_ready(const struct amqp_remote *r)
{
    return r->view_loaded && r->map_confirmed;
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

/* The watch is a long poll, not a request with a deadline: it keeps its
 * own member and pace, but shares the group's knowledge (leader.h): the
 * leader it finds becomes the guess, the nodes it finds dead are skipped,
 * and it follows no hint naming one of them. */
static void on_watch(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct watch_call *wc = data;
    struct amqp_remote *r = wc->r;
    struct leader_group *g = meta_group(r)->g;
    bool stale = wc->gen != r->watch_gen;
    uint64_t sent_ms = wc->sent_ms;
    int hint;

    free(wc);
    if (r->closing || status == UV_ECANCELED) {
        return;
    }
    if (stale) {
        /* Sent before the meta group's members changed: watch_member
         * indexes the new members, and a watch to them is on its way.
         * A newer view is still a newer view. */
        if (status == 0 && rpc_outcome(resp->code) == OUTCOME_OK &&
            resp->body_case == RINGMQ__RPC_RESPONSE__BODY_META_SNAPSHOT) {
            view_update(r, resp->meta_snapshot);
        }
        return;
    }
    r->watch_inflight = false;
    if (status < 0) {
        leader_group_failed(g, r->watch_member, status);
        r->watch_member = leader_group_next(g, r->watch_member);
        watch_later(r, WATCH_RETRY_MS);
        return;
    }
    leader_group_answered(g, r->watch_member);
    switch (rpc_outcome(resp->code)) {
        case OUTCOME_OK:
            if (resp->body_case ==
                RINGMQ__RPC_RESPONSE__BODY_META_SNAPSHOT) {
                view_update(r, resp->meta_snapshot);
                /* the leader's whole state as of this send or later */
                if (r->view_loaded &&
                    meta_sm_version(r->view) >= resp->meta_snapshot->version &&
                    sent_ms + META_VIEW_LEASE_MS > r->lease_until) {
                    r->lease_until = sent_ms + META_VIEW_LEASE_MS;
                }
            }
            leader_group_adopt(g, r->watch_member, "meta watch");
            watch_send(r);
            return;
        case OUTCOME_NOT_LEADER:
            hint = leader_group_hint(g, resp->leader_id, resp->leader_rpc,
                                     (int)r->watch_member);
            if (hint >= 0) {
                r->watch_member = (unsigned)hint;
                watch_send(r);
                return;
            }
            /* fall through */
        default:
            r->watch_member = leader_group_next(g, r->watch_member);
            watch_later(r, WATCH_RETRY_MS);
            return;
    }
}

static void watch_send(struct amqp_remote *r)
{
    struct leader_group *g = meta_group(r)->g;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MetaWatch w = RINGMQ__META_WATCH__INIT;
    struct watch_call *wc;
    int rv;

    if (r->closing || r->watch_inflight) {
        return;
    }
    w.known_version = view_version(r);
    w.wait_ms = r->view_loaded ? META_VIEW_HEARTBEAT_MS : 0;
    w.router_id = r->cfg.router_id;
    req.epoch = r->map.epoch;
    req.group = (char *)leader_group_name(g);
    req.body_case = RINGMQ__RPC_REQUEST__BODY_META_WATCH;
    req.meta_watch = &w;
    wc = xmalloc(sizeof(*wc));
    wc->r = r;
    wc->gen = r->watch_gen;
    wc->sent_ms = uv_now(r->loop);
    rv = rpc_client_call(leader_group_client(g, r->watch_member), &req,
                         META_VIEW_HEARTBEAT_MS + WAIT_SLACK_MS, on_watch, wc,
                         NULL);
    if (rv == 0) {
        r->watch_inflight = true;
    } else {
        free(wc);
        watch_later(r, WATCH_RETRY_MS);
    }
}

static void on_watch_timer(uv_timer_t *t)
{
    watch_send(t->data);
}

/* ---- the map ------------------------------------------------------------- */

/* The same members in the same order (ids and rpc addresses). */
static bool members_same(const struct cluster_member *a, unsigned na,
                         const struct cluster_member *b, unsigned nb)
{
    unsigned i;

    if (na != nb) {
        return false;
    }
    for (i = 0; i < na; i++) {
        if (a[i].id != b[i].id || strcmp(a[i].rpc, b[i].rpc) != 0) {
            return false;
        }
    }
    return true;
}

/*
 * The queue group of shard @name among the first @n_all of r->all, or
 * NULL. As in router/backend: the current list first, from where the
 * previous name was found (*@from), since shards are only appended and
 * removal keeps the order; then all of them (a shard may come back).
 */
static struct rgrp *grp_find(struct amqp_remote *r, const char *name,
                             unsigned *from, unsigned n_all)
{
    unsigned i;

    for (i = *from; i < r->map.n_shards; i++) {
        if (strcmp(r->cur[i]->shard, name) == 0) {
            *from = i + 1;
            return r->cur[i];
        }
    }
    for (i = 0; i < n_all; i++) {
        if (strcmp(r->all[i]->shard, name) == 0) {
            return r->all[i];
        }
    }
    return NULL;
}

/* A new queue group "<shard>.mq" for @cs, in r->all; NULL with a reason in
 * @errmsg. */
static struct rgrp *grp_new(struct amqp_remote *r,
                            const struct cluster_shard *cs, char *errmsg,
                            size_t errlen)
{
    struct rgrp *q = xcalloc(1, sizeof(*q));
    char name[LEADER_GROUP_NAME_MAX];

    snprintf(q->shard, sizeof(q->shard), "%s", cs->name);
    q->id = r->n_all;
    snprintf(name, sizeof(name), "%s.mq", cs->name);
    q->g = leader_group_add(r->engine, name, cs->members, cs->n_members,
                            errmsg, errlen);
    if (q->g == NULL) {
        free(q);
        return NULL;
    }
    if (r->n_all == r->cap_all) {
        r->cap_all = r->cap_all ? 2 * r->cap_all : 8;
        r->all = xrealloc(r->all, r->cap_all * sizeof(*r->all));
    }
    r->all[r->n_all++] = q;
    return q;
}

/* The ring of @map's serving shards (*@idx: ring node -> map index), or
 * NULL when no shard serves (nothing to fail: no queue can be placed
 * until one does). */
static struct ring *place_ring_new(const struct cluster_map *map,
                                   unsigned **idx)
{
    struct ring_node *nodes = xcalloc(map->n_shards, sizeof(*nodes));
    struct ring *ring = NULL;
    char err[128];
    unsigned i, n = 0;

    *idx = xcalloc(map->n_shards, sizeof(**idx));
    for (i = 0; i < map->n_shards; i++) {
        if (map->shards[i].state == CLUSTER_SHARD_SERVING) {
            nodes[n].name = map->shards[i].name;
            nodes[n].weight = map->shards[i].weight;
            (*idx)[n++] = i;
        }
    }
    if (n > 0) {
        ring = ring_new(nodes, n, err, sizeof(err));
        if (ring == NULL) {
            log_warn("router: amqp: no ring for new queues: %s", err);
        }
    }
    free(nodes);
    if (ring == NULL) {
        free(*idx);
        *idx = NULL;
    }
    return ring;
}

/*
 * Serve with @map from now on (no epoch check); *@meta_changed: the meta
 * group's members changed. 0, or -1 with a reason in @errmsg: the ring,
 * the shard indexes, the map and the epoch stay the old ones (as in
 * router/backend, groups made for new shards stay, and an address the RPC
 * client refuses may leave earlier groups with their new members).
 */
static int apply_map(struct amqp_remote *r, const struct cluster_map *map,
                     bool *meta_changed, char *errmsg, size_t errlen)
{
    struct rgrp **cur = NULL;
    struct ring *ring = NULL;
    unsigned *qshard = NULL;
    unsigned n_all = r->n_all; /* those made here are not searched */
    unsigned i, from = 0;

    *meta_changed = false;
    if (map->n_shards == 0) {
        snprintf(errmsg, errlen, "the cluster map has no shard");
        return -1;
    }
    if (map->n_meta == 0) {
        snprintf(errmsg, errlen, "the cluster map has no meta members");
        return -1;
    }
    ring = cluster_map_queue_ring(map, errmsg, errlen);
    if (ring == NULL) {
        return -1;
    }
    qshard = xcalloc(map->n_queue_ring, sizeof(*qshard));
    for (i = 0; i < map->n_queue_ring; i++) {
        int s = cluster_map_find(map, map->queue_ring[i].name);
        if (s < 0) {
            snprintf(errmsg, errlen, "queue ring shard %s is not in the map",
                     map->queue_ring[i].name);
            goto err;
        }
        qshard[i] = (unsigned)s;
    }
    cur = xcalloc(map->n_shards, sizeof(*cur));
    for (i = 0; i < map->n_shards; i++) {
        cur[i] = grp_find(r, map->shards[i].name, &from, n_all);
        if (cur[i] == NULL) {
            cur[i] = grp_new(r, &map->shards[i], errmsg, errlen);
        }
        if (cur[i] == NULL) {
            goto err;
        }
    }
    if (r->meta.g == NULL) {
        r->meta.g = leader_group_add(r->engine, "meta", map->meta,
                                     map->n_meta, errmsg, errlen);
        if (r->meta.g == NULL) {
            goto err;
        }
    }
    /* Same members: a no-op in leader_group_set_members. */
    for (i = 0; i < map->n_shards; i++) {
        if (leader_group_set_members(cur[i]->g, map->shards[i].members,
                                     map->shards[i].n_members, errmsg,
                                     errlen) != 0) {
            goto err;
        }
    }
    if (leader_group_set_members(r->meta.g, map->meta, map->n_meta, errmsg,
                                 errlen) != 0) {
        goto err;
    }

    *meta_changed = !members_same(r->map.meta, r->map.n_meta, map->meta,
                                  map->n_meta);
    for (i = 0; i < r->n_all; i++) {
        r->all[i]->in_map = false;
    }
    for (i = 0; i < map->n_shards; i++) {
        cur[i]->in_map = true;
    }
    free(r->cur);
    r->cur = cur;
    ring_free(r->ring);
    r->ring = ring;
    free(r->qshard);
    r->qshard = qshard;
    ring_free(r->place_ring);
    free(r->place_shard);
    r->place_ring = place_ring_new(map, &r->place_shard);
    cluster_map_copy(&r->map, map);
    leader_engine_set_epoch(r->engine, map->epoch);
    return 0;

err:
    free(cur);
    free(qshard);
    ring_free(ring);
    return -1;
}

int amqp_remote_map_update(struct amqp_remote *r,
                           const struct cluster_map *map, char *errmsg,
                           size_t errlen)
{
    bool meta_changed;

    if (r->closing) {
        snprintf(errmsg, errlen, "closing");
        return -1;
    }
    /* the first map from meta replaces the file's whatever its epoch: a
     * file may list other shards under the same epoch */
    if (map->epoch <= r->map.epoch && r->map_confirmed) {
        return 0;
    }
    if (apply_map(r, map, &meta_changed, errmsg, errlen) != 0) {
        return -1;
    }
    r->map_confirmed = true;
    log_info("router: amqp: cluster map epoch %" PRIu64 ", %u shard(s), %u "
             "meta member(s)",
             r->map.epoch, r->map.n_shards, r->map.n_meta);
    if (meta_changed) {
        /* A watch in flight went to the old members (it may wait
         * its wait there, or at a node that left): watch the new
         * ones now, and let that one's answer only feed the view. */
        r->watch_gen++;
        r->watch_inflight = false;
        r->watch_member = leader_group_guess(meta_group(r)->g);
        uv_timer_stop(&r->watch_timer);
        watch_send(r);
    }
    return 0;
}

/* ---- construction -------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h);
static void on_engine_closed(void *data);

struct amqp_remote *amqp_remote_new(uv_loop_t *loop,
                                    const struct amqp_remote_config *cfg,
                                    char *errmsg, size_t errlen)
{
    struct amqp_remote *r = xcalloc(1, sizeof(*r));
    struct leader_config lc = {0};
    bool meta_changed;

    r->loop = loop;
    r->map_confirmed = !cfg->wait_for_map;
    r->cfg = *cfg;
    cluster_map_init(&r->map);
    r->cfg.map = &r->map;
    if (r->cfg.request_timeout_ms == 0) {
        r->cfg.request_timeout_ms = 5000;
    }
    r->view = meta_sm_new();
    lc.ops = &rreq_ops;
    lc.epoch = cfg->map->epoch;
    /* A refused connection: the next member after the backoff. The
     * clients keep rpc_client's defaults. */
    lc.unsent_retry_at_once = false;
    r->engine = leader_engine_new(loop, &lc);
    uv_timer_init(loop, &r->watch_timer);
    r->watch_timer.data = r;
    /* The first map, whatever its epoch (0 included). */
    if (apply_map(r, cfg->map, &meta_changed, errmsg, errlen) != 0) {
        goto err;
    }
    uv_timer_start(&r->watch_timer, on_watch_timer, 0, 0);
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
    unsigned i;

    if (r->handles_open > 0) {
        return;
    }
    ring_free(r->ring);
    free(r->qshard);
    ring_free(r->place_ring);
    free(r->place_shard);
    meta_sm_free(r->view);
    for (i = 0; i < r->n_all; i++) {
        free(r->all[i]);
    }
    free(r->all);
    free(r->cur);
    cluster_map_clear(&r->map);
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

static void on_engine_closed(void *data)
{
    struct amqp_remote *r = data;

    r->handles_open--;
    maybe_free(r);
}

void amqp_remote_close(struct amqp_remote *r, void (*cb)(void *data),
                       void *data)
{
    r->closing = true;
    r->close_cb = cb;
    r->close_data = data;
    r->handles_open = 2 + 1; /* + 1 guard */
    uv_close((uv_handle_t *)&r->watch_timer, on_handle_closed);
    /* Calls parked or in flight complete OUTCOME_CLOSING inside; the
     * watch in flight ends with UV_ECANCELED. */
    leader_engine_close(r->engine, on_engine_closed, r);
    r->handles_open--; /* drop the guard */
    maybe_free(r);
}
