/*
 * Unit tests of node/config: the amqp key and --amqp flag (address, "off",
 * ""), the read mode (flag and file key), the groups of a map with
 * members that join, and --rejoin.
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

#include "node/config.h"

static void test_amqp_flag(void **state)
{
    struct node_config c;
    char err[256];
    char *args1[] = {"ringmq-node", "--standalone", "--amqp",
                     "127.0.0.1:5673"};
    char *args2[] = {"ringmq-node", "--amqp", "off"};
    char *args3[] = {"ringmq-node", "--amqp", "nonsense"};
    char *args4[] = {"ringmq-node", "--amqp", ""};

    (void)state;
    node_config_defaults(&c);
    assert_string_equal(c.amqp, "");
    assert_int_equal(node_config_parse_args(&c, 4, args1, err, sizeof(err)),
                     0);
    assert_string_equal(c.amqp, "127.0.0.1:5673");
    assert_true(c.standalone);
    assert_int_equal(node_config_parse_args(&c, 3, args2, err, sizeof(err)),
                     0);
    assert_string_equal(c.amqp, "");
    assert_int_equal(node_config_parse_args(&c, 3, args3, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "amqp"));
    snprintf(c.amqp, sizeof(c.amqp), "127.0.0.1:1");
    assert_int_equal(node_config_parse_args(&c, 3, args4, err, sizeof(err)),
                     0);
    assert_string_equal(c.amqp, "");
}

static void test_read_mode(void **state)
{
    struct node_config c;
    char err[256];
    char *lin[] = {"ringmq-node", "--read-mode", "linearizable"};
    char *leader[] = {"ringmq-node", "--read-mode", "leader"};
    char *bad[] = {"ringmq-node", "--read-mode", "lease"};

    (void)state;
    node_config_defaults(&c);
    assert_false(c.linearizable_reads);
    assert_int_equal(node_config_parse_args(&c, 3, lin, err, sizeof(err)), 0);
    assert_true(c.linearizable_reads);
    assert_int_equal(node_config_parse_args(&c, 3, leader, err, sizeof(err)),
                     0);
    assert_false(c.linearizable_reads);
    assert_int_equal(node_config_parse_args(&c, 3, bad, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "read_mode 'lease'"));
    assert_false(c.linearizable_reads);
}

/* Write @text to a fresh temporary file; its path goes to @path. */
static void write_config(char *path, size_t pathlen, const char *text)
{
    FILE *fp;
    int fd;

    snprintf(path, pathlen, "/tmp/ringmq-test-config-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    fp = fdopen(fd, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

/* read_mode in the YAML file, and a flag after --config overriding it. */
static void test_read_mode_file(void **state)
{
    struct node_config c;
    char err[256];
    char good[64];
    char bad[64];
    char *load_good[] = {"ringmq-node", "--config", good};
    char *load_then_flag[] = {"ringmq-node", "--config", good, "--read-mode",
                              "leader"};
    char *flag_then_load[] = {"ringmq-node", "--read-mode", "leader",
                              "--config", good};

    (void)state;
    write_config(good, sizeof(good), "standalone: true\n"
                                     "read_mode: linearizable\n");
    write_config(bad, sizeof(bad), "read_mode: strict\n");

    node_config_defaults(&c);
    assert_int_equal(node_config_load(&c, good, err, sizeof(err)), 0);
    assert_true(c.linearizable_reads);

    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 3, load_good, err,
                                            sizeof(err)),
                     0);
    assert_true(c.linearizable_reads);
    assert_int_equal(node_config_parse_args(&c, 5, load_then_flag, err,
                                            sizeof(err)),
                     0);
    assert_false(c.linearizable_reads);
    assert_int_equal(node_config_parse_args(&c, 5, flag_then_load, err,
                                            sizeof(err)),
                     0);
    assert_true(c.linearizable_reads);

    /* An unknown mode is an error that names the file, key and value. */
    node_config_defaults(&c);
    assert_int_equal(node_config_load(&c, bad, err, sizeof(err)), -1);
    assert_non_null(strstr(err, bad));
    assert_non_null(strstr(err, "read_mode 'strict'"));
    assert_non_null(strstr(err, "expected leader or linearizable"));
    assert_false(c.linearizable_reads);

    unlink(good);
    unlink(bad);
}

/* Node @id of the map at @map, and its first group as rgroup_config. The
 * node keeps its map for its lifetime: the caller frees c->cluster. */
static void map_node_group(struct node_config *c, const char *map,
                           const char *id, struct rgroup_config *rc)
{
    static char dir[PATH_MAX + 80];
    char err[256];
    char *args[] = {"ringmq-node", "--cluster", (char *)map, "--id",
                    (char *)id, "--data-dir", "/tmp/ringmq-test-join"};

    node_config_defaults(c);
    assert_int_equal(node_config_parse_args(c, 7, args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(c, err, sizeof(err)), 0);
    node_config_group(c, 0, rc, dir, sizeof(dir));
}

/* Members with join: true in the map: a node that joins gets an rgroup that
 * does not bootstrap; the others bootstrap with the members without join
 * (the group's first configuration), whatever the map says was added. */
static void test_join_members(void **state)
{
    struct node_config c;
    struct rgroup_config rc;
    char map[64];

    (void)state;
    write_config(map, sizeof(map),
                 "shards:\n"
                 "  - name: s1\n"
                 "    members:\n"
                 "      - {id: 1, raft: 127.0.0.1:7210, rpc: 127.0.0.1:7101}\n"
                 "      - {id: 2, raft: 127.0.0.1:7220, rpc: 127.0.0.1:7102}\n"
                 "      - {id: 4, raft: n4.example:7240, rpc: n4.example:7104, "
                 "join: true}\n"
                 "      - {id: 3, raft: 127.0.0.1:7230, rpc: 127.0.0.1:7103}\n");

    map_node_group(&c, map, "2", &rc);
    assert_false(rc.join);
    assert_int_equal(rc.n_members, 3);
    assert_int_equal(rc.members[0].id, 1);
    assert_int_equal(rc.members[1].id, 2);
    assert_int_equal(rc.members[2].id, 3);
    /* hints name every member of the map, the joining one too */
    assert_string_equal(node_config_member_rpc(&c, 0, 4), "n4.example:7104");
    node_config_release(&c);

    map_node_group(&c, map, "4", &rc);
    assert_true(rc.join);
    assert_int_equal(rc.id, 4);
    assert_int_equal(rc.n_members, 4);
    assert_string_equal(rc.members[2].raft_address, "n4.example:7240");
    node_config_release(&c);
    unlink(map);
}

/* Every group keeps its identity marker in the node's data directory;
 * --rejoin reaches every group. */
static void test_rejoin_flag(void **state)
{
    struct node_config c;
    struct rgroup_config rc;
    char dir[PATH_MAX + 80];
    char err[256];
    char *args[] = {"ringmq-node", "--group", "s1", "--member",
                    "1@127.0.0.1:7210", "--data-dir", "/tmp/ringmq-test-rj",
                    "--rejoin"};

    (void)state;
    node_config_defaults(&c);
    assert_false(c.rejoin);
    assert_int_equal(node_config_parse_args(&c, 7, args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(&c, err, sizeof(err)), 0);
    node_config_group(&c, 0, &rc, dir, sizeof(dir));
    assert_string_equal(rc.marker_dir, "/tmp/ringmq-test-rj");
    assert_string_equal(rc.dir, "/tmp/ringmq-test-rj/s1");
    assert_false(rc.rejoin);

    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 8, args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(&c, err, sizeof(err)), 0);
    assert_true(c.rejoin);
    node_config_group(&c, 0, &rc, dir, sizeof(dir));
    assert_true(rc.rejoin);
}

/* Snapshots are incremental by default (forked for groups whose state
 * machine cannot); --snapshot-mode fork or inline reaches every
 * group, and anything else is refused. */
static void test_snapshot_mode(void **state)
{
    struct node_config c;
    struct rgroup_config rc;
    char dir[PATH_MAX + 80];
    char err[256];
    char *args[] = {"ringmq-node", "--group", "s1", "--member",
                    "1@127.0.0.1:7210", "--data-dir", "/tmp/ringmq-test-sm",
                    "--snapshot-mode", "inline"};
    char *fork_args[] = {"ringmq-node", "--group", "s1", "--member",
                         "1@127.0.0.1:7210", "--data-dir",
                         "/tmp/ringmq-test-sm", "--snapshot-mode", "fork"};
    char *bad[] = {"ringmq-node", "--snapshot-mode", "thread"};

    (void)state;
    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 7, args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(&c, err, sizeof(err)), 0);
    node_config_group(&c, 0, &rc, dir, sizeof(dir));
    assert_false(rc.inline_snapshots);
    assert_true(rc.incremental_snapshots);

    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 9, args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(&c, err, sizeof(err)), 0);
    node_config_group(&c, 0, &rc, dir, sizeof(dir));
    assert_true(rc.inline_snapshots);
    assert_false(rc.incremental_snapshots);

    node_config_defaults(&c);
    assert_int_equal(
        node_config_parse_args(&c, 9, fork_args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(&c, err, sizeof(err)), 0);
    node_config_group(&c, 0, &rc, dir, sizeof(dir));
    assert_false(rc.inline_snapshots);
    assert_false(rc.incremental_snapshots);

    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 3, bad, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "snapshot_mode 'thread'"));
}

/* The log kept in memory: 256 MiB per group unless told. */
static void test_log_memory(void **state)
{
    struct node_config c;
    struct rgroup_config rc;
    char dir[PATH_MAX + 80];
    char err[256];
    char *args[] = {"ringmq-node", "--group", "s1", "--member",
                    "1@127.0.0.1:7210", "--data-dir", "/tmp/ringmq-test-lm",
                    "--log-memory-mb", "64"};
    char *bad[] = {"ringmq-node", "--log-memory-mb", "0"};

    (void)state;
    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 7, args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(&c, err, sizeof(err)), 0);
    node_config_group(&c, 0, &rc, dir, sizeof(dir));
    assert_int_equal(rc.log_memory_bytes, (size_t)256 << 20);

    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 9, args, err, sizeof(err)), 0);
    assert_int_equal(node_config_finish(&c, err, sizeof(err)), 0);
    node_config_group(&c, 0, &rc, dir, sizeof(dir));
    assert_int_equal(rc.log_memory_bytes, (size_t)64 << 20);

    node_config_defaults(&c);
    assert_int_equal(node_config_parse_args(&c, 3, bad, err, sizeof(err)),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amqp_flag),
        cmocka_unit_test(test_read_mode),
        cmocka_unit_test(test_read_mode_file),
        cmocka_unit_test(test_join_members),
        cmocka_unit_test(test_rejoin_flag),
        cmocka_unit_test(test_snapshot_mode),
        cmocka_unit_test(test_log_memory),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
