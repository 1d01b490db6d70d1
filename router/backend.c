/*
 * backend: see backend.h.
 *
 * What is the cache's own here: the ring, turning a cache op into an
 * RpcRequest and its answer into a cache result, FLUSH_ALL's fan-out, the
 * status poll and the counters. Leader tracking, retries, backoff and
 * deadlines are router/leader's: a breq is a leader_req plus the call.
 * Every op may be retried when its outcome is unknown: GETs are
 * idempotent, and each write carries a request id the shard applies once
 * (sm/cache_sm.h), so a retry gets the first attempt's answer.
 *
 * A newer map replaces the ring and the list of current shards (cur[i] is
 * the bshard of the map's shard i, which is ring node i). A bshard, once
 * created, lives until close: requests in flight point at it, and a shard
 * that leaves the map and comes back finds its group and counters again.
 */
#include "router/backend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/container_of.h"
#include "common/log.h"
#include "common/random_id.h"
#include "common/ring.h"
#include "proto/cache_pb.h"
#include "proto/rpc_frame.h"
#include "router/leader.h"
#include "rpc/rpc_client.h"

/* A node address that never answers the status poll for this long is
 * reported stale by /healthz. */
#define STATUS_STALE_PERIODS 3
/* Log "stale map" at most this often per shard. */
#define EPOCH_WARN_EVERY_MS 10000
/* WRONG_OWNER: refusals followed per request, and the pause before asking
 * again when the owner is not in this router's map yet. */
#define OWNER_HOPS 4
#define OWNER_BACKOFF_MS 10

const double backend_latency_bounds[BACKEND_LATENCY_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0,
};

struct bshard {
    struct backend *b;
    struct leader_group *g;
    char name[CLUSTER_NAME_MAX];
    unsigned weight;

    /* status cache */
    bool status_inflight;
    bool status_failed;     /* the last poll got no answer */
    unsigned status_member; /* asked by the poll in flight / last poll */
    bool status_seen;
    uint64_t status_at; /* uv_now() of the last answer */
    uint64_t status_from;
    uint64_t leader_id;
    char leader_rpc[CLUSTER_ADDR_MAX];
    uint64_t term, commit_index, applied_index, items, bytes;
    uint64_t evictions, limit_maxbytes;

    /* counters (retries and leader changes: the group's) */
    uint64_t requests[CACHE_OP__COUNT];
    uint64_t gets, sets, hits, misses, errors;
    uint64_t latency_ns_sum, latency_count;
    uint64_t epoch_warned_at;
    uint64_t owner_refusals;  /* WRONG_OWNER answers from this shard */
    uint64_t moving_refusals; /* MOVING answers from this shard */

    /* Request ids of the writes sent to this shard: a random client id of
     * this router for this shard, and the writes numbered from 1. Per
     * shard, so that the shard's window of remembered seqs counts only
     * writes it applies. */
    uint64_t client_id;
    uint64_t last_seq;
};

/* One cache op on one shard. */
struct breq {
    struct leader_req lq;
    struct backend *b;
    struct cache_call *call;
    struct bshard *shard;
    uint64_t start_ns; /* clock_mono_ns() at submit, for latency */
    /* a write's request id, the same in every attempt (seq 0: a read);
     * kept when WRONG_OWNER sends it to another shard, where the client
     * id is still unique */
    uint64_t client_id;
    uint64_t seq;
    unsigned owner_hops; /* WRONG_OWNER answers followed */
    /* where to ask when a wait ends ("": where our ring says): the owner
     * a WRONG_OWNER named, which our map may not have yet */
    char owner[CLUSTER_NAME_MAX];
};

/* FLUSH_ALL: one sub-call per shard. */
struct bfan {
    struct cache_call *parent;
    unsigned pending;
    enum outcome outcome;     /* the first failure; UNAVAILABLE wins */
    enum cache_status status; /* the last answer other than OK */
    struct cache_call subs[];
};

struct backend {
    uv_loop_t *loop;
    struct backend_config cfg; /* .map = &map */
    struct cluster_map map;    /* our own copy: the current map */
    struct ring *ring;         /* of map; node i = map.shards[i] */
    struct leader_engine *engine;
    struct bshard **all; /* every bshard ever made, freed at close */
    unsigned n_all, cap_all;
    struct bshard **cur; /* cur[i]: the bshard of map.shards[i] */

    uv_timer_t status_timer;
    bool confirmed; /* the map is the meta group's (wait_for_map) */

    uint64_t latency[BACKEND_LATENCY_BUCKETS + 1];
    uint64_t latency_ns_sum;
    uint64_t latency_count;

    bool closing;
    unsigned open; /* the engine + the status timer, not yet closed */
    void (*close_cb)(void *data);
    void *close_data;
};

/* ---- helpers ------------------------------------------------------------ */

static void latency_add(struct backend *b, struct bshard *s, uint64_t ns)
{
    double sec = (double)ns / 1e9;
    unsigned k = 0;

    while (k < BACKEND_LATENCY_BUCKETS && sec > backend_latency_bounds[k]) {
        k++;
    }
    b->latency[k]++;
    b->latency_ns_sum += ns;
    b->latency_count++;
    s->latency_ns_sum += ns;
    s->latency_count++;
}

/* ---- completion ------------------------------------------------------- */

/* Count, free @r and complete its call. The result must be filled. The
 * callback runs last: it may submit again (the edge dispatches its next run
 * from there). */
static void complete(struct breq *r)
{
    struct bshard *s = r->shard;
    struct cache_call *call = r->call;
    enum cache_op_type t = call->op.type;
    enum cache_status st = call->outcome == OUTCOME_OK ? call->result.status
                                                       : CACHE_STATUS__COUNT;

    if (t < CACHE_OP__COUNT) {
        s->requests[t]++;
    }
    if (t == CACHE_OP_GET || t == CACHE_OP_GAT) {
        s->gets++;
        if (st == CACHE_HIT) {
            s->hits++;
        } else if (st == CACHE_NOT_FOUND) {
            s->misses++;
        }
    } else {
        s->sets++;
    }
    if (call->outcome != OUTCOME_OK || st == CACHE_BAD_REQUEST ||
        st == CACHE_TOO_LARGE) {
        s->errors++;
    }
    latency_add(r->b, s, clock_mono_ns() - r->start_ns);
    free(r);
    call->cb(call);
}

/* Complete without the cache's answer: what became of the op instead. */
static void fail(struct breq *r, enum outcome o)
{
    cache_result_clear(&r->call->result);
    r->call->outcome = o;
    complete(r);
}

/* ---- one request ------------------------------------------------------- */


static struct bshard *shard_named(const struct backend *b, const char *name)
{
    int i = cluster_map_find(&b->map, name);

    return i >= 0 ? b->cur[i] : NULL;
}

static void resume_parked(struct leader_req *lq);

/* Ask again after OWNER_BACKOFF_MS, at the shard named r->owner (the
 * engine keeps the request meanwhile: its deadline holds). */
static void park(struct breq *r)
{
    leader_req_wait(&r->lq, OWNER_BACKOFF_MS, resume_parked);
}

/*
 * The shard refused the key and named its owner: nothing was applied
 * (docs/resharding.md), so every op is retried there at once, within the
 * request's deadline and at most OWNER_HOPS times (two shards naming each
 * other must not spin). An owner this router's map does not have yet (its
 * watch brings it) is waited for, until the deadline.
 */
static void follow_owner(struct breq *r)
{
    struct backend *b = r->b;
    struct cache_result *res = &r->call->result;
    size_t len = res->value_len < sizeof(r->owner) ? res->value_len
                                                   : sizeof(r->owner) - 1;
    struct bshard *s;

    memcpy(r->owner, res->value != NULL ? res->value : "", len);
    r->owner[len] = '\0';
    cache_result_clear(res);
    r->shard->owner_refusals++;
    s = shard_named(b, r->owner);
    if (s != NULL && s != r->shard && ++r->owner_hops > OWNER_HOPS) {
        log_debug("router: a key of shard %s still refused after %u hops",
                  r->owner, r->owner_hops);
        fail(r, OUTCOME_UNAVAILABLE);
        return;
    }
    if (s != NULL && s != r->shard) {
        r->shard = s;
        leader_req_again(&r->lq, s->g);
        return;
    }
    park(r);
}

/* The key's arc is moving (sm/cache_move.h): the shard answers again
 * after a short fence or once the arc is activated. Nothing was applied:
 * asked again, there or where the shard then names, within the deadline. */
static void wait_moving(struct breq *r)
{
    cache_result_clear(&r->call->result);
    r->shard->moving_refusals++;
    snprintf(r->owner, sizeof(r->owner), "%s", r->shard->name);
    park(r);
}

static void resume_parked(struct leader_req *lq)
{
    struct breq *r = container_of(lq, struct breq, lq);
    struct backend *b = r->b;
    struct bshard *s;

    if (!b->confirmed) {
        park(r);
        return;
    }
    s = shard_named(b, r->owner);
    if (s == NULL) {
        /* still unknown: our own ring decides (the node refuses again
         * while the map has not reached us) */
        s = b->cur[ring_lookup(b->ring, r->call->op.key,
                               r->call->op.key_len)];
    }
    r->shard = s;
    leader_req_again(&r->lq, s->g); /* may park it again */
}

/*
 * What leader.h leaves to us. Retries (leader.h has the full table): every
 * op is retried until the request deadline, whether the node certainly did
 * not execute it or its outcome is unknown (timeout, connection lost after
 * sending, RPC_UNAVAILABLE): a GET is idempotent, and a write is sent again
 * with its request id, which the shard applies once, answering a repeat
 * with the first result (or CACHE_STALE_RETRY when the repeat is too late
 * to be remembered). A BUSY shard (admission control) is retried by the engine
 * with an exponential backoff, and so is an op the leader held queued past
 * its budget (RPC_EXPIRED); one still refused when the deadline comes
 * completes OUTCOME_BUSY. Not retried at all: WRONG_EPOCH (our map is stale:
 * retrying cannot help; UNAVAILABLE plus a warning) and BAD_REQUEST.
 */
static void answered(struct breq *r, const Ringmq__RpcResponse *resp)
{
    struct bshard *s = r->shard;
    uint64_t asked = leader_group_member_id(s->g, r->lq.member);
    uint64_t now;

    switch (rpc_outcome(resp->code)) {
        case OUTCOME_OK:
            if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE ||
                cache_result_from_pb(resp->cache, &r->call->result) != 0) {
                log_warn("router: shard %s: member %" PRIu64
                         " sent a reply without a cache result",
                         s->name, asked);
                fail(r, OUTCOME_UNAVAILABLE);
                return;
            }
            if (r->call->result.status == CACHE_WRONG_OWNER) {
                follow_owner(r);
                return;
            }
            if (r->call->result.status == CACHE_MOVING) {
                wait_moving(r);
                return;
            }
            r->call->outcome = OUTCOME_OK;
            complete(r);
            return;
        case OUTCOME_BAD_REQUEST:
            fail(r, OUTCOME_BAD_REQUEST);
            return;
        case OUTCOME_BUSY:
        case OUTCOME_EXPIRED:
            /* the engine's retries with backoff ran out of time, the last
             * one refused or held in the leader's queue past its budget:
             * never executed, as BUSY */
            fail(r, OUTCOME_BUSY);
            return;
        case OUTCOME_WRONG_EPOCH:
            now = uv_now(r->b->loop);
            if (s->epoch_warned_at == 0 ||
                now - s->epoch_warned_at >= EPOCH_WARN_EVERY_MS) {
                s->epoch_warned_at = now;
                log_warn("router: shard %s: member %" PRIu64
                         " refused epoch %" PRIu64
                         " (%s): this router's cluster map is stale",
                         s->name, asked, r->b->map.epoch,
                         resp->error ? resp->error : "");
            }
            fail(r, OUTCOME_UNAVAILABLE);
            return;
        default:
            fail(r, OUTCOME_UNAVAILABLE);
            return;
    }
}

static void on_done(struct leader_req *lq,
                    enum leader_end end,
                    int err,
                    const Ringmq__RpcResponse *resp)
{
    struct breq *r = container_of(lq, struct breq, lq);

    if (end == LEADER_ANSWERED) {
        answered(r, resp);
        return;
    }
    if (end == LEADER_DEADLINE) {
        log_debug("router: shard %s: %s: deadline after %u attempt(s)",
                  r->shard->name, cache_op_name(r->call->op.type),
                  r->lq.attempts);
    }
    /* Closing, deadline (the last attempt's outcome maybe unknown):
     * SERVER_ERROR. */
    fail(r, end == LEADER_NOT_SENT && err == UV_E2BIG ? OUTCOME_TOO_LARGE
                                                      : OUTCOME_UNAVAILABLE);
}

static int send_op(struct leader_req *lq, unsigned timeout_ms)
{
    struct breq *r = container_of(lq, struct breq, lq);
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp pb;

    /* An op that times out is retried elsewhere while budget remains (a
     * write with its request id). */
    if (timeout_ms > r->b->cfg.attempt_timeout_ms) {
        timeout_ms = r->b->cfg.attempt_timeout_ms;
    }
    cache_op_to_pb(&r->call->op, &pb);
    pb.client_id = r->client_id;
    pb.seq = r->seq;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    return leader_req_call(lq, &req, timeout_ms);
}

static const struct leader_ops breq_ops = {
    .send = send_op,
    .done = on_done,
};

/* ---- submit ----------------------------------------------------------- */

static void submit_shard(struct backend *b,
                         struct cache_call *call,
                         struct bshard *s)
{
    struct breq *r = xcalloc(1, sizeof(*r));

    r->b = b;
    r->call = call;
    r->start_ns = clock_mono_ns();
    r->shard = s;
    if (cache_op_is_write(call->op.type)) {
        r->client_id = s->client_id;
        r->seq = ++s->last_seq;
    }
    if (!b->confirmed) {
        /* a key goes where the confirmed map's ring says (owner ""); a
         * flush_all's part to its shard */
        snprintf(r->owner, sizeof(r->owner), "%s",
                 cache_op_has_key(call->op.type) ? "" : s->name);
        leader_req_start_later(s->g, &r->lq, b->cfg.request_timeout_ms,
                               true, OWNER_BACKOFF_MS, resume_parked);
        return;
    }
    leader_req_start(s->g, &r->lq, b->cfg.request_timeout_ms, true);
}

void backend_map_confirmed(struct backend *b)
{
    if (!b->confirmed) {
        b->confirmed = true;
        log_info("router: routing by the cluster map from meta (epoch %" PRIu64
                 ")",
                 b->map.epoch);
    }
}

static void fan_done(struct cache_call *sub)
{
    struct bfan *f = sub->data;
    struct cache_call *parent;

    /* Any shard's failure is the op's failure; UNAVAILABLE wins. */
    if (sub->outcome != OUTCOME_OK) {
        if (f->outcome != OUTCOME_UNAVAILABLE) {
            f->outcome = sub->outcome;
        }
    } else if (sub->result.status != CACHE_OK) {
        f->status = sub->result.status;
    }
    cache_result_clear(&sub->result);
    if (--f->pending > 0) {
        return;
    }
    parent = f->parent;
    parent->outcome = f->outcome;
    parent->result.status = f->status;
    free(f);
    parent->cb(parent);
}

void backend_submit(struct backend *b, struct cache_call *call)
{
    unsigned i;
    unsigned n = b->map.n_shards;

    cache_result_init(&call->result);
    if (b->closing) {
        call->outcome = OUTCOME_CLOSING;
        call->cb(call);
        return;
    }
    if (call->op.type == CACHE_OP_FLUSH_ALL) {
        struct bfan *f = xcalloc(1, sizeof(*f) + n * sizeof(f->subs[0]));

        f->parent = call;
        f->pending = n;
        f->outcome = OUTCOME_OK;
        f->status = CACHE_OK;
        for (i = 0; i < n; i++) {
            f->subs[i].op = call->op;
            f->subs[i].cb = fan_done;
            f->subs[i].data = f;
            cache_result_init(&f->subs[i].result);
        }
        /* f may be freed by the last (possibly synchronous) completion:
         * touch only f->subs[i] before submitting it. Only that last
         * completion runs the caller's code, so b->cur cannot change
         * under this loop. */
        for (i = 0; i < n; i++) {
            submit_shard(b, &f->subs[i], b->cur[i]);
        }
        return;
    }
    submit_shard(b, call,
                 b->cur[ring_lookup(b->ring, call->op.key, call->op.key_len)]);
}

/* ---- status poll ------------------------------------------------------ */

static void on_status(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct bshard *s = data;
    struct backend *b = s->b;
    const Ringmq__GroupStatus *g = NULL;
    size_t i;
    int m;

    s->status_inflight = false;
    if (b->closing) {
        return;
    }
    if (status == 0 && rpc_outcome(resp->code) == OUTCOME_OK &&
        resp->body_case == RINGMQ__RPC_RESPONSE__BODY_STATUS) {
        for (i = 0; i < resp->status->n_groups; i++) {
            if (strcmp(resp->status->groups[i]->name, s->name) == 0) {
                g = resp->status->groups[i];
                break;
            }
        }
    }
    if (g == NULL) {
        /* Ask someone else next time. (status_member may be stale after a
         * map update: leader_group_next takes any index.) */
        s->status_failed = true;
        s->status_member = leader_group_next(s->g, s->status_member);
        return;
    }
    s->status_failed = false;
    s->status_seen = true;
    s->status_at = uv_now(b->loop);
    s->status_from = resp->status->node_id;
    s->leader_id = g->leader_id;
    snprintf(s->leader_rpc, sizeof(s->leader_rpc), "%s",
             g->leader_rpc ? g->leader_rpc : "");
    s->term = g->term;
    s->commit_index = g->commit_index;
    s->applied_index = g->last_applied;
    s->items = g->items;
    s->evictions = g->evictions;
    s->limit_maxbytes = g->limit_maxbytes;
    s->bytes = g->bytes;
    m = leader_group_hint(s->g, g->leader_id, g->leader_rpc, -1);
    if (m >= 0) {
        leader_group_adopt(s->g, (unsigned)m, "status");
    }
}

static void poll_shard(struct backend *b, struct bshard *s)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__StatusRequest sr = RINGMQ__STATUS_REQUEST__INIT;

    if (s->status_inflight) {
        return;
    }
    /* The member we believe leads has the freshest numbers; after a
     * failed poll, walk the members instead (the guess may be dead). */
    if (!s->status_failed) {
        s->status_member = leader_group_guess(s->g);
    }
    req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
    req.status = &sr;
    req.group = s->name;
    if (rpc_client_call(leader_group_client(s->g, s->status_member), &req,
                        b->cfg.status_interval_ms, on_status, s, NULL) == 0) {
        s->status_inflight = true;
    }
}

static void on_status_timer(uv_timer_t *t)
{
    struct backend *b = t->data;
    unsigned i;

    for (i = 0; i < b->map.n_shards; i++) {
        poll_shard(b, b->cur[i]);
    }
}

/* ---- the map ------------------------------------------------------------ */

/*
 * The bshard named @name among the first @n_all of b->all, or NULL. Shards
 * are only appended to maps and removal keeps the others' order, so the
 * current list is searched first, from where the previous name was found
 * (*@from): a map update costs O(shards), not O(shards^2). Then all of
 * them (a shard that left may come back).
 */
static struct bshard *shard_find(struct backend *b,
                                 const char *name,
                                 unsigned *from,
                                 unsigned n_all)
{
    unsigned i;

    for (i = *from; i < b->map.n_shards; i++) {
        if (strcmp(b->cur[i]->name, name) == 0) {
            *from = i + 1;
            return b->cur[i];
        }
    }
    for (i = 0; i < n_all; i++) {
        if (strcmp(b->all[i]->name, name) == 0) {
            return b->all[i];
        }
    }
    return NULL;
}

/* A new bshard for @cs with its leader group, in b->all; NULL with a
 * reason in @errmsg. */
static struct bshard *shard_new(struct backend *b,
                                const struct cluster_shard *cs,
                                char *errmsg,
                                size_t errlen)
{
    struct bshard *s = xcalloc(1, sizeof(*s));

    s->b = b;
    snprintf(s->name, sizeof(s->name), "%s", cs->name);
    s->weight = cs->weight;
    s->client_id = random_id_nonzero();
    s->g = leader_group_add(b->engine, s->name, cs->members, cs->n_members,
                            errmsg, errlen);
    if (s->g == NULL) {
        free(s);
        return NULL;
    }
    if (b->n_all == b->cap_all) {
        b->cap_all = b->cap_all ? 2 * b->cap_all : 8;
        b->all = xrealloc(b->all, b->cap_all * sizeof(*b->all));
    }
    b->all[b->n_all++] = s;
    return s;
}

/*
 * Route with @map from now on (no epoch check). 0, or -1 with a reason in
 * @errmsg: routing, the map and the epoch stay the old ones. What a failure
 * can leave behind is harmless: bshards and groups made for new shards
 * (found again by name), and, when a member address does not parse (which
 * cluster_map_validate refuses), the new members of the shards before it.
 */
static int apply_map(struct backend *b,
                     const struct cluster_map *map,
                     char *errmsg,
                     size_t errlen)
{
    struct bshard **cur = NULL;
    struct ring *ring = NULL;
    char sub[256];
    unsigned n_all = b->n_all; /* those made here are not searched */
    unsigned i, from = 0;

    if (map->n_shards == 0) {
        snprintf(errmsg, errlen, "backend: the cluster map has no shards");
        return -1;
    }
    for (i = 0; i < map->n_shards; i++) {
        const struct cluster_shard *cs = &map->shards[i];

        if (cs->n_members == 0 || cs->n_members > CLUSTER_MAX_MEMBERS) {
            snprintf(errmsg, errlen, "backend: shard %s has no members",
                     cs->name);
            return -1;
        }
    }
    /* A change of members or of a shard's state leaves the ring: keep it
     * (building one is O(points): 140 ms at 4096 shards). */
    if (b->ring == NULL || !cluster_map_same_ring(&b->map, map)) {
        ring = cluster_map_ring(map, sub, sizeof(sub));
        if (ring == NULL) {
            snprintf(errmsg, errlen, "backend: ring: %s", sub);
            return -1;
        }
    }
    cur = xcalloc(map->n_shards, sizeof(*cur));
    for (i = 0; i < map->n_shards; i++) {
        const struct cluster_shard *cs = &map->shards[i];

        cur[i] = shard_find(b, cs->name, &from, n_all);
        if (cur[i] == NULL) {
            cur[i] = shard_new(b, cs, sub, sizeof(sub));
        }
        if (cur[i] == NULL) {
            snprintf(errmsg, errlen, "backend: %s", sub);
            goto err;
        }
    }
    /* Same members: a no-op in leader_group_set_members. */
    for (i = 0; i < map->n_shards; i++) {
        const struct cluster_shard *cs = &map->shards[i];

        if (leader_group_set_members(cur[i]->g, cs->members, cs->n_members,
                                     sub, sizeof(sub)) != 0) {
            snprintf(errmsg, errlen, "backend: %s", sub);
            goto err;
        }
    }

    for (i = 0; i < map->n_shards; i++) {
        cur[i]->weight = map->shards[i].weight;
    }
    free(b->cur);
    b->cur = cur;
    if (ring != NULL) {
        ring_free(b->ring);
        b->ring = ring;
    }
    cluster_map_copy(&b->map, map);
    leader_engine_set_epoch(b->engine, map->epoch);
    return 0;

err:
    free(cur);
    ring_free(ring);
    return -1;
}

int backend_map_update(struct backend *b,
                       const struct cluster_map *map,
                       char *errmsg,
                       size_t errlen)
{
    unsigned i;

    if (b->closing) {
        snprintf(errmsg, errlen, "backend: closing");
        return -1;
    }
    /* the first map from meta replaces the file's whatever its epoch: a
     * file may list other shards under the same epoch */
    if (map->epoch <= b->map.epoch && b->confirmed) {
        return 0;
    }
    if (apply_map(b, map, errmsg, errlen) != 0) {
        return -1;
    }
    backend_map_confirmed(b);
    log_info("router: cache: cluster map epoch %" PRIu64 ", %u shard(s)",
             b->map.epoch, b->map.n_shards);
    /* New shards: a status at once, so that /healthz need not wait a
     * period to count them. */
    for (i = 0; i < b->map.n_shards; i++) {
        if (!b->cur[i]->status_seen) {
            poll_shard(b, b->cur[i]);
        }
    }
    return 0;
}

/* ---- construction ----------------------------------------------------- */

static void shards_free(struct backend *b)
{
    unsigned i;

    for (i = 0; i < b->n_all; i++) {
        free(b->all[i]);
    }
    free(b->all);
    free(b->cur);
}

struct backend *backend_new(uv_loop_t *loop,
                            const struct backend_config *cfg,
                            char *errmsg,
                            size_t errlen)
{
    struct backend *b;
    struct leader_config lc = {0};

    if (cfg->map == NULL) {
        snprintf(errmsg, errlen, "backend: no cluster map");
        return NULL;
    }
    b = xcalloc(1, sizeof(*b));
    b->loop = loop;
    b->cfg = *cfg;
    b->confirmed = !cfg->wait_for_map;
    cluster_map_init(&b->map);
    b->cfg.map = &b->map;
    if (b->cfg.request_timeout_ms == 0) {
        b->cfg.request_timeout_ms = BACKEND_REQUEST_TIMEOUT_MS_DEFAULT;
    }
    if (b->cfg.attempt_timeout_ms == 0) {
        b->cfg.attempt_timeout_ms = BACKEND_ATTEMPT_TIMEOUT_MS_DEFAULT;
    }
    if (b->cfg.retry_backoff_ms == 0) {
        b->cfg.retry_backoff_ms = BACKEND_RETRY_BACKOFF_MS_DEFAULT;
    }
    if (b->cfg.status_interval_ms == 0) {
        b->cfg.status_interval_ms = BACKEND_STATUS_INTERVAL_MS_DEFAULT;
    }

    lc.ops = &breq_ops;
    lc.epoch = cfg->map->epoch;
    lc.retry_backoff_ms = b->cfg.retry_backoff_ms;
    /* A refused connection wrote nothing: the next member at once. */
    lc.unsent_retry_at_once = true;
    /* A dead node is retried quickly (nodes restart in a second or two),
     * but not hammered. Per-call timeouts come from send_op(). */
    lc.client.backoff_min_ms = 50;
    lc.client.backoff_max_ms = 500;
    lc.client.connect_timeout_ms = 1000;
    /* A node holds a write in its queue for the budget it is told, then
     * answers EXPIRED ("not executed"): that answer must come back before
     * the attempt times out, or the write's outcome is unknown and its
     * client cannot be told "out of memory" (docs/consistency.md). Half:
     * a leader expiring its whole queue at once answers thousands of
     * requests in one burst, and the last of them must still be in time
     * (a quarter was too little under ASan). */
    lc.client.budget_margin_ms = b->cfg.attempt_timeout_ms / 2;
    /* and the last attempt of a refused write has half an attempt at
     * least: a leader expiring its queue in bursts, under load, answers
     * late, and a last attempt that times out ends "unavailable" */
    lc.busy_answer_min_ms = b->cfg.attempt_timeout_ms / 2;
    b->engine = leader_engine_new(loop, &lc);
    /* The first map, whatever its epoch (0 included). */
    if (apply_map(b, cfg->map, errmsg, errlen) != 0) {
        goto err;
    }

    uv_timer_init(loop, &b->status_timer);
    b->status_timer.data = b;
    b->open = 2;
    /* First poll at once, so /healthz turns green as soon as it can. */
    uv_timer_start(&b->status_timer, on_status_timer, 0,
                   b->cfg.status_interval_ms);
    return b;

err:
    /* It frees itself (and its clients) on the loop. Nothing was started
     * on it, so nothing else waits for it. */
    leader_engine_close(b->engine, NULL, NULL);
    shards_free(b);
    ring_free(b->ring);
    cluster_map_clear(&b->map);
    free(b);
    return NULL;
}

/* ---- queries ------------------------------------------------------------ */

static bool shard_health(const struct backend *b,
                         const struct bshard *s,
                         char *why,
                         size_t whylen);

unsigned backend_shard_of(const struct backend *b, const char *key, size_t len)
{
    return ring_lookup(b->ring, key, len);
}

unsigned backend_shard_count(const struct backend *b)
{
    return b->map.n_shards;
}

uint64_t backend_epoch(const struct backend *b)
{
    return b->map.epoch;
}

void backend_shard_info(const struct backend *b,
                        unsigned i,
                        struct backend_shard_info *out)
{
    const struct bshard *s = b->cur[i];
    struct leader_group_counters counters;

    leader_group_counters(s->g, &counters);
    memset(out, 0, sizeof(*out));
    out->name = s->name;
    out->weight = s->weight;
    out->n_members = leader_group_size(s->g);
    out->status_seen = s->status_seen;
    out->status_age_ms =
        s->status_seen ? uv_now(b->loop) - s->status_at : UINT64_MAX;
    out->healthy = shard_health(b, s, NULL, 0);
    out->status_from = s->status_from;
    out->leader_id = s->leader_id;
    out->leader_rpc = s->leader_rpc;
    out->term = s->term;
    out->commit_index = s->commit_index;
    out->applied_index = s->applied_index;
    out->items = s->items;
    out->evictions = s->evictions;
    out->limit_maxbytes = s->limit_maxbytes;
    out->bytes = s->bytes;
    memcpy(out->requests, s->requests, sizeof(out->requests));
    out->gets = s->gets;
    out->sets = s->sets;
    out->hits = s->hits;
    out->misses = s->misses;
    out->retries = counters.retries;
    out->owner_refusals = s->owner_refusals;
    out->moving_refusals = s->moving_refusals;
    out->leader_changes = counters.leader_changes;
    out->errors = s->errors;
    out->latency_ns_sum = s->latency_ns_sum;
    out->latency_count = s->latency_count;
}

void backend_latency(const struct backend *b,
                     uint64_t counts[BACKEND_LATENCY_BUCKETS + 1],
                     uint64_t *sum_ns,
                     uint64_t *count)
{
    memcpy(counts, b->latency, sizeof(b->latency));
    *sum_ns = b->latency_ns_sum;
    *count = b->latency_count;
}

/* @why may be NULL (with @whylen 0). */
static bool shard_health(const struct backend *b,
                         const struct bshard *s,
                         char *why,
                         size_t whylen)
{
    uint64_t stale = (uint64_t)STATUS_STALE_PERIODS * b->cfg.status_interval_ms;
    uint64_t now = uv_now(b->loop);

    if (!s->status_seen) {
        snprintf(why, whylen, "shard %s: no status answer yet", s->name);
        return false;
    }
    if (now - s->status_at > stale) {
        snprintf(why, whylen, "shard %s: no status answer for %" PRIu64 " ms",
                 s->name, now - s->status_at);
        return false;
    }
    if (s->leader_id == 0) {
        snprintf(why, whylen, "shard %s: no leader", s->name);
        return false;
    }
    return true;
}

bool backend_healthy(const struct backend *b, char *why, size_t whylen)
{
    unsigned i;

    if (b->closing) {
        snprintf(why, whylen, "router is stopping");
        return false;
    }
    if (!b->confirmed) {
        snprintf(why, whylen, "no cluster map from the meta group yet");
        return false;
    }
    for (i = 0; i < b->map.n_shards; i++) {
        if (!shard_health(b, b->cur[i], why, whylen)) {
            return false;
        }
    }
    snprintf(why, whylen, "ok");
    return true;
}

/* ---- close ------------------------------------------------------------ */

static void backend_maybe_free(struct backend *b)
{
    void (*cb)(void *) = b->close_cb;
    void *data = b->close_data;

    if (--b->open > 0) {
        return;
    }
    ring_free(b->ring);
    shards_free(b);
    cluster_map_clear(&b->map);
    free(b);
    if (cb) {
        cb(data);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    backend_maybe_free(h->data);
}

static void on_engine_closed(void *data)
{
    backend_maybe_free(data);
}

void backend_close(struct backend *b, void (*cb)(void *data), void *data)
{
    b->closing = true;
    b->close_cb = cb;
    b->close_data = data;
    uv_timer_stop(&b->status_timer);
    /* Requests waiting (a retry, an owner) or in flight complete inside (the
     * engine ends them LEADER_CLOSING: OUTCOME_UNAVAILABLE); their
     * callbacks may submit again, which completes at once (closing). The
     * status poll in flight ends with UV_ECANCELED. */
    leader_engine_close(b->engine, on_engine_closed, b);
    uv_close((uv_handle_t *)&b->status_timer, on_timer_closed);
}
