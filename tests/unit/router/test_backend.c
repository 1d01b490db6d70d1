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
 * Writes carry request ids (client id, seq): the leader applies an id once
 * per shard, answering a repeat with the first result as cache_sm does,
 * and can be told to apply a write and then answer UNAVAILABLE or nothing
 * (the outcomes a router cannot tell from "not applied").
 *
 * The fakes also answer the queue commands of the router's AMQP side
 * (router/amqp_remote) on the groups "<shard>.mq", with the same leaders,
 * so that what both sides share (router/leader: leader tracking and
 * retries) is tested from both.
 *
 * Map updates: F->map is what the fakes host (they answer for its shards,
 * up to MAX_SHARDS), F->ring what the router should route with; a test
 * that hands the router another map points F->ring at that map's ring.
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
#define N_SHARDS 2   /* in the default map */
#define MAX_SHARDS 3 /* the fakes host at most so many */
#define MAX_HELD 256
#define MAX_ITEMS 16384
#define EPOCH 7
#define HOLD_OFF (-1)
#define HOLD_ALL MAX_SHARDS /* else: the index of the one shard held */
#define MAX_IDS 16384

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
    unsigned per_shard[MAX_SHARDS];
    unsigned mq_reqs; /* queue commands (any group, any answer) */
    unsigned mq_done; /* queue commands answered OK */
    unsigned mq_per_shard[MAX_SHARDS]; /* answered OK, by shard */
    unsigned meta_reqs; /* requests to the group "meta" */
    unsigned places;    /* PLACE commands answered */
};

/* A write's request id as a shard applied it, with its answer. */
struct applied_id {
    unsigned shard;
    uint64_t client;
    uint64_t seq;
    uint32_t status;
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
    struct cluster_map map; /* the shards the fakes host */
    struct ring *ring;      /* the ring the router should route with */
    uint64_t epoch;         /* cache requests must carry this one... */
    uint64_t epoch_prev;    /* ...or this one (sent before an update) */
    uint64_t last_epoch;    /* of the last cache request */
    struct backend *b;
    bool backend_closed;
    struct amqp_remote *mq; /* the AMQP side, when a test starts it */
    bool mq_closed;

    /* behaviour */
    int leader[MAX_SHARDS]; /* fake index, -1 = none */
    bool hints;             /* followers name the leader (and status) */
    int hold;               /* keep cache requests unanswered: HOLD_* */
    bool unavail_writes;    /* leader: RPC_UNAVAILABLE for writes */
    /* leader: apply so many writes, then answer RPC_UNAVAILABLE (the
     * leadership was lost after the commit) / nothing at all */
    unsigned apply_then_unavail;
    unsigned apply_then_mute;
    unsigned unavail_reads; /* leader: RPC_UNAVAILABLE for so many reads */
    bool bad_request;       /* leader: RPC_BAD_REQUEST */
    unsigned busy_left;     /* leader: RPC_BUSY for so many requests */
    /* leader: hold so many cache requests, as a queue that does not
     * drain, and answer each RPC_EXPIRED when its budget runs out */
    unsigned expire_left;
    /* leader: leave so many cache requests unanswered (held) */
    unsigned hold_left;
    bool wrong_epoch;       /* everyone: RPC_WRONG_EPOCH */
    /* leader of shard s: every key is refused WRONG_OWNER naming
     * moved_to[s] (NULL = off) */
    const char *moved_to[MAX_SHARDS];
    unsigned owner_refusals;
    unsigned moving_left[MAX_SHARDS]; /* answer MOVING so many times */
    /* followers' NOT_LEADER names this member (of every shard) instead of
     * the leader: the memory of a leader that died; -1 = off */
    int stale_hint;
    /* the queue directory: PLACE answers place_to (a shard name) with
     * gen place_gen, or the proposal when place_to is NULL */
    const char *place_to;
    uint64_t place_gen;
    uint64_t last_replace_gen;  /* of the last PLACE */
    uint64_t last_declare_gen;  /* place_gen of the last DECLARE */
    unsigned mq_moving_left;    /* queue commands answered MOVING */
    unsigned mq_stale_left;     /* creating DECLAREs answered PLACE_STALE */

    /* observations */
    unsigned misrouted; /* key sent to a shard the ring does not give it */
    struct held held[MAX_HELD];
    unsigned n_held;
    struct rpc_server_req *muted[MAX_HELD]; /* applied, never answered */
    unsigned n_muted;
    struct applied_id ids[MAX_IDS];
    unsigned n_ids;
    unsigned repeats;      /* writes answered from ids[] */
    uint64_t last_client;  /* of the last cache write received */
    uint64_t last_seq;
    struct item items[MAX_SHARDS][MAX_ITEMS];
    unsigned n_items[MAX_SHARDS];
    unsigned status_polls;
    unsigned digests_asked; /* status polls that asked for digests */
    uint64_t busy_at[64];   /* clock_mono_ms() of the first BUSY answers */
    unsigned n_busy;
    struct rpc_server_req *expiring[MAX_HELD]; /* held by expire_left */
    unsigned n_expiring;
    unsigned n_expired; /* answered RPC_EXPIRED */
};

static struct fx *F;

/* ---- fake nodes -------------------------------------------------------- */

static int shard_index(const char *name)
{
    unsigned s;

    for (s = 0; s < F->map.n_shards; s++) {
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

static struct applied_id *find_id(unsigned s, const Ringmq__CacheOp *op)
{
    unsigned i;

    for (i = 0; i < F->n_ids; i++) {
        struct applied_id *a = &F->ids[i];
        if (a->shard == s && a->client == op->client_id &&
            a->seq == op->seq) {
            return a;
        }
    }
    return NULL;
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

/* Keep @req unanswered until release_held(). */
static void hold(struct fake *f, struct rpc_server_req *req,
                 const Ringmq__RpcRequest *msg)
{
    assert_true(F->n_held < MAX_HELD);
    F->held[F->n_held].f = f;
    F->held[F->n_held].req = req;
    F->held[F->n_held].msg = msg;
    F->n_held++;
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
    if (F->hold_left > 0) {
        F->hold_left--;
        hold(f, req, msg);
        return;
    }
    if (F->busy_left > 0) {
        F->busy_left--;
        if (F->n_busy < sizeof(F->busy_at) / sizeof(F->busy_at[0])) {
            F->busy_at[F->n_busy] = clock_mono_ms();
        }
        F->n_busy++;
        reply_code(req, RINGMQ__RPC_CODE__RPC_BUSY);
        return;
    }
    if (F->expire_left > 0) {
        F->expire_left--;
        assert_true(F->n_expiring < MAX_HELD);
        assert_true(rpc_server_req_deadline(req) != 0);
        F->expiring[F->n_expiring++] = req;
        return;
    }
    if (F->moving_left[s] > 0) {
        F->moving_left[s]--;
        res.status = CACHE_MOVING;
        resp.code = rpc_code(OUTCOME_OK);
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
        resp.cache = &res;
        rpc_server_reply(req, &resp);
        return;
    }
    if (F->moved_to[s] != NULL) {
        F->owner_refusals++;
        res.status = CACHE_WRONG_OWNER;
        res.value.data = (uint8_t *)F->moved_to[s];
        res.value.len = strlen(F->moved_to[s]);
        resp.code = rpc_code(OUTCOME_OK);
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
        resp.cache = &res;
        rpc_server_reply(req, &resp);
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
    if (write && find_id((unsigned)s, op) != NULL) {
        /* a repeat: the first answer, nothing applied */
        F->repeats++;
        res.status = find_id((unsigned)s, op)->status;
        resp.code = rpc_code(OUTCOME_OK);
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
        resp.cache = &res;
        rpc_server_reply(req, &resp);
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
            if (it != NULL && op->type == CACHE_OP_ADD) {
                res.status = CACHE_NOT_STORED;
                break;
            }
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
    if (write) {
        assert_true(F->n_ids < MAX_IDS);
        F->ids[F->n_ids].shard = (unsigned)s;
        F->ids[F->n_ids].client = op->client_id;
        F->ids[F->n_ids].seq = op->seq;
        F->ids[F->n_ids].status = res.status;
        F->n_ids++;
    }
    if (write && F->apply_then_unavail > 0) {
        F->apply_then_unavail--;
        reply_code(req, RINGMQ__RPC_CODE__RPC_UNAVAILABLE);
        return;
    }
    if (write && F->apply_then_mute > 0) {
        F->apply_then_mute--;
        assert_true(F->n_muted < MAX_HELD);
        F->muted[F->n_muted++] = req;
        return;
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
    if (F->busy_left > 0) {
        F->busy_left--;
        F->n_busy++;
        reply_code(req, RINGMQ__RPC_CODE__RPC_BUSY);
        return;
    }
    if (msg->mq->queue.len > 0 && F->mq_moving_left > 0) {
        F->mq_moving_left--;
        res.status = MQ_SM_MOVING;
    } else if (msg->mq->type == MQ_SM_DECLARE && !msg->mq->passive &&
               F->mq_stale_left > 0) {
        F->mq_stale_left--;
        res.status = MQ_SM_PLACE_STALE;
    } else {
        if (msg->mq->type == MQ_SM_DECLARE) {
            F->last_declare_gen = msg->mq->place_gen;
        }
        f->mq_done++;
        f->mq_per_shard[s]++;
    }
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MQ;
    resp.mq = &res;
    rpc_server_reply(req, &resp);
}

static void answer_status(struct fake *f, struct rpc_server_req *req)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__StatusReply reply = RINGMQ__STATUS_REPLY__INIT;
    Ringmq__GroupStatus gs[MAX_SHARDS];
    Ringmq__GroupStatus *gsp[MAX_SHARDS];
    unsigned s;

    assert_true(F->map.n_shards <= MAX_SHARDS);
    for (s = 0; s < F->map.n_shards; s++) {
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
    reply.n_groups = F->map.n_shards;
    reply.groups = gsp;
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_STATUS;
    resp.status = &reply;
    rpc_server_reply(req, &resp);
}

/* The meta group's queue directory, as far as routers use it: any node
 * answers a PLACE (no leader), without a snapshot. */
static void answer_place(struct fake *f, struct rpc_server_req *req,
                         const Ringmq__RpcRequest *msg)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MetaResult res = RINGMQ__META_RESULT__INIT;

    f->places++;
    F->last_replace_gen = msg->meta->gen;
    if (F->place_to != NULL) {
        res.placement_shard.data = (uint8_t *)F->place_to;
        res.placement_shard.len = strlen(F->place_to);
    } else {
        res.placement_shard = msg->meta->shard;
    }
    res.placement_gen = F->place_gen + msg->meta->gen;
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_META;
    resp.meta = &res;
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
    if (msg->body_case == RINGMQ__RPC_REQUEST__BODY_META &&
        msg->meta->type == META_SM_QUEUE_PLACE) {
        answer_place(f, req, msg);
        return;
    }
    if (msg->body_case != RINGMQ__RPC_REQUEST__BODY_CACHE) {
        /* the AMQP side's meta group and its watch: not hosted here */
        if (strcmp(msg->group, "meta") == 0) {
            f->meta_reqs++;
        }
        reply_code(req, RINGMQ__RPC_CODE__RPC_NO_GROUP);
        return;
    }
    op = msg->cache;
    f->cache_reqs++;
    if (op->type == CACHE_OP_GET) {
        f->reads++;
        assert_true(op->seq == 0);
    } else {
        f->writes++;
        /* every write has a request id */
        assert_true(op->client_id != 0 && op->seq != 0);
        F->last_client = op->client_id;
        F->last_seq = op->seq;
    }
    assert_true(msg->epoch == F->epoch || msg->epoch == F->epoch_prev);
    F->last_epoch = msg->epoch;
    if (op->type != CACHE_OP_FLUSH_ALL) {
        owner = ring_lookup(F->ring, op->key.data, op->key.len);
        if (strcmp(ring_node_name(F->ring, owner), msg->group) != 0) {
            F->misrouted++;
        }
    }
    if (F->hold == HOLD_ALL ||
        (F->hold >= 0 && F->hold == shard_index(msg->group))) {
        hold(f, req, msg);
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
    for (i = 0; i < F->n_muted; i++) {
        reply_code(F->muted[i], RINGMQ__RPC_CODE__RPC_UNAVAILABLE);
    }
    F->n_muted = 0;
    for (i = 0; i < F->n_expiring; i++) {
        reply_code(F->expiring[i], RINGMQ__RPC_CODE__RPC_EXPIRED);
    }
    F->n_expiring = 0;
}

static void close_fake(struct fake *f)
{
    if (!f->closed) {
        f->closed = true;
        rpc_server_close(f->srv, NULL, NULL);
    }
}

/* ---- fixture ---------------------------------------------------------- */

/* Answer the held requests whose budget ran out RPC_EXPIRED, as a node
 * whose group expires queued commands at their deadline. */
static void on_tick(uv_timer_t *t)
{
    uint64_t now = clock_mono_ms();
    unsigned i = 0;

    (void)t;
    while (i < F->n_expiring) {
        struct rpc_server_req *req = F->expiring[i];

        if (rpc_server_req_deadline(req) > now) {
            i++;
            continue;
        }
        F->expiring[i] = F->expiring[--F->n_expiring];
        F->n_expired++;
        reply_code(req, RINGMQ__RPC_CODE__RPC_EXPIRED);
    }
}

/* Append shard @name of @weight to @map, members 1..3 = the three fakes. */
static void map_add_shard(struct cluster_map *map, const char *name,
                          unsigned weight)
{
    struct cluster_shard *cs = cluster_map_append(map);
    unsigned m;

    assert_non_null(cs);
    snprintf(cs->name, sizeof(cs->name), "%s", name);
    cs->weight = weight;
    cs->n_members = N_FAKES;
    for (m = 0; m < N_FAKES; m++) {
        cs->members[m].id = m + 1;
        snprintf(cs->members[m].raft, sizeof(cs->members[m].raft),
                 "127.0.0.1:%u", 1 + m);
        snprintf(cs->members[m].rpc, sizeof(cs->members[m].rpc), "%s",
                 F->fakes[m].addr);
    }
}

/* Map: s1 (weight 1) and s2 (weight 2), members 1..3 = the three fakes;
 * the meta group on the same nodes (the map file's default). */
static void map_default(void)
{
    char err[256];
    unsigned s;

    cluster_map_clear(&F->map);
    F->map.epoch = EPOCH;
    for (s = 0; s < N_SHARDS; s++) {
        char name[8];
        snprintf(name, sizeof(name), "s%u", s + 1);
        map_add_shard(&F->map, name, s + 1);
    }
    assert_int_equal(cluster_map_default_meta(&F->map, err, sizeof(err)), 0);
    cluster_map_set_queue_ring(&F->map);
}

/* The router is to route with @map from now on. */
static void route_with(const struct cluster_map *map)
{
    char err[256];

    ring_free(F->ring);
    F->ring = cluster_map_ring(map, err, sizeof(err));
    assert_non_null(F->ring);
}

/* Cache requests carry @epoch from now on (or the previous one, if sent
 * before). */
static void expect_epoch(uint64_t epoch)
{
    F->epoch_prev = F->epoch;
    F->epoch = epoch;
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
    F->epoch = F->epoch_prev = EPOCH;
    for (i = 0; i < MAX_SHARDS; i++) {
        F->leader[i] = 0;
    }
    F->hints = true;
    F->hold = HOLD_OFF;
    F->stale_hint = -1;
    return 0;
}

/* A backend routing with @map. */
static void start_backend_map(const struct cluster_map *map,
                              unsigned request_timeout_ms)
{
    struct backend_config bc = {0};
    char err[256];

    route_with(map);
    bc.map = map;
    bc.request_timeout_ms = request_timeout_ms;
    F->b = backend_new(&F->loop, &bc, err, sizeof(err));
    assert_non_null(F->b);
}

/* A backend routing with the fakes' map. */
static void start_backend(unsigned request_timeout_ms)
{
    start_backend_map(&F->map, request_timeout_ms);
}

/* ... whose attempts time out after @attempt_ms. */
static void start_backend_attempts(unsigned request_timeout_ms,
                                   unsigned attempt_ms)
{
    struct backend_config bc = {0};
    char err[256];

    route_with(&F->map);
    bc.map = &F->map;
    bc.request_timeout_ms = request_timeout_ms;
    bc.attempt_timeout_ms = attempt_ms;
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
    for (i = 0; i < MAX_SHARDS; i++) {
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

    for (s = 0; s < F->map.n_shards; s++) {
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

static void on_elect(uv_timer_t *t)
{
    (void)t;
    F->leader[0] = 2;
    F->stale_hint = -1;
}

/* The leader (fake 1) stepped down: it says NOT_LEADER and knows no
 * leader, while the followers still name it until one of them is elected
 * (300 ms later). Their hints are not followed back to it: the guess
 * moves there once (the first hint), then only the walk over the members
 * after each backoff reaches it (a third of ~10 attempts); following the
 * hints sent every attempt back to it (~10 requests there, as many
 * "leader changes"). The op completes at the new leader. */
static void test_stepped_down_leader_hint_ignored(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    uv_timer_t elect;
    char key[32];

    (void)state;
    F->leader[0] = -1; /* mid-election */
    F->stale_hint = 1; /* every member names fake 1 (fake 1 itself too) */
    start_backend(3000);
    key_of_shard(0, key, sizeof(key));
    uv_timer_init(&F->loop, &elect);
    uv_timer_start(&elect, on_elect, 300, 0);
    completed = 0;
    prep(&t, CACHE_OP_SET, key, "v");
    backend_submit(F->b, &t.call);
    run_until_completed(1, 10000);
    assert_int_equal(t.ncb, 1);
    assert_int_equal(t.call.outcome, OUTCOME_OK);
    assert_int_equal(t.call.result.status, CACHE_STORED);
    assert_true(F->fakes[1].cache_reqs <= 5);
    assert_int_equal(F->n_items[0], 1); /* stored once, at the leader */
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.leader_changes, 1);
    uv_close((uv_handle_t *)&elect, NULL);
}

/* The leader applies a write and then loses its leadership (answers
 * UNAVAILABLE): the router sends it again with the same request id and the
 * client gets the first result (an ADD applied twice would say NOT_STORED).
 * Reads are retried as before. */
static void test_unavailable_write_retried_with_its_id(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];
    uint64_t client, seq;

    (void)state;
    start_backend(0);
    key_of_shard(1, key, sizeof(key));
    F->apply_then_unavail = 1;
    assert_int_equal(do_op(CACHE_OP_ADD, key, "v1", &t), CACHE_STORED);
    assert_int_equal(F->repeats, 1);
    assert_int_equal(F->fakes[0].writes, 2); /* the first and its retry */
    assert_int_equal(F->fakes[0].per_shard[1], 1); /* applied once */
    backend_shard_info(F->b, 1, &si);
    assert_int_equal(si.retries, 1);
    assert_int_equal(si.errors, 0);
    client = F->last_client;
    seq = F->last_seq;

    /* the next write has the next seq of the same client */
    assert_int_equal(do_op(CACHE_OP_ADD, key, "v2", &t), CACHE_NOT_STORED);
    assert_int_equal(F->last_client, client);
    assert_int_equal(F->last_seq, seq + 1);

    F->unavail_reads = 2;
    assert_int_equal(do_op(CACHE_OP_GET, key, NULL, &t), CACHE_HIT);
    assert_int_equal(t.call.result.value_len, 2);
    assert_memory_equal(t.call.result.value, "v1", 2);
    cache_result_clear(&t.call.result);
    assert_int_equal(F->fakes[0].reads, 3);
}

/* A shard that answers a write only UNAVAILABLE (applying nothing): it is
 * retried until the request deadline, then UNAVAILABLE. */
static void test_unavailable_write_until_deadline(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];

    (void)state;
    start_backend(400);
    key_of_shard(1, key, sizeof(key));
    F->unavail_writes = true;
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v2", &t),
                     OUTCOME_UNAVAILABLE);
    assert_true(F->fakes[0].writes >= 2);
    assert_int_equal(F->n_ids, 0);
    backend_shard_info(F->b, 1, &si);
    assert_int_equal(si.errors, 1);
}

/* The first attempt times out at a leader that applied it: the retry with
 * the same request id is answered with the first result. */
static void test_write_timed_out_retried_first_result(void **state)
{
    struct tcall t;
    char key[32];

    (void)state;
    start_backend_attempts(5000, 200);
    key_of_shard(0, key, sizeof(key));
    F->apply_then_mute = 1;
    assert_int_equal(do_op(CACHE_OP_ADD, key, "v1", &t), CACHE_STORED);
    assert_int_equal(F->n_muted, 1);
    assert_int_equal(F->repeats, 1);
    assert_int_equal(F->fakes[0].per_shard[0], 1);
    assert_int_equal(F->fakes[0].writes, 2);
    assert_int_equal(do_op(CACHE_OP_GET, key, NULL, &t), CACHE_HIT);
    assert_memory_equal(t.call.result.value, "v1", 2);
    cache_result_clear(&t.call.result);
}

/* Connection lost with the request sent: the write is retried at the new
 * leader with the same request id (here the old leader never applied it). */
static void test_write_retried_after_connection_lost(void **state)
{
    struct tcall t;
    char key[32];
    uint64_t held_seq;

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
    held_seq = F->last_seq;
    /* the leader dies with the write in flight; fake 1 takes over */
    F->hold = HOLD_OFF;
    F->leader[0] = F->leader[1] = 1;
    close_fake(&F->fakes[0]);
    run_until_completed(1, 5000);
    assert_int_equal(t.ncb, 1);
    assert_int_equal(t.call.outcome, OUTCOME_OK);
    assert_int_equal(t.call.result.status, CACHE_STORED);
    assert_int_equal(F->fakes[1].writes, 1);
    assert_int_equal(F->last_seq, held_seq);
    release_held(); /* fake 0 no longer leads: not applied */

    assert_int_equal(do_op(CACHE_OP_SET, key, "v3", &t), CACHE_STORED);
    assert_int_equal(F->fakes[1].writes, 2);
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

/* RPC_BUSY (admission control: nothing proposed) is retried for every op,
 * a write included, after a backoff that doubles; the op succeeds once
 * the leader takes it, stored once. */
static void test_busy_retried_with_backoff(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];
    unsigned i;

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    F->busy_left = 4;
    assert_int_equal(do_op(CACHE_OP_SET, key, "v1", &t), CACHE_STORED);
    assert_int_equal(F->n_busy, 4);
    assert_int_equal(F->fakes[0].per_shard[0], 1);
    assert_int_equal(F->n_items[0], 1);
    /* each wait is between half and all of 30, 60, 120 ms; the loop's
     * cached clock may lag the test's by a few ms */
    for (i = 0; i + 1 < F->n_busy; i++) {
        uint64_t gap = F->busy_at[i + 1] - F->busy_at[i];

        print_message("BUSY %u -> %u: %llu ms\n", i, i + 1,
                      (unsigned long long)gap);
        assert_true(gap + 5 >= (30u << i) / 2);
    }
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.retries, 4);
    assert_int_equal(si.errors, 0);

    F->busy_left = 2;
    assert_int_equal(do_op(CACHE_OP_GET, key, NULL, &t), CACHE_HIT);
    cache_result_clear(&t.call.result);
    assert_int_equal(F->n_busy, 6);
}

/* Cache requests the fakes other than the leader (fake 0) received. */
static unsigned asked_elsewhere(void)
{
    return F->fakes[1].cache_reqs + F->fakes[2].cache_reqs;
}

/* A write the leader held in its queue until the budget it was told ran
 * out is answered EXPIRED ("not executed") before the router's attempt
 * times out, so the router stays with the leader and retries it as BUSY,
 * and the write is stored once. */
static void test_expired_retried_as_busy(void **state)
{
    struct tcall t;
    char key[32];

    (void)state;
    start_backend_attempts(5000, 400);
    key_of_shard(0, key, sizeof(key));
    F->expire_left = 2;
    assert_int_equal(do_op(CACHE_OP_SET, key, "v1", &t), CACHE_STORED);
    assert_int_equal(F->n_expired, 2);
    assert_int_equal(asked_elsewhere(), 0); /* no attempt timed out */
    assert_int_equal(F->fakes[0].per_shard[0], 1);
    assert_int_equal(F->n_items[0], 1);
}

/* An attempt that times out at a leader that answered other requests
 * since it was sent does not move the router off it: the leader is alive,
 * it only held that request (in a long queue, say). The write's retry
 * goes to it again, with its request id, and is stored. */
static void test_timeout_keeps_a_live_leader(void **state)
{
    struct tcall a, b;
    char key[32];

    (void)state;
    start_backend_attempts(5000, 300);
    key_of_shard(0, key, sizeof(key));
    F->hold_left = 1;
    completed = 0;
    prep(&a, CACHE_OP_SET, key, "v1");
    backend_submit(F->b, &a.call);
    while (F->n_held < 1) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    /* answered while the first attempt waits: the leader is alive */
    assert_int_equal(do_op(CACHE_OP_GET, key, NULL, &b), CACHE_NOT_FOUND);
    completed = 0;
    run_until_completed(1, 5000);
    assert_int_equal(a.call.outcome, OUTCOME_OK);
    assert_int_equal(a.call.result.status, CACHE_STORED);
    assert_int_equal(asked_elsewhere(), 0);
    assert_int_equal(F->n_items[0], 1);
}

/* A write whose first attempt timed out (its outcome unknown: the leader
 * may have proposed it) and whose later attempts were refused BUSY until
 * the deadline ends UNAVAILABLE, not BUSY: "out of memory" would tell its
 * client it never ran. */
static void test_busy_after_unknown_is_unavailable(void **state)
{
    struct tcall t;
    char key[32];

    (void)state;
    start_backend_attempts(1500, 300);
    key_of_shard(0, key, sizeof(key));
    F->hold_left = 1;
    F->busy_left = UINT32_MAX;
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v", &t),
                     OUTCOME_UNAVAILABLE);
    assert_int_equal(F->n_held, 1);
    assert_true(F->n_busy >= 1);
    assert_int_equal(F->n_items[0], 0);
}

/* A write on a leader that answers every attempt with @*refused_left
 * set (BUSY, or EXPIRED after its budget) ends BUSY ("out of memory":
 * never executed) by its deadline of @deadline_ms, not after it, retried
 * at least @min_answers times at the leader and never elsewhere (an
 * attempt that timed out would have left its outcome unknown). */
static void busy_until_deadline(unsigned *refused_left,
                                const unsigned *answers,
                                unsigned min_answers,
                                unsigned deadline_ms)
{
    struct tcall t;
    char key[32];
    uint64_t t0, took;

    key_of_shard(1, key, sizeof(key));
    *refused_left = UINT32_MAX;
    t0 = clock_mono_ms();
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v", &t), OUTCOME_BUSY);
    took = t.done_ms - t0;
    print_message("refused until %llu ms, %u answers\n",
                  (unsigned long long)took, *answers);
    assert_true(took < deadline_ms + 50);
    assert_true(*answers >= min_answers);
    assert_int_equal(asked_elsewhere(), 0);
    assert_int_equal(F->n_items[1], 0);
}

/* A leader that holds every write past its budget: attempts of 400 ms
 * are answered EXPIRED at 200 ms (half), so more than one fits a 1 s
 * deadline. */
static void test_expired_until_deadline(void **state)
{
    (void)state;
    start_backend_attempts(1000, 400);
    busy_until_deadline(&F->expire_left, &F->n_expired, 2, 1000);
}

/* A leader that stays busy: waits of at least 15, 30, 60 ms then one of
 * 120..240 ms may not fit a 400 ms deadline (attempts of 200 ms: the
 * last one needs 100 ms left). */
static void test_busy_until_deadline(void **state)
{
    (void)state;
    start_backend_attempts(400, 200);
    busy_until_deadline(&F->busy_left, &F->n_busy, 3, 400);
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

/* ---- map updates: the cache side ---------------------------------------- */

/* The members of the fakes' shard @s, but only a dead node (id 9, a port
 * that refuses connections). */
static void dead_members(struct cluster_map *map, unsigned s)
{
    struct cluster_shard *cs = &map->shards[s];

    cs->n_members = 1;
    cs->members[0].id = 9;
    snprintf(cs->members[0].rpc, sizeof(cs->members[0].rpc), "127.0.0.1:1");
}

/* A shard that lists only a dead node gets the live members with a newer
 * map: its requests reach them, with the new epoch. */
static void test_map_update_members(void **state)
{
    struct backend_shard_info si;
    struct cluster_map old;
    struct tcall t;
    char err[256];
    char key[32], key2[32];

    (void)state;
    cluster_map_init(&old);
    cluster_map_copy(&old, &F->map);
    dead_members(&old, 0);
    start_backend_map(&old, 300);
    key_of_shard(0, key, sizeof(key));
    key_of_shard(1, key2, sizeof(key2));
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v", &t),
                     OUTCOME_UNAVAILABLE);
    assert_int_equal(total_cache_reqs(), 0);
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.n_members, 1);

    F->map.epoch = EPOCH + 1;
    expect_epoch(EPOCH + 1);
    assert_int_equal(backend_map_update(F->b, &F->map, err, sizeof(err)), 0);
    assert_int_equal(backend_epoch(F->b), EPOCH + 1);
    assert_int_equal(backend_shard_count(F->b), 2);
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.n_members, 3);
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_int_equal(F->fakes[0].writes, 1);
    assert_int_equal(F->last_epoch, EPOCH + 1);
    assert_int_equal(do_op(CACHE_OP_SET, key2, "w", &t), CACHE_STORED);
    assert_int_equal(F->last_epoch, EPOCH + 1);
    assert_int_equal(F->misrouted, 0);
    cluster_map_clear(&old);
}

/* Members reordered and one dropped: the leader guess stays on the member
 * of the same id, so the next op goes straight to it. */
static void test_map_update_keeps_leader_guess(void **state)
{
    struct backend_shard_info si;
    struct cluster_map m;
    struct cluster_shard *cs;
    struct tcall t;
    char err[256];
    char key[32];

    (void)state;
    F->leader[0] = 2;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_int_equal(F->fakes[0].cache_reqs, 1); /* NOT_LEADER, hint */
    assert_int_equal(F->fakes[2].cache_reqs, 1);

    cluster_map_init(&m);
    cluster_map_copy(&m, &F->map);
    m.epoch = EPOCH + 1;
    cs = &m.shards[0];
    cs->members[0] = F->map.shards[0].members[2]; /* id 3, the leader */
    cs->members[1] = F->map.shards[0].members[0]; /* id 1 */
    cs->n_members = 2;
    expect_epoch(EPOCH + 1);
    assert_int_equal(backend_map_update(F->b, &m, err, sizeof(err)), 0);
    assert_int_equal(do_op(CACHE_OP_SET, key, "w", &t), CACHE_STORED);
    assert_int_equal(F->fakes[0].cache_reqs, 1);
    assert_int_equal(F->fakes[2].cache_reqs, 2);
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.n_members, 2);
    assert_int_equal(si.retries, 1); /* only the first op's */
    cluster_map_clear(&m);
}

#define N_UPDATE_KEYS 600

/* SET N_UPDATE_KEYS keys; every one must be stored where F->ring says. */
static void set_keys(const char *prefix)
{
    static struct tcall calls[N_UPDATE_KEYS];
    unsigned i;

    completed = 0;
    for (i = 0; i < N_UPDATE_KEYS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "%s:%u", prefix, i);
        prep(&calls[i], CACHE_OP_SET, key, "v");
        backend_submit(F->b, &calls[i].call);
    }
    run_until_completed(N_UPDATE_KEYS, 20000);
    for (i = 0; i < N_UPDATE_KEYS; i++) {
        assert_int_equal(calls[i].ncb, 1);
        assert_int_equal(calls[i].call.result.status, CACHE_STORED);
        assert_int_equal(
            backend_shard_of(F->b, calls[i].key, strlen(calls[i].key)),
            ring_lookup(F->ring, calls[i].key, strlen(calls[i].key)));
    }
    assert_int_equal(F->misrouted, 0);
}

/* A shard that refuses a key names its owner: the router retries there at
 * once, writes too (nothing was applied), and the client sees the owner's
 * answer. */
static void test_wrong_owner_followed(void **state)
{
    struct tcall t;
    char key[32];

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    F->moved_to[0] = "s2";
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    cache_result_clear(&t.call.result);
    assert_int_equal(F->owner_refusals, 1);
    assert_int_equal(F->n_items[1], 1); /* stored at s2 */
    assert_int_equal(F->n_items[0], 0);
    assert_int_equal(do_op(CACHE_OP_GET, key, "", &t), CACHE_HIT);
    cache_result_clear(&t.call.result);
    /* two shards naming each other: bounded hops, then unavailable */
    F->moved_to[1] = "s1";
    F->owner_refusals = 0;
    assert_int_equal(do_op_outcome(CACHE_OP_SET, key, "v", &t),
                     OUTCOME_UNAVAILABLE);
    assert_int_equal(F->owner_refusals, 5); /* the first try + 4 hops */
}

/* A key whose arc is moving is asked again after a pause until the shard
 * serves it (writes too: nothing was applied); past the deadline the
 * client gets an error. */
static void test_moving_waited_out(void **state)
{
    struct backend_shard_info si;
    struct tcall t;
    char key[32];

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    F->moving_left[0] = 5;
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    cache_result_clear(&t.call.result);
    assert_int_equal(F->moving_left[0], 0);
    assert_int_equal(F->n_items[0], 1);
    backend_shard_info(F->b, 0, &si);
    assert_int_equal(si.moving_refusals, 5);
    F->moving_left[0] = 100000;
    assert_int_equal(do_op_outcome(CACHE_OP_GET, key, "", &t),
                     OUTCOME_UNAVAILABLE);
}

/* An owner the router's map does not have yet: the request waits until the
 * map brings it (well within the deadline), then goes there. */
static void test_wrong_owner_unknown_waits_for_map(void **state)
{
    static struct tcall t;
    char key[32];
    char err[256];

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    F->moved_to[0] = "s3";
    completed = 0;
    prep(&t, CACHE_OP_SET, key, "v");
    backend_submit(F->b, &t.call);
    run_for(100);
    assert_int_equal(t.ncb, 0);
    assert_true(F->owner_refusals >= 2); /* asked again, still refused */
    map_add_shard(&F->map, "s3", 1);
    F->map.epoch = EPOCH + 1;
    expect_epoch(EPOCH + 1);
    assert_int_equal(backend_map_update(F->b, &F->map, err, sizeof(err)), 0);
    run_until_completed(1, 5000);
    assert_int_equal(t.call.outcome, OUTCOME_OK);
    assert_int_equal(t.call.result.status, CACHE_STORED);
    assert_int_equal(F->n_items[2], 1);
    cache_result_clear(&t.call.result);
}

/* A shard added by a newer map takes its share of the keys (the ring is
 * cluster_map_ring of the new map) and is counted and polled; a shard the
 * next map drops takes none, and the others' indexes shift. */
static void test_map_update_adds_and_removes_shard(void **state)
{
    struct backend_shard_info si;
    struct cluster_map m;
    char err[256], why[128];
    unsigned s3_before;

    (void)state;
    start_backend(0);
    map_add_shard(&F->map, "s3", 1);
    F->map.epoch = EPOCH + 1;
    expect_epoch(EPOCH + 1);
    route_with(&F->map);
    assert_int_equal(backend_map_update(F->b, &F->map, err, sizeof(err)), 0);
    assert_int_equal(backend_shard_count(F->b), 3);
    backend_shard_info(F->b, 2, &si);
    assert_string_equal(si.name, "s3");
    assert_int_equal(si.weight, 1);
    set_keys("add");
    print_message("s3 got %u of %u keys\n", F->fakes[0].per_shard[2],
                  N_UPDATE_KEYS);
    assert_true(F->fakes[0].per_shard[2] > 0);
    assert_int_equal(F->n_items[2], F->fakes[0].per_shard[2]);
    run_for(100);
    assert_true(backend_healthy(F->b, why, sizeof(why)));
    backend_shard_info(F->b, 2, &si);
    assert_true(si.status_seen);

    /* s1 leaves (the fakes still host it) */
    cluster_map_init(&m);
    cluster_map_copy(&m, &F->map);
    cluster_map_remove(&m, 0);
    m.epoch = EPOCH + 2;
    expect_epoch(EPOCH + 2);
    route_with(&m);
    assert_int_equal(backend_map_update(F->b, &m, err, sizeof(err)), 0);
    assert_int_equal(backend_shard_count(F->b), 2);
    backend_shard_info(F->b, 0, &si);
    assert_string_equal(si.name, "s2");
    backend_shard_info(F->b, 1, &si);
    assert_string_equal(si.name, "s3");
    s3_before = F->fakes[0].per_shard[2];
    F->fakes[0].per_shard[0] = 0;
    set_keys("rm");
    assert_int_equal(F->fakes[0].per_shard[0], 0);
    assert_true(F->fakes[0].per_shard[2] > s3_before);
    cluster_map_clear(&m);
}

/* Requests in flight across an update complete: one held by a fake on a
 * shard the update removes, one waiting for a retry on a shard whose
 * members the update reorders (no leader until after the update). */
static void test_map_update_in_flight(void **state)
{
    struct cluster_map m;
    struct cluster_shard *cs;
    struct tcall held, waiting, t;
    char err[256];
    char key1[32], key2[32];

    (void)state;
    F->hints = false;
    F->leader[1] = -1;
    start_backend(0);
    key_of_shard(0, key1, sizeof(key1));
    key_of_shard(1, key2, sizeof(key2));
    F->hold = 0;
    completed = 0;
    prep(&held, CACHE_OP_SET, key1, "v1");
    backend_submit(F->b, &held.call);
    prep(&waiting, CACHE_OP_SET, key2, "v2");
    backend_submit(F->b, &waiting.call);
    while (F->n_held < 1) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    run_for(50);
    assert_int_equal(completed, 0);

    /* s1 leaves, s3 comes, s2's members are reversed */
    map_add_shard(&F->map, "s3", 1);
    cluster_map_init(&m);
    cluster_map_copy(&m, &F->map);
    cluster_map_remove(&m, 0);
    cs = &m.shards[0];
    cs->members[0] = F->map.shards[1].members[2];
    cs->members[2] = F->map.shards[1].members[0];
    m.epoch = EPOCH + 1;
    expect_epoch(EPOCH + 1);
    route_with(&m);
    assert_int_equal(backend_map_update(F->b, &m, err, sizeof(err)), 0);
    assert_int_equal(backend_shard_count(F->b), 2);

    F->hold = HOLD_OFF;
    release_held();
    F->leader[1] = 2;
    run_until_completed(2, 5000);
    assert_int_equal(held.ncb, 1);
    assert_int_equal(held.call.outcome, OUTCOME_OK);
    assert_int_equal(held.call.result.status, CACHE_STORED);
    assert_int_equal(waiting.ncb, 1);
    assert_int_equal(waiting.call.outcome, OUTCOME_OK);
    assert_int_equal(waiting.call.result.status, CACHE_STORED);
    assert_int_equal(F->last_epoch, EPOCH + 1); /* the retry's */
    assert_int_equal(F->n_items[0], 1);

    /* FLUSH_ALL reaches the current shards only */
    F->leader[1] = 0;
    assert_int_equal(do_op(CACHE_OP_FLUSH_ALL, "", NULL, &t), CACHE_OK);
    assert_int_equal(F->n_items[0], 1);
    assert_int_equal(F->n_items[1], 0);
    cluster_map_clear(&m);
}

/* A map whose epoch is not newer changes nothing; neither does one the
 * ring refuses (-1, the old map stays). */
static void test_map_update_stale_or_bad(void **state)
{
    struct cluster_map m;
    struct tcall t;
    char err[256];
    char key[32];

    (void)state;
    start_backend(0);
    key_of_shard(0, key, sizeof(key));
    cluster_map_init(&m);
    cluster_map_copy(&m, &F->map);
    dead_members(&m, 0);
    map_add_shard(&m, "s3", 1);
    assert_int_equal(backend_map_update(F->b, &m, err, sizeof(err)), 0);
    m.epoch = EPOCH - 1;
    assert_int_equal(backend_map_update(F->b, &m, err, sizeof(err)), 0);
    assert_int_equal(backend_epoch(F->b), EPOCH);
    assert_int_equal(backend_shard_count(F->b), 2);
    assert_int_equal(do_op(CACHE_OP_SET, key, "v", &t), CACHE_STORED);
    assert_int_equal(F->fakes[0].writes, 1);

    /* newer, but two shards named s1: the ring refuses it */
    cluster_map_copy(&m, &F->map);
    m.epoch = EPOCH + 1;
    snprintf(m.shards[1].name, sizeof(m.shards[1].name), "s1");
    err[0] = '\0';
    assert_int_equal(backend_map_update(F->b, &m, err, sizeof(err)), -1);
    print_message("refused: %s\n", err);
    assert_true(err[0] != '\0');
    assert_int_equal(backend_epoch(F->b), EPOCH);
    assert_int_equal(backend_shard_count(F->b), 2);
    assert_int_equal(do_op(CACHE_OP_SET, key, "w", &t), CACHE_STORED);
    assert_int_equal(F->last_epoch, EPOCH);
    assert_int_equal(F->misrouted, 0);
    cluster_map_clear(&m);
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

/* A command of @type naming queue @queue, submitted. */
static void mq_submit(enum mq_sm_cmd_type type, const char *queue,
                      bool passive, struct tmq *t)
{
    struct amqp_broker broker = amqp_remote_broker(F->mq);

    memset(t, 0, sizeof(*t));
    t->call.kind = AMQP_BROKER_MQ;
    t->call.shard = 0; /* the edge's guess; routed by the name */
    t->call.mq.type = type;
    t->call.mq.passive = passive;
    t->call.mq.vhost = "/";
    t->call.mq.vhost_len = 1;
    t->call.mq.queue = queue;
    t->call.mq.queue_len = strlen(queue);
    t->call.cb = on_mq;
    t->call.data = t;
    completed = 0;
    broker.ops->submit(broker.self, &t->call);
}

/* mq_submit, run to completion. */
static enum outcome mq_named(enum mq_sm_cmd_type type, const char *queue,
                             bool passive, struct tmq *t)
{
    mq_submit(type, queue, passive, t);
    run_until_completed(1, 5000);
    assert_int_equal(t->ncb, 1);
    if (t->call.status == OUTCOME_OK) {
        mq_sm_result_clear(&t->call.mq_result);
    }
    return t->call.status;
}

/* The same failover as test_dead_leader_hint_ignored, for a queue command
 * of the AMQP side: it reaches the new leader instead of bouncing between
 * the dead node and the follower that names it until the deadline. */
static void test_amqp_dead_leader_hint_ignored(void **state)
{
    struct amqp_remote_config rc = {0};
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
    t0 = clock_mono_ms();
    mq_submit(MQ_SM_DECLARE, "q", true, &t); /* passive: no PLACE first */
    run_until_completed(1, 5000);
    assert_int_equal(t.ncb, 1);
    assert_int_equal(t.call.status, OUTCOME_OK);
    mq_sm_result_clear(&t.call.mq_result);
    assert_true(t.done_ms - t0 < 1000);
    assert_int_equal(F->fakes[1].mq_reqs, 1); /* the stale hint, once */
    assert_int_equal(F->fakes[2].mq_done, 1);
}

/* An AMQP side over @map. */
static void start_amqp(const struct cluster_map *map, unsigned timeout_ms)
{
    struct amqp_remote_config rc = {0};
    char err[256];

    rc.map = map;
    rc.request_timeout_ms = timeout_ms;
    F->mq = amqp_remote_new(&F->loop, &rc, err, sizeof(err));
    assert_non_null(F->mq);
}

/* A command to the queue group of broker shard index @shard (EXPIRE:
 * commands naming a queue are routed by the name). */
static enum outcome mq_at(unsigned shard, struct tmq *t)
{
    struct amqp_broker broker = amqp_remote_broker(F->mq);

    memset(t, 0, sizeof(*t));
    t->call.kind = AMQP_BROKER_MQ;
    t->call.shard = shard;
    t->call.mq.type = MQ_SM_EXPIRE;
    t->call.cb = on_mq;
    t->call.data = t;
    completed = 0;
    broker.ops->submit(broker.self, &t->call);
    run_until_completed(1, 5000);
    assert_int_equal(t->ncb, 1);
    if (t->call.status == OUTCOME_OK) {
        mq_sm_result_clear(&t->call.mq_result);
    }
    return t->call.status;
}

/* The meta group is the map's meta members (not the first shard's); a
 * newer map moves it, and the meta watch follows at once. */
static void test_amqp_meta_members(void **state)
{
    struct cluster_map m;
    char err[256];
    unsigned i;

    (void)state;
    /* meta on fake 1 alone; the shards list all three */
    F->map.meta[0] = F->map.shards[0].members[1];
    F->map.n_meta = 1;
    start_amqp(&F->map, 300);
    run_for(300); /* the watch: NO_GROUP, again every 200 ms */
    assert_true(F->fakes[1].meta_reqs >= 1);
    assert_int_equal(F->fakes[0].meta_reqs, 0);
    assert_int_equal(F->fakes[2].meta_reqs, 0);

    cluster_map_init(&m);
    cluster_map_copy(&m, &F->map);
    m.meta[0] = F->map.shards[0].members[2];
    m.epoch = EPOCH + 1;
    assert_int_equal(amqp_remote_map_update(F->mq, &m, err, sizeof(err)), 0);
    run_for(30); /* a watch sent just before the update */
    for (i = 0; i < N_FAKES; i++) {
        F->fakes[i].meta_reqs = 0;
    }
    run_for(300);
    assert_true(F->fakes[2].meta_reqs >= 1);
    assert_int_equal(F->fakes[0].meta_reqs, 0);
    assert_int_equal(F->fakes[1].meta_reqs, 0);

    /* not newer: ignored */
    m.meta[0] = F->map.shards[0].members[0];
    assert_int_equal(amqp_remote_map_update(F->mq, &m, err, sizeof(err)), 0);
    for (i = 0; i < N_FAKES; i++) {
        F->fakes[i].meta_reqs = 0;
    }
    run_for(300);
    assert_true(F->fakes[2].meta_reqs >= 1);
    assert_int_equal(F->fakes[0].meta_reqs, 0);

    /* a map without meta members is refused */
    m.epoch = EPOCH + 2;
    m.n_meta = 0;
    assert_int_equal(amqp_remote_map_update(F->mq, &m, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "meta"));
    cluster_map_clear(&m);
}

/* The broker's shard index follows the map: a new shard gets an index
 * (shard_of by the new ring) and its queue group; when a shard leaves,
 * the index of those after it moves down with them. */
/* Queues stay where the queue ring puts them when shards are added (the
 * keys move, the queues do not); the broker's shard index is a map index,
 * mapped from the queue ring's nodes by name; removing an added shard
 * moves no queue either. */
static void test_amqp_map_update_shards(void **state)
{
    struct amqp_broker broker;
    struct cluster_map m;
    struct ring *qring;
    struct tmq t;
    char err[256], key[64];
    unsigned i, n_on_s3 = 0;

    (void)state;
    start_amqp(&F->map, 1000);
    broker = amqp_remote_broker(F->mq);
    assert_int_equal(broker.ops->shard_count(broker.self), 2);
    qring = cluster_map_queue_ring(&F->map, err, sizeof(err));
    assert_non_null(qring);

    map_add_shard(&F->map, "s3", 1);
    F->map.epoch = EPOCH + 1;
    route_with(&F->map);
    assert_int_equal(amqp_remote_map_update(F->mq, &F->map, err, sizeof(err)),
                     0);
    assert_int_equal(broker.ops->shard_count(broker.self), 3);
    for (i = 0; i < 200; i++) {
        size_t len;
        unsigned s;

        snprintf(key, sizeof(key), "q%u", i);
        s = broker.ops->shard_of(broker.self, "/", 1, key, strlen(key));
        len = ring_queue_key("/", 1, key, strlen(key), key, sizeof(key));
        assert_int_equal(s, ring_lookup(qring, key, len));
        n_on_s3 += s == 2;
    }
    assert_int_equal(n_on_s3, 0);
    assert_int_equal(mq_at(2, &t), OUTCOME_OK); /* s3's group works */
    assert_int_equal(F->fakes[0].mq_per_shard[2], 1);

    /* a queue ring in another order than the map: indexes by name */
    cluster_map_init(&m);
    cluster_map_copy(&m, &F->map);
    m.epoch = EPOCH + 2;
    snprintf(m.queue_ring[0].name, CLUSTER_NAME_MAX, "s3");
    assert_int_equal(amqp_remote_map_update(F->mq, &m, err, sizeof(err)), 0);
    for (i = 0, n_on_s3 = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "q%u", i);
        n_on_s3 += broker.ops->shard_of(broker.self, "/", 1, key,
                                        strlen(key)) == 2;
    }
    assert_true(n_on_s3 > 0);
    /* a map whose queue ring names a shard it lacks is refused */
    cluster_map_remove(&m, 2);
    m.epoch = EPOCH + 3;
    assert_int_equal(amqp_remote_map_update(F->mq, &m, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "s3"));
    assert_int_equal(broker.ops->shard_count(broker.self), 3);
    cluster_map_clear(&m);
    ring_free(qring);
}

static unsigned sum_places(void)
{
    unsigned i, n = 0;

    for (i = 0; i < N_FAKES; i++) {
        n += F->fakes[i].places;
    }
    return n;
}

static unsigned sum_mq(unsigned shard, bool done)
{
    unsigned i, n = 0;

    for (i = 0; i < N_FAKES; i++) {
        n += done ? F->fakes[i].mq_per_shard[shard] : F->fakes[i].mq_reqs;
    }
    return n;
}

/* A declare that may create its queue asks the meta group's directory
 * first and goes to the shard it names with its gen, whatever the edge's
 * index; a create refused for a stale gen is placed again. */
static void test_amqp_declare_placed(void **state)
{
    struct tmq t;

    (void)state;
    start_amqp(&F->map, 1000);
    F->place_to = "s2";
    F->place_gen = 7;
    assert_int_equal(mq_named(MQ_SM_DECLARE, "q", false, &t), OUTCOME_OK);
    assert_int_equal(sum_places(), 1);
    assert_int_equal(F->last_replace_gen, 0);
    assert_int_equal(F->last_declare_gen, 7);
    assert_int_equal(sum_mq(1, true), 1); /* at s2 */
    assert_int_equal(t.call.shard, 1);    /* and the edge learns it */

    F->mq_stale_left = 1;
    assert_int_equal(mq_named(MQ_SM_DECLARE, "q2", false, &t), OUTCOME_OK);
    assert_int_equal(sum_places(), 3);
    assert_int_equal(F->last_replace_gen, 7);
    assert_int_equal(F->last_declare_gen, 14);
    assert_int_equal(sum_mq(1, true), 2);

    /* a passive declare is routed, not placed */
    assert_int_equal(mq_named(MQ_SM_DECLARE, "q3", true, &t), OUTCOME_OK);
    assert_int_equal(sum_places(), 3);
}

/* The directory places a queue on a shard the router's map does not have
 * yet: the declare waits (sent nowhere) until a map with it arrives. */
static void test_amqp_unknown_shard_waits_for_map(void **state)
{
    struct tmq t;
    char err[256];

    (void)state;
    start_amqp(&F->map, 3000);
    map_add_shard(&F->map, "s3", 1); /* the fakes host it, the router not */
    F->map.epoch = EPOCH + 1;
    F->place_to = "s3";
    F->place_gen = 9;
    mq_submit(MQ_SM_DECLARE, "q", false, &t);
    run_for(150);
    assert_int_equal(t.ncb, 0);
    assert_int_equal(sum_places(), 1);
    assert_int_equal(sum_mq(0, false), 0); /* sent to no shard */
    assert_int_equal(amqp_remote_map_update(F->mq, &F->map, err, sizeof(err)),
                     0);
    run_until_completed(1, 2000);
    assert_int_equal(t.call.status, OUTCOME_OK);
    mq_sm_result_clear(&t.call.mq_result);
    assert_int_equal(sum_mq(2, true), 1);
    assert_int_equal(sum_mq(0, false), 1);
    assert_int_equal(t.call.shard, 2);
    assert_int_equal(F->last_declare_gen, 9);
}

/* A queue in a move answers MOVING: the router asks again until it is
 * not, within the request's deadline. */
static void test_amqp_moving_waited_out(void **state)
{
    struct tmq t;
    uint64_t t0;

    (void)state;
    start_amqp(&F->map, 400);
    F->mq_moving_left = 3;
    t0 = clock_mono_ms();
    assert_int_equal(mq_named(MQ_SM_ENQUEUE, "q", false, &t), OUTCOME_OK);
    assert_true(clock_mono_ms() - t0 >= 30);
    assert_int_equal(sum_mq(0, false), 4);
    assert_int_equal(sum_mq(0, true) + sum_mq(1, true), 1);

    F->mq_moving_left = 1000000;
    t0 = clock_mono_ms();
    assert_int_equal(mq_named(MQ_SM_ENQUEUE, "q", false, &t),
                     OUTCOME_UNAVAILABLE);
    assert_true(clock_mono_ms() - t0 >= 390);
    assert_true(clock_mono_ms() - t0 < 1500);
}

/* RPC_BUSY on a queue command is retried by the router until its
 * deadline, as for cache ops; still busy then, the call completes BUSY
 * (never executed, the edge may send it again), not UNAVAILABLE. */
static void test_amqp_busy_reaches_edge(void **state)
{
    struct tmq t;

    (void)state;
    start_amqp(&F->map, 1000);
    F->busy_left = 2;
    assert_int_equal(mq_named(MQ_SM_ENQUEUE, "q", false, &t), OUTCOME_OK);
    assert_int_equal(F->n_busy, 2);
    assert_int_equal(sum_mq(0, true) + sum_mq(1, true), 1);

    F->busy_left = UINT32_MAX;
    assert_int_equal(mq_named(MQ_SM_ENQUEUE, "q", false, &t), OUTCOME_BUSY);
    assert_true(F->n_busy > 3);
    assert_int_equal(sum_mq(0, true) + sum_mq(1, true), 1);
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
        cmocka_unit_test_setup_teardown(test_stepped_down_leader_hint_ignored,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_unavailable_write_retried_with_its_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unavailable_write_until_deadline,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_write_timed_out_retried_first_result, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_write_retried_after_connection_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_retried_after_connection_lost,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_retried_with_backoff, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeout_keeps_a_live_leader,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_busy_after_unknown_is_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_retried_as_busy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_until_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_busy_until_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_owner_followed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_owner_unknown_waits_for_map,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_moving_waited_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_epoch_and_bad_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flush_all_fans_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_stats_metrics, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_update_members, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_update_keeps_leader_guess,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_map_update_adds_and_removes_shard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_update_in_flight, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_update_stale_or_bad, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_amqp_dead_leader_hint_ignored,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_amqp_meta_members, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_amqp_declare_placed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_amqp_moving_waited_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_amqp_unknown_shard_waits_for_map,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_amqp_map_update_shards, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_amqp_busy_reaches_edge, setup,
                                        teardown),
    };

    log_init("test_backend", LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
