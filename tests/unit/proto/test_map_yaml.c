/* Unit tests for proto/cluster_map: the shared cluster map file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/map_yaml.h"

static const char *write_tmp(const char *text)
{
    static char path[64];
    FILE *f;
    int fd;

    snprintf(path, sizeof(path), "/tmp/ringmq-cmap-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static int load(const char *text, struct cluster_map *map, char *err)
{
    const char *path = write_tmp(text);
    int rv = cluster_map_load(map, path, err, 256);
    unlink(path);
    return rv;
}

#define MEMBERS3(a, b, c)                                          \
    "    members:\n"                                                \
    "      - {id: 1, raft: 127.0.0.1:" a ", rpc: 127.0.0.1:7101}\n" \
    "      - {id: 2, raft: 127.0.0.1:" b ", rpc: 127.0.0.1:7102}\n" \
    "      - {id: 3, raft: 127.0.0.1:" c ", rpc: n3.example:7103}\n"

static const char *good =
    "epoch: 7\n"
    "shards:\n"
    "  - name: s1\n"
    "    weight: 1\n" MEMBERS3("7201", "7211", "7221")
    "  - name: s2\n"
    "    weight: 2\n" MEMBERS3("7231", "7241", "7251")
    "routers:\n"
    "  - {name: r1, memcached: 127.0.0.1:11211, http: 127.0.0.1:9101}\n"
    "  - {name: r2, memcached: 127.0.0.1:11212, amqp: 127.0.0.1:5673}\n";

static void test_good_map(void **state)
{
    struct cluster_map *map = malloc(sizeof(*map));
    char err[256] = "";
    const struct cluster_shard *s2;

    (void)state;
    assert_int_equal(load(good, map, err), 0);
    assert_int_equal(map->epoch, 7);
    assert_int_equal(map->n_shards, 2);
    s2 = cluster_map_shard(map, "s2");
    assert_non_null(s2);
    assert_int_equal(s2->weight, 2);
    assert_int_equal(s2->n_members, 3);
    assert_string_equal(cluster_shard_member(s2, 3)->raft, "127.0.0.1:7251");
    assert_string_equal(cluster_shard_member(s2, 3)->rpc, "n3.example:7103");
    assert_null(cluster_shard_member(s2, 4));
    assert_null(cluster_map_shard(map, "s3"));
    assert_int_equal(map->n_routers, 2);
    assert_string_equal(cluster_map_router(map, "r2")->amqp, "127.0.0.1:5673");
    assert_string_equal(cluster_map_router(map, "r2")->http, "");
    /* meta runs on the first shard's members, at raft ports + 2 */
    assert_int_equal(map->n_meta, 3);
    assert_int_equal(map->meta[1].id, 2);
    assert_string_equal(map->meta[1].raft, "127.0.0.1:7213");
    assert_string_equal(map->meta[1].rpc, "127.0.0.1:7102");
    cluster_map_clear(map);
    free(map);
}

static void expect_error(const char *text, const char *needle)
{
    struct cluster_map *map = malloc(sizeof(*map));
    char err[256] = "";

    assert_int_equal(load(text, map, err), -1);
    if (strstr(err, needle) == NULL) {
        fail_msg("error '%s' lacks '%s'", err, needle);
    }
    cluster_map_clear(map);
    free(map);
}

static void test_bad_maps(void **state)
{
    (void)state;
    expect_error("shards: []\n", "no shards");
    expect_error("epoch: 0\nshards: []\n", "epoch");
    expect_error("bogus: 1\n", "unknown key 'bogus'");
    expect_error("shards:\n  - name: s1\n    weight: 0\n" MEMBERS3("1", "2", "3"),
                 "weight");
    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: '::1:7201', rpc: 127.0.0.1:1}\n",
                 "raft address");
    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:7201}\n",
                 "needs id, raft and rpc");
    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:1, rpc: 127.0.0.1:2}\n"
                 "      - {id: 1, raft: 127.0.0.1:3, rpc: 127.0.0.1:2}\n",
                 "twice");
    expect_error("shards:\n  - name: s1\n" MEMBERS3("1", "2", "3")
                 "  - name: s1\n" MEMBERS3("4", "5", "6"),
                 "defined twice");
    expect_error("shards:\n  - name: s1\n" MEMBERS3("1", "2", "3")
                 "  - name: s2\n" MEMBERS3("1", "5", "6"),
                 "used twice");
    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:1, rpc: 127.0.0.1:2}\n"
                 "  - name: s2\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:3, rpc: 127.0.0.1:9}\n",
                 "two rpc addresses");
    /* s1's member 1 runs its queue group at 7001: s2 cannot take it */
    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:7000, rpc: 127.0.0.1:1}\n"
                 "  - name: s2\n    members:\n"
                 "      - {id: 2, raft: 127.0.0.1:7001, rpc: 127.0.0.1:2}\n",
                 "queue group (raft port + 1) of shard s1 member 1");
    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:7000, rpc: 127.0.0.1:1}\n"
                 "  - name: s2\n    members:\n"
                 "      - {id: 2, raft: 127.0.0.1:65535, rpc: 127.0.0.1:2}\n",
                 "leaves no port for its queue group");
    expect_error("shards: [\n", "YAML");
    expect_error("shards:\n  - name: ../x\n" MEMBERS3("1", "2", "3"),
                 "bad shard name");
}

/* Members added later carry join: true; addresses may be DNS names up to
 * 253 characters (a StatefulSet pod's FQDN in a long namespace). */
static void test_join_and_long_names(void **state)
{
    struct cluster_map *map = malloc(sizeof(*map));
    char long_host[254];
    char text[2048];
    char err[256] = "";
    const struct cluster_shard *s1;

    (void)state;
    memset(long_host, 'a', 253);
    long_host[253] = '\0';
    for (size_t i = 60; i < 253; i += 61) {
        long_host[i] = '.';
    }
    snprintf(text, sizeof(text),
             "shards:\n  - name: s1\n    members:\n"
             "      - {id: 1, raft: %s:7210, rpc: %s:7101}\n"
             "      - {id: 2, raft: 127.0.0.1:7220, rpc: 127.0.0.1:7102, "
             "join: false}\n"
             "      - {id: 4, raft: 127.0.0.1:7240, rpc: 127.0.0.1:7104, "
             "join: true}\n",
             long_host, long_host);
    assert_int_equal(load(text, map, err), 0);
    s1 = cluster_map_shard(map, "s1");
    assert_int_equal(s1->n_members, 3);
    assert_int_equal(strlen(s1->members[0].raft), 253 + 5);
    assert_false(s1->members[0].join);
    assert_false(s1->members[1].join);
    assert_true(s1->members[2].join);
    cluster_map_clear(map);
    free(map);

    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:1, rpc: 127.0.0.1:2, "
                 "join: yes}\n",
                 "join");
    expect_error("shards:\n  - name: s1\n    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:1, rpc: 127.0.0.1:2, "
                 "join: true}\n",
                 "first member cannot join");
    memset(long_host, 'b', 253);
    long_host[252] = 'c'; /* 254 with the extra letter below */
    snprintf(text, sizeof(text),
             "shards:\n  - name: s1\n    members:\n"
             "      - {id: 1, raft: x%s:7210, rpc: 127.0.0.1:7101}\n",
             long_host);
    expect_error(text, "raft address");
}

static void test_raft_port_offset(void **state)
{
    static const struct {
        const char *addr;
        int delta;
        size_t room;
        const char *want; /* NULL: refused */
    } cases[] = {
        {"10.0.0.1:7210", 1, CLUSTER_ADDR_MAX, "10.0.0.1:7211"},
        {"10.0.0.1:7210", 2, CLUSTER_ADDR_MAX, "10.0.0.1:7212"},
        {"s1-2.s1.ns.svc:7210", 1, CLUSTER_ADDR_MAX, "s1-2.s1.ns.svc:7211"},
        {"127.0.0.1:0", 2, CLUSTER_ADDR_MAX, "127.0.0.1:0"}, /* ephemeral */
        {"127.0.0.1:65535", 1, CLUSTER_ADDR_MAX, NULL},
        {"nocolon", 1, CLUSTER_ADDR_MAX, NULL},
        {"127.0.0.1:7", 1, 5, NULL}, /* no room */
    };
    char out[CLUSTER_ADDR_MAX];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rv = cluster_raft_port_offset(cases[i].addr, cases[i].delta, out,
                                          cases[i].room);

        assert_int_equal(rv, cases[i].want != NULL ? 0 : -1);
        if (cases[i].want != NULL) {
            assert_string_equal(out, cases[i].want);
        }
    }
}

static void test_missing_file(void **state)
{
    struct cluster_map *map = malloc(sizeof(*map));
    char err[256] = "";

    (void)state;
    assert_int_equal(cluster_map_load(map, "/nonexistent/x.yaml", err,
                                      sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file"));
    cluster_map_clear(map);
    free(map);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_map),
        cmocka_unit_test(test_bad_maps),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_join_and_long_names),
        cmocka_unit_test(test_raft_port_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
