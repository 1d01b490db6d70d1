/* Unit tests for sm/map_sm: the cluster map as replicated state, and the
 * deltas that keep followers' copies equal to it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/lib/map_assert.h"

#include "sm/map_sm.h"

static void member(struct cluster_member *m, uint64_t id, unsigned port)
{
    memset(m, 0, sizeof(*m));
    m->id = id;
    snprintf(m->raft, sizeof(m->raft), "127.0.0.1:%u", port);
    snprintf(m->rpc, sizeof(m->rpc), "127.0.0.1:%u", 20000 + (unsigned)id);
}

/* s1 (members 1-3) and s2 (4-6), meta on s1's members. */
static void two_shards(struct cluster_map *map)
{
    unsigned s, i;

    cluster_map_init(map);
    map->epoch = 5;
    for (s = 0; s < 2; s++) {
        struct cluster_shard *sh = cluster_map_append(map);
        snprintf(sh->name, sizeof(sh->name), "s%u", s + 1);
        sh->weight = s + 1;
        for (i = 0; i < 3; i++) {
            member(&sh->members[i], 3 * s + i + 1, 7000 + 10 * (3 * s + i));
        }
        sh->n_members = 3;
    }
    assert_int_equal(cluster_map_default_meta(map, NULL, 0), 0);
    /* queues on s2 only, so that tests may remove s1 */
    map->queue_ring = calloc(1, sizeof(*map->queue_ring));
    snprintf(map->queue_ring[0].name, CLUSTER_NAME_MAX, "s2");
    map->queue_ring[0].weight = 1;
    map->n_queue_ring = 1;
}

static struct map_sm *booted(void)
{
    struct map_sm *sm = map_sm_new();
    struct cluster_map map;
    struct map_sm_cmd c = {.type = MAP_SM_INIT, .map = &map};
    struct map_sm_result res;

    two_shards(&map);
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_true(res.changed);
    assert_int_equal(res.epoch, 5);
    cluster_map_clear(&map);
    return sm;
}

static void test_init_once(void **state)
{
    struct map_sm *sm = booted();
    struct cluster_map other;
    struct map_sm_cmd c = {.type = MAP_SM_INIT, .map = &other};
    struct map_sm_result res;

    (void)state;
    two_shards(&other);
    other.shards[1].weight = 7;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_CONFLICT);
    assert_false(res.changed);
    assert_int_equal(map_sm_map(sm)->shards[1].weight, 2);
    assert_int_equal(map_sm_epoch(sm), 5);
    cluster_map_clear(&other);
    map_sm_free(sm);
}

static void test_commands_before_init_refused(void **state)
{
    struct map_sm *sm = map_sm_new();
    struct map_sm_cmd c = {.type = MAP_SM_SHARD_WEIGHT, .group = "s1",
                           .weight = 2};
    struct map_sm_result res;

    (void)state;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_NOT_FOUND);
    assert_int_equal(map_sm_epoch(sm), 0);
    map_sm_free(sm);
}

static void test_member_add_remove(void **state)
{
    struct map_sm *sm = booted();
    struct map_sm_cmd c = {.type = MAP_SM_MEMBER_ADD, .group = "s1",
                           .expected_epoch = 5};
    struct map_sm_result res;
    const struct cluster_shard *s1;

    (void)state;
    member(&c.member, 7, 7300);
    c.member.join = 1;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(res.epoch, 6);
    s1 = cluster_map_shard(map_sm_map(sm), "s1");
    assert_int_equal(s1->n_members, 4);
    assert_non_null(cluster_shard_member(s1, 7));

    /* the same again: nothing changes, no new epoch (a retried command) */
    c.expected_epoch = 0;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_false(res.changed);
    assert_int_equal(res.epoch, 6);

    /* decided on epoch 5: refused, nothing changes */
    c.type = MAP_SM_MEMBER_REMOVE;
    c.expected_epoch = 5;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_CONFLICT);
    assert_int_equal(cluster_map_shard(map_sm_map(sm), "s1")->n_members, 4);

    /* the first member removed: the next one starts the group */
    c.expected_epoch = 6;
    c.member.id = 1;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    s1 = cluster_map_shard(map_sm_map(sm), "s1");
    assert_int_equal(s1->n_members, 3);
    assert_int_equal(s1->members[0].id, 2);
    assert_int_equal(s1->members[2].id, 7);
    assert_int_equal(map_sm_epoch(sm), 7);

    /* node 7 in a second shard: its one rpc address, another raft one */
    c.type = MAP_SM_MEMBER_ADD;
    c.expected_epoch = 0;
    c.group = "s2";
    member(&c.member, 7, 7400);
    snprintf(c.member.rpc, sizeof(c.member.rpc), "127.0.0.1:1");
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_INVALID);
    assert_non_null(strstr(res.why, "two rpc addresses"));
    member(&c.member, 7, 7400);
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_epoch(sm), 8);
    /* a raft address in use */
    member(&c.member, 8, 7300);
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_INVALID);
    assert_non_null(strstr(res.why, "raft address"));
    assert_int_equal(map_sm_epoch(sm), 8);
    /* no such group */
    c.group = "s9";
    member(&c.member, 8, 7500);
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_NOT_FOUND);
    map_sm_free(sm);
}

static void test_meta_members(void **state)
{
    struct map_sm *sm = booted();
    struct map_sm_cmd c = {.type = MAP_SM_MEMBER_ADD, .group = MAP_SM_META};
    struct map_sm_result res;

    (void)state;
    member(&c.member, 4, 7032); /* node 4 keeps its one rpc address */
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_map(sm)->n_meta, 4);
    c.type = MAP_SM_MEMBER_REMOVE;
    c.member.id = 1;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_map(sm)->n_meta, 3);
    assert_int_equal(map_sm_map(sm)->meta[0].id, 2);
    map_sm_free(sm);
}

static void test_shards(void **state)
{
    struct map_sm *sm = booted();
    struct cluster_shard s3;
    struct map_sm_cmd c = {.type = MAP_SM_SHARD_ADD, .shard = &s3};
    struct map_sm_result res;
    unsigned i;

    (void)state;
    memset(&s3, 0, sizeof(s3));
    snprintf(s3.name, sizeof(s3.name), "s3");
    s3.weight = 1;
    s3.state = CLUSTER_SHARD_JOINING;
    for (i = 0; i < 3; i++) {
        member(&s3.members[i], 10 + i, 7100 + 10 * i);
    }
    s3.n_members = 3;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_map(sm)->n_shards, 3);
    assert_string_equal(map_sm_map(sm)->shards[2].name, "s3");
    /* again: done already */
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_false(res.changed);
    /* a bad name */
    snprintf(s3.name, sizeof(s3.name), "x.mq");
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_INVALID);

    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_STATE, .group = "s3",
                            .state = CLUSTER_SHARD_SERVING};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_WEIGHT, .group = "s3",
                            .weight = 1001};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_INVALID);
    c.weight = 3;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_epoch(sm), 8);

    /* s2 holds queues: it cannot leave */
    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_REMOVE, .group = "s2"};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_INVALID);
    assert_non_null(strstr(res.why, "queues"));
    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_REMOVE, .group = "s1"};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_string_equal(map_sm_map(sm)->shards[0].name, "s2");
    assert_string_equal(map_sm_map(sm)->shards[1].name, "s3");
    map_sm_apply(sm, &c, &res); /* gone already */
    assert_int_equal(res.code, MAP_SM_OK);
    assert_false(res.changed);
    c.group = "s3";
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    c.group = "s2"; /* the last one */
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_INVALID);
    assert_int_equal(map_sm_map(sm)->n_shards, 1);
    map_sm_free(sm);
}

/* A plan: a joining shard, the target ring, pause, commit (the ring
 * becomes the target); then a removal through a draining shard. Followers
 * see the plan in deltas. */
static void test_plans(void **state)
{
    struct map_sm *sm = booted();
    struct cluster_shard s3;
    struct cluster_ring_entry t3[3] = {{"s1", 1}, {"s2", 2}, {"s3", 1}};
    struct cluster_ring_entry t2[2] = {{"s2", 2}, {"s3", 3}};
    struct cluster_plan plan = {.target = t3, .n_target = 3};
    struct map_sm_cmd c;
    struct map_sm_result res;
    struct cluster_map view;
    struct map_delta d;
    uint64_t id;
    unsigned i;

    (void)state;
    cluster_map_init(&view);
    map_delta_init(&d);
    map_sm_delta(sm, 0, &d);
    assert_int_equal(map_delta_apply(&view, &d), 0);

    memset(&s3, 0, sizeof(s3));
    snprintf(s3.name, sizeof(s3.name), "s3");
    s3.weight = 1;
    s3.state = CLUSTER_SHARD_JOINING;
    for (i = 0; i < 3; i++) {
        member(&s3.members[i], 10 + i, 7100 + 10 * i);
    }
    s3.n_members = 3;
    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_ADD, .shard = &s3};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    /* a joining shard owns nothing by the ring */
    assert_int_equal(cluster_map_ring_size(map_sm_map(sm)), 2);

    c = (struct map_sm_cmd){.type = MAP_SM_PLAN_START, .plan = &plan};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    id = map_sm_map(sm)->plan.id;
    assert_int_equal(id, 7);
    assert_int_equal(map_sm_map(sm)->plan.state, CLUSTER_PLAN_RUNNING);
    map_sm_apply(sm, &c, &res); /* the same again: done */
    assert_int_equal(res.code, MAP_SM_OK);
    assert_false(res.changed);
    plan.n_target = 2; /* another one: refused */
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_CONFLICT);
    plan.n_target = 3;

    c = (struct map_sm_cmd){.type = MAP_SM_PLAN_STATE, .plan_id = id,
                            .plan_state = CLUSTER_PLAN_PAUSED};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    map_sm_delta(sm, view.epoch, &d);
    assert_true(d.has_plan);
    assert_int_equal(map_delta_apply(&view, &d), 0);
    map_assert_equal(&view, map_sm_map(sm));

    c = (struct map_sm_cmd){.type = MAP_SM_PLAN_COMMIT, .plan_id = id + 1};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_CONFLICT);
    c.plan_id = id;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_map(sm)->plan.id, 0);
    assert_int_equal(map_sm_map(sm)->shards[2].state, CLUSTER_SHARD_SERVING);
    assert_int_equal(cluster_map_ring_size(map_sm_map(sm)), 3);
    map_sm_apply(sm, &c, &res); /* committed already: done */
    assert_int_equal(res.code, MAP_SM_OK);
    assert_false(res.changed);

    /* s1 leaves: draining, then a plan without it */
    c = (struct map_sm_cmd){.type = MAP_SM_SHARD_STATE, .group = "s1",
                            .state = CLUSTER_SHARD_DRAINING};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    plan.target = t2;
    plan.n_target = 2;
    c = (struct map_sm_cmd){.type = MAP_SM_PLAN_START, .plan = &plan};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    id = map_sm_map(sm)->plan.id;
    c = (struct map_sm_cmd){.type = MAP_SM_PLAN_COMMIT, .plan_id = id};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_OK);
    assert_int_equal(map_sm_map(sm)->n_shards, 2);
    assert_string_equal(map_sm_map(sm)->shards[0].name, "s2");
    assert_int_equal(map_sm_map(sm)->shards[1].weight, 3);
    map_sm_delta(sm, view.epoch, &d);
    assert_int_equal(d.n_removed, 1);
    assert_int_equal(map_delta_apply(&view, &d), 0);
    map_assert_equal(&view, map_sm_map(sm));
    /* a target leaving a serving shard out is refused */
    plan.target = t3 + 1;
    plan.n_target = 1;
    c = (struct map_sm_cmd){.type = MAP_SM_PLAN_START, .plan = &plan};
    map_sm_apply(sm, &c, &res);
    assert_int_equal(res.code, MAP_SM_INVALID);
    map_delta_clear(&d);
    cluster_map_clear(&view);
    map_sm_free(sm);
}

/* ---- model-based: random commands, followers at random epochs ---------- */

static uint64_t rng = 88172645463325252ULL;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

/* A random command, valid or not: adds, removes and re-adds shards of a
 * small name pool (so that removed names come back), weights, states and
 * members. */
static void random_cmd(const struct map_sm *sm, struct map_sm_cmd *c,
                       struct cluster_shard *shard, char *name,
                       uint64_t *next_id)
{
    const struct cluster_map *map = map_sm_map(sm);
    unsigned i;

    memset(c, 0, sizeof(*c));
    snprintf(name, CLUSTER_NAME_MAX, "s%u", rnd(12) + 1);
    c->group = name;
    c->expected_epoch = rnd(10) == 0 ? map->epoch - 1 : map->epoch;
    switch (rnd(7)) {
    case 0:
    case 1:
        c->type = MAP_SM_SHARD_ADD;
        memset(shard, 0, sizeof(*shard));
        snprintf(shard->name, sizeof(shard->name), "%s", name);
        shard->weight = rnd(4) + 1;
        for (i = 0; i < 3; i++) {
            uint64_t id = (*next_id)++;
            member(&shard->members[i], id, 10000 + 4 * (unsigned)id);
        }
        shard->n_members = 3;
        c->shard = shard;
        break;
    case 2:
        c->type = MAP_SM_SHARD_REMOVE;
        break;
    case 3:
        c->type = MAP_SM_SHARD_WEIGHT;
        c->weight = rnd(5) + 1;
        break;
    case 4:
        c->type = MAP_SM_SHARD_STATE;
        c->state = (enum cluster_shard_state)rnd(3);
        break;
    case 5: {
        uint64_t id = (*next_id)++;
        c->type = MAP_SM_MEMBER_ADD;
        if (rnd(4) == 0) {
            c->group = MAP_SM_META;
        }
        member(&c->member, id, 10000 + 4 * (unsigned)id);
        break;
    }
    default:
        c->type = MAP_SM_MEMBER_REMOVE;
        if (rnd(4) == 0) {
            c->group = MAP_SM_META;
            c->member.id = map->n_meta ? map->meta[rnd(map->n_meta)].id : 1;
        } else {
            int s = cluster_map_find(map, name);
            c->member.id = s >= 0 ? map->shards[s].members[0].id : 1;
        }
        break;
    }
}

#define FOLLOWERS 6

static void test_deltas_model(void **state)
{
    struct map_sm *sm = booted();
    struct cluster_map view[FOLLOWERS];
    uint64_t next_id = 100;
    unsigned step, f;
    size_t delta_shards = 0, full = 0, applied = 0;

    (void)state;
    for (f = 0; f < FOLLOWERS; f++) {
        cluster_map_init(&view[f]);
    }
    for (step = 0; step < 4000; step++) {
        struct map_sm_cmd c;
        struct cluster_shard shard;
        char name[CLUSTER_NAME_MAX];
        struct map_sm_result res;
        struct map_delta d;
        uint64_t before = map_sm_epoch(sm);
        char err[192];

        random_cmd(sm, &c, &shard, name, &next_id);
        map_sm_apply(sm, &c, &res);
        /* the epoch moves by one exactly when something changed */
        assert_int_equal(map_sm_epoch(sm), before + (res.changed ? 1 : 0));
        assert_true(res.code == MAP_SM_OK || !res.changed);
        assert_int_equal(cluster_map_validate(map_sm_map(sm), err,
                                              sizeof(err)),
                         0);
        if (res.changed) {
            applied++;
        }
        /* follower f catches up every f+1 steps (0: every step) */
        for (f = 0; f < FOLLOWERS; f++) {
            if (step % (f * f * 7 + 1) != 0) {
                continue;
            }
            map_delta_init(&d);
            map_sm_delta(sm, view[f].epoch, &d);
            if (d.full) {
                full++;
            } else {
                delta_shards += d.part.n_shards;
                /* a delta names only what changed */
                assert_true(d.part.n_shards <= map_sm_map(sm)->n_shards);
            }
            assert_int_equal(map_delta_apply(&view[f], &d), 0);
            map_delta_clear(&d);
            map_assert_equal(&view[f], map_sm_map(sm));
        }
    }
    /* the run exercised changes, deltas and full answers */
    assert_true(applied > 1000);
    assert_true(delta_shards > 0);
    assert_true(full >= FOLLOWERS);
    for (f = 0; f < FOLLOWERS; f++) {
        cluster_map_clear(&view[f]);
    }
    map_sm_free(sm);
}

/* A delta for another epoch is refused; a stale one changes nothing. */
static void test_delta_apply_checks_epoch(void **state)
{
    struct map_sm *sm = booted();
    struct map_sm_cmd c = {.type = MAP_SM_SHARD_WEIGHT, .group = "s1",
                           .weight = 4};
    struct map_sm_result res;
    struct cluster_map view;
    struct map_delta d;

    (void)state;
    cluster_map_init(&view);
    map_delta_init(&d);
    map_sm_delta(sm, 0, &d);
    assert_true(d.full);
    assert_int_equal(map_delta_apply(&view, &d), 0);
    map_sm_apply(sm, &c, &res); /* 6 */
    c.weight = 5;
    map_sm_apply(sm, &c, &res); /* 7 */
    map_sm_delta(sm, 6, &d);
    assert_false(d.full);
    assert_int_equal(d.from, 6);
    assert_int_equal(d.part.n_shards, 1);
    assert_int_equal(map_delta_apply(&view, &d), -1); /* view is at 5 */
    assert_int_equal(view.epoch, 5);
    map_sm_delta(sm, 5, &d);
    assert_int_equal(map_delta_apply(&view, &d), 0);
    map_assert_equal(&view, map_sm_map(sm));
    map_sm_delta(sm, 9, &d); /* a follower ahead of this replica */
    assert_int_equal(d.part.n_shards, 0);
    assert_int_equal(map_delta_apply(&view, &d), 0);
    assert_int_equal(view.epoch, 7);
    map_delta_clear(&d);
    cluster_map_clear(&view);
    map_sm_free(sm);
}

/* More removals than tombstones: a follower from before the oldest kept
 * one gets the whole map. */
static void test_forgotten_removals_send_full(void **state)
{
    struct map_sm *sm = booted();
    struct cluster_shard s;
    struct map_sm_cmd add = {.type = MAP_SM_SHARD_ADD, .shard = &s};
    struct map_sm_cmd rm = {.type = MAP_SM_SHARD_REMOVE, .group = "x"};
    struct map_sm_result res;
    struct map_delta d;
    unsigned i;

    (void)state;
    memset(&s, 0, sizeof(s));
    snprintf(s.name, sizeof(s.name), "x");
    s.weight = 1;
    member(&s.members[0], 50, 9000);
    s.n_members = 1;
    for (i = 0; i < MAP_SM_TOMBSTONES + 1; i++) {
        map_sm_apply(sm, &add, &res);
        assert_int_equal(res.code, MAP_SM_OK);
        map_sm_apply(sm, &rm, &res);
        assert_int_equal(res.code, MAP_SM_OK);
    }
    map_delta_init(&d);
    map_sm_delta(sm, 6, &d);
    assert_true(d.full);
    map_sm_delta(sm, map_sm_epoch(sm) - 2, &d);
    assert_false(d.full);
    assert_int_equal(d.n_removed, 1);
    assert_string_equal(d.removed[0], "x");
    map_delta_clear(&d);
    map_sm_free(sm);
}

static void test_snapshot_restore(void **state)
{
    struct map_sm *sm = booted();
    struct map_sm *copy = map_sm_new();
    struct map_sm_cmd c = {.type = MAP_SM_SHARD_REMOVE, .group = "s1"};
    struct map_sm_result res;
    struct map_delta a, b;
    void *buf;
    size_t len, cut;

    (void)state;
    map_sm_apply(sm, &c, &res);
    assert_int_equal(map_sm_snapshot(sm, malloc, &buf, &len), 0);
    assert_int_equal(map_sm_restore(copy, buf, len), 0);
    assert_int_equal(map_sm_digest(copy), map_sm_digest(sm));
    map_assert_equal(map_sm_map(copy), map_sm_map(sm));
    /* the delta state came along: both answer a follower at 5 alike */
    map_delta_init(&a);
    map_delta_init(&b);
    map_sm_delta(sm, 5, &a);
    map_sm_delta(copy, 5, &b);
    assert_int_equal(a.n_removed, 1);
    assert_int_equal(b.n_removed, 1);
    map_delta_clear(&a);
    map_delta_clear(&b);
    /* every truncation is refused and keeps the state */
    for (cut = 0; cut < len; cut++) {
        assert_int_equal(map_sm_restore(copy, buf, cut), -1);
    }
    assert_int_equal(map_sm_digest(copy), map_sm_digest(sm));
    /* an empty state restores too */
    free(buf);
    map_sm_free(copy);
    copy = map_sm_new();
    assert_int_equal(map_sm_snapshot(copy, malloc, &buf, &len), 0);
    assert_int_equal(map_sm_restore(sm, buf, len), 0);
    assert_int_equal(map_sm_epoch(sm), 0);
    free(buf);
    map_sm_free(copy);
    map_sm_free(sm);
}

/* A follower keeps its ring when only members or states change. */
static void test_same_ring(void **state)
{
    struct cluster_map a, b;
    struct cluster_shard *s3;

    (void)state;
    two_shards(&a);
    cluster_map_init(&b);
    cluster_map_copy(&b, &a);
    assert_true(cluster_map_same_ring(&a, &b));
    member(&b.shards[0].members[3], 9, 7500);
    b.shards[0].n_members = 4;
    b.shards[1].state = CLUSTER_SHARD_DRAINING; /* still on the ring */
    assert_true(cluster_map_same_ring(&a, &b));
    s3 = cluster_map_append(&b);
    snprintf(s3->name, sizeof(s3->name), "s3");
    s3->state = CLUSTER_SHARD_JOINING; /* not on the ring yet */
    assert_true(cluster_map_same_ring(&a, &b));
    s3->state = CLUSTER_SHARD_SERVING;
    assert_false(cluster_map_same_ring(&a, &b));
    b.n_shards = 2;
    b.shards[1].weight = 3;
    assert_false(cluster_map_same_ring(&a, &b));
    b.shards[1].weight = a.shards[1].weight;
    snprintf(b.shards[1].name, sizeof(b.shards[1].name), "s2b");
    assert_false(cluster_map_same_ring(&a, &b));
    cluster_map_clear(&a);
    cluster_map_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_ring),
        cmocka_unit_test(test_init_once),
        cmocka_unit_test(test_commands_before_init_refused),
        cmocka_unit_test(test_member_add_remove),
        cmocka_unit_test(test_meta_members),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_plans),
        cmocka_unit_test(test_deltas_model),
        cmocka_unit_test(test_delta_apply_checks_epoch),
        cmocka_unit_test(test_forgotten_removals_send_full),
        cmocka_unit_test(test_snapshot_restore),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
