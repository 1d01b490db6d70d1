/*
 * Unit tests for router/map_follow against fake meta members: rpc servers
 * that answer MapWatch from a map_sm the test changes, parking a watch
 * until a change (as a node does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "proto/map_pb.h"
#include "proto/rpc_frame.h"
#include "router/map_follow.h"
#include "rpc/rpc_server.h"

#define WAIT_MS 5000

struct fake {
    struct rpc_server *srv;
    char addr[64];
    struct rpc_server_req *parked;
    uint64_t parked_known;
    unsigned watches;
    uint64_t last_known;
};

static struct {
    uv_loop_t loop;
    struct fake fake;
    struct map_sm *sm;
    struct map_follow *follow;
    unsigned changes;
    struct cluster_map seen; /* the last map handed to changed() */
    bool closed;
} *F;

static void answer(struct fake *f, struct rpc_server_req *req, uint64_t known)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MapDelta pb;
    struct map_pb_arena a = {0};
    struct map_delta d;

    (void)f;
    map_delta_init(&d);
    map_sm_delta(F->sm, known, &d);
    map_pb_delta_to(&d, &pb, &a);
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MAP_DELTA;
    resp.map_delta = &pb;
    rpc_server_reply(req, &resp);
    map_pb_arena_clear(&a);
    map_delta_clear(&d);
}

static void on_request(void *data, struct rpc_server_req *req,
                       const Ringmq__RpcRequest *msg)
{
    struct fake *f = data;

    assert_int_equal(msg->body_case, RINGMQ__RPC_REQUEST__BODY_MAP_WATCH);
    f->watches++;
    f->last_known = msg->map_watch->known_epoch;
    if (map_sm_epoch(F->sm) > msg->map_watch->known_epoch) {
        answer(f, req, msg->map_watch->known_epoch);
        return;
    }
    assert_null(f->parked);
    f->parked = req;
    f->parked_known = msg->map_watch->known_epoch;
}

/* Apply @c at the fake meta group and wake the parked watch. */
static void change(const struct map_sm_cmd *c)
{
    struct map_sm_result res;
    struct rpc_server_req *req = F->fake.parked;

    map_sm_apply(F->sm, c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    if (req != NULL && res.changed) {
        F->fake.parked = NULL;
        answer(&F->fake, req, F->fake.parked_known);
    }
}

static void changed(void *data, const struct cluster_map *map)
{
    (void)data;
    F->changes++;
    cluster_map_copy(&F->seen, map);
}

static void run_until(bool (*pred)(void))
{
    uint64_t end = uv_now(&F->loop) + WAIT_MS;

    while (!pred() && uv_now(&F->loop) < end) {
        uv_run(&F->loop, UV_RUN_ONCE);
    }
    assert_true(pred());
}

static void member(struct cluster_member *m, uint64_t id, const char *rpc,
                   unsigned raft)
{
    memset(m, 0, sizeof(*m));
    m->id = id;
    snprintf(m->raft, sizeof(m->raft), "127.0.0.1:%u", raft);
    snprintf(m->rpc, sizeof(m->rpc), "%s", rpc);
}

/* One shard s1 of member 1; meta on member 1 at @meta_rpc. */
static void small_map(struct cluster_map *map, uint64_t epoch,
                      const char *meta_rpc)
{
    struct cluster_shard *s;

    cluster_map_init(map);
    map->epoch = epoch;
    s = cluster_map_append(map);
    snprintf(s->name, sizeof(s->name), "s1");
    member(&s->members[0], 1, meta_rpc, 7000);
    s->n_members = 1;
    member(&map->meta[0], 1, meta_rpc, 7002);
    map->n_meta = 1;
}

static int setup(void **state)
{
    struct rpc_server_config sc = {.host = "127.0.0.1"};
    struct map_sm_cmd init = {.type = MAP_SM_INIT};
    struct map_sm_result res;
    struct cluster_map boot;
    char err[256];

    (void)state;
    F = xcalloc(1, sizeof(*F));
    assert_int_equal(uv_loop_init(&F->loop), 0);
    F->fake.srv = rpc_server_new(&F->loop, &sc, on_request, &F->fake, err,
                                 sizeof(err));
    assert_non_null(F->fake.srv);
    snprintf(F->fake.addr, sizeof(F->fake.addr), "127.0.0.1:%d",
             rpc_server_port(F->fake.srv));
    cluster_map_init(&F->seen);
    F->sm = map_sm_new();
    small_map(&boot, 5, F->fake.addr);
    init.map = &boot;
    map_sm_apply(F->sm, &init, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    cluster_map_clear(&boot);
    return 0;
}

static void on_closed(void *data)
{
    (void)data;
    F->closed = true;
}

static bool is_closed(void)
{
    return F->closed;
}

static int teardown(void **state)
{
    (void)state;
    if (F->follow != NULL) {
        map_follow_close(F->follow, on_closed, NULL);
        run_until(is_closed);
    }
    if (F->fake.parked != NULL) {
        answer(&F->fake, F->fake.parked, F->fake.parked_known);
    }
    rpc_server_close(F->fake.srv, NULL, NULL);
    uv_run(&F->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&F->loop), 0);
    cluster_map_clear(&F->seen);
    map_sm_free(F->sm);
    free(F);
    F = NULL;
    return 0;
}

static void start(const struct cluster_map *seed)
{
    struct map_follow_config cfg = {.seed = seed, .changed = changed};
    char err[256];

    F->follow = map_follow_new(&F->loop, &cfg, err, sizeof(err));
    assert_non_null(F->follow);
}

static bool one_change(void)
{
    return F->changes >= 1;
}

static bool two_changes(void)
{
    return F->changes >= 2;
}

static bool parked(void)
{
    return F->fake.parked != NULL;
}

/* The meta group's map wins over the seed, even a seed with a higher
 * epoch (the file only bootstraps); then a change arrives as a delta. */
static void test_adopts_meta_map_then_deltas(void **state)
{
    struct cluster_map seed;
    struct map_sm_cmd add = {.type = MAP_SM_MEMBER_ADD, .group = "s1"};
    struct map_follow_counters c;

    (void)state;
    small_map(&seed, 9, F->fake.addr);
    seed.shards[0].weight = 3;
    start(&seed);
    cluster_map_clear(&seed);
    run_until(one_change);
    assert_int_equal(F->seen.epoch, 5);
    assert_int_equal(F->seen.shards[0].weight, 1);
    assert_int_equal(F->fake.last_known, 0); /* asked for all of it */
    run_until(parked);
    assert_int_equal(F->fake.parked_known, 5);

    member(&add.member, 2, "127.0.0.1:1", 7010);
    change(&add);
    run_until(two_changes);
    assert_int_equal(F->seen.epoch, 6);
    assert_int_equal(F->seen.shards[0].n_members, 2);
    assert_int_equal(map_follow_map(F->follow)->epoch, 6);
    map_follow_counters(F->follow, &c);
    assert_int_equal(c.changes, 2);
    assert_int_equal(c.failures, 0);
}

/* A dead first meta member: the watch moves on to the next one. */
static void test_next_member_after_failure(void **state)
{
    struct cluster_map seed;
    struct map_follow_counters c;

    (void)state;
    small_map(&seed, 1, F->fake.addr);
    seed.meta[1] = seed.meta[0];
    member(&seed.meta[0], 2, "127.0.0.1:1", 7012); /* refuses */
    seed.n_meta = 2;
    start(&seed);
    cluster_map_clear(&seed);
    run_until(one_change);
    assert_int_equal(F->seen.epoch, 5);
    map_follow_counters(F->follow, &c);
    assert_true(c.failures >= 1);
}

/* Closing with a watch parked at the node ends cleanly. */
static void test_close_while_parked(void **state)
{
    struct cluster_map seed;

    (void)state;
    small_map(&seed, 1, F->fake.addr);
    start(&seed);
    cluster_map_clear(&seed);
    run_until(parked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_adopts_meta_map_then_deltas,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_member_after_failure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_while_parked, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
