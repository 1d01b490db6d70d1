/* Unit tests for sm/meta_rules: the rules between the queue directory and
 * the cluster map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sm/meta_rules.h"

struct fix {
    struct meta_sm *sm;
    struct map_sm *map;
};

/* s1, s2 serving, s3 joining; three members each. */
static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));
    struct cluster_map m;
    struct map_sm_cmd c = {.type = MAP_SM_INIT, .map = &m};
    struct map_sm_result res;
    unsigned s, i;

    cluster_map_init(&m);
    m.epoch = 1;
    for (s = 0; s < 3; s++) {
        struct cluster_shard *sh = cluster_map_append(&m);
        snprintf(sh->name, sizeof(sh->name), "s%u", s + 1);
        sh->weight = 1;
        sh->state = s == 2 ? CLUSTER_SHARD_JOINING : CLUSTER_SHARD_SERVING;
        for (i = 0; i < 3; i++) {
            struct cluster_member *mb = &sh->members[i];
            mb->id = 3 * s + i + 1;
            snprintf(mb->raft, sizeof(mb->raft), "127.0.0.1:%u",
                     7000 + 10 * (3 * s + i));
            snprintf(mb->rpc, sizeof(mb->rpc), "127.0.0.1:%u",
                     8000 + 10 * (3 * s + i));
        }
        sh->n_members = 3;
    }
    assert_int_equal(cluster_map_default_meta(&m, NULL, 0), 0);
    f->map = map_sm_new();
    map_sm_apply(f->map, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    cluster_map_clear(&m);
    f->sm = meta_sm_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;

    meta_sm_free(f->sm);
    map_sm_free(f->map);
    free(f);
    return 0;
}

static struct meta_sm_cmd dir_cmd(enum meta_sm_cmd_type type,
                                  const char *queue, const char *shard,
                                  const char *target, uint64_t gen)
{
    struct meta_sm_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = type;
    c.vhost = "/";
    c.vhost_len = 1;
    c.dest = queue;
    c.dest_len = strlen(queue);
    c.shard = shard;
    c.shard_len = shard ? strlen(shard) : 0;
    c.target = target;
    c.target_len = target ? strlen(target) : 0;
    c.gen = gen;
    return c;
}

/* @c through the rules, then applied if they let it: its reply code. */
static unsigned apply(struct fix *f, const struct meta_sm_cmd *c,
                      struct meta_sm_result *res)
{
    if (meta_rules_directory_ok(f->sm, f->map, c, res)) {
        meta_sm_apply(f->sm, c, res);
    }
    return res->reply_code;
}

static void test_place_only_on_serving(void **state)
{
    struct fix *f = *state;
    struct meta_sm_result res;
    struct meta_sm_cmd c;
    uint64_t v;

    c = dir_cmd(META_SM_QUEUE_PLACE, "q", "s3", NULL, 0);
    v = meta_sm_version(f->sm);
    assert_int_equal(apply(f, &c, &res), 406);
    assert_string_equal(res.reply_text, META_RULES_NOT_SERVING);
    assert_int_equal(meta_sm_version(f->sm), v);
    c = dir_cmd(META_SM_QUEUE_PLACE, "q", "s9", NULL, 0);
    assert_int_equal(apply(f, &c, &res), 406);
    c = dir_cmd(META_SM_QUEUE_PLACE, "q", "s2", NULL, 0);
    assert_int_equal(apply(f, &c, &res), 0);
    assert_string_equal(res.placement.shard, "s2");
    /* an existing entry answers, whatever a stale router proposes */
    c = dir_cmd(META_SM_QUEUE_PLACE, "q", "s3", NULL, 0);
    assert_int_equal(apply(f, &c, &res), 0);
    assert_string_equal(res.placement.shard, "s2");
}

static void test_move_only_to_serving(void **state)
{
    struct fix *f = *state;
    struct meta_sm_result res;
    struct meta_sm_cmd c;
    uint64_t gen;

    c = dir_cmd(META_SM_QUEUE_PLACE, "q", "s1", NULL, 0);
    assert_int_equal(apply(f, &c, &res), 0);
    gen = res.placement.gen;
    c = dir_cmd(META_SM_QUEUE_MOVE_BEGIN, "q", "s1", "s3", gen);
    assert_int_equal(apply(f, &c, &res), 406);
    assert_false(res.placement.moving);
    c = dir_cmd(META_SM_QUEUE_MOVE_BEGIN, "q", "s1", "s2", gen);
    assert_int_equal(apply(f, &c, &res), 0);
    assert_true(res.placement.moving);
}

static bool map_ok(struct fix *f, enum map_sm_cmd_type type,
                   const char *group, struct map_sm_result *res)
{
    struct map_sm_cmd c = {.type = type,
                           .group = group,
                           .state = CLUSTER_SHARD_DRAINING};

    return meta_rules_map_ok(f->sm, f->map, &c, res);
}

static void test_shard_with_queues_stays(void **state)
{
    struct fix *f = *state;
    struct meta_sm_result res;
    struct map_sm_result mres;
    struct meta_sm_cmd c;
    uint64_t gen;

    assert_true(map_ok(f, MAP_SM_SHARD_STATE, "s2", &mres));
    assert_true(map_ok(f, MAP_SM_SHARD_REMOVE, "s2", &mres));
    c = dir_cmd(META_SM_QUEUE_PLACE, "orders", "s2", NULL, 0);
    assert_int_equal(apply(f, &c, &res), 0);
    gen = res.placement.gen;
    assert_false(map_ok(f, MAP_SM_SHARD_STATE, "s2", &mres));
    assert_int_equal(mres.code, MAP_SM_INVALID);
    assert_non_null(strstr(mres.why, "1 queue(s)"));
    assert_non_null(strstr(mres.why, "orders"));
    assert_false(map_ok(f, MAP_SM_SHARD_REMOVE, "s2", &mres));
    /* other commands and other shards pass */
    assert_true(map_ok(f, MAP_SM_SHARD_WEIGHT, "s2", &mres));
    assert_true(map_ok(f, MAP_SM_SHARD_STATE, "s1", &mres));
    /* a queue moving to s1 pins s1 too */
    c = dir_cmd(META_SM_QUEUE_MOVE_BEGIN, "orders", "s2", "s1", gen);
    assert_int_equal(apply(f, &c, &res), 0);
    assert_false(map_ok(f, MAP_SM_SHARD_STATE, "s1", &mres));
    c = dir_cmd(META_SM_QUEUE_MOVE_COMMIT, "orders", NULL, "s1", 0);
    assert_int_equal(apply(f, &c, &res), 0);
    assert_true(map_ok(f, MAP_SM_SHARD_REMOVE, "s2", &mres));
    assert_false(map_ok(f, MAP_SM_SHARD_REMOVE, "s1", &mres));
    c = dir_cmd(META_SM_QUEUE_FORGET, "orders", "s1", NULL,
                res.placement.gen);
    assert_int_equal(apply(f, &c, &res), 0);
    assert_true(map_ok(f, MAP_SM_SHARD_REMOVE, "s1", &mres));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_place_only_on_serving, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_move_only_to_serving, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shard_with_queues_stays, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
