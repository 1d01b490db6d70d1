/*
 * test_backend: the router's backend against fake storage nodes, all on one
 * libuv loop over 127.0.0.1.
 *
 * Three fake nodes (rpc/rpc_server.h) host both shards of a two-shard map
 * (s1 weight 1, s2 weight 2), as real nodes host several groups. They keep
 * one in-memory table per shard, shared by the three, as if replicated.
 * Knobs in struct fx decide who leads each shard, whether followers name
 * the leader, and which replies are forced (UNAVAILABLE, BAD_REQUEST, ...);
 * a fake can also hold requests unanswered until the test releases them.
 *
 * The fakes also answer the queue commands of the router's AMQP side
 * (router/amqp_remote) on the groups "<shard>.mq", with the same leaders,
 * so that what both sides share (router/leader: leader tracking and
 * retries) is tested from both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "common/buf.h"
#include "sm/cache_op.h"
#include "common/clock.h"
#include "proto/map_yaml.h"
#include "common/log.h"
#include "common/ring.h"
#include "proto/rpc_frame.h"
#include "rpc/rpc_server.h"
#include "router/admin.h"
#include "router/amqp_remote.h"
#include "router/backend.h"

#define N_FAKES 3
#define N_SHARDS 2
#define MAX_HELD 256
#define MAX_ITEMS 16384
#define EPOCH 7
#define HOLD_OFF (-1)
#define HOLD_ALL N_SHARDS /* else: the index of the one shard held */

struct item {
    char *key;
    size_t klen;
    char *val;
    size_t vlen;
};

struct fake {
    unsigned idx; /* node id = idx + 1 */
    struct rpc_server *srv;
    int port;
    char addr[32];
    bool closed;
    unsigned cache_reqs;
    unsigned reads;
    unsigned writes;
    unsigned per_shard[N_SHARDS];
    unsigned mq_reqs; /* queue commands (any group, any answer) */
    unsigned mq_done; /* queue commands answered OK */
};

struct held {
    struct fake *f;
    struct rpc_server_req *req;
    const Ringmq__RpcRequest *msg;
};

struct fx {
    uv_loop_t loop;
    uv_timer_t ticker; /* bounds each uv_run(ONCE) */
    struct fake fakes[N_FAKES];
    struct cluster_map map;
    struct ring *ring;
    struct backend *b;
    bool backend_closed;
    struct amqp_remote *mq; /* the AMQP side, when a test starts it */
    bool mq_closed;

    /* behaviour */
    int leader[N_SHARDS];   /* fake index, -1 = none */
    bool hints;             /* followers name the leader (and status) */
    int hold;               /* keep cache requests unanswered: HOLD_* */
    bool unavail_writes;    /* leader: RPC_UNAVAILABLE for writes */
    unsigned unavail_reads; /* leader: RPC_UNAVAILABLE for so many reads */
    bool bad_request;       /* leader: RPC_BAD_REQUEST */
    bool wrong_epoch;       /* everyone: RPC_WRONG_EPOCH */
    /* followers' NOT_LEADER names this member (of every shard) instead of
     * the leader: the memory of a leader that died; -1 = off */
    int stale_hint;

    /* observations */
    unsigned misrouted; /* key sent to a shard the ring does not give it */
    struct held held[MAX_HELD];
    unsigned n_held;
    struct item items[N_SHARDS][MAX_ITEMS];
    unsigned n_items[N_SHARDS];
    unsigned status_polls;
    unsigned digests_asked; /* status polls that asked for digests */
};

static struct fx *F;

/* ---- fake nodes -------------------------------------------------------- */

static int shard_index(const char *name)
{
    unsigned s;

    for (s = 0; s < N_SHARDS; s++) {
        if (strcmp(F->map.shards[s].name, name) == 0) {
            return (int)s;
        }
    }
    return -1;
}

static struct item *find_item(unsigned s, const void *key, size_t klen)
{
    unsigned i;

    for (i = 0; i < F->n_items[s]; i++) {
        struct item *it = &F->items[s][i];
        if (it->klen == klen && memcmp(it->key, key, klen) == 0) {
            return it;
        }
    }
    return NULL;
}

static void clear_items(unsigned s)
{
    unsigned i;

    for (i = 0; i < F->n_items[s]; i++) {
        free(F->items[s][i].key);
        free(F->items[s][i].val);
    }
    F->n_items[s] = 0;
}

static void reply_code(struct rpc_server_req *req, Ringmq__RpcCode code)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;

    resp.code = code;
    rpc_server_reply(req, &resp);
}

/* A follower's answer for shard @s: names the leader (with hints), or the
 * member stale_hint names. */
static void reply_not_leader(struct rpc_server_req *req, unsigned s)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    const struct cluster_member *m = NULL;

    resp.code = rpc_code(OUTCOME_NOT_LEADER);
    if (F->stale_hint >= 0) {
        m = &F->map.shards[s].members[F->stale_hint];
    } else if (F->hints && F->leader[s] >= 0) {
        m = &F->map.shards[s].members[F->leader[s]];
    }
    if (m != NULL) {
        resp.leader_id = m->id;
        resp.leader_rpc = (char *)m->rpc;
    }
    rpc_server_reply(req, &resp);
}

/* Answer a cache request as fake @f would now. */
static void answer(struct fake *f,
                   struct rpc_server_req *req,
                   const Ringmq__RpcRequest *msg)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__CacheResult res = RINGMQ__CACHE_RESULT__INIT;
    const Ringmq__CacheOp *op = msg->cache;
    int s = shard_index(msg->group);
    bool write = op->type != CACHE_OP_GET;
    struct item *it;

    if (s < 0) {
        reply_code(req, RINGMQ__RPC_CODE__RPC_NO_GROUP);
        return;
    }
    if (F->wrong_epoch) {
        reply_code(req, RINGMQ__RPC_CODE__RPC_WRONG_EPOCH);
        return;
    }
    if (F->leader[s] != (int)f->idx) {
        reply_not_leader(req, (unsigned)s);
        return;
    }
    if (F->bad_request) {
        reply_code(req, RINGMQ__RPC_CODE__RPC_BAD_REQUEST);
        return;
    }
    if (write && F->unavail_writes) {
        reply_code(req, RINGMQ__RPC_CODE__RPC_UNAVAILABLE);
        return;
    }
    if (!write && F->unavail_reads > 0) {
        F->unavail_reads--;
        reply_code(req, RINGMQ__RPC_CODE__RPC_UNAVAILABLE);
        return;
    }
    f->per_shard[s]++;
    switch (op->type) {
        case CACHE_OP_GET:
            it = find_item((unsigned)s, op->key.data, op->key.len);
            if (it) {
                res.status = CACHE_HIT;
                res.value.data = (uint8_t *)it->val;
                res.value.len = it->vlen;
            } else {
                res.status = CACHE_NOT_FOUND;
            }
            break;
        case CACHE_OP_FLUSH_ALL:
            clear_items((unsigned)s);
            res.status = CACHE_OK;
            break;
        default:
            it = find_item((unsigned)s, op->key.data, op->key.len);
            if (it == NULL) {
                assert_true(F->n_items[s] < MAX_ITEMS);
                it = &F->items[s][F->n_items[s]++];
                it->key = xmemdup(op->key.data, op->key.len);
                it->klen = op->key.len;
                it->val = NULL;
            }
            free(it->val);
            it->val = xmalloc(op->value.len + 1);
            if (op->value.len > 0) {
                memcpy(it->val, op->value.data, op->value.len);
            }
            it->vlen = op->value.len;
            res.status = CACHE_STORED;
            break;
    }
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
    resp.cache = &res;
    rpc_server_reply(req, &resp);
}

/* A queue command on "<shard>.mq": the shard's leader applies it (an empty
 * OK result), followers answer as for cache requests. */
static void answer_mq(struct fake *f,
                      struct rpc_server_req *req,
                      const Ringmq__RpcRequest *msg)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MqResult res = RINGMQ__MQ_RESULT__INIT;
    char shard[CLUSTER_NAME_MAX];
    const char *dot = strrchr(msg->group, '.');
    int s = -1;

    f->mq_reqs++;
    if (dot != NULL && strcmp(dot, ".mq") == 0 &&
        (size_t)(dot - msg->group) < sizeof(shard)) {
        snprintf(shard, sizeof(shard), "%.*s", (int)(dot - msg->group),
                 msg->group);
        s = shard_index(shard);
    }
    if (s < 0) {
        reply_code(req, RINGMQ__RPC_CODE__RPC_NO_GROUP);
        return;
    }
    if (F->leader[s] != (int)f->idx) {
        reply_not_leader(req, (unsigned)s);
        return;
    }
    f->mq_done++;
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MQ;
    resp.mq = &res;
    rpc_server_reply(req, &resp);
}

static void answer_status(struct fake *f, struct rpc_server_req *req)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__StatusReply reply = RINGMQ__STATUS_REPLY__INIT;
    Ringmq__GroupStatus gs[N_SHARDS];
    Ringmq__GroupStatus *gsp[N_SHARDS];
    unsigned s;

    for (s = 0; s < N_SHARDS; s++) {
        int l = F->leader[s];
        ringmq__group_status__init(&gs[s]);
        gs[s].name = F->map.shards[s].name;
        gs[s].id = f->idx + 1;
        gs[s].state = l == (int)f->idx ? "leader" : "follower";
        /* Without hints a follower knows no leader (mid-election). */
        if (l >= 0 && (l == (int)f->idx || F->hints)) {
            gs[s].leader_id = (uint64_t)l + 1;
            gs[s].leader_rpc = F->fakes[l].addr;
        } else {
            gs[s].leader_rpc = "";
        }
        gs[s].term = 3;
        gs[s].last_applied = 100 + s;
        gs[s].commit_index = 100 + s;
        gs[s].digest = 0xabcdef;
        gs[s].items = F->n_items[s];
        gs[s].bytes = 10 * F->n_items[s];
        gsp[s] = &gs[s];
    }
    reply.node_id = f->idx + 1;
    reply.n_groups = N_SHARDS;
    reply.groups = gsp;
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_STATUS;
    resp.status = &reply;
    rpc_server_reply(req, &resp);
}

static void on_request(void *data,
                       struct rpc_server_req *req,
                       const Ringmq__RpcRequest *msg)
{
    struct fake *f = data;
    const Ringmq__CacheOp *op;
    unsigned owner;

    if (msg->body_case == RINGMQ__RPC_REQUEST__BODY_STATUS) {
        F->status_polls++;
        F->digests_asked += msg->status->digest;
        answer_status(f, req);
        return;
    }
    if (msg->body_case == RINGMQ__RPC_REQUEST__BODY_MQ) {
        answer_mq(f, req, msg);
        return;
    }
    if (msg->body_case != RINGMQ__RPC_REQUEST__BODY_CACHE) {
        /* the AMQP side's meta group and its watch: not hosted here */
        reply_code(req, RINGMQ__RPC_CODE__RPC_NO_GROUP);
        return;
    }
    op = msg->cache;
    f->cache_reqs++;
    if (op->type == CACHE_OP_GET) {
        f->reads++;
    } else {
        f->writes++;
    }
    assert_int_equal(msg->epoch, EPOCH);
    if (op->type != CACHE_OP_FLUSH_ALL) {
        owner = ring_lookup(F->ring, op->key.data, op->key.len);
        if (strcmp(F->map.shards[owner].name, msg->group) != 0) {
            F->misrouted++;
        }
    }
    if (F->hold == HOLD_ALL ||
        (F->hold >= 0 && F->hold == shard_index(msg->group))) {
        assert_true(F->n_held < MAX_HELD);
        F->held[F->n_held].f = f;
        F->held[F->n_held].req = req;
        F->held[F->n_held].msg = msg;
        F->n_held++;
        return;
    }
    answer(f, req, msg);
}

static void release_held(void)
{
    unsigned i;

    for (i = 0; i < F->n_held; i++) {
        answer(F->held[i].f, F->held[i].req, F->held[i].msg);
    }
    F->n_held = 0;
}

static void close_fake(struct fake *f)
{
    if (!f->closed) {
        f->closed = true;
        rpc_server_close(f->srv, NULL, NULL);
    }
}

/* ---- fixture ---------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Map: s1 (weight 1) and s2 (weight 2), members 1..3 = the three fakes. */
static void map_default(void)
{
    unsigned s, m;

    cluster_map_clear(&F->map);
    F->map.epoch = EPOCH;
    for (s = 0; s < N_SHARDS; s++) {
        struct cluster_shard *cs = cluster_map_append(&F->map);
        snprintf(cs->name, sizeof(cs->name), "s%u", s + 1);
        cs->weight = s + 1;
        cs->n_members = N_FAKES;
        for (m = 0; m < N_FAKES; m++) {
            cs->members[m].id = m + 1;
            snprintf(cs->members[m].raft, sizeof(cs->members[m].raft),
                     "127.0.0.1:%u", 1 + m);
            snprintf(cs->members[m].rpc, sizeof(cs->members[m].rpc), "%s",
                     F->fakes[m].addr);
        }
    }
}

static int setup(void **state)
{
    struct rpc_server_config sc = {0};
    char err[256];
    unsigned i;

    (void)state;
    F = xcalloc(1, sizeof(*F));
    assert_int_equal(uv_loop_init(&F->loop), 0);
    uv_timer_init(&F->loop, &F->ticker);
    uv_timer_start(&F->ticker, on_tick, 5, 5);
    sc.host = "127.0.0.1";
    for (i = 0; i < N_FAKES; i++) {
        struct fake *f = &F->fakes[i];
        f->idx = i;
        f->srv = rpc_server_new(&F->loop, &sc, on_request, f, err, sizeof(err));
        assert_non_null(f->srv);
        f->port = rpc_server_port(f->srv);
        snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", f->port);
    }
    map_default();
    for (i = 0; i < N_SHARDS; i++) {
        F->leader[i] = 0;
    }
    F->hints = true;
    F->hold = HOLD_OFF;
    F->stale_hint = -1;
    return 0;
}

static void start_backend(unsigned request_timeout_ms)
{
    struct backend_config bc = {0};
    struct ring_node rn[N_SHARDS];
    char err[256];
    unsigned s;

    for (s = 0; s < N_SHARDS; s++) {
        rn[s].name = F->map.shards[s].name;
        rn[s].weight = F->map.shards[s].weight;
    }
    F->ring = ring_new(rn, N_SHARDS, err, sizeof(err));
    assert_non_null(F->ring);
    bc.map = &F->map;
    bc.request_timeout_ms = request_timeout_ms;
    F->b = backend_new(&F->loop, &bc, err, sizeof(err));
    assert_non_null(F->b);
}

static void on_backend_closed(void *data)
{
    (void)data;
    F->backend_closed = true;
}

static void on_remote_closed(void *data)
{
    (void)data;
    F->mq_closed = true;
}

static int teardown(void **state)
{
    unsigned i;

    (void)state;
    if (F->b) {
        backend_close(F->b, on_backend_closed, NULL);
        while (!F->backend_closed) {
            uv_run(&F->loop, UV_RUN_ONCE);
        }
    }
    if (F->mq) {
        amqp_remote_close(F->mq, on_remote_closed, NULL);
        while (!F->mq_closed) {
            uv_run(&F->loop, UV_RUN_ONCE);
        }
    }
    release_held();
    for (i = 0; i < N_FAKES; i++) {
        close_fake(&F->fakes[i]);
    }
    uv_close((uv_handle_t *)&F->ticker, NULL);
    uv_run(&F->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&F->loop), 0);
    for (i = 0; i < N_SHARDS; i++) {
        clear_items(i);
    }
    ring_free(F->ring);
    cluster_map_clear(&F->map);
    free(F);
    F = NULL;
    return 0;
}

/* ---- calls ------------------------------------------------------------ */

struct tcall {
    struct cache_call call;
    char key[48];
    char val[48];
    unsigned ncb;
    uint64_t done_ms;
};

static unsigned completed;

static void on_call(struct cache_call *call)
{
    struct tcall *t = call->data;

    t->ncb++;
    t->done_ms = clock_mono_ms();
    completed++;
}

static void prep(struct tcall *t,
                 enum cache_op_type type,
                 const char *key,
                 const char *val)
{
    char k[sizeof(t->key)];

    snprintf(k, sizeof(k), "%s", key); /* @key may be t->key */
    memset(t, 0, sizeof(*t));
    snprintf(t->key, sizeof(t->key), "%s", k);
    snprintf(t->val, sizeof(t->val), "%s", val ? val : "");
    t->call.op.type = type;
    t->call.op.key = t->key;
    t->call.op.key_len = strlen(t->key);
    t->call.op.value = t->val;
    t->call.op.value_len = strlen(t->val);
    t->call.cb = on_call;
    t->call.data = t;
}

/* Run the loop until @n calls completed (counted from the last reset). */
static void run_until_completed(unsigned n, unsigned max_ms)
{
    uint64_t end = clock_mono_ms() + max_ms;

    while (completed < n && clock_mono_ms() < end) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    assert_int_equal(completed, n);
}

static void run_for(unsigned ms)
{
    uint64_t end = clock_mono_ms() + ms;

    while (clock_mono_ms() < end) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
}

/* One op, run to completion; returns its status. @t is cleared after. */
/* What became of the op (sm/outcome.h). */
static enum outcome do_op_outcome(enum cache_op_type type,
                                  const char *key,
                                  const char *val,
                                  struct tcall *t)
{
    completed = 0;
    prep(t, type, key, val);
    backend_submit(F->b, &t->call);
    run_until_completed(1, 10000);
    assert_int_equal(t->ncb, 1);
    return t->call.outcome;
}

/* The cache's answer to an op that must reach it. */
static enum cache_status do_op(enum cache_op_type type,
                               const char *key,
                               const char *val,
                               struct tcall *t)
{
    assert_int_equal(do_op_outcome(type, key, val, t), OUTCOME_OK);
    return t->call.result.status;
}

/* A key of shard @s. */
static void key_of_shard(unsigned s, char *out, size_t len)
{
    unsigned i;

    for (i = 0;; i++) {
        snprintf(out, len, "k%u", i);
        if (ring_lookup(F->ring, out, strlen(out)) == s) {
            return;
        }
    }
}

static unsigned total_cache_reqs(void)
{
    unsigned i, n = 0;

    for (i = 0; i < N_FAKES; i++) {
        n += F->fakes[i].cache_reqs;
    }
    return n;
}

/* ---- tests ------------------------------------------------------------ */

#define N_KEYS 3000

/* Keys land on the shard the ring names; weights 1:2 give ~1/3 and ~2/3. */
static void test_routing_by_ring(void **state)
{
    static struct tcall calls[N_KEYS];
    unsigned i, on_s1;
    double share;

    (void)state;
    start_backend(0);
    completed = 0;
    for (i = 0; i < N_KEYS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "key:%u", i);
        prep(&calls[i], CACHE_OP_SET, key, key);
        backend_submit(F->b, &calls[i].call);
    }
    run_until_completed(N_KEYS, 20000);
    for (i = 0; i < N_KEYS; i++) {
        assert_int_equal(calls[i].ncb, 1);
        assert_int_equal(calls[i].call.result.status, CACHE_STORED);
        assert_int_equal(
            backend_shard_of(F->b, calls[i].key, strlen(calls[i].key)),
            ring_lookup(F->ring, calls[i].key, strlen(calls[i].key)));
    }
    assert_int_equal(F->misrouted, 0);
    on_s1 = F->fakes[0].per_shard[0];
    assert_int_equal(on_s1 + F->fakes[0].per_shard[1], N_KEYS);
    assert_int_equal(on_s1, F->n_items[0]);
    share = (double)on_s1 / N_KEYS;
    print_message("s1 got %u of %u keys (%.3f)\n", on_s1, N_KEYS, share);
    assert_true(share > 0.28 && share < 0.39);

    completed = 0;
    for (i = 0; i < N_KEYS; i++) {
        prep(&calls[i], CACHE_OP_GET, calls[i].key, NULL);
        backend_submit(F->b, &calls[i].call);
    }
    run_until_completed(N_KEYS, 20000);
    for (i = 0; i < N_KEYS; i++) {
        assert_int_equal(calls[i].call.result.status, CACHE_HIT);
        assert_int_equal(calls[i].call.result.value_len, strlen(calls[i].key));
        assert_memory_equal(calls[i].call.result.value, calls[i].key,
                            strlen(calls[i].key));
        cache_result_clear(&calls[i].call.result);
    }
    assert_int_equal(F->misrouted, 0);
}

/* NOT_LEADER naming the leader: the backend goes there at once and keeps
 * sending there. */
static void test_not_leader_hint_followed(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];

    (void)state;
    F->leader[0] = 2;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_int_equal(F->fakes[0].cache_reqs, 1); /* the first guess */
    assert_int_equal(F->fakes[1].cache_reqs, 0);
    assert_int_equal(F->fakes[2].cache_reqs, 1);
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.retries, 1);
    assert_int_equal(si.leader_changes, 1);

    assert_int_equal(do_op(CACHE_OP_GET, key, NULL, &t), CACHE_HIT);
    cache_result_clear(&t.call.result);
    assert_int_equal(F->fakes[0].cache_reqs, 1);
    assert_int_equal(F->fakes[2].cache_reqs, 2);
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.retries, 1);
    assert_int_equal(si.hits, 1);
    assert_int_equal(si.sets, 1);
}

/* NOT_LEADER without a hint: the next member, after the backoff. */
static void test_not_leader_no_hint_next_member(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];
    uint64_t t0;

    (void)state;
    F->hints = false;
    F->leader[0] = 2;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    t0 = clock_mono_ms();
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_true(t.done_ms - t0 >= 2 * BACKEND_RETRY_BACKOFF_MS_DEFAULT - 2);
    assert_int_equal(F->fakes[0].cache_reqs, 1);
    assert_int_equal(F->fakes[1].cache_reqs, 1);
    assert_int_equal(F->fakes[2].cache_reqs, 1);
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.retries, 2);

    /* the guess moved along: the next op goes straight to the leader */
    assert_int_equal(do_op(CACHE_OP_SET, key, "w", &t), CACHE_STORED);
    assert_int_equal(F->fakes[2].cache_reqs, 2);
    assert_int_equal(total_cache_reqs(), 4);
}

/* Member 0 of every shard becomes a dead node (id 9, a port that refuses
 * connections); fake 0 is then in no shard. */
static void dead_first_member(void)
{
    unsigned s;

    for (s = 0; s < N_SHARDS; s++) {
        struct cluster_shard *cs = &F->map.shards[s];
        cs->members[0].id = 9;
        snprintf(cs->members[0].rpc, sizeof(cs->members[0].rpc), "127.0.0.1:1");
    }
}

/* A member whose port refuses connections is skipped at once, for writes
 * too: nothing was sent. */
static void test_refused_member_skipped(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];
    uint64_t t0;
    unsigned s;

    (void)state;
    dead_first_member();
    for (s = 0; s < N_SHARDS; s++) {
        F->leader[s] = 1;
    }
    F->hints = false; /* only the refusal can move us on */
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    t0 = clock_mono_ms();
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_true(t.done_ms - t0 < 1000);
    assert_int_equal(F->fakes[1].writes, 1);
    assert_int_equal(total_cache_reqs(), 1);
    backend_shard_info(F->b, 0, &si);
    assert_true(si.retries >= 1);
}

/* The leader died (its port refuses connections) and a follower, which
 * has not timed out yet, still names it: that hint is not followed back to
 * the dead node (it would bounce between the two until the deadline); the
 * op moves on to the next member, the new leader. */
static void test_dead_leader_hint_ignored(void **state)
{
    struct tcall t;
    char key[32];
    uint64_t t0;

    (void)state;
    dead_first_member();
    F->leader[0] = F->leader[1] = 2;
    F->stale_hint = 0;
    start_backend(1500);
    key_of_shard(0, key, sizeof(key));
    t0 = clock_mono_ms();
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_true(t.done_ms - t0 < 1000);
    assert_int_equal(F->fakes[1].writes, 1); /* the stale hint, once */
    assert_int_equal(F->fakes[2].writes, 1);
}

/* RPC_UNAVAILABLE (outcome unknown): a write is not retried, a read is. */
static void test_unavailable_write_not_retried_read_retried(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];

    (void)state;
    start_backend(0);
    key_of_shard(1, key, sizeof(key));
    assert_int_equal(do_op(CACHE_OP_SET, key, "v1", &t), CACHE_STORED);

    F->unavail_writes = true;
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v2", &t),
                     OUTCOME_UNAVAILABLE);
    assert_int_equal(F->fakes[0].writes, 2); /* exactly one attempt */
    assert_int_equal(total_cache_reqs(), 2);
    backend_shard_info(F->b, 1, &si);
    assert_int_equal(si.retries, 0);
    assert_int_equal(si.errors, 1);

    F->unavail_writes = false;
    F->unavail_reads = 2;
    assert_int_equal(do_op(CACHE_OP_GET, key, NULL, &t), CACHE_HIT);
    assert_int_equal(t.call.result.value_len, 2);
    assert_memory_equal(t.call.result.value, "v1", 2);
    cache_result_clear(&t.call.result);
    assert_int_equal(F->fakes[0].reads, 3);
    backend_shard_info(F->b, 1, &si);
    assert_int_equal(si.retries, 2);
}

/* Connection lost with the request sent: the write completes UNAVAILABLE
 * after one attempt (it may or may not have been applied: here it is,
 * when the test releases it), and the next ops find the new leader. */
static void test_write_not_retried_after_connection_lost(void **state)
{
    struct tcall t;
    char key[32];

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    assert_int_equal(do_op(CACHE_OP_SET, key, "v1", &t), CACHE_STORED);

    F->hold = HOLD_ALL;
    completed = 0;
    prep(&t, CACHE_OP_SET, key, "v2");
    backend_submit(F->b, &t.call);
    while (F->n_held < 1) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    /* the leader dies with the write in flight; fake 1 takes over */
    F->hold = HOLD_OFF;
    F->leader[0] = F->leader[1] = 1;
    close_fake(&F->fakes[0]);
    run_until_completed(1, 5000);
    assert_int_equal(t.ncb, 1);
    assert_int_equal(t.call.outcome, OUTCOME_UNAVAILABLE);
    assert_int_equal(total_cache_reqs(), 2);
    release_held(); /* applied after all, reply dropped */

    assert_int_equal(do_op(CACHE_OP_SET, key, "v3", &t), CACHE_STORED);
    assert_int_equal(F->fakes[1].writes, 1);
    assert_int_equal(do_op(CACHE_OP_GET, key, NULL, &t), CACHE_HIT);
    assert_memory_equal(t.call.result.value, "v3", 2);
    cache_result_clear(&t.call.result);
}

/* A read in flight when the connection drops is retried on another member. */
static void test_read_retried_after_connection_lost(void **state)
{
    struct tcall r;
    char key[32];

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    assert_int_equal(do_op(CACHE_OP_SET, key, "v1", &r), CACHE_STORED);

    F->hold = HOLD_ALL;
    completed = 0;
    prep(&r, CACHE_OP_GET, key, NULL);
    backend_submit(F->b, &r.call);
    while (F->n_held < 1) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    F->hold = HOLD_OFF;
    F->leader[0] = 2;
    F->leader[1] = 2;
    close_fake(&F->fakes[0]);
    run_until_completed(1, 5000);
    assert_int_equal(r.call.result.status, CACHE_HIT);
    assert_int_equal(F->fakes[2].reads, 1);
    cache_result_clear(&r.call.result);
    release_held();
}

/* No leader anywhere: the op ends at the request deadline, UNAVAILABLE. */
static void test_deadline(void **state)
{
    struct tcall t;
    char key[32];
    uint64_t t0, took;

    (void)state;
    F->hints = false;
    F->leader[0] = F->leader[1] = -1;
    start_backend(300);
    key_of_shard(0, key, sizeof(key));
    t0 = clock_mono_ms();
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v", &t),
                     OUTCOME_UNAVAILABLE);
    took = t.done_ms - t0;
    print_message("deadline hit after %llu ms, %u attempts\n",
                  (unsigned long long)took, total_cache_reqs());
    /* the deadline runs on the loop's cached clock, which may lag the
     * test's by a few ms */
    assert_true(took >= 280 && took < 700);
    assert_true(total_cache_reqs() >= 3);
    assert_int_equal(do_op_outcome(CACHE_OP_GET, key, NULL, &t),
                     OUTCOME_UNAVAILABLE);
}

static void test_wrong_epoch_and_bad_request(void **state)
{
    struct tcall t;
    char key[32];

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    F->wrong_epoch = true;
    assert_int_equal(do_op_outcome(CACHE_OP_GET, key, NULL, &t),
                     OUTCOME_UNAVAILABLE);
    assert_int_equal(total_cache_reqs(), 1);
    F->wrong_epoch = false;
    F->bad_request = true;
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v", &t),
                     OUTCOME_BAD_REQUEST);
    assert_int_equal(total_cache_reqs(), 2);
}

/* flush_all reaches every shard. */
static void test_flush_all_fans_out(void **state)
{
    struct tcall t;
    char k1[32], k2[32];

    (void)state;
    start_backend(0);
    key_of_shard(0, k1, sizeof(k1));
    key_of_shard(1, k2, sizeof(k2));
    assert_int_equal(do_op(CACHE_OP_SET, k1, "a", &t), CACHE_STORED);
    assert_int_equal(do_op(CACHE_OP_SET, k2, "b", &t), CACHE_STORED);
    assert_int_equal(do_op(CACHE_OP_FLUSH_ALL, "", NULL, &t), CACHE_OK);
    assert_int_equal(F->n_items[0], 0);
    assert_int_equal(F->n_items[1], 0);
    F->unavail_writes = true;
    assert_int_equal(do_op_outcome(CACHE_OP_FLUSH_ALL, "", NULL, &t),
                     OUTCOME_UNAVAILABLE);
}

#define N_MANY 6000

/* Many calls at once, leaders spread over the fakes, one shard behind a
 * hint: every call completes once with the right answer. */
static void test_many_concurrent(void **state)
{
    static struct tcall calls[N_MANY];
    unsigned i;

    (void)state;
    F->leader[0] = 1;
    F->leader[1] = 2;
    start_backend(0);
    completed = 0;
    for (i = 0; i < N_MANY; i++) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "many:%u", i);
        snprintf(val, sizeof(val), "val:%u", i);
        prep(&calls[i], CACHE_OP_SET, key, val);
        backend_submit(F->b, &calls[i].call);
    }
    run_until_completed(N_MANY, 30000);
    completed = 0;
    for (i = 0; i < N_MANY; i++) {
        assert_int_equal(calls[i].ncb, 1);
        assert_int_equal(calls[i].call.result.status, CACHE_STORED);
        prep(&calls[i], CACHE_OP_GET, calls[i].key, NULL);
        backend_submit(F->b, &calls[i].call);
    }
    run_until_completed(N_MANY, 30000);
    for (i = 0; i < N_MANY; i++) {
        char val[32];
        snprintf(val, sizeof(val), "val:%u", i);
        assert_int_equal(calls[i].ncb, 1);
        assert_int_equal(calls[i].call.result.status, CACHE_HIT);
        assert_int_equal(calls[i].call.result.value_len, strlen(val));
        assert_memory_equal(calls[i].call.result.value, val, strlen(val));
        cache_result_clear(&calls[i].call.result);
    }
    assert_int_equal(F->misrouted, 0);
}

#define N_CLOSE 100

/* Close with calls in flight (held by the fakes) and calls waiting for a
 * retry (shard s2 has no leader): each completes exactly once,
 * UNAVAILABLE, before backend_close() returns. */
static void test_close_in_flight(void **state)
{
    static struct tcall calls[N_CLOSE];
    struct tcall late;
    unsigned i, waiting = 0;

    (void)state;
    F->hints = false;
    F->leader[1] = -1;
    start_backend(0);
    F->hold = 0; /* s1's calls wait in fake 0 */
    completed = 0;
    for (i = 0; i < N_CLOSE; i++) {
        char key[32];
        snprintf(key, sizeof(key), "close:%u", i);
        prep(&calls[i], i % 2 ? CACHE_OP_GET : CACHE_OP_SET, key, "v");
        backend_submit(F->b, &calls[i].call);
        if (ring_lookup(F->ring, key, strlen(key)) == 1) {
            waiting++;
        }
    }
    /* s2's calls bounce between members without a leader */
    while (F->n_held < N_CLOSE - waiting) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    run_for(50);
    assert_int_equal(completed, 0);
    backend_close(F->b, on_backend_closed, NULL);
    assert_int_equal(completed, N_CLOSE);
    for (i = 0; i < N_CLOSE; i++) {
        assert_int_equal(calls[i].ncb, 1);
        assert_int_equal(calls[i].call.outcome, OUTCOME_UNAVAILABLE);
    }
    /* between close and its callback, submits complete at once */
    prep(&late, CACHE_OP_GET, "late", NULL);
    backend_submit(F->b, &late.call);
    assert_int_equal(late.ncb, 1);
    assert_int_equal(late.call.outcome, OUTCOME_CLOSING);
    while (!F->backend_closed) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    F->b = NULL;
    for (i = 0; i < N_CLOSE; i++) {
        assert_int_equal(calls[i].ncb, 1);
    }
}

/* Status poll feeds health, stats and metrics. */
static void test_status_stats_metrics(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    struct buf out;
    char why[128];
    char key[32];

    (void)state;
    start_backend(0);
    assert_false(backend_healthy(F->b, why, sizeof(why)));
    assert_non_null(strstr(why, "no status answer yet"));
    run_for(100);
    assert_true(backend_healthy(F->b, why, sizeof(why)));
    key_of_shard(0, key, sizeof(key));
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_int_equal(do_op(CACHE_OP_GET, "nokey", NULL, &t), CACHE_NOT_FOUND);

    buf_init(&out);
    assert_int_equal(admin_health(F->b, &out), 200);
    assert_int_equal(out.len, 3);
    buf_reset(&out);
    admin_stats(F->b, &out);
    buf_append(&out, "", 1);
    assert_non_null(strstr(out.data, "STAT curr_items 0\r\n"));
    assert_non_null(strstr(out.data, "STAT shard:s1:leader_id 1\r\n"));
    assert_non_null(strstr(out.data, "STAT shard:s2:weight 2\r\n"));
    assert_non_null(strstr(out.data, "STAT shard:s1:sets 1\r\n"));
    /* replica digests walk all the data: the poll never asks for them */
    assert_null(strstr(out.data, "digest"));
    assert_true(F->status_polls > 0);
    assert_int_equal(F->digests_asked, 0);
    buf_reset(&out);
    admin_metrics(F->b, &out);
    buf_append(&out, "", 1);
    assert_non_null(strstr(out.data,
                           "ringmq_router_requests_total{shard=\"s1\""
                           ",op=\"set\"} 1\n"));
    assert_non_null(strstr(out.data,
                           "# TYPE ringmq_router_request_seconds "
                           "histogram\n"));
    assert_non_null(
        strstr(out.data, "ringmq_router_request_seconds_count 2\n"));
    assert_non_null(strstr(out.data, "ringmq_shard_up{shard=\"s2\"} 1\n"));
    assert_non_null(strstr(out.data, "ringmq_router_up 1\n"));

    /* the leader of s2 goes away and followers know none: unhealthy */
    F->hints = false;
    F->leader[1] = -1;
    run_for(1200);
    assert_false(backend_healthy(F->b, why, sizeof(why)));
    assert_non_null(strstr(why, "shard s2: no leader"));
    buf_reset(&out);
    assert_int_equal(admin_health(F->b, &out), 503);
    backend_shard_info(F->b, 1, &si);
    assert_false(si.healthy);
    buf_free(&out);
}

/* ---- the AMQP side ------------------------------------------------------ */

struct tmq {
    struct amqp_broker_call call;
    unsigned ncb;
    uint64_t done_ms;
};

static void on_mq(struct amqp_broker_call *call)
{
    struct tmq *t = call->data;

    t->ncb++;
    t->done_ms = clock_mono_ms();
    completed++;
}

/* The same failover as test_dead_leader_hint_ignored, for a queue command
 * of the AMQP side: it reaches the new leader instead of bouncing between
 * the dead node and the follower that names it until the deadline. */
static void test_amqp_dead_leader_hint_ignored(void **state)
{
    struct amqp_remote_config rc = {0};
    struct amqp_broker broker;
    struct tmq t;
    char err[256];
    uint64_t t0;

    (void)state;
    dead_first_member();
    F->leader[0] = F->leader[1] = 2;
    F->stale_hint = 0;
    rc.map = &F->map;
    rc.request_timeout_ms = 1500;
    F->mq = amqp_remote_new(&F->loop, &rc, err, sizeof(err));
    assert_non_null(F->mq);
    broker = amqp_remote_broker(F->mq);

    memset(&t, 0, sizeof(t));
    t.call.kind = AMQP_BROKER_MQ;
    t.call.shard = 0;
    t.call.mq.type = MQ_SM_DECLARE;
    t.call.mq.vhost = "/";
    t.call.mq.vhost_len = 1;
    t.call.mq.queue = "q";
    t.call.mq.queue_len = 1;
    t.call.cb = on_mq;
    t.call.data = &t;
    completed = 0;
    t0 = clock_mono_ms();
    broker.ops->submit(broker.self, &t.call);
    run_until_completed(1, 5000);
    assert_int_equal(t.ncb, 1);
    assert_int_equal(t.call.status, OUTCOME_OK);
    mq_sm_result_clear(&t.call.mq_result);
    assert_true(t.done_ms - t0 < 1000);
    assert_int_equal(F->fakes[1].mq_reqs, 1); /* the stale hint, once */
    assert_int_equal(F->fakes[2].mq_done, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routing_by_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_leader_hint_followed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_not_leader_no_hint_next_member,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_member_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_leader_hint_ignored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_unavailable_write_not_retried_read_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_write_not_retried_after_connection_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_retried_after_connection_lost,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_epoch_and_bad_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flush_all_fans_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_stats_metrics, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_amqp_dead_leader_hint_ignored,
                                        setup, teardown),
    };

    log_init("test_backend", LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
