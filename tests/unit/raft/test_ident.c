/*
 * test_ident: the replica identity (raft/ident.h) on its own, in a temp
 * directory: a node directory holding the markers and one group directory.
 * test_group.c has the same cases with real raft groups.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "raft/ident.h"
#include "tests/unit/lib/rm_tree.h"

struct env {
    char node[64];   /* the node's data directory: markers */
    char group[128]; /* the group's data directory */
    char err[512];
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));

    strcpy(e->node, "/tmp/ringmq-test-ident-XXXXXX");
    assert_non_null(mkdtemp(e->node));
    snprintf(e->group, sizeof(e->group), "%s/s1", e->node);
    assert_int_equal(mkdir(e->group, 0755), 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;

    rm_tree(e->node);
    free(e);
    return 0;
}

static int check(struct env *e, const char *group, uint64_t id, bool rejoin,
                 struct rident *found)
{
    e->err[0] = '\0';
    return rident_check(e->node, e->group, group, id, rejoin, found, e->err,
                        sizeof(e->err));
}

static void record(struct env *e, const struct rident *ident)
{
    assert_int_equal(rident_record(e->node, e->group, ident, e->err,
                                   sizeof(e->err)),
                     0);
}

static void put_file(const char *dir, const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static bool exists(const char *dir, const char *name)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* Stand-in for raft's files: the group directory has data. */
static void raft_data(struct env *e)
{
    put_file(e->group, "metadata1", "raft");
}

/* Empty the group's directory, as a lost disk or an operator would. */
static void wipe_group(struct env *e)
{
    assert_int_equal(rm_tree(e->group), 0);
    assert_int_equal(mkdir(e->group, 0755), 0);
}

/* A fresh replica starts as configured and, recorded, is known after. */
static void test_new_then_known(void **state)
{
    struct env *e = *state;
    struct rident found;
    struct rident again;

    assert_int_equal(check(e, "s1", 2, false, &found), RIDENT_NEW);
    assert_string_equal(found.group, "s1");
    assert_int_equal(found.id, 2);
    assert_true(found.incarnation != 0);
    raft_data(e);
    record(e, &found);
    assert_true(exists(e->group, RIDENT_FILE));
    assert_true(exists(e->node, "s1" RIDENT_MARKER_SUFFIX));
    assert_false(exists(e->group, RIDENT_FILE ".tmp"));

    assert_int_equal(check(e, "s1", 2, false, &again), RIDENT_KNOWN);
    assert_true(again.incarnation == found.incarnation);
    /* --rejoin changes nothing while the data is there */
    assert_int_equal(check(e, "s1", 2, true, &again), RIDENT_KNOWN);
}

/* The group's directory emptied: refused, with the way out named. */
static void test_lost_data_refused(void **state)
{
    struct env *e = *state;
    struct rident found;

    assert_int_equal(check(e, "s1", 2, false, &found), RIDENT_NEW);
    raft_data(e);
    record(e, &found);
    wipe_group(e);

    assert_int_equal(check(e, "s1", 2, false, &found), -1);
    assert_non_null(strstr(e->err, "group s1"));
    assert_non_null(strstr(e->err, "member 2"));
    assert_non_null(strstr(e->err, "ringmqctl member remove"));
    assert_non_null(strstr(e->err, "--rejoin"));

    /* the directory removed altogether, then made again empty: the same */
    assert_int_equal(rmdir(e->group), 0);
    assert_int_equal(mkdir(e->group, 0755), 0);
    assert_int_equal(check(e, "s1", 2, false, &found), -1);
}

/* --rejoin: a new incarnation, recorded, then known. */
static void test_rejoin(void **state)
{
    struct env *e = *state;
    struct rident first;
    struct rident found;

    assert_int_equal(check(e, "s1", 2, false, &first), RIDENT_NEW);
    raft_data(e);
    record(e, &first);
    wipe_group(e);

    assert_int_equal(check(e, "s1", 2, true, &found), RIDENT_REJOIN);
    assert_true(found.incarnation != first.incarnation);
    raft_data(e);
    record(e, &found);
    assert_int_equal(check(e, "s1", 2, false, &found), RIDENT_KNOWN);
}

/* Data from before markers, or whose marker was deleted: adopted. */
static void test_adopt(void **state)
{
    struct env *e = *state;
    struct rident found;
    struct rident kept;
    char marker[256];

    raft_data(e);
    assert_int_equal(check(e, "s1", 2, false, &found), RIDENT_ADOPT);
    record(e, &found);
    assert_int_equal(check(e, "s1", 2, false, &kept), RIDENT_KNOWN);

    snprintf(marker, sizeof(marker), "%s/s1" RIDENT_MARKER_SUFFIX, e->node);
    assert_int_equal(unlink(marker), 0);
    assert_int_equal(check(e, "s1", 2, false, &kept), RIDENT_ADOPT);
    assert_true(kept.incarnation == found.incarnation);
}

/* Another member's or group's data, another id, older data: refused. */
static void test_mismatch_refused(void **state)
{
    struct env *e = *state;
    struct rident found;
    struct rident other;
    char saved[512];
    char path[256];
    FILE *f;
    size_t n;

    assert_int_equal(check(e, "s1", 2, false, &found), RIDENT_NEW);
    raft_data(e);
    record(e, &found);

    /* the node started under another id with the same data directory */
    assert_int_equal(check(e, "s1", 3, false, &other), -1);
    assert_non_null(strstr(e->err, "member 2"));

    /* the group's directory holds another group's replica */
    other = found;
    snprintf(other.group, sizeof(other.group), "s2");
    assert_int_equal(rident_record(e->node, e->group, &other, e->err,
                                   sizeof(e->err)),
                     0);
    assert_int_equal(check(e, "s1", 2, false, &other), -1);
    assert_non_null(strstr(e->err, "group s2"));

    /* an older incarnation of this replica put back */
    snprintf(path, sizeof(path), "%s/%s", e->group, RIDENT_FILE);
    record(e, &found);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(saved, 1, sizeof(saved) - 1, f);
    fclose(f);
    saved[n] = '\0';
    wipe_group(e);
    assert_int_equal(check(e, "s1", 2, true, &other), RIDENT_REJOIN);
    raft_data(e);
    record(e, &other);
    put_file(e->group, RIDENT_FILE, saved);
    assert_int_equal(check(e, "s1", 2, false, &found), -1);
    assert_non_null(strstr(e->err, "incarnation"));

    /* data without an identity where the marker says there was one */
    wipe_group(e);
    raft_data(e);
    assert_int_equal(check(e, "s1", 2, true, &found), -1);
    assert_non_null(strstr(e->err, "without this replica's identity"));

    /* a damaged identity */
    put_file(e->group, RIDENT_FILE, "ringmq replica identity 1\ngroup s1\n");
    assert_int_equal(check(e, "s1", 2, false, &found), -1);
    assert_non_null(strstr(e->err, "damaged"));
}

/* The longest group name: a 63-byte shard name's queue group. */
static void test_long_name(void **state)
{
    struct env *e = *state;
    struct rident found;
    char name[72];

    memset(name, 'a', 63);
    memcpy(name + 63, ".mq", 4);
    assert_int_equal(check(e, name, 2, false, &found), RIDENT_NEW);
    raft_data(e);
    record(e, &found);
    assert_int_equal(check(e, name, 2, false, &found), RIDENT_KNOWN);
    assert_string_equal(found.group, name);
}

/* An interrupted first write leaves only a temporary file: still new. */
static void test_interrupted_write(void **state)
{
    struct env *e = *state;
    struct rident found;

    put_file(e->group, RIDENT_FILE ".tmp", "ringmq");
    assert_int_equal(check(e, "s1", 2, false, &found), RIDENT_NEW);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_then_known, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_data_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rejoin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatch_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_long_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_write, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
