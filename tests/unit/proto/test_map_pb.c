/* Unit tests for proto/map_pb: the map, its commands and deltas through
 * protobuf bytes and back, and refusal of what does not fit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/lib/map_assert.h"

#include "proto/map_pb.h"

static void sample(struct cluster_map *map)
{
    unsigned s, i;

    cluster_map_init(map);
    map->epoch = 9;
    for (s = 0; s < 3; s++) {
        struct cluster_shard *sh = cluster_map_append(map);
        snprintf(sh->name, sizeof(sh->name), "shard-%u", s);
        sh->weight = s + 2;
        /* joining shards come last */
        sh->state = s == 0   ? CLUSTER_SHARD_SERVING
                    : s == 1 ? CLUSTER_SHARD_DRAINING
                             : CLUSTER_SHARD_JOINING;
        for (i = 0; i < 3; i++) {
            struct cluster_member *m = &sh->members[i];
            m->id = 3 * s + i + 1;
            snprintf(m->raft, sizeof(m->raft), "n%u.example:%u", i,
                     7000 + 10 * (3 * s + i));
            snprintf(m->rpc, sizeof(m->rpc), "n%u.example:71%02u", i,
                     3 * s + i);
            m->join = i == 2;
        }
        sh->n_members = 3;
    }
    assert_int_equal(cluster_map_default_meta(map, NULL, 0), 0);
    map->n_routers = 2;
    snprintf(map->routers[0].name, CLUSTER_NAME_MAX, "r1");
    snprintf(map->routers[0].memcached, CLUSTER_ADDR_MAX, "127.0.0.1:11211");
    snprintf(map->routers[1].name, CLUSTER_NAME_MAX, "r2");
    snprintf(map->routers[1].amqp, CLUSTER_ADDR_MAX, "127.0.0.1:5673");
}


/* Pack @m with its descriptor's packer and unpack a fresh copy. */
static Ringmq__MapCommand *cmd_roundtrip(const Ringmq__MapCommand *m)
{
    size_t n = ringmq__map_command__get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    Ringmq__MapCommand *back;

    ringmq__map_command__pack(m, buf);
    back = ringmq__map_command__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(back);
    return back;
}

static void test_init_command_roundtrip(void **state)
{
    struct cluster_map map;
    struct map_sm_cmd c = {.type = MAP_SM_INIT, .map = &map};
    struct map_pb_arena a = {0};
    Ringmq__MapCommand pb;
    Ringmq__MapCommand *back;
    struct map_pb_cmd out;

    (void)state;
    sample(&map);
    map_pb_cmd_to(&c, &pb, &a);
    back = cmd_roundtrip(&pb);
    map_pb_arena_clear(&a);
    assert_int_equal(map_pb_cmd_from(back, &out), 0);
    assert_int_equal(out.cmd.type, MAP_SM_INIT);
    assert_non_null(out.cmd.map);
    map_assert_equal(out.cmd.map, &map);
    map_pb_cmd_clear(&out);
    ringmq__map_command__free_unpacked(back, NULL);
    cluster_map_clear(&map);
}

static void test_member_command_roundtrip(void **state)
{
    struct map_sm_cmd c = {.type = MAP_SM_MEMBER_ADD, .group = "s1",
                           .expected_epoch = 12};
    struct map_pb_arena a = {0};
    Ringmq__MapCommand pb;
    Ringmq__MapCommand *back;
    struct map_pb_cmd out;

    (void)state;
    c.member.id = 4;
    snprintf(c.member.raft, sizeof(c.member.raft), "10.0.0.4:7210");
    snprintf(c.member.rpc, sizeof(c.member.rpc), "10.0.0.4:7101");
    c.member.join = 1;
    map_pb_cmd_to(&c, &pb, &a);
    back = cmd_roundtrip(&pb);
    map_pb_arena_clear(&a);
    assert_int_equal(map_pb_cmd_from(back, &out), 0);
    assert_int_equal(out.cmd.type, MAP_SM_MEMBER_ADD);
    assert_int_equal(out.cmd.expected_epoch, 12);
    assert_string_equal(out.cmd.group, "s1");
    assert_null(out.cmd.map);
    assert_null(out.cmd.shard);
    assert_memory_equal(&out.cmd.member, &c.member, sizeof(c.member));
    map_pb_cmd_clear(&out);
    ringmq__map_command__free_unpacked(back, NULL);
}

static void test_bad_commands_refused(void **state)
{
    Ringmq__MapCommand pb = RINGMQ__MAP_COMMAND__INIT;
    Ringmq__ClusterMember m = RINGMQ__CLUSTER_MEMBER__INIT;
    Ringmq__ClusterShard s = RINGMQ__CLUSTER_SHARD__INIT;
    char long_name[CLUSTER_NAME_MAX + 1];
    char long_addr[CLUSTER_ADDR_MAX + 1];
    struct map_pb_cmd out;

    (void)state;
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    memset(long_addr, 'y', sizeof(long_addr) - 1);
    long_addr[sizeof(long_addr) - 1] = '\0';
    pb.group = "";
    pb.type = MAP_SM_CMD__COUNT;
    assert_int_equal(map_pb_cmd_from(&pb, &out), -1);
    map_pb_cmd_clear(&out);
    pb.type = MAP_SM_SHARD_STATE;
    pb.state = CLUSTER_SHARD_STATE__COUNT;
    assert_int_equal(map_pb_cmd_from(&pb, &out), -1);
    map_pb_cmd_clear(&out);
    pb.state = 0;
    pb.group = long_name;
    assert_int_equal(map_pb_cmd_from(&pb, &out), -1);
    map_pb_cmd_clear(&out);
    pb.group = "s1";
    m.raft = long_addr;
    m.rpc = "";
    pb.member = &m;
    assert_int_equal(map_pb_cmd_from(&pb, &out), -1);
    map_pb_cmd_clear(&out);
    pb.member = NULL;
    s.name = "s9";
    s.weight = CLUSTER_WEIGHT_MAX + 1;
    pb.shard = &s;
    assert_int_equal(map_pb_cmd_from(&pb, &out), -1);
    map_pb_cmd_clear(&out);
}

static void test_delta_roundtrip(void **state)
{
    struct map_sm *sm = map_sm_new();
    struct cluster_map map, view;
    struct map_sm_cmd c = {.type = MAP_SM_INIT, .map = &map};
    struct map_sm_result res;
    struct map_delta d, back;
    struct map_pb_arena a = {0};
    Ringmq__MapDelta pb;
    Ringmq__MapDelta *unpacked;
    uint8_t *buf;
    size_t n;

    (void)state;
    sample(&map);
    map_sm_apply(sm, &c, &res);
    cluster_map_init(&view);
    cluster_map_copy(&view, map_sm_map(sm));
    /* the joining shard leaves (shards on the queue ring cannot) */
    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_REMOVE, .group = "shard-2"};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_WEIGHT, .group = "shard-1",
                            .weight = 9};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(map_sm_epoch(sm), 11);

    map_delta_init(&d);
    map_delta_init(&back);
    map_sm_delta(sm, 9, &d);
    map_pb_delta_to(&d, &pb, &a);
    n = ringmq__map_delta__get_packed_size(&pb);
    buf = malloc(n);
    ringmq__map_delta__pack(&pb, buf);
    map_pb_arena_clear(&a);
    unpacked = ringmq__map_delta__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(unpacked);
    assert_int_equal(map_pb_delta_from(unpacked, &back), 0);
    ringmq__map_delta__free_unpacked(unpacked, NULL);
    assert_int_equal(back.n_removed, 1);
    assert_int_equal(back.part.n_shards, 1);
    assert_int_equal(map_delta_apply(&view, &back), 0);
    map_assert_equal(&view, map_sm_map(sm));

    map_delta_clear(&d);
    map_delta_clear(&back);
    cluster_map_clear(&view);
    cluster_map_clear(&map);
    map_sm_free(sm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_command_roundtrip),
        cmocka_unit_test(test_member_command_roundtrip),
        cmocka_unit_test(test_bad_commands_refused),
        cmocka_unit_test(test_delta_roundtrip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
