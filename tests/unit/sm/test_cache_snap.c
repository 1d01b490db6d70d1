/*
 * Incremental snapshots of the cache (cache_sm_snapshot_begin/step/end):
 * a snapshot begun at N and written a slice at a time while writes of
 * every kind keep being applied (stores, concat, incr in place, touch,
 * delete, eviction, expiry, flush_all, a smaller limit, a restore) is
 * byte for byte the inline snapshot taken at N; a replica that restores
 * it and applies the rest of the log ends like one that never
 * snapshotted; an abandoned snapshot frees what it kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sm/cache_move.h"
#include "sm/cache_sm.h"
#include "sm/shard_ring.h"

#define T0 1700000000000ULL
#define KEYS 160

struct gen {
    uint64_t s;
    uint64_t now;
    char key[16];
    char value[3000];
};

static uint64_t rnd(struct gen *g)
{
    g->s = g->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return g->s >> 33;
}

/* The next write of a reproducible log: mostly stores over a small key
 * space (so a small limit evicts), with every other kind mixed in,
 * expiries of a few seconds and a clock that moves on. */
static void gen_op(struct gen *g, struct cache_op *op)
{
    static const enum cache_op_type kinds[] = {
        CACHE_OP_SET,    CACHE_OP_SET,     CACHE_OP_SET,   CACHE_OP_SET,
        CACHE_OP_ADD,    CACHE_OP_REPLACE, CACHE_OP_CAS,   CACHE_OP_APPEND,
        CACHE_OP_PREPEND, CACHE_OP_INCR,   CACHE_OP_DECR,  CACHE_OP_DELETE,
        CACHE_OP_TOUCH,  CACHE_OP_GAT,     CACHE_OP_INCR,  CACHE_OP_TOUCH};
    uint64_t r = rnd(g);
    size_t len;

    memset(op, 0, sizeof(*op));
    op->type = kinds[r % (sizeof(kinds) / sizeof(kinds[0]))];
    if (rnd(g) % 400 == 0) {
        op->type = CACHE_OP_FLUSH_ALL;
        op->exptime = rnd(g) % 2 == 0 ? 0 : 2; /* now, or in 2 s */
        return;
    }
    if (rnd(g) % 300 == 0) {
        op->type = CACHE_OP_CONFIG;
        op->config.mem_limit = 24 * 1024 + (rnd(g) % 3) * 16 * 1024;
        return;
    }
    snprintf(g->key, sizeof(g->key), "k%u", (unsigned)(rnd(g) % KEYS));
    op->key = g->key;
    op->key_len = strlen(g->key);
    if (rnd(g) % 3 == 0) {
        len = (size_t)snprintf(g->value, sizeof(g->value), "%u",
                               (unsigned)(rnd(g) % 100000));
    } else {
        len = rnd(g) % 3 == 0 ? rnd(g) % 2500 : rnd(g) % 60;
        memset(g->value, 'a' + (int)(rnd(g) % 26), len);
    }
    op->value = g->value;
    op->value_len = len;
    op->flags = (uint32_t)(rnd(g) % 4);
    op->exptime = rnd(g) % 4 == 0 ? (int64_t)(1 + rnd(g) % 3) : 0;
    op->cas = 1 + rnd(g) % 400;
    op->delta = rnd(g) % 1000;
    g->now += rnd(g) % 40;
}

static void apply_next(struct gen *g, struct cache_sm *const *sms, size_t n)
{
    struct cache_op op;
    size_t i;

    gen_op(g, &op);
    for (i = 0; i < n; i++) {
        struct cache_result res;

        cache_sm_apply(sms[i], g->now, &op, &res);
        cache_result_clear(&res);
    }
}

static struct cache_sm *new_sm(void)
{
    struct cache_sm_config cfg = {0};
    struct cache_sm *sm;

    cfg.mem_limit = 40 * 1024;
    cfg.item_size_max = 4096;
    sm = cache_sm_new(&cfg);
    assert_non_null(sm);
    return sm;
}

static void inline_snapshot(const struct cache_sm *sm, void **buf,
                            size_t *len)
{
    assert_int_equal(cache_sm_snapshot(sm, malloc, buf, len), 0);
}

/* Write all of @s in steps of random room, applying @per_step writes
 * (on average) from @g to @sms between steps; @steer draws the rooms and
 * counts, so that @g is the log alone. Returns the writes applied. */
static unsigned write_all(struct cache_sm_snap *s, unsigned char *buf,
                          size_t len, struct gen *g, struct gen *steer,
                          struct cache_sm *const *sms, size_t n,
                          unsigned per_step, size_t max_room)
{
    size_t off = 0;
    unsigned applied = 0;

    while (off < len) {
        size_t room = 1 + rnd(steer) % max_room;
        size_t k;

        while (per_step > 0 && rnd(steer) % (per_step + 1) != 0) {
            apply_next(g, sms, n);
            applied++;
        }
        k = cache_sm_snapshot_step(s, buf + off, room);
        assert_true(k > 0 && k <= room);
        off += k;
    }
    assert_int_equal(cache_sm_snapshot_step(s, buf + off, 16), 0);
    return applied;
}

/* One run: warm up, begin at N, write while applying, compare. */
static void run_seed(uint64_t seed, unsigned per_step, size_t max_room)
{
    struct gen g = {.s = seed, .now = T0};
    struct gen steer = {.s = ~seed};
    struct gen at_n;
    struct cache_sm *a = new_sm(); /* snapshots */
    struct cache_sm *b = new_sm(); /* never does */
    struct cache_sm *c = new_sm(); /* restores the snapshot */
    struct cache_sm *both[2] = {a, b};
    struct cache_sm_snap *s;
    void *want;
    size_t want_len, len;
    unsigned char *buf;
    uint64_t digest_n;
    unsigned i, later;

    for (i = 0; i < 600; i++) {
        apply_next(&g, both, 2);
    }
    digest_n = cache_sm_digest(a);
    inline_snapshot(a, &want, &want_len);
    s = cache_sm_snapshot_begin(a, &len);
    assert_non_null(s);
    assert_int_equal(len, want_len);
    at_n = g;
    buf = malloc(len);
    later = write_all(s, buf, len, &g, &steer, both, 2, per_step, max_room);
    cache_sm_snapshot_end(s);
    cache_sm_snapshot_seal(buf, len);
    assert_memory_equal(buf, want, len);

    /* the writes went on as if no snapshot were taken */
    cache_sm_check(a);
    assert_int_equal(cache_sm_digest(a), cache_sm_digest(b));

    /* a replica from the snapshot, with the rest of the log */
    assert_int_equal(cache_sm_restore(c, buf, len), 0);
    assert_int_equal(cache_sm_digest(c), digest_n);
    for (i = 0; i < later; i++) {
        apply_next(&at_n, &c, 1);
    }
    cache_sm_check(c);
    assert_int_equal(cache_sm_digest(c), cache_sm_digest(a));
    for (i = 0; i < 300; i++) { /* and they stay alike */
        struct cache_sm *all[3] = {a, b, c};
        apply_next(&g, all, 3);
    }
    assert_int_equal(cache_sm_digest(c), cache_sm_digest(a));

    free(buf);
    free(want);
    cache_sm_free(a);
    cache_sm_free(b);
    cache_sm_free(c);
}

static void test_random_interleaved(void **state)
{
    uint64_t seed;

    (void)state;
    for (seed = 1; seed <= 40; seed++) {
        run_seed(seed, 2, 700);     /* a few writes per slice */
        run_seed(seed * 7919, 30, 64); /* many writes, tiny slices */
    }
}

static void apply_many(struct gen *g, struct cache_sm *sm, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        apply_next(g, &sm, 1);
    }
}

/* Begin a snapshot of @sm and write its first @first bytes into *@buf
 * (malloc'd, the snapshot's size *@len); *@want: the inline snapshot of
 * the same state, to compare with. */
static struct cache_sm_snap *begin_with_want(struct cache_sm *sm,
                                             void **want, size_t *len,
                                             unsigned char **buf,
                                             size_t first)
{
    struct cache_sm_snap *s;
    size_t want_len;

    inline_snapshot(sm, want, &want_len);
    s = cache_sm_snapshot_begin(sm, len);
    assert_non_null(s);
    assert_int_equal(*len, want_len);
    *buf = malloc(*len);
    assert_int_equal(cache_sm_snapshot_step(s, *buf, first), first);
    return s;
}

/* Write the rest of @s (from @off) in steps of @room, end and seal it:
 * the bytes must be @want's. */
static void finish_equal(struct cache_sm_snap *s, unsigned char *buf,
                         size_t off, size_t len, size_t room,
                         const void *want)
{
    while (off < len) {
        off += cache_sm_snapshot_step(s, buf + off, room);
    }
    cache_sm_snapshot_end(s);
    cache_sm_snapshot_seal(buf, len);
    assert_memory_equal(buf, want, len);
}

/* A write that expires, evicts or changes in place an item the snapshot
 * has not reached: the snapshot still holds it as it was. */
static void set(struct cache_sm *sm, uint64_t now, const char *key,
                const char *value, int64_t exptime)
{
    struct cache_op op = {0};
    struct cache_result res;

    op.type = CACHE_OP_SET;
    op.key = key;
    op.key_len = strlen(key);
    op.value = value;
    op.value_len = strlen(value);
    op.exptime = exptime;
    cache_sm_apply(sm, now, &op, &res);
    assert_int_equal(res.status, CACHE_STORED);
    cache_result_clear(&res);
}

static void keyed(struct cache_sm *sm, uint64_t now, enum cache_op_type type,
                  const char *key, uint64_t delta, int64_t exptime)
{
    struct cache_op op = {0};
    struct cache_result res;

    op.type = type;
    op.key = key;
    op.key_len = strlen(key);
    op.delta = delta;
    op.exptime = exptime;
    cache_sm_apply(sm, now, &op, &res);
    cache_result_clear(&res);
}

static void test_changes_before_the_cursor_are_kept(void **state)
{
    struct cache_sm *sm = new_sm();
    struct cache_sm_snap *s;
    struct cache_op flush = {.type = CACHE_OP_FLUSH_ALL};
    struct cache_result res;
    void *want;
    size_t want_len, len, off;
    unsigned char *buf;

    (void)state;
    set(sm, T0, "first", "1", 0);
    set(sm, T0, "n", "100", 0);
    set(sm, T0, "t", "touch me", 0);
    set(sm, T0, "short", "lives 1 s", 1);
    set(sm, T0, "d", "deleted", 0);
    set(sm, T0, "last", "v", 0);
    inline_snapshot(sm, &want, &want_len);
    s = cache_sm_snapshot_begin(sm, &len);
    assert_int_equal(len, want_len);
    assert_null(cache_sm_snapshot_begin(sm, &len)); /* one at a time */
    buf = malloc(len);
    assert_int_equal(cache_sm_snapshot_step(s, buf, 0), 0);
    off = cache_sm_snapshot_step(s, buf, 70); /* into the first record */
    assert_int_equal(off, 70);
    keyed(sm, T0 + 1, CACHE_OP_INCR, "n", 5, 0);       /* in place */
    keyed(sm, T0 + 1, CACHE_OP_TOUCH, "t", 0, 100);    /* in place */
    keyed(sm, T0 + 1, CACHE_OP_DELETE, "d", 0, 0);
    keyed(sm, T0 + 2000, CACHE_OP_TOUCH, "short", 0, 0); /* expired */
    set(sm, T0 + 2000, "last", "replaced", 0);
    cache_sm_apply(sm, T0 + 2000, &flush, &res);
    cache_result_clear(&res);
    set(sm, T0 + 2000, "after", "not in it", 0);
    finish_equal(s, buf, off, len, 3, want);
    free(buf);
    free(want);
    cache_sm_free(sm);
}

/* A restore replaces the state under a snapshot in progress: the
 * snapshot still gives the state at its begin. */
static void test_restore_during_snapshot(void **state)
{
    struct gen g = {.s = 99, .now = T0};
    struct cache_sm *sm = new_sm();
    struct cache_sm *other = new_sm();
    struct cache_sm_snap *s;
    void *want, *other_bytes;
    size_t other_len, len;
    unsigned char *buf;

    (void)state;
    apply_many(&g, sm, 400);
    apply_many(&g, other, 400);
    inline_snapshot(other, &other_bytes, &other_len);
    s = begin_with_want(sm, &want, &len, &buf, 300);
    assert_int_equal(cache_sm_restore(sm, other_bytes, other_len), 0);
    assert_int_equal(cache_sm_digest(sm), cache_sm_digest(other));
    apply_many(&g, sm, 100);
    finish_equal(s, buf, 300, len, 100, want);
    cache_sm_check(sm);
    free(buf);
    free(want);
    free(other_bytes);
    cache_sm_free(sm);
    cache_sm_free(other);
}

/* Ended before it is whole (a group closing): what it kept is freed (the
 * sanitizer build finds a leak), the machine goes on and can snapshot
 * again. */
static void test_end_unfinished(void **state)
{
    struct gen g = {.s = 5, .now = T0};
    struct cache_sm *sm = new_sm();
    struct cache_sm_snap *s;
    void *want;
    size_t len;
    unsigned char *buf;

    (void)state;
    apply_many(&g, sm, 400);
    s = begin_with_want(sm, &want, &len, &buf, 50);
    apply_many(&g, sm, 400); /* evicts and replaces what it needs */
    cache_sm_snapshot_end(s);
    free(buf);
    free(want);
    apply_many(&g, sm, 100);
    cache_sm_check(sm);

    s = begin_with_want(sm, &want, &len, &buf, 0);
    finish_equal(s, buf, 0, len, len, want);
    free(buf);
    free(want);
    cache_sm_free(sm);
}

static void move_step(struct cache_sm *sm, enum cache_move_kind kind,
                      struct arc *arc)
{
    struct cache_move_cmd c = {.kind = kind, .move_id = 7, .arcs = arc,
                               .n_arcs = arc != NULL ? 1 : 0};
    struct cache_op op = {.type = CACHE_OP_MOVE};
    struct cache_result res;
    void *buf;

    snprintf(c.peer, sizeof(c.peer), "other");
    buf = cache_move_cmd_encode(&c, &op.value_len);
    op.value = buf;
    cache_sm_apply(sm, T0 + 5000, &op, &res);
    assert_int_equal(res.status, CACHE_OK);
    cache_result_clear(&res);
    free(buf);
}

/* A move's drops (a target's BEGIN drops what it holds of the arcs, an
 * ABORT drops what it imported) during a snapshot: it still holds them. */
static void test_move_drops_during_snapshot(void **state)
{
    struct gen g = {.s = 17, .now = T0};
    struct cache_sm *sm = new_sm();
    struct arc half = {.lo = 0, .hi = UINT32_MAX / 2};
    struct cache_sm_snap *s;
    struct cache_sm_stats before, after;
    void *want;
    size_t len;
    unsigned char *buf;

    (void)state;
    apply_many(&g, sm, 400);
    cache_sm_stats(sm, &before);
    s = begin_with_want(sm, &want, &len, &buf, 200);
    move_step(sm, CACHE_MOVE_IN_BEGIN, &half);
    move_step(sm, CACHE_MOVE_ABORT, NULL);
    cache_sm_stats(sm, &after);
    assert_true(after.curr_items < before.curr_items); /* it dropped some */
    finish_equal(s, buf, 200, len, 500, want);
    cache_sm_check(sm);
    free(buf);
    free(want);
    cache_sm_free(sm);
}

/* An empty machine: the header and the trailer only. */
static void test_empty(void **state)
{
    struct cache_sm *sm = new_sm();
    struct cache_sm_snap *s;
    void *want;
    size_t want_len, len, off = 0;
    unsigned char *buf;

    (void)state;
    inline_snapshot(sm, &want, &want_len);
    s = cache_sm_snapshot_begin(sm, &len);
    assert_int_equal(len, want_len);
    buf = malloc(len);
    set(sm, T0, "new", "after begin", 0);
    finish_equal(s, buf, off, len, 1, want);
    free(buf);
    free(want);
    cache_sm_free(sm);
}

/* The seal streamed over the bytes in pieces (as raft/fsm's chunks go
 * past: multiples of 8 bytes, the last one shorter, the trailer wherever
 * it falls) is the trailer cache_sm_snapshot_seal writes. */
static void test_seal_in_pieces(void **state)
{
    static const size_t pieces[] = {8, 16, 24, 64, 4096, 1 << 20};
    struct gen g = {.s = 42, .now = T0};
    struct cache_sm *sm = new_sm();
    void *want;
    size_t len, k, i;
    unsigned char *buf;

    (void)state;
    for (i = 0; i < 300; i++) {
        apply_next(&g, &sm, 1);
    }
    inline_snapshot(sm, &want, &len);
    assert_true(len > 4096 + CACHE_SM_SEAL_LEN);
    buf = malloc(len);
    for (k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        struct cache_sm_seal st;
        size_t body = len - CACHE_SM_SEAL_LEN;
        size_t off;

        memcpy(buf, want, len);
        memset(buf + body, 0, CACHE_SM_SEAL_LEN);
        cache_sm_seal_begin(&st, len);
        for (off = 0; off < body; off += pieces[k]) {
            size_t n = body - off < pieces[k] ? body - off : pieces[k];

            cache_sm_seal_update(&st, buf + off, n);
        }
        cache_sm_seal_end(&st, buf + body);
        assert_memory_equal(buf, want, len);
    }
    /* and the restore checks it (a refused one keeps the state) */
    buf[len - 1] ^= 1;
    assert_int_equal(cache_sm_restore(sm, buf, len), -1);
    free(buf);
    free(want);
    cache_sm_free(sm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_interleaved),
        cmocka_unit_test(test_changes_before_the_cursor_are_kept),
        cmocka_unit_test(test_restore_during_snapshot),
        cmocka_unit_test(test_end_unfinished),
        cmocka_unit_test(test_move_drops_during_snapshot),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_seal_in_pieces),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
