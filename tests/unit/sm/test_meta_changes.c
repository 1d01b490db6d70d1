/*
 * Tests for sm/meta_changes: a copy of the meta state (a router's view)
 * follows the replicas by the changes since its version, so declaring n
 * bindings costs answers of O(n) bytes in all, not the O(n^2) of sending
 * the whole state each time; it falls back to the whole state when the
 * ring no longer holds what the copy lacks; and, over random commands,
 * leader changes and restores, the copy equals the leader's state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sm/meta_changes.h"
#include "sm/meta_sm.h"
#include "tests/unit/lib/meta_cmd.h"

/* A replica: its state and the changes its apply recorded (as
 * node/meta_svc does). */
struct replica {
    struct meta_sm *sm;
    struct meta_changes *ch;
};

static void replica_init(struct replica *r, size_t keep, size_t keep_bytes)
{
    r->sm = meta_sm_new();
    r->ch = meta_changes_new(keep, keep_bytes);
}

static void replica_free(struct replica *r)
{
    meta_sm_free(r->sm);
    meta_changes_free(r->ch);
}

static struct meta_sm_result replica_apply(struct replica *r,
                                           const struct meta_sm_cmd *c)
{
    struct meta_sm_result res;

    meta_sm_apply(r->sm, c, &res);
    if (res.changed) {
        meta_changes_add(r->ch, c, res.version);
    }
    return res;
}

/* A router's view of the state. */
struct view {
    struct meta_sm *sm;
    size_t bytes;   /* answer bytes it received */
    size_t max;     /* the largest answer */
    size_t wholes;  /* answers that were the whole state */
};

/* The answer @leader gives a watcher at @known, taken into @v. */
static void sync_from(struct view *v, const struct replica *leader,
                      uint64_t known)
{
    void *state, *changes;
    size_t state_len, changes_len;

    assert_int_equal(meta_changes_answer(leader->ch, leader->sm, known,
                                         malloc, &state, &state_len,
                                         &changes, &changes_len),
                     0);
    assert_true(state == NULL || changes == NULL);
    v->bytes += state_len + changes_len;
    if (state_len + changes_len > v->max) {
        v->max = state_len + changes_len;
    }
    v->wholes += state != NULL;
    assert_int_equal(meta_changes_take(v->sm, meta_sm_version(leader->sm),
                                       state, state_len, changes,
                                       changes_len),
                     0);
    free(state);
    free(changes);
}

static void sync_view(struct view *v, const struct replica *leader)
{
    sync_from(v, leader, meta_sm_version(v->sm));
}

static void assert_same(const struct view *v, const struct replica *leader)
{
    assert_int_equal(meta_sm_version(v->sm), meta_sm_version(leader->sm));
    assert_true(meta_sm_digest(v->sm) == meta_sm_digest(leader->sm));
}

/*
 * Declaring n bindings, each answered twice (the bind's reply to the
 * router that sent it, whose view is one version behind, and its watch,
 * parked at the version before): every answer is one change, so the
 * total grows with n. Sending the whole state each time (what the node
 * did before) costs about n^2/2 bindings' bytes: over 50 MB here.
 */
static void test_declaring_n_bindings_costs_o_n_bytes(void **state)
{
    enum { N = 2000 };
    struct replica leader;
    struct view v = {meta_sm_new(), 0, 0, 0};
    struct meta_sm_cmd c;
    char q[32], key[32];
    size_t i;

    (void)state;
    replica_init(&leader, META_CHANGES_KEEP, META_CHANGES_KEEP_BYTES);
    c = meta_cmd(META_SM_EXCHANGE_DECLARE, "logs", NULL, NULL);
    assert_true(replica_apply(&leader, &c).changed);
    sync_from(&v, &leader, 0); /* the router's first answer: whole */
    assert_int_equal(v.wholes, 1);
    v.bytes = v.max = 0;
    for (i = 0; i < N; i++) {
        uint64_t before = meta_sm_version(v.sm);

        snprintf(q, sizeof(q), "queue-%05zu", i);
        snprintf(key, sizeof(key), "key-%05zu", i);
        c = meta_cmd(META_SM_BIND, "logs", q, key);
        assert_true(replica_apply(&leader, &c).changed);
        sync_from(&v, &leader, before); /* the parked watch */
        sync_from(&v, &leader, before); /* the reply: sent before */
        assert_same(&v, &leader);
    }
    assert_int_equal(v.wholes, 1);
    assert_true(v.max < 128);
    assert_true(v.bytes < 2 * N * 128);
    /* and what sending the whole state each time would have cost */
    {
        size_t whole = 0;
        void *snap;
        size_t len;

        assert_int_equal(meta_sm_snapshot(leader.sm, malloc, &snap, &len),
                         0);
        free(snap);
        whole = len;
        assert_true((size_t)N * whole / 2 > 100 * v.bytes);
    }
    meta_sm_free(v.sm);
    replica_free(&leader);
}

/* A watcher the ring no longer covers, or with no view, gets the whole
 * state; one that is current gets nothing. */
static void test_falls_back_to_the_whole_state(void **state)
{
    struct replica leader;
    struct view v = {meta_sm_new(), 0, 0, 0};
    struct meta_sm_cmd c;
    char q[32];
    void *st, *ch;
    size_t st_len, ch_len;
    int i;

    (void)state;
    replica_init(&leader, 4, 1 << 20);
    c = meta_cmd(META_SM_EXCHANGE_DECLARE, "x", NULL, NULL);
    replica_apply(&leader, &c);
    sync_view(&v, &leader);
    assert_int_equal(v.wholes, 1);
    /* up to date: nothing */
    assert_int_equal(meta_changes_answer(leader.ch, leader.sm,
                                         meta_sm_version(v.sm), malloc, &st,
                                         &st_len, &ch, &ch_len),
                     0);
    assert_null(st);
    assert_null(ch);
    for (i = 0; i < 4; i++) {
        snprintf(q, sizeof(q), "q%d", i);
        c = meta_cmd(META_SM_BIND, "x", q, "k");
        replica_apply(&leader, &c);
    }
    sync_view(&v, &leader); /* 4 behind, 4 held: changes */
    assert_int_equal(v.wholes, 1);
    assert_same(&v, &leader);
    for (i = 0; i < 5; i++) {
        snprintf(q, sizeof(q), "r%d", i);
        c = meta_cmd(META_SM_BIND, "x", q, "k");
        replica_apply(&leader, &c);
    }
    assert_int_equal(meta_changes_count(leader.ch), 4);
    sync_view(&v, &leader); /* 5 behind: whole */
    assert_int_equal(v.wholes, 2);
    assert_same(&v, &leader);
    /* a restored replica records nothing before its restore */
    meta_changes_reset(leader.ch);
    c = meta_cmd(META_SM_UNBIND, "x", "q0", "k");
    replica_apply(&leader, &c);
    assert_int_equal(meta_changes_count(leader.ch), 1);
    sync_from(&v, &leader, meta_sm_version(leader.sm) - 2);
    assert_int_equal(v.wholes, 3);
    assert_same(&v, &leader);
    meta_sm_free(v.sm);
    replica_free(&leader);
}

/* A byte bound drops the oldest changes but keeps the newest. */
static void test_byte_bound(void **state)
{
    struct replica r;
    struct meta_sm_cmd c;
    char q[32];
    int i;

    (void)state;
    replica_init(&r, 100, 300);
    c = meta_cmd(META_SM_EXCHANGE_DECLARE, "x", NULL, NULL);
    replica_apply(&r, &c);
    for (i = 0; i < 20; i++) {
        snprintf(q, sizeof(q), "q%d", i);
        c = meta_cmd(META_SM_BIND, "x", q, "k");
        replica_apply(&r, &c);
        assert_true(meta_changes_count(r.ch) >= 1);
        assert_true(meta_changes_bytes(r.ch) <= 300);
    }
    assert_true(meta_changes_count(r.ch) < 20);
    replica_free(&r);
}

/* Changes that do not continue the copy, or are cut, are refused. */
static void test_refuses_what_does_not_fit(void **state)
{
    struct replica leader;
    struct meta_sm *copy = meta_sm_new();
    struct meta_sm_cmd c;
    void *st, *ch;
    size_t st_len, ch_len, cut;

    (void)state;
    replica_init(&leader, 16, 1 << 20);
    c = meta_cmd(META_SM_EXCHANGE_DECLARE, "x", NULL, NULL);
    replica_apply(&leader, &c);
    c = meta_cmd(META_SM_BIND, "x", "q", "k");
    replica_apply(&leader, &c);
    c = meta_cmd(META_SM_BIND, "x", "q", "k2");
    replica_apply(&leader, &c);
    /* the changes after version 2 do not continue a copy at 0 */
    assert_int_equal(meta_changes_answer(leader.ch, leader.sm, 2, malloc,
                                         &st, &st_len, &ch, &ch_len),
                     0);
    assert_null(st);
    assert_non_null(ch);
    assert_int_equal(meta_changes_take(copy, 3, NULL, 0, ch, ch_len), -1);
    assert_int_equal(meta_sm_version(copy), 0);
    free(ch);
    /* every cut of the changes after version 0... is refused */
    assert_int_equal(meta_changes_answer(leader.ch, leader.sm, 1, malloc,
                                         &st, &st_len, &ch, &ch_len),
                     0);
    c = meta_cmd(META_SM_EXCHANGE_DECLARE, "x", NULL, NULL);
    for (cut = 0; cut < ch_len; cut++) {
        struct meta_sm *fresh = meta_sm_new();
        struct meta_sm_result res;

        meta_sm_apply(fresh, &c, &res);
        assert_int_equal(meta_changes_take(fresh, 3, NULL, 0, ch, cut), -1);
        meta_sm_free(fresh);
    }
    /* ...and the whole of it brings a copy at 1 to 3 */
    meta_sm_apply(copy, &c, &(struct meta_sm_result){0});
    assert_int_equal(meta_changes_take(copy, 3, NULL, 0, ch, ch_len), 0);
    assert_int_equal(meta_sm_version(copy), 3);
    assert_true(meta_sm_digest(copy) == meta_sm_digest(leader.sm));
    free(ch);
    meta_sm_free(copy);
    replica_free(&leader);
}

/* ---- the model: random commands, leader changes, restores --------------- */

static const char *const exchanges[] = {"a", "b", "c", "amq.topic", ""};
static const char *const queues[] = {"q1", "q2", "q3", "q4"};
static const char *const keys[] = {"", "k", "a.b", "#"};
static const char *const shards[] = {"s1", "s2", "s3"};
#define PICK(a) ((a)[(size_t)rand() % (sizeof(a) / sizeof((a)[0]))])

static struct meta_sm_cmd random_cmd(struct meta_sm_kv *arg)
{
    struct meta_sm_cmd c = {0};

    c.type = (enum meta_sm_cmd_type)(rand() % META_SM_CMD__COUNT);
    c.vhost = rand() % 4 == 0 ? "other" : "/";
    c.vhost_len = strlen(c.vhost);
    c.exchange = PICK(exchanges);
    c.exchange_len = strlen(c.exchange);
    c.exchange_type = (enum meta_sm_exchange_type)(rand() % 4);
    c.durable = rand() % 2;
    c.auto_delete = rand() % 4 == 0;
    c.internal = rand() % 8 == 0;
    c.if_unused = rand() % 2;
    c.dest_is_exchange = rand() % 4 == 0;
    c.dest = c.dest_is_exchange ? PICK(exchanges) : PICK(queues);
    c.dest_len = strlen(c.dest);
    c.routing_key = PICK(keys);
    c.routing_key_len = strlen(c.routing_key);
    if (rand() % 3 == 0) {
        arg->key = "x-match";
        arg->key_len = 7;
        arg->value = rand() % 2 ? "S\0\0\0\x03" "all" : "S\0\0\0\x03" "any";
        arg->value_len = 8;
        c.args = arg;
        c.n_args = 1;
    }
    c.shard = PICK(shards);
    c.shard_len = strlen(c.shard);
    c.target = PICK(shards);
    c.target_len = strlen(c.target);
    c.gen = (uint64_t)(rand() % 6);
    return c;
}

static void test_model_view_equals_leader(void **state)
{
    enum { REPLICAS = 3, STEPS = 20000 };
    struct replica r[REPLICAS];
    struct view v = {meta_sm_new(), 0, 0, 0};
    unsigned leader = 0;
    uint64_t stale = 0; /* the version a late watch answer was asked at */
    int i;

    (void)state;
    srand(16);
    /* rings of different sizes: some answers come from changes, some
     * whole */
    replica_init(&r[0], 4, 1 << 20);
    replica_init(&r[1], 32, 2048);
    replica_init(&r[2], 256, 1 << 20);
    for (i = 0; i < STEPS; i++) {
        struct meta_sm_kv arg;
        struct meta_sm_cmd c = random_cmd(&arg);
        unsigned j;
        int what = rand() % 100;

        for (j = 0; j < REPLICAS; j++) {
            replica_apply(&r[j], &c);
        }
        if (what < 5) {
            leader = (unsigned)rand() % REPLICAS;
        } else if (what < 7) {
            /* a replica installs a snapshot: its ring starts empty */
            void *snap;
            size_t len;
            unsigned to = (unsigned)rand() % REPLICAS;

            assert_int_equal(meta_sm_snapshot(r[leader].sm, malloc, &snap,
                                              &len),
                             0);
            assert_int_equal(meta_sm_restore(r[to].sm, snap, len), 0);
            meta_changes_reset(r[to].ch);
            free(snap);
        } else if (what < 10) {
            /* an answer to a watch sent before the last sync */
            sync_from(&v, &r[leader], stale);
        } else if (what < 40) {
            stale = meta_sm_version(v.sm);
            sync_view(&v, &r[leader]);
            assert_same(&v, &r[leader]);
        }
    }
    sync_view(&v, &r[leader]);
    assert_same(&v, &r[leader]);
    /* both kinds of answers were exercised */
    assert_true(v.wholes > 10);
    assert_true(meta_sm_version(v.sm) > 100 + v.wholes);
    meta_sm_free(v.sm);
    for (i = 0; i < REPLICAS; i++) {
        replica_free(&r[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declaring_n_bindings_costs_o_n_bytes),
        cmocka_unit_test(test_falls_back_to_the_whole_state),
        cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_refuses_what_does_not_fit),
        cmocka_unit_test(test_model_view_equals_leader),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
