/*
 * backend: see backend.h.
 *
 * Life of one request (struct breq):
 *
 *   submit --> attempt(member) --rpc--> on_reply --classify-->
 *                 ^    ^                      |        |          |
 *                 |    +------ RETRY_NOW -----+        |          DONE --> cb
 *                 +-- retry timer <-- RETRY_WAIT ------+
 *
 * A breq is owned by exactly one place at a time: the rpc_client (one call
 * in flight, its callback fires exactly once), or the wait list (sorted by
 * due time, one timer armed at the head). Closing empties the wait list and
 * closes the clients, which fail their calls with UV_ECANCELED, so every
 * breq completes before the backend is freed.
 */
#include "router/backend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/ring.h"
#include "proto/cache_pb.h"
#include "rpc/rpc_client.h"

/* A node address that never answers the status poll for this long is
 * reported stale by /healthz. */
#define STATUS_STALE_PERIODS 3
/* How long a node whose connection was refused is skipped when picking the
 * next member to try (unless every member is down). */
#define NODE_DOWN_MS 1000
/* Log "stale map" at most this often per shard. */
#define EPOCH_WARN_EVERY_MS 10000

const double backend_latency_bounds[BACKEND_LATENCY_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0,
};

/* One distinct node RPC address, shared by every shard it hosts. */
struct bnode {
    char addr[CLUSTER_ADDR_MAX];
    struct rpc_client *client;
    uint64_t down_until; /* uv_now() ms; 0 = not known down */
};

struct bshard {
    struct backend *b;
    char name[CLUSTER_NAME_MAX];
    unsigned weight;
    unsigned n_members;
    uint64_t member_id[CLUSTER_MAX_MEMBERS];
    unsigned member_node[CLUSTER_MAX_MEMBERS]; /* index into b->nodes */
    unsigned leader; /* member index we send to first (a guess) */

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

    /* counters */
    uint64_t requests[CACHE_OP__COUNT];
    uint64_t gets, sets, hits, misses, retries, leader_changes, errors;
    uint64_t latency_ns_sum, latency_count;
    uint64_t epoch_warned_at;
};

/* One cache op on one shard. */
struct breq {
    struct backend *b;
    struct cache_call *call;
    struct bshard *shard;
    unsigned member; /* asked by the current attempt / next attempt */
    unsigned hops;   /* immediate retries since the last wait */
    unsigned attempts;
    uint64_t start_ns;        /* clock_mono_ns() at submit, for latency */
    uint64_t deadline;        /* uv_now() ms */
    uint64_t due;             /* while waiting: uv_now() ms of the retry */
    struct breq *prev, *next; /* wait list */
};

/* FLUSH_ALL: one sub-call per shard. */
struct bfan {
    struct cache_call *parent;
    unsigned pending;
    enum cache_status status;
    struct cache_call subs[];
};

struct backend {
    uv_loop_t *loop;
    struct backend_config cfg;
    struct cluster_map map;
    struct ring *ring;
    struct bshard shards[CLUSTER_MAX_SHARDS];
    unsigned n_shards;
    struct bnode nodes[CLUSTER_MAX_SHARDS * CLUSTER_MAX_MEMBERS];
    unsigned n_nodes;

    struct breq *wait_head, *wait_tail;
    uv_timer_t retry_timer;
    uint64_t retry_due; /* 0 = not armed */
    uv_timer_t status_timer;

    uint64_t latency[BACKEND_LATENCY_BUCKETS + 1];
    uint64_t latency_ns_sum;
    uint64_t latency_count;

    bool closing;
    unsigned open; /* handles + clients not yet closed */
    void (*close_cb)(void *data);
    void *close_data;
};

static void attempt(struct breq *r);

/* ---- helpers ------------------------------------------------------------ */

static struct rpc_client *member_client(const struct bshard *s, unsigned m)
{
    return s->b->nodes[s->member_node[m]].client;
}

static bool member_down(const struct bshard *s, unsigned m)
{
    const struct bnode *n = &s->b->nodes[s->member_node[m]];

    return n->down_until > uv_now(s->b->loop);
}

/* The member after @from, skipping nodes known down unless all are. */
static unsigned next_member(const struct bshard *s, unsigned from)
{
    unsigned i;

    for (i = 1; i < s->n_members; i++) {
        unsigned m = (from + i) % s->n_members;
        if (!member_down(s, m)) {
            return m;
        }
    }
    return (from + 1) % s->n_members;
}

/* Member index named by a NOT_LEADER hint or a status, or -1. The id is
 * authoritative; the address is the fallback for nodes that send no id. */
static int member_of(const struct bshard *s, uint64_t id, const char *rpc)
{
    unsigned m;

    if (id != 0) {
        for (m = 0; m < s->n_members; m++) {
            if (s->member_id[m] == id) {
                return (int)m;
            }
        }
    }
    if (rpc != NULL && *rpc != '\0') {
        for (m = 0; m < s->n_members; m++) {
            if (strcmp(s->b->nodes[s->member_node[m]].addr, rpc) == 0) {
                return (int)m;
            }
        }
    }
    return -1;
}

static void adopt_leader(struct bshard *s, unsigned m, const char *why)
{
    if (s->leader == m) {
        return;
    }
    log_info("router: shard %s: leader is now member %" PRIu64 " (%s), %s",
             s->name, s->member_id[m], s->b->nodes[s->member_node[m]].addr,
             why);
    s->leader = m;
    s->leader_changes++;
}

/* @m failed us without naming a leader: stop sending there first. Other
 * requests may already have moved the guess; keep theirs. */
static void leave_member(struct bshard *s, unsigned m)
{
    if (s->leader == m) {
        s->leader = next_member(s, m);
    }
}

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
    enum cache_status st = call->result.status;

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
    if (st == CACHE_UNAVAILABLE || st == CACHE_BAD_REQUEST ||
        st == CACHE_NOT_LEADER || st == CACHE_TOO_LARGE) {
        s->errors++;
    }
    latency_add(r->b, s, clock_mono_ns() - r->start_ns);
    free(r);
    call->cb(call);
}

/* Complete with a status the router produced (no value). */
static void fail(struct breq *r, enum cache_status st)
{
    cache_result_clear(&r->call->result);
    r->call->result.status = st;
    complete(r);
}

/* ---- the retry wait list ---------------------------------------------- */

static void on_retry_timer(uv_timer_t *t);

static void arm_retry_timer(struct backend *b)
{
    uint64_t now = uv_now(b->loop);

    if (b->wait_head == NULL) {
        uv_timer_stop(&b->retry_timer);
        b->retry_due = 0;
        return;
    }
    if (b->retry_due != 0 && b->retry_due <= b->wait_head->due) {
        return;
    }
    b->retry_due = b->wait_head->due;
    uv_timer_start(&b->retry_timer, on_retry_timer,
                   b->retry_due > now ? b->retry_due - now : 0, 0);
}

/* Park @r until now + backoff (never past its deadline) and try @member
 * then. Sorted insert from the tail: with one backoff value it is O(1). */
static void wait_then_retry(struct breq *r, unsigned member)
{
    struct backend *b = r->b;
    struct breq *p = b->wait_tail;

    r->member = member;
    r->hops = 0;
    r->due = uv_now(b->loop) + b->cfg.retry_backoff_ms;
    if (r->due > r->deadline) {
        r->due = r->deadline;
    }
    while (p && p->due > r->due) {
        p = p->prev;
    }
    r->prev = p;
    r->next = p ? p->next : b->wait_head;
    if (r->next) {
        r->next->prev = r;
    } else {
        b->wait_tail = r;
    }
    if (p) {
        p->next = r;
    } else {
        b->wait_head = r;
    }
    arm_retry_timer(b);
}

static void wait_unlink(struct backend *b, struct breq *r)
{
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        b->wait_head = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    } else {
        b->wait_tail = r->prev;
    }
    r->prev = r->next = NULL;
}

static void on_retry_timer(uv_timer_t *t)
{
    struct backend *b = t->data;
    uint64_t now = uv_now(b->loop);
    struct breq *due = NULL;
    struct breq **tailp = &due;
    struct breq *r;

    /* Detach the due requests first: attempts may park requests again. */
    b->retry_due = 0;
    while (b->wait_head && b->wait_head->due <= now) {
        r = b->wait_head;
        wait_unlink(b, r);
        *tailp = r;
        tailp = &r->next;
    }
    arm_retry_timer(b);
    while (due) {
        r = due;
        due = r->next;
        r->next = NULL;
        attempt(r);
    }
}

/* Retry at once (a leader hint, another member to try): bounded so that a
 * ping-pong of stale hints cannot spin, after which we wait. */
static void retry_now(struct breq *r, unsigned member)
{
    if (r->hops++ >= 2 * r->shard->n_members) {
        wait_then_retry(r, member);
        return;
    }
    r->member = member;
    attempt(r);
}

/* ---- one attempt ---------------------------------------------------- */

enum verdict {
    DONE,       /* the result is filled (or set by fail()) */
    RETRY_NOW,  /* r->member updated; retry immediately */
    RETRY_WAIT, /* r->member updated; retry after the backoff */
    GIVE_UP,    /* outcome unknown for a write, closing, ...: UNAVAILABLE */
};

/*
 * Safe retries. A retried write must never apply twice, and the node's
 * state machine does not deduplicate client requests, so the router retries
 * a request only when it knows the node did not execute it, except for
 * reads (GET), which are idempotent:
 *
 *   certainly not executed -> retried for every op, until the deadline:
 *     RPC_NOT_LEADER     the node proposed nothing (raft/group.h: ENOTLEADER
 *                        is "nothing proposed"); with a hint naming another
 *                        member: retry there at once; without (or naming a
 *                        member refused within NODE_DOWN_MS): next member
 *                        after the backoff
 *     RPC_NO_GROUP       the node does not (yet) host the shard: next member
 *                        after the backoff
 *     UV_ECONNREFUSED, UV_EAI_*, UV_EADDRNOTAVAIL
 *                        the connection attempt failed, nothing was written:
 *                        next member at once (immediate retries are capped
 *                        at 2 x members in a row, then the backoff applies)
 *
 *   outcome unknown -> GET retried (next member for connection failures,
 *   same guess after the backoff otherwise); every other op completes with
 *   CACHE_UNAVAILABLE (memcached clients see SERVER_ERROR):
 *     RPC_UNAVAILABLE    no leader, closing, or leadership lost after the
 *                        command was proposed
 *     UV_ETIMEDOUT       the call (or the connect) timed out
 *     UV_ECONNRESET, UV_EPIPE, UV_EPROTO, and every other code
 *                        the connection was lost with the call queued or
 *                        sent
 *
 * rpc_client reports "connection lost" for every call it had accepted, sent
 * or still queued, and also reports a connect timeout as UV_ETIMEDOUT, so
 * "never sent" is decided conservatively from the error code alone: only
 * codes that can only come from a failed connection attempt or name lookup
 * count as never sent (EHOSTUNREACH/ENETUNREACH can also surface on an
 * established connection, so they count as possibly sent).
 *
 * Not retried at all: RPC_WRONG_EPOCH (our map is stale: retrying cannot
 * help; CACHE_UNAVAILABLE plus a warning) and RPC_BAD_REQUEST
 * (CACHE_BAD_REQUEST).
 */
static bool never_sent(int status)
{
    if (status == UV_ECONNREFUSED || status == UV_EADDRNOTAVAIL) {
        return true;
    }
    /* name lookup failures: UV_EAI_ADDRFAMILY (-3000) .. UV_EAI_PROTOCOL */
    return status <= UV_EAI_ADDRFAMILY && status >= UV_EAI_PROTOCOL;
}

static enum verdict classify(struct breq *r,
                             int status,
                             const Ringmq__RpcResponse *resp)
{
    struct bshard *s = r->shard;
    struct backend *b = r->b;
    bool is_read = r->call->op.type == CACHE_OP_GET;
    unsigned asked = r->member;
    int hint;

    if (status == UV_ECANCELED || b->closing) {
        return GIVE_UP;
    }
    if (status < 0) {
        if (never_sent(status)) {
            b->nodes[s->member_node[asked]].down_until =
                uv_now(b->loop) + NODE_DOWN_MS;
            leave_member(s, asked);
            r->member = next_member(s, asked);
            return RETRY_NOW;
        }
        log_debug("router: shard %s: %s member %" PRIu64 ": %s", s->name,
                  cache_op_name(r->call->op.type), s->member_id[asked],
                  uv_strerror(status));
        if (status == UV_ECONNRESET) {
            /* Usually the node died: ignore hints naming it for a moment
             * (its followers keep naming it until they elect). */
            b->nodes[s->member_node[asked]].down_until =
                uv_now(b->loop) + NODE_DOWN_MS;
        }
        leave_member(s, asked);
        if (!is_read) {
            return GIVE_UP;
        }
        r->member = s->leader;
        return RETRY_WAIT;
    }
    b->nodes[s->member_node[asked]].down_until = 0;
    switch (resp->code) {
        case RINGMQ__RPC_CODE__RPC_OK:
            if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE ||
                cache_result_from_pb(resp->cache, &r->call->result) != 0) {
                log_warn("router: shard %s: member %" PRIu64
                         " sent a reply without a cache result",
                         s->name, s->member_id[asked]);
                return GIVE_UP;
            }
            return DONE;
        case RINGMQ__RPC_CODE__RPC_NOT_LEADER:
            hint = member_of(s, resp->leader_id, resp->leader_rpc);
            /* A hint naming a node we just failed to connect to is the
             * follower's memory of a dead leader (it has not timed out yet):
             * following it would bounce between the two until the election. */
            if (hint >= 0 && (unsigned)hint != asked &&
                !member_down(s, (unsigned)hint)) {
                adopt_leader(s, (unsigned)hint, "NOT_LEADER hint");
                r->member = (unsigned)hint;
                return RETRY_NOW;
            }
            leave_member(s, asked);
            r->member = next_member(s, asked);
            return RETRY_WAIT;
        case RINGMQ__RPC_CODE__RPC_NO_GROUP:
            leave_member(s, asked);
            r->member = next_member(s, asked);
            return RETRY_WAIT;
        case RINGMQ__RPC_CODE__RPC_UNAVAILABLE:
            if (!is_read) {
                return GIVE_UP;
            }
            r->member = s->leader;
            return RETRY_WAIT;
        case RINGMQ__RPC_CODE__RPC_WRONG_EPOCH: {
            uint64_t now = uv_now(b->loop);
            if (s->epoch_warned_at == 0 ||
                now - s->epoch_warned_at >= EPOCH_WARN_EVERY_MS) {
                s->epoch_warned_at = now;
                log_warn("router: shard %s: member %" PRIu64
                         " refused epoch %" PRIu64
                         " (%s): this router's cluster map is stale",
                         s->name, s->member_id[asked], b->map.epoch,
                         resp->error ? resp->error : "");
            }
            return GIVE_UP;
        }
        case RINGMQ__RPC_CODE__RPC_BAD_REQUEST:
            cache_result_clear(&r->call->result);
            r->call->result.status = CACHE_BAD_REQUEST;
            return DONE;
        default:
            return GIVE_UP;
    }
}

static void on_reply(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct breq *r = data;

    switch (classify(r, status, resp)) {
        case DONE:
            complete(r);
            break;
        case RETRY_NOW:
            r->shard->retries++;
            retry_now(r, r->member);
            break;
        case RETRY_WAIT:
            r->shard->retries++;
            wait_then_retry(r, r->member);
            break;
        case GIVE_UP:
            fail(r, CACHE_UNAVAILABLE);
            break;
    }
}

static void attempt(struct breq *r)
{
    struct backend *b = r->b;
    struct bshard *s = r->shard;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp pb;
    uint64_t now = uv_now(b->loop);
    uint64_t left;
    int rv;

    if (b->closing) {
        fail(r, CACHE_UNAVAILABLE);
        return;
    }
    if (now >= r->deadline) {
        log_debug("router: shard %s: %s: deadline after %u attempt(s)", s->name,
                  cache_op_name(r->call->op.type), r->attempts);
        fail(r, CACHE_UNAVAILABLE);
        return;
    }
    left = r->deadline - now;
    if (r->call->op.type == CACHE_OP_GET && left > b->cfg.attempt_timeout_ms) {
        left = b->cfg.attempt_timeout_ms;
    }
    cache_op_to_pb(&r->call->op, &pb);
    req.epoch = b->map.epoch;
    req.group = s->name;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    r->attempts++;
    rv = rpc_client_call(member_client(s, r->member), &req, (unsigned)left,
                         on_reply, r, NULL);
    if (rv == UV_E2BIG) {
        fail(r, CACHE_TOO_LARGE);
    } else if (rv != 0) {
        fail(r, CACHE_UNAVAILABLE);
    }
}

/* ---- submit ----------------------------------------------------------- */

static void submit_shard(struct backend *b,
                         struct cache_call *call,
                         unsigned shard)
{
    struct breq *r = xcalloc(1, sizeof(*r));

    r->b = b;
    r->call = call;
    r->shard = &b->shards[shard];
    r->member = r->shard->leader;
    r->start_ns = clock_mono_ns();
    r->deadline = uv_now(b->loop) + b->cfg.request_timeout_ms;
    attempt(r);
}

static void fan_done(struct cache_call *sub)
{
    struct bfan *f = sub->data;
    struct cache_call *parent;

    /* Any shard's failure is the op's failure; UNAVAILABLE wins. */
    if (sub->result.status != CACHE_OK && f->status != CACHE_UNAVAILABLE) {
        f->status = sub->result.status;
    }
    cache_result_clear(&sub->result);
    if (--f->pending > 0) {
        return;
    }
    parent = f->parent;
    parent->result.status = f->status;
    free(f);
    parent->cb(parent);
}

void backend_submit(struct backend *b, struct cache_call *call)
{
    unsigned i;
    unsigned n = b->n_shards;

    cache_result_init(&call->result);
    if (b->closing) {
        call->result.status = CACHE_UNAVAILABLE;
        call->cb(call);
        return;
    }
    if (call->op.type == CACHE_OP_FLUSH_ALL) {
        struct bfan *f = xcalloc(1, sizeof(*f) + n * sizeof(f->subs[0]));

        f->parent = call;
        f->pending = n;
        f->status = CACHE_OK;
        for (i = 0; i < n; i++) {
            f->subs[i].op = call->op;
            f->subs[i].cb = fan_done;
            f->subs[i].data = f;
            cache_result_init(&f->subs[i].result);
        }
        /* f may be freed by the last (possibly synchronous) completion:
         * touch only f->subs[i] before submitting it. */
        for (i = 0; i < n; i++) {
            submit_shard(b, &f->subs[i], i);
        }
        return;
    }
    submit_shard(b, call, ring_lookup(b->ring, call->op.key, call->op.key_len));
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
    if (status == 0 && resp->code == RINGMQ__RPC_CODE__RPC_OK &&
        resp->body_case == RINGMQ__RPC_RESPONSE__BODY_STATUS) {
        for (i = 0; i < resp->status->n_groups; i++) {
            if (strcmp(resp->status->groups[i]->name, s->name) == 0) {
                g = resp->status->groups[i];
                break;
            }
        }
    }
    if (g == NULL) {
        /* Ask someone else next time. */
        s->status_failed = true;
        s->status_member = next_member(s, s->status_member);
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
    m = member_of(s, g->leader_id, g->leader_rpc);
    if (m >= 0 && !member_down(s, (unsigned)m)) {
        adopt_leader(s, (unsigned)m, "status");
    }
}

static void on_status_timer(uv_timer_t *t)
{
    struct backend *b = t->data;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__StatusRequest sr = RINGMQ__STATUS_REQUEST__INIT;
    unsigned i;

    req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
    req.status = &sr;
    for (i = 0; i < b->n_shards; i++) {
        struct bshard *s = &b->shards[i];
        if (s->status_inflight) {
            continue;
        }
        /* The member we believe leads has the freshest numbers; after a
         * failed poll, walk the members instead (the guess may be dead). */
        if (!s->status_failed) {
            s->status_member = s->leader;
        }
        req.group = s->name;
        if (rpc_client_call(member_client(s, s->status_member), &req,
                            b->cfg.status_interval_ms, on_status, s,
                            NULL) == 0) {
            s->status_inflight = true;
        }
    }
}

/* ---- construction ----------------------------------------------------- */

static int node_index(struct backend *b, const char *addr)
{
    unsigned i;

    for (i = 0; i < b->n_nodes; i++) {
        if (strcmp(b->nodes[i].addr, addr) == 0) {
            return (int)i;
        }
    }
    return -1;
}

struct backend *backend_new(uv_loop_t *loop,
                            const struct backend_config *cfg,
                            char *errmsg,
                            size_t errlen)
{
    struct backend *b;
    struct ring_node rn[CLUSTER_MAX_SHARDS];
    struct rpc_client_config cc = {0};
    char sub[256];
    unsigned i, m;

    if (cfg->map == NULL || cfg->map->n_shards == 0 ||
        cfg->map->n_shards > CLUSTER_MAX_SHARDS) {
        snprintf(errmsg, errlen, "backend: the cluster map has no shards");
        return NULL;
    }
    b = xcalloc(1, sizeof(*b));
    b->loop = loop;
    b->cfg = *cfg;
    b->map = *cfg->map;
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

    b->n_shards = b->map.n_shards;
    for (i = 0; i < b->n_shards; i++) {
        /* from the caller's map: copying out of b->map into b->shards
         * would have gcc warn that the strings may overlap */
        const struct cluster_shard *cs = &cfg->map->shards[i];
        struct bshard *s = &b->shards[i];

        if (cs->n_members == 0 || cs->n_members > CLUSTER_MAX_MEMBERS) {
            snprintf(errmsg, errlen, "backend: shard %s has no members",
                     cs->name);
            goto err_after_alloc;
        }
        s->b = b;
        snprintf(s->name, sizeof(s->name), "%s", cs->name);
        s->weight = cs->weight;
        s->n_members = cs->n_members;
        for (m = 0; m < cs->n_members; m++) {
            int n = node_index(b, cs->members[m].rpc);
            if (n < 0) {
                n = (int)b->n_nodes++;
                snprintf(b->nodes[n].addr, sizeof(b->nodes[n].addr), "%s",
                         cs->members[m].rpc);
            }
            s->member_id[m] = cs->members[m].id;
            s->member_node[m] = (unsigned)n;
        }
        rn[i].name = s->name;
        rn[i].weight = s->weight;
    }
    b->ring = ring_new(rn, b->n_shards, sub, sizeof(sub));
    if (b->ring == NULL) {
        snprintf(errmsg, errlen, "backend: ring: %s", sub);
        goto err_after_alloc;
    }

    /* A dead node is retried quickly (nodes restart in a second or two),
     * but not hammered. Per-call timeouts come from attempt(). */
    cc.backoff_min_ms = 50;
    cc.backoff_max_ms = 500;
    cc.connect_timeout_ms = 1000;
    for (i = 0; i < b->n_nodes; i++) {
        cc.address = b->nodes[i].addr;
        b->nodes[i].client = rpc_client_new(loop, &cc, sub, sizeof(sub));
        if (b->nodes[i].client == NULL) {
            snprintf(errmsg, errlen, "backend: %s", sub);
            goto err_after_clients;
        }
    }

    uv_timer_init(loop, &b->retry_timer);
    b->retry_timer.data = b;
    uv_timer_init(loop, &b->status_timer);
    b->status_timer.data = b;
    b->open = 2 + b->n_nodes;
    /* First poll at once, so /healthz turns green as soon as it can. */
    uv_timer_start(&b->status_timer, on_status_timer, 0,
                   b->cfg.status_interval_ms);
    return b;

err_after_clients:
    /* Clients own handles: they free themselves on the loop. Nothing was
     * called on them, so nothing else waits for them. */
    while (i-- > 0) {
        rpc_client_close(b->nodes[i].client, NULL, NULL);
    }
    ring_free(b->ring);
err_after_alloc:
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
    return b->n_shards;
}

uint64_t backend_epoch(const struct backend *b)
{
    return b->map.epoch;
}

void backend_shard_info(const struct backend *b,
                        unsigned i,
                        struct backend_shard_info *out)
{
    const struct bshard *s = &b->shards[i];

    memset(out, 0, sizeof(*out));
    out->name = s->name;
    out->weight = s->weight;
    out->n_members = s->n_members;
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
    out->retries = s->retries;
    out->leader_changes = s->leader_changes;
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
    for (i = 0; i < b->n_shards; i++) {
        if (!shard_health(b, &b->shards[i], why, whylen)) {
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
    free(b);
    if (cb) {
        cb(data);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    backend_maybe_free(h->data);
}

static void on_client_closed(void *data)
{
    backend_maybe_free(data);
}

void backend_close(struct backend *b, void (*cb)(void *data), void *data)
{
    struct breq *r;
    unsigned i;

    b->closing = true;
    b->close_cb = cb;
    b->close_data = data;
    uv_timer_stop(&b->status_timer);
    uv_timer_stop(&b->retry_timer);
    /* Parked requests: fail them now. Their callbacks may submit again;
     * closing makes those complete at once without touching the list. */
    while ((r = b->wait_head) != NULL) {
        wait_unlink(b, r);
        fail(r, CACHE_UNAVAILABLE);
    }
    /* In-flight requests complete with UV_ECANCELED inside each close. */
    for (i = 0; i < b->n_nodes; i++) {
        rpc_client_close(b->nodes[i].client, on_client_closed, b);
    }
    uv_close((uv_handle_t *)&b->retry_timer, on_timer_closed);
    uv_close((uv_handle_t *)&b->status_timer, on_timer_closed);
}
