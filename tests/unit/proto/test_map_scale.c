/*
 * A map of 256 shards end to end: the YAML file loads and validates, its
 * ring builds, the meta group's state machine takes it, and a member change
 * reaches a follower as a delta of one shard (not 256), through protobuf,
 * that brings the follower's copy to the leader's map (docs/scaling.md).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/unit/lib/map_assert.h"

#include "common/ring.h"
#include "proto/map_pb.h"
#include "proto/map_yaml.h"
#include "sm/map_sm.h"

#define N_SHARDS 256

/* Shard s has members 3s+1..3s+3, each its own node: raft ports spaced by
 * 10 (the +1 and +2 of the queue and meta groups stay free), one rpc port
 * per node. */
static void write_map(const char *path)
{
    FILE *f = fopen(path, "w");
    unsigned s, k;

    assert_non_null(f);
    fprintf(f, "epoch: 3\nshards:\n");
    for (s = 0; s < N_SHARDS; s++) {
        fprintf(f, "  - name: shard-%03u\n    weight: %u\n    members:\n", s,
                1 + s % 3);
        for (k = 0; k < 3; k++) {
            unsigned id = 3 * s + k + 1;
            fprintf(f,
                    "      - {id: %u, raft: 127.0.0.1:%u, rpc: "
                    "127.0.0.1:%u}\n",
                    id, 10000 + 10 * id, 40000 + id);
        }
    }
    fprintf(f, "routers:\n  - {name: r1, memcached: 127.0.0.1:11211}\n");
    assert_int_equal(fclose(f), 0);
}


/* @d packed, unpacked and decoded again, as a watch answer travels. */
static size_t through_pb(const struct map_delta *d, struct map_delta *out)
{
    struct map_pb_arena a = {0};
    Ringmq__MapDelta pb;
    Ringmq__MapDelta *unpacked;
    uint8_t *buf;
    size_t n;

    map_pb_delta_to(d, &pb, &a);
    n = ringmq__map_delta__get_packed_size(&pb);
    buf = malloc(n);
    assert_non_null(buf);
    ringmq__map_delta__pack(&pb, buf);
    map_pb_arena_clear(&a);
    unpacked = ringmq__map_delta__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(unpacked);
    assert_int_equal(map_pb_delta_from(unpacked, out), 0);
    ringmq__map_delta__free_unpacked(unpacked, NULL);
    return n;
}

static void test_256_shards(void **state)
{
    char path[] = "/tmp/ringmq-mapscale-XXXXXX";
    char err[256] = "";
    struct cluster_map *map = malloc(sizeof(*map));
    struct cluster_map *view = malloc(sizeof(*view));
    struct map_sm *sm = map_sm_new();
    struct map_sm_cmd c = {.type = MAP_SM_INIT, .map = map};
    struct map_sm_result res;
    struct map_delta d, full, back;
    struct ring *ring;
    size_t delta_bytes, full_bytes;
    int fd;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_map(path);
    cluster_map_init(map);
    if (cluster_map_load(map, path, err, sizeof(err)) != 0) {
        unlink(path);
        fail_msg("load: %s", err);
    }
    unlink(path);
    assert_int_equal(map->n_shards, N_SHARDS);
    assert_int_equal(map->epoch, 3);
    assert_string_equal(map->shards[N_SHARDS - 1].members[2].raft,
                        "127.0.0.1:17680");
    assert_int_equal(cluster_map_validate(map, err, sizeof(err)), 0);

    ring = cluster_map_ring(map, err, sizeof(err));
    assert_non_null(ring);
    assert_int_equal(ring_nodes(ring), N_SHARDS);
    ring_free(ring);

    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_epoch(sm), 3);

    /* A follower at epoch 3 (the map as loaded); member 769 joins shard
     * 100. */
    cluster_map_init(view);
    cluster_map_copy(view, map);
    c = (struct map_sm_cmd){.type = MAP_SM_MEMBER_ADD,
                            .expected_epoch = 3,
                            .group = "shard-100"};
    c.member.id = 769;
    snprintf(c.member.raft, sizeof(c.member.raft), "127.0.0.1:20000");
    snprintf(c.member.rpc, sizeof(c.member.rpc), "127.0.0.1:50000");
    c.member.join = 1;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_true(res.changed);
    assert_int_equal(res.epoch, 4);

    map_delta_init(&d);
    map_delta_init(&full);
    map_delta_init(&back);
    map_sm_delta(sm, 3, &d);
    assert_false(d.full);
    assert_int_equal(d.from, 3);
    assert_int_equal(d.epoch, 4);
    assert_int_equal(d.part.n_shards, 1);
    assert_string_equal(d.part.shards[0].name, "shard-100");
    assert_int_equal(d.part.shards[0].n_members, 4);
    assert_int_equal(d.n_removed, 0);
    assert_false(d.has_meta);
    assert_false(d.has_routers);

    delta_bytes = through_pb(&d, &back);
    assert_int_equal(back.part.n_shards, 1);
    assert_int_equal(map_delta_apply(view, &back), 0);
    map_assert_equal(view, map_sm_map(sm));
    assert_int_equal(cluster_map_validate(view, err, sizeof(err)), 0);

    /* The whole map, for scale: the delta is a few hundredths of it. */
    map_sm_delta(sm, 0, &full);
    assert_true(full.full);
    assert_int_equal(full.part.n_shards, N_SHARDS);
    map_delta_clear(&back);
    full_bytes = through_pb(&full, &back);
    assert_true(delta_bytes * 100 < full_bytes);

    map_delta_clear(&d);
    map_delta_clear(&full);
    map_delta_clear(&back);
    map_sm_free(sm);
    cluster_map_clear(view);
    cluster_map_clear(map);
    free(view);
    free(map);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_256_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
