/*
 * Unit tests of the deterministic memcached state machine (sm/cache_sm).
 * Behaviour marked "memcached 1.6.18" was checked against the real server.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/ring.h"
#include "sm/cache_moves.h"
#include "sm/cache_sm.h"
#include "sm/shard_ring.h"
#include "sm/cache_table.h"

/* 2023-11-14T22:13:20Z, a whole second */
#define T0 1700000000000ULL
#define T0_S 1700000000LL

/* ------------------------------------------------------------------ helpers */

static struct cache_sm *sm_make(uint64_t mem_limit, uint32_t item_size_max)
{
    struct cache_sm_config cfg = {mem_limit, item_size_max};
    struct cache_sm *sm = cache_sm_new(&cfg);

    assert_non_null(sm);
    return sm;
}

/* Apply one op with the request id (@client, @seq: 0 for none); returns
 * its status and, if @out, keeps the result there (caller clears it). */
static enum cache_status op_ided(struct cache_sm *sm,
                                 uint64_t now,
                                 enum cache_op_type type,
                                 const char *key,
                                 const char *value,
                                 uint32_t flags,
                                 int64_t exptime,
                                 uint64_t cas,
                                 uint64_t delta,
                                 uint64_t client,
                                 uint64_t seq,
                                 struct cache_result *out)
{
    struct cache_op op;
    struct cache_result res;
    enum cache_status st;

    memset(&op, 0, sizeof(op));
    op.type = type;
    op.key = key;
    op.key_len = key != NULL ? strlen(key) : 0;
    op.value = value;
    op.value_len = value != NULL ? strlen(value) : 0;
    op.flags = flags;
    op.exptime = exptime;
    op.cas = cas;
    op.delta = delta;
    op.client_id = client;
    op.seq = seq;
    cache_sm_apply(sm, now, &op, &res);
    st = res.status;
    if (out != NULL) {
        *out = res;
    } else {
        cache_result_clear(&res);
    }
    return st;
}

/* ... without a request id */
static enum cache_status op_full(struct cache_sm *sm,
                                 uint64_t now,
                                 enum cache_op_type type,
                                 const char *key,
                                 const char *value,
                                 uint32_t flags,
                                 int64_t exptime,
                                 uint64_t cas,
                                 uint64_t delta,
                                 struct cache_result *out)
{
    return op_ided(sm, now, type, key, value, flags, exptime, cas, delta, 0,
                   0, out);
}

static enum cache_status store(struct cache_sm *sm,
                               uint64_t now,
                               enum cache_op_type type,
                               const char *key,
                               const char *value,
                               uint32_t flags,
                               int64_t exptime)
{
    return op_full(sm, now, type, key, value, flags, exptime, 0, 0, NULL);
}

static enum cache_status set(struct cache_sm *sm,
                             uint64_t now,
                             const char *key,
                             const char *value)
{
    return store(sm, now, CACHE_OP_SET, key, value, 0, 0);
}

static enum cache_status simple(struct cache_sm *sm,
                                uint64_t now,
                                enum cache_op_type type,
                                const char *key,
                                int64_t exptime)
{
    return op_full(sm, now, type, key, NULL, 0, exptime, 0, 0, NULL);
}

static uint64_t delta(struct cache_sm *sm,
                      uint64_t now,
                      enum cache_op_type type,
                      const char *key,
                      uint64_t d,
                      enum cache_status expect)
{
    struct cache_result res;
    uint64_t n;

    assert_int_equal(op_full(sm, now, type, key, NULL, 0, 0, 0, d, &res),
                     expect);
    n = res.number;
    cache_result_clear(&res);
    return n;
}

static uint64_t cas_of(const struct cache_sm *sm, uint64_t now, const char *key)
{
    struct cache_result res;
    uint64_t cas;

    cache_sm_get(sm, now, key, strlen(key), &res);
    assert_int_equal(res.status, CACHE_HIT);
    cas = res.cas;
    cache_result_clear(&res);
    return cas;
}

static void want_value(const struct cache_sm *sm,
                       uint64_t now,
                       const char *key,
                       const char *value,
                       uint32_t flags)
{
    struct cache_result res;

    cache_sm_get(sm, now, key, strlen(key), &res);
    assert_int_equal(res.status, CACHE_HIT);
    assert_int_equal(res.value_len, strlen(value));
    if (res.value_len > 0) {
        assert_memory_equal(res.value, value, res.value_len);
    } else {
        assert_null(res.value);
    }
    assert_int_equal(res.flags, flags);
    cache_result_clear(&res);
}

static void want_miss(const struct cache_sm *sm, uint64_t now, const char *key)
{
    struct cache_result res;

    cache_sm_get(sm, now, key, strlen(key), &res);
    assert_int_equal(res.status, CACHE_NOT_FOUND);
    assert_null(res.value);
    cache_result_clear(&res);
}

/* The value memcached leaves after an in-place incr/decr: the number,
 * space-padded to the old length. */
static void want_padded(const struct cache_sm *sm,
                        const char *key,
                        uint64_t number,
                        size_t width)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)number);

    assert_true((size_t)n <= width && width < sizeof(buf));
    memset(buf + n, ' ', width - (size_t)n);
    buf[width] = '\0';
    want_value(sm, T0, key, buf, 0);
}

static struct cache_sm_stats stats_of(const struct cache_sm *sm)
{
    struct cache_sm_stats st;

    cache_sm_stats(sm, &st);
    return st;
}

/* -------------------------------------------------------------- store ops */

static void test_set_get(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_result res;
    struct cache_sm_stats st;

    (void)state;
    assert_int_equal(
        op_full(sm, T0, CACHE_OP_SET, "k", "hello", 42, 0, 0, 0, &res),
        CACHE_STORED);
    assert_int_equal(res.cas, 1);
    cache_result_clear(&res);
    want_value(sm, T0, "k", "hello", 42);
    assert_int_equal(cas_of(sm, T0, "k"), 1);
    /* set overwrites, flags included */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k", "", 7, 0), CACHE_STORED);
    want_value(sm, T0, "k", "", 7);
    want_miss(sm, T0, "other");

    st = stats_of(sm);
    assert_int_equal(st.curr_items, 1);
    assert_int_equal(st.total_items, 2);
    assert_int_equal(st.bytes, 48 + 1 + 0);
    assert_int_equal(st.limit_maxbytes, 64ULL * 1024 * 1024);
    assert_int_equal(st.item_size_max, CACHE_ITEM_SIZE_MAX_DEFAULT);
    assert_int_equal(st.next_cas, 3);
    assert_int_equal(st.applied, 2);
    cache_sm_free(sm);
}

static void test_add(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_ADD, "k", "a", 0, 0), CACHE_STORED);
    assert_int_equal(store(sm, T0, CACHE_OP_ADD, "k", "b", 0, 0),
                     CACHE_NOT_STORED);
    want_value(sm, T0, "k", "a", 0);
    /* a failed add takes no cas */
    assert_int_equal(stats_of(sm).next_cas, 2);
    /* add over an expired item stores (memcached 1.6.18) */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "e", "old", 0, 1),
                     CACHE_STORED);
    assert_int_equal(store(sm, T0 + 1000, CACHE_OP_ADD, "e", "new", 0, 0),
                     CACHE_STORED);
    want_value(sm, T0 + 1000, "e", "new", 0);
    cache_sm_free(sm);
}

static void test_replace(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_REPLACE, "k", "a", 0, 0),
                     CACHE_NOT_STORED);
    want_miss(sm, T0, "k");
    assert_int_equal(set(sm, T0, "k", "a"), CACHE_STORED);
    assert_int_equal(store(sm, T0, CACHE_OP_REPLACE, "k", "b", 3, 0),
                     CACHE_STORED);
    want_value(sm, T0, "k", "b", 3);
    cache_sm_free(sm);
}

static void test_append_prepend_keep_flags_and_exptime(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k", "mid", 5, 10),
                     CACHE_STORED);
    /* the op's flags and exptime are ignored */
    assert_int_equal(store(sm, T0, CACHE_OP_APPEND, "k", "-end", 7, 0),
                     CACHE_STORED);
    assert_int_equal(store(sm, T0, CACHE_OP_PREPEND, "k", "start-", 9, 1000),
                     CACHE_STORED);
    want_value(sm, T0, "k", "start-mid-end", 5);
    /* still expires 10 s after the set */
    want_value(sm, T0 + 9999, "k", "start-mid-end", 5);
    want_miss(sm, T0 + 10000, "k");
    /* appending nothing is a store too */
    assert_int_equal(store(sm, T0, CACHE_OP_APPEND, "k", "", 0, 0),
                     CACHE_STORED);
    want_value(sm, T0, "k", "start-mid-end", 5);
    cache_sm_free(sm);
}

static void test_append_prepend_missing(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_APPEND, "k", "x", 0, 0),
                     CACHE_NOT_STORED);
    assert_int_equal(store(sm, T0, CACHE_OP_PREPEND, "k", "x", 0, 0),
                     CACHE_NOT_STORED);
    want_miss(sm, T0, "k");
    /* an expired item is missing */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "e", "v", 0, 1), CACHE_STORED);
    assert_int_equal(store(sm, T0 + 1000, CACHE_OP_APPEND, "e", "x", 0, 0),
                     CACHE_NOT_STORED);
    assert_int_equal(stats_of(sm).expired_unfetched, 1);
    cache_sm_free(sm);
}

/* -------------------------------------------------------------------- cas */

static void test_cas(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_result res;
    uint64_t c;

    (void)state;
    /* missing */
    assert_int_equal(op_full(sm, T0, CACHE_OP_CAS, "k", "v", 0, 0, 1, 0, NULL),
                     CACHE_NOT_FOUND);
    assert_int_equal(set(sm, T0, "k", "a"), CACHE_STORED);
    c = cas_of(sm, T0, "k");
    /* mismatch */
    assert_int_equal(
        op_full(sm, T0, CACHE_OP_CAS, "k", "b", 0, 0, c + 1, 0, NULL),
        CACHE_EXISTS);
    assert_int_equal(op_full(sm, T0, CACHE_OP_CAS, "k", "b", 0, 0, 0, 0, NULL),
                     CACHE_EXISTS);
    want_value(sm, T0, "k", "a", 0);
    /* match */
    assert_int_equal(op_full(sm, T0, CACHE_OP_CAS, "k", "b", 4, 0, c, 0, &res),
                     CACHE_STORED);
    assert_true(res.cas > c);
    assert_int_equal(res.cas, cas_of(sm, T0, "k"));
    cache_result_clear(&res);
    want_value(sm, T0, "k", "b", 4);
    /* the old unique is now stale */
    assert_int_equal(op_full(sm, T0, CACHE_OP_CAS, "k", "c", 0, 0, c, 0, NULL),
                     CACHE_EXISTS);
    /* after delete */
    c = cas_of(sm, T0, "k");
    assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, "k", 0), CACHE_DELETED);
    assert_int_equal(op_full(sm, T0, CACHE_OP_CAS, "k", "d", 0, 0, c, 0, NULL),
                     CACHE_NOT_FOUND);
    cache_sm_free(sm);
}

static void test_cas_on_expired_item(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    uint64_t c;

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k", "v", 0, 1), CACHE_STORED);
    c = cas_of(sm, T0, "k");
    /* memcached 1.6.18: NOT_FOUND once expired, even with the right unique */
    assert_int_equal(
        op_full(sm, T0 + 1000, CACHE_OP_CAS, "k", "w", 0, 0, c, 0, NULL),
        CACHE_NOT_FOUND);
    want_miss(sm, T0 + 1000, "k");
    cache_sm_free(sm);
}

static void test_cas_unique_per_store(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    uint64_t prev;
    uint64_t c;
    struct cache_result res;

    (void)state;
    assert_int_equal(set(sm, T0, "k", "1"), CACHE_STORED);
    prev = cas_of(sm, T0, "k");

    assert_int_equal(set(sm, T0, "k", "2"), CACHE_STORED);
    c = cas_of(sm, T0, "k");
    assert_true(c > prev);
    prev = c;
    assert_int_equal(store(sm, T0, CACHE_OP_APPEND, "k", "0", 0, 0),
                     CACHE_STORED);
    c = cas_of(sm, T0, "k");
    assert_true(c > prev);
    prev = c;
    assert_int_equal(store(sm, T0, CACHE_OP_PREPEND, "k", "1", 0, 0),
                     CACHE_STORED);
    c = cas_of(sm, T0, "k");
    assert_true(c > prev);
    prev = c;
    /* incr and decr take a new unique (memcached 1.6.18) */
    assert_int_equal(delta(sm, T0, CACHE_OP_INCR, "k", 1, CACHE_NUMBER), 121);
    c = cas_of(sm, T0, "k");
    assert_true(c > prev);
    prev = c;
    assert_int_equal(delta(sm, T0, CACHE_OP_DECR, "k", 1, CACHE_NUMBER), 120);
    c = cas_of(sm, T0, "k");
    assert_true(c > prev);
    prev = c;
    /* touch and gat keep it (memcached 1.6.18) */
    assert_int_equal(simple(sm, T0, CACHE_OP_TOUCH, "k", 100), CACHE_TOUCHED);
    assert_int_equal(cas_of(sm, T0, "k"), prev);
    assert_int_equal(
        op_full(sm, T0, CACHE_OP_GAT, "k", NULL, 0, 100, 0, 0, &res),
        CACHE_HIT);
    assert_int_equal(res.cas, prev);
    cache_result_clear(&res);
    assert_int_equal(cas_of(sm, T0, "k"), prev);
    /* uniques are never reused across keys */
    assert_int_equal(set(sm, T0, "other", "x"), CACHE_STORED);
    assert_true(cas_of(sm, T0, "other") > prev);
    cache_sm_free(sm);
}

/* -------------------------------------------------------------- incr/decr */

static void test_incr_decr_basic(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "n", "10", 3, 0),
                     CACHE_STORED);
    assert_int_equal(delta(sm, T0, CACHE_OP_INCR, "n", 5, CACHE_NUMBER), 15);
    want_value(sm, T0, "n", "15", 3);
    assert_int_equal(delta(sm, T0, CACHE_OP_DECR, "n", 3, CACHE_NUMBER), 12);
    want_value(sm, T0, "n", "12", 3);
    assert_int_equal(delta(sm, T0, CACHE_OP_INCR, "n", 0, CACHE_NUMBER), 12);
    /* growing the text rewrites the item, flags kept */
    assert_int_equal(delta(sm, T0, CACHE_OP_INCR, "n", 88, CACHE_NUMBER), 100);
    want_value(sm, T0, "n", "100", 3);
    delta(sm, T0, CACHE_OP_INCR, "missing", 1, CACHE_NOT_FOUND);
    delta(sm, T0, CACHE_OP_DECR, "missing", 1, CACHE_NOT_FOUND);
    cache_sm_free(sm);
}

static void test_incr_decr_shrink_pads_with_spaces(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    /* memcached 1.6.18: "100" decr 95 reads back as "5  " */
    assert_int_equal(set(sm, T0, "n", "100"), CACHE_STORED);
    assert_int_equal(delta(sm, T0, CACHE_OP_DECR, "n", 95, CACHE_NUMBER), 5);
    want_value(sm, T0, "n", "5  ", 0);
    /* and the padded value still counts */
    assert_int_equal(delta(sm, T0, CACHE_OP_INCR, "n", 1, CACHE_NUMBER), 6);
    want_value(sm, T0, "n", "6  ", 0);
    cache_sm_free(sm);
}

static void test_incr_wrap_and_decr_floor(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(set(sm, T0, "n", "18446744073709551615"), CACHE_STORED);
    assert_int_equal(delta(sm, T0, CACHE_OP_INCR, "n", 1, CACHE_NUMBER), 0);
    want_padded(sm, "n", 0, 20);
    assert_int_equal(set(sm, T0, "n", "5"), CACHE_STORED);
    assert_int_equal(
        delta(sm, T0, CACHE_OP_INCR, "n", UINT64_MAX, CACHE_NUMBER), 4);
    assert_int_equal(delta(sm, T0, CACHE_OP_DECR, "n", 6, CACHE_NUMBER), 0);
    want_value(sm, T0, "n", "0", 0);
    assert_int_equal(delta(sm, T0, CACHE_OP_DECR, "n", 1, CACHE_NUMBER), 0);
    assert_int_equal(
        delta(sm, T0, CACHE_OP_DECR, "n", UINT64_MAX, CACHE_NUMBER), 0);
    cache_sm_free(sm);
}

static void test_incr_non_numeric(void **state)
{
    static const char *bad[] = {
        "", /* memcached: a zero-length value is never a number */
        "abc",
        "5x",
        "x5",
        " ",
        "  \t",
        "+",
        "-",
        "- 5",
        "--5",
        "0x10",
        "-5",                   /* negative as int64 */
        "18446744073709551616", /* 2^64: strtoull ERANGE */
        "99999999999999999999999",
    };
    struct cache_sm *sm = sm_make(0, 0);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(set(sm, T0, "n", bad[i]), CACHE_STORED);
        delta(sm, T0, CACHE_OP_INCR, "n", 1, CACHE_NON_NUMERIC);
        delta(sm, T0, CACHE_OP_DECR, "n", 1, CACHE_NON_NUMERIC);
        /* the value is untouched and no cas is taken */
        want_value(sm, T0, "n", bad[i], 0);
    }
    assert_int_equal(stats_of(sm).next_cas, i + 1);
    cache_sm_free(sm);
}

static void test_incr_strtoull_quirks(void **state)
{
    /* All of these are accepted by memcached 1.6.18 (safe_strtoull). */
    static const struct {
        const char *value;
        uint64_t incr1;
    } ok[] = {
        {" 5", 6},
        {"5 ", 6},
        {"5 x", 6}, /* white space ends the number */
        {"\t7\n", 8},
        {"+5", 6},
        {"007", 8},
        {"-0", 1},
        /* strtoull negates: -(2^64-1) is 1, not negative as int64 */
        {"-18446744073709551615", 2},
        {"018446744073709551615", 0}, /* 21 characters is fine */
        {"18446744073709551614", 18446744073709551615ULL},
    };
    struct cache_sm *sm = sm_make(0, 0);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(set(sm, T0, "n", ok[i].value), CACHE_STORED);
        assert_int_equal(delta(sm, T0, CACHE_OP_INCR, "n", 1, CACHE_NUMBER),
                         ok[i].incr1);
        want_padded(sm, "n", ok[i].incr1, strlen(ok[i].value));
    }
    cache_sm_free(sm);
}

static void test_incr_expired_is_missing(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "n", "1", 0, 2), CACHE_STORED);
    assert_int_equal(delta(sm, T0 + 1999, CACHE_OP_INCR, "n", 1, CACHE_NUMBER),
                     2);
    /* incr keeps the exptime */
    delta(sm, T0 + 2000, CACHE_OP_INCR, "n", 1, CACHE_NOT_FOUND);
    cache_sm_free(sm);
}

/* ------------------------------------------------------ delete/touch/gat */

static void test_delete(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, "k", 0), CACHE_NOT_FOUND);
    assert_int_equal(set(sm, T0, "k", "v"), CACHE_STORED);
    assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, "k", 0), CACHE_DELETED);
    want_miss(sm, T0, "k");
    assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, "k", 0), CACHE_NOT_FOUND);
    assert_int_equal(stats_of(sm).curr_items, 0);
    assert_int_equal(stats_of(sm).bytes, 0);
    /* an expired item is not found */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "e", "v", 0, 1), CACHE_STORED);
    assert_int_equal(simple(sm, T0 + 1000, CACHE_OP_DELETE, "e", 0),
                     CACHE_NOT_FOUND);
    cache_sm_free(sm);
}

static void test_touch(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(simple(sm, T0, CACHE_OP_TOUCH, "k", 10), CACHE_NOT_FOUND);
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k", "v", 8, 5), CACHE_STORED);
    /* extend: 5 s -> 10 s from T0+1 s */
    assert_int_equal(simple(sm, T0 + 1000, CACHE_OP_TOUCH, "k", 10),
                     CACHE_TOUCHED);
    want_value(sm, T0 + 10999, "k", "v", 8);
    want_miss(sm, T0 + 11000, "k");
    /* 0 = never */
    assert_int_equal(simple(sm, T0 + 2000, CACHE_OP_TOUCH, "k", 0),
                     CACHE_TOUCHED);
    want_value(sm, T0 + 1000000000, "k", "v", 8);
    /* negative expires it at once (memcached 1.6.18) */
    assert_int_equal(simple(sm, T0 + 3000, CACHE_OP_TOUCH, "k", -1),
                     CACHE_TOUCHED);
    want_miss(sm, T0 + 3000, "k");
    assert_int_equal(simple(sm, T0 + 3000, CACHE_OP_TOUCH, "k", 10),
                     CACHE_NOT_FOUND);
    assert_int_equal(stats_of(sm).curr_items, 0);
    cache_sm_free(sm);
}

static void test_gat(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_result res;

    (void)state;
    assert_int_equal(
        op_full(sm, T0, CACHE_OP_GAT, "k", NULL, 0, 10, 0, 0, &res),
        CACHE_NOT_FOUND);
    assert_null(res.value);
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k", "value", 6, 1),
                     CACHE_STORED);
    assert_int_equal(
        op_full(sm, T0 + 500, CACHE_OP_GAT, "k", NULL, 0, 10, 0, 0, &res),
        CACHE_HIT);
    assert_int_equal(res.value_len, 5);
    assert_memory_equal(res.value, "value", 5);
    assert_int_equal(res.flags, 6);
    assert_int_equal(res.cas, 1);
    cache_result_clear(&res);
    want_value(sm, T0 + 10499, "k", "value", 6);
    want_miss(sm, T0 + 10500, "k");
    /* gat -1 returns the item, then it is gone (memcached 1.6.18) */
    assert_int_equal(
        op_full(sm, T0 + 600, CACHE_OP_GAT, "k", NULL, 0, -1, 0, 0, &res),
        CACHE_HIT);
    assert_memory_equal(res.value, "value", 5);
    cache_result_clear(&res);
    want_miss(sm, T0 + 600, "k");
    /* empty value: HIT with NULL */
    assert_int_equal(set(sm, T0 + 600, "e", ""), CACHE_STORED);
    assert_int_equal(
        op_full(sm, T0 + 600, CACHE_OP_GAT, "e", NULL, 0, 0, 0, 0, &res),
        CACHE_HIT);
    assert_null(res.value);
    assert_int_equal(res.value_len, 0);
    cache_result_clear(&res);
    cache_sm_free(sm);
}

/* ----------------------------------------------------------------- expiry */

static void test_expiry_relative_boundary(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    /* set at T0+123 ms with 10 s: alive until exactly 10 000 ms later */
    assert_int_equal(store(sm, T0 + 123, CACHE_OP_SET, "k", "v", 0, 10),
                     CACHE_STORED);
    want_value(sm, T0 + 123, "k", "v", 0);
    want_value(sm, T0 + 123 + 9999, "k", "v", 0);
    want_miss(sm, T0 + 123 + 10000, "k");
    /* apply sees the same boundary */
    assert_int_equal(simple(sm, T0 + 123 + 9999, CACHE_OP_TOUCH, "k", 10),
                     CACHE_TOUCHED);
    assert_int_equal(
        simple(sm, T0 + 123 + 9999 + 10000, CACHE_OP_TOUCH, "k", 10),
        CACHE_NOT_FOUND);
    cache_sm_free(sm);
}

static void test_expiry_absolute(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    /* absolute unix time 100 s ahead: dead at exactly that second */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k", "v", 0, T0_S + 100),
                     CACHE_STORED);
    want_value(sm, T0 + 99999, "k", "v", 0);
    want_miss(sm, T0 + 100000, "k");
    /* absolute time in the past: STORED but dead on arrival */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "p", "v", 0, T0_S - 1),
                     CACHE_STORED);
    want_miss(sm, T0, "p");
    /* absolute time equal to now is also already expired */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "q", "v", 0, T0_S),
                     CACHE_STORED);
    want_miss(sm, T0, "q");
    /* one ms before the absolute second it is still valid (a fresh
     * machine: the clock of @sm is already at T0) */
    {
        struct cache_sm *sm2 = sm_make(0, 0);

        assert_int_equal(store(sm2, T0 - 1, CACHE_OP_SET, "r", "v", 0, T0_S),
                         CACHE_STORED);
        want_value(sm2, T0 - 1, "r", "v", 0);
        want_miss(sm2, T0, "r");
        cache_sm_free(sm2);
    }
    /* huge absolute times saturate instead of wrapping */
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "h", "v", 0, INT64_MAX),
                     CACHE_STORED);
    want_value(sm, UINT64_MAX - 1, "h", "v", 0);
    cache_sm_free(sm);
}

static void test_expiry_negative(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_result res;

    (void)state;
    assert_int_equal(set(sm, T0, "k", "old"), CACHE_STORED);
    /* memcached 1.6.18: STORED, and the old value is gone */
    assert_int_equal(
        op_full(sm, T0, CACHE_OP_SET, "k", "new", 0, -1, 0, 0, &res),
        CACHE_STORED);
    assert_int_equal(res.cas, 2);
    cache_result_clear(&res);
    want_miss(sm, T0, "k");
    assert_int_equal(stats_of(sm).curr_items, 0);
    assert_int_equal(stats_of(sm).next_cas, 3);
    /* add then works again */
    assert_int_equal(store(sm, T0, CACHE_OP_ADD, "k", "y", 0, 0), CACHE_STORED);
    want_value(sm, T0, "k", "y", 0);
    /* cas with a negative exptime also ends with nothing */
    assert_int_equal(op_full(sm, T0, CACHE_OP_CAS, "k", "z", 0, -5,
                             cas_of(sm, T0, "k"), 0, NULL),
                     CACHE_STORED);
    want_miss(sm, T0, "k");
    cache_sm_free(sm);
}

static void test_expiry_30_day_boundary(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    /* 2592000 is still relative: 30 days from now */
    assert_int_equal(
        store(sm, T0, CACHE_OP_SET, "rel", "v", 0, CACHE_REALTIME_MAXDELTA),
        CACHE_STORED);
    want_value(sm, T0 + CACHE_REALTIME_MAXDELTA * 1000ULL - 1, "rel", "v", 0);
    want_miss(sm, T0 + CACHE_REALTIME_MAXDELTA * 1000ULL, "rel");
    /* 2592001 is an absolute unix time in January 1970: already expired */
    assert_int_equal(
        store(sm, T0, CACHE_OP_SET, "abs", "v", 0, CACHE_REALTIME_MAXDELTA + 1),
        CACHE_STORED);
    want_miss(sm, T0, "abs");
    cache_sm_free(sm);
}

static void test_reads_do_not_change_state(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    uint64_t d;

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k", "v", 0, 1), CACHE_STORED);
    assert_int_equal(set(sm, T0, "j", "v"), CACHE_STORED);
    d = cache_sm_digest(sm);
    want_miss(sm, T0 + 5000, "k");
    want_value(sm, T0 + 5000, "j", "v", 0);
    /* the expired item is still held until a write meets it */
    assert_int_equal(stats_of(sm).curr_items, 2);
    assert_int_equal(cache_sm_digest(sm), d);
    /* a read with an older now sees it again: reads use now_ms as given */
    want_value(sm, T0, "k", "v", 0);
    cache_sm_free(sm);
}

static void test_time_backwards(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_sm *ref = sm_make(0, 0);

    (void)state;
    assert_int_equal(store(sm, T0 + 10000, CACHE_OP_SET, "k", "v", 0, 5),
                     CACHE_STORED);
    /* a new leader with a clock 20 s slow: relative exptimes count from the
     * state machine clock (T0+10 s), not from the stamp */
    assert_int_equal(store(sm, T0 - 10000, CACHE_OP_SET, "j", "v", 0, 5),
                     CACHE_STORED);
    want_value(sm, T0 + 14999, "j", "v", 0);
    want_miss(sm, T0 + 15000, "j");
    /* an item that expired by the max clock stays expired for writes */
    assert_int_equal(store(sm, T0 + 15000, CACHE_OP_SET, "x", "v", 0, 0),
                     CACHE_STORED);
    assert_int_equal(simple(sm, T0, CACHE_OP_TOUCH, "k", 100), CACHE_NOT_FOUND);
    /* and the result equals a machine that never saw time go back */
    assert_int_equal(store(ref, T0 + 10000, CACHE_OP_SET, "k", "v", 0, 5),
                     CACHE_STORED);
    assert_int_equal(store(ref, T0 + 10000, CACHE_OP_SET, "j", "v", 0, 5),
                     CACHE_STORED);
    assert_int_equal(store(ref, T0 + 15000, CACHE_OP_SET, "x", "v", 0, 0),
                     CACHE_STORED);
    assert_int_equal(simple(ref, T0 + 15000, CACHE_OP_TOUCH, "k", 100),
                     CACHE_NOT_FOUND);
    assert_int_equal(cache_sm_digest(sm), cache_sm_digest(ref));
    cache_sm_free(sm);
    cache_sm_free(ref);
}

/* -------------------------------------------------------------- flush_all */

static void test_flush_all_now(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(set(sm, T0, "a", "1"), CACHE_STORED);
    assert_int_equal(set(sm, T0, "b", "2"), CACHE_STORED);
    assert_int_equal(simple(sm, T0, CACHE_OP_FLUSH_ALL, NULL, 0), CACHE_OK);
    want_miss(sm, T0, "a");
    want_miss(sm, T0, "b");
    assert_int_equal(stats_of(sm).curr_items, 0);
    assert_int_equal(stats_of(sm).bytes, 0);
    /* a store in the same ms after the flush survives (memcached handles
     * the same second with oldest_cas) */
    assert_int_equal(set(sm, T0, "c", "3"), CACHE_STORED);
    want_value(sm, T0, "c", "3", 0);
    /* negative delay is now too */
    assert_int_equal(simple(sm, T0, CACHE_OP_FLUSH_ALL, NULL, -1), CACHE_OK);
    want_miss(sm, T0, "c");
    /* and cas uniques keep increasing across a flush */
    assert_int_equal(set(sm, T0, "d", "4"), CACHE_STORED);
    assert_int_equal(cas_of(sm, T0, "d"), 4);
    cache_sm_free(sm);
}

static void test_flush_all_delayed(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(set(sm, T0, "a", "1"), CACHE_STORED);
    assert_int_equal(simple(sm, T0, CACHE_OP_FLUSH_ALL, NULL, 2), CACHE_OK);
    /* stored before the deadline: valid until it, then gone */
    assert_int_equal(set(sm, T0 + 1000, "b", "2"), CACHE_STORED);
    want_value(sm, T0 + 1999, "a", "1", 0);
    want_value(sm, T0 + 1999, "b", "2", 0);
    /* a read at the deadline misses before any apply reaches it */
    want_miss(sm, T0 + 2000, "a");
    want_miss(sm, T0 + 2000, "b");
    assert_int_equal(stats_of(sm).curr_items, 2);
    /* the first apply at the deadline clears; its own store survives */
    assert_int_equal(set(sm, T0 + 2000, "c", "3"), CACHE_STORED);
    assert_int_equal(stats_of(sm).curr_items, 1);
    want_miss(sm, T0 + 2000, "a");
    want_value(sm, T0 + 2000, "c", "3", 0);
    want_value(sm, T0 + 100000, "c", "3", 0);
    cache_sm_free(sm);
}

static void test_flush_all_delayed_absolute_and_replaced(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(set(sm, T0, "a", "1"), CACHE_STORED);
    /* absolute deadline 5 s ahead */
    assert_int_equal(simple(sm, T0, CACHE_OP_FLUSH_ALL, NULL, T0_S + 5),
                     CACHE_OK);
    want_value(sm, T0 + 4999, "a", "1", 0);
    want_miss(sm, T0 + 5000, "a");
    /* a later flush_all replaces the pending deadline (oldest_live) */
    assert_int_equal(simple(sm, T0 + 1000, CACHE_OP_FLUSH_ALL, NULL, 100),
                     CACHE_OK);
    want_value(sm, T0 + 5000, "a", "1", 0);
    want_miss(sm, T0 + 101000, "a");
    /* flush_all 0 cancels the pending one and clears at once */
    assert_int_equal(simple(sm, T0 + 2000, CACHE_OP_FLUSH_ALL, NULL, 0),
                     CACHE_OK);
    want_miss(sm, T0 + 2000, "a");
    assert_int_equal(set(sm, T0 + 3000, "b", "2"), CACHE_STORED);
    assert_int_equal(set(sm, T0 + 200000, "c", "3"), CACHE_STORED);
    want_value(sm, T0 + 200000, "b", "2", 0);
    /* an absolute time in the past flushes now */
    assert_int_equal(
        simple(sm, T0 + 200000, CACHE_OP_FLUSH_ALL, NULL, T0_S - 100),
        CACHE_OK);
    want_miss(sm, T0 + 200000, "b");
    want_miss(sm, T0 + 200000, "c");
    cache_sm_free(sm);
}

/* ------------------------------------------------------ limits and keys */

static void test_too_large(void **state)
{
    struct cache_sm *sm = sm_make(0, 100);
    char big[102];
    char max[101];

    (void)state;
    memset(big, 'x', 101);
    big[101] = '\0';
    memset(max, 'y', 100);
    max[100] = '\0';
    assert_int_equal(set(sm, T0, "k", max), CACHE_STORED);
    want_value(sm, T0, "k", max, 0);
    /* add/replace/cas too large keep the old item (memcached 1.6.18) */
    assert_int_equal(store(sm, T0, CACHE_OP_ADD, "k", big, 0, 0),
                     CACHE_TOO_LARGE);
    assert_int_equal(store(sm, T0, CACHE_OP_REPLACE, "k", big, 0, 0),
                     CACHE_TOO_LARGE);
    assert_int_equal(op_full(sm, T0, CACHE_OP_CAS, "k", big, 0, 0,
                             cas_of(sm, T0, "k"), 0, NULL),
                     CACHE_TOO_LARGE);
    want_value(sm, T0, "k", max, 0);
    /* append/prepend: own data too large -> TOO_LARGE, result too large ->
     * NOT_STORED; the item is kept (memcached 1.6.18) */
    assert_int_equal(store(sm, T0, CACHE_OP_APPEND, "k", big, 0, 0),
                     CACHE_TOO_LARGE);
    assert_int_equal(store(sm, T0, CACHE_OP_APPEND, "k", "z", 0, 0),
                     CACHE_NOT_STORED);
    assert_int_equal(store(sm, T0, CACHE_OP_PREPEND, "k", "z", 0, 0),
                     CACHE_NOT_STORED);
    want_value(sm, T0, "k", max, 0);
    /* a too-large set removes the old item (memcached 1.6.18) */
    assert_int_equal(set(sm, T0, "k", big), CACHE_TOO_LARGE);
    want_miss(sm, T0, "k");
    assert_int_equal(stats_of(sm).next_cas, 2);
    cache_sm_free(sm);
}

static void test_key_validation(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_op op;
    struct cache_result res;
    char key[CACHE_KEY_MAX + 2];
    static const char *bad[] = {"", "a b", "a\nb", "a\rb", "tab\t", "del\x7f"};
    size_t i;

    (void)state;
    memset(key, 'k', sizeof(key));
    key[CACHE_KEY_MAX] = '\0';
    assert_int_equal(set(sm, T0, key, "v"), CACHE_STORED);
    want_value(sm, T0, key, "v", 0);
    key[CACHE_KEY_MAX] = 'k';
    key[CACHE_KEY_MAX + 1] = '\0';
    assert_int_equal(set(sm, T0, key, "v"), CACHE_BAD_REQUEST);
    cache_sm_get(sm, T0, key, strlen(key), &res);
    assert_int_equal(res.status, CACHE_BAD_REQUEST);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(set(sm, T0, bad[i], "v"), CACHE_BAD_REQUEST);
        assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, bad[i], 0),
                         CACHE_BAD_REQUEST);
        delta(sm, T0, CACHE_OP_INCR, bad[i], 1, CACHE_BAD_REQUEST);
        cache_sm_get(sm, T0, bad[i], strlen(bad[i]), &res);
        assert_int_equal(res.status, CACHE_BAD_REQUEST);
    }
    /* binary-safe length: an embedded NUL is a control character */
    cache_sm_get(sm, T0, "a\0b", 3, &res);
    assert_int_equal(res.status, CACHE_BAD_REQUEST);
    /* NULL key, NULL value with a length, GET through apply, bad type */
    assert_int_equal(set(sm, T0, NULL, "v"), CACHE_BAD_REQUEST);
    memset(&op, 0, sizeof(op));
    op.type = CACHE_OP_SET;
    op.key = "k";
    op.key_len = 1;
    op.value_len = 3;
    cache_sm_apply(sm, T0, &op, &res);
    assert_int_equal(res.status, CACHE_BAD_REQUEST);
    op.type = CACHE_OP_GET;
    cache_sm_apply(sm, T0, &op, &res);
    assert_int_equal(res.status, CACHE_BAD_REQUEST);
    op.type = CACHE_OP__COUNT;
    cache_sm_apply(sm, T0, &op, &res);
    assert_int_equal(res.status, CACHE_BAD_REQUEST);
    assert_int_equal(stats_of(sm).curr_items, 1);
    assert_int_equal(stats_of(sm).next_cas, 2);
    cache_sm_free(sm);
}

/* Items of charge 48 + 2 + 50 = 100 bytes: key "kN", 50-byte value. */
static const char *val50 = "01234567890123456789012345678901234567890123456789";

static void test_eviction_order(void **state)
{
    struct cache_sm *sm = sm_make(500, 0); /* room for exactly 5 */
    char key[3] = "k0";
    int i;

    (void)state;
    for (i = 0; i < 5; i++) {
        key[1] = (char)('0' + i);
        assert_int_equal(set(sm, T0, key, val50), CACHE_STORED);
    }
    assert_int_equal(stats_of(sm).bytes, 500);
    assert_int_equal(stats_of(sm).evictions, 0);
    /* reads never reorder: k0 is still the oldest */
    want_value(sm, T0, "k0", val50, 0);
    /* writes do: touch k0, overwrite k1, incr-less gat of k2 */
    assert_int_equal(simple(sm, T0, CACHE_OP_TOUCH, "k0", 0), CACHE_TOUCHED);
    assert_int_equal(set(sm, T0, "k1", val50), CACHE_STORED);
    assert_int_equal(simple(sm, T0, CACHE_OP_GAT, "k2", 0), CACHE_HIT);
    /* order oldest first is now k3 k4 k0 k1 k2 */
    assert_int_equal(set(sm, T0, "k5", val50), CACHE_STORED);
    want_miss(sm, T0, "k3");
    assert_int_equal(stats_of(sm).evictions, 1);
    assert_int_equal(set(sm, T0, "k6", val50), CACHE_STORED);
    want_miss(sm, T0, "k4");
    assert_int_equal(set(sm, T0, "k7", val50), CACHE_STORED);
    want_miss(sm, T0, "k0");
    want_value(sm, T0, "k1", val50, 0);
    want_value(sm, T0, "k2", val50, 0);
    assert_int_equal(stats_of(sm).evictions, 3);
    assert_int_equal(stats_of(sm).curr_items, 5);
    assert_int_equal(stats_of(sm).bytes, 500);
    /* a bigger item evicts as many as needed: 48 + 2 + 150 = 200 */
    assert_int_equal(stats_of(sm).evictions, 3);
    {
        char v150[151];

        memset(v150, 'v', 150);
        v150[150] = '\0';
        assert_int_equal(set(sm, T0, "k8", v150), CACHE_STORED);
    }
    want_miss(sm, T0, "k1");
    want_miss(sm, T0, "k2");
    want_value(sm, T0, "k5", val50, 0);
    assert_int_equal(stats_of(sm).evictions, 5);
    assert_int_equal(stats_of(sm).bytes, 500);
    /* a replaced item frees its own space first: no eviction */
    assert_int_equal(set(sm, T0, "k5", val50), CACHE_STORED);
    assert_int_equal(stats_of(sm).evictions, 5);
    cache_sm_free(sm);
}

static void test_eviction_counts_expired(void **state)
{
    struct cache_sm *sm = sm_make(200, 0);

    (void)state;
    assert_int_equal(store(sm, T0, CACHE_OP_SET, "k0", val50, 0, 1),
                     CACHE_STORED);
    assert_int_equal(set(sm, T0, "k1", val50), CACHE_STORED);
    assert_int_equal(set(sm, T0 + 1000, "k2", val50), CACHE_STORED);
    assert_int_equal(stats_of(sm).evictions, 0);
    assert_int_equal(stats_of(sm).expired_unfetched, 1);
    assert_int_equal(set(sm, T0 + 1000, "k3", val50), CACHE_STORED);
    assert_int_equal(stats_of(sm).evictions, 1);
    want_miss(sm, T0 + 1000, "k1");
    cache_sm_free(sm);
}

static void test_no_memory(void **state)
{
    struct cache_sm *sm = sm_make(100, 0);
    char v51[52];

    (void)state;
    memset(v51, 'z', 51);
    v51[51] = '\0';
    /* charge 48 + 2 + 50 = 100 fits exactly */
    assert_int_equal(set(sm, T0, "k0", val50), CACHE_STORED);
    assert_int_equal(set(sm, T0, "k1", "x"), CACHE_STORED);
    want_miss(sm, T0, "k0");
    /* 101 > limit: NO_MEMORY, and a failed SET drops the old item */
    assert_int_equal(store(sm, T0, CACHE_OP_ADD, "k9", v51, 0, 0),
                     CACHE_NO_MEMORY);
    assert_int_equal(store(sm, T0, CACHE_OP_REPLACE, "k1", v51, 0, 0),
                     CACHE_NO_MEMORY);
    want_value(sm, T0, "k1", "x", 0);
    assert_int_equal(set(sm, T0, "k1", v51), CACHE_NO_MEMORY);
    want_miss(sm, T0, "k1");
    /* append beyond the whole limit: NOT_STORED, item kept */
    assert_int_equal(set(sm, T0, "k2", val50), CACHE_STORED);
    assert_int_equal(store(sm, T0, CACHE_OP_APPEND, "k2", "y", 0, 0),
                     CACHE_NOT_STORED);
    want_value(sm, T0, "k2", val50, 0);
    cache_sm_free(sm);
}

/* ---------------------------------------------- determinism and snapshots */

static uint64_t rng_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* A reproducible mix of every op over a small key space with a clock that
 * sometimes goes backwards. */
static void random_ops(struct cache_sm **sms,
                       size_t n_sms,
                       uint64_t seed,
                       int count,
                       uint64_t *now)
{
    static const char *values[] = {"",      "1",
                                   "42",    "18446744073709551615",
                                   "hello", "a longer value for memory"};
    uint64_t s = seed;
    int i;
    size_t j;

    for (i = 0; i < count; i++) {
        struct cache_op op;
        char key[16];
        uint64_t r = rng_next(&s);

        memset(&op, 0, sizeof(op));
        op.type = (enum cache_op_type)(1 + r % (CACHE_OP__COUNT - 1));
        if (op.type == CACHE_OP_FLUSH_ALL && rng_next(&s) % 128 != 0) {
            op.type = CACHE_OP_SET;
        }
        snprintf(key, sizeof(key), "key%u", (unsigned)(rng_next(&s) % 300));
        op.key = key;
        op.key_len = strlen(key);
        op.value = values[rng_next(&s) % 6];
        op.value_len = strlen(op.value);
        op.flags = (uint32_t)rng_next(&s) % 4;
        /* mostly no expiry; sometimes negative, short or a delay */
        op.exptime = (int64_t)(rng_next(&s) % 16);
        op.exptime = op.exptime < 10 ? 0 : op.exptime - 11;
        op.cas = rng_next(&s) % 64;
        op.delta = rng_next(&s) % 1000;
        *now += rng_next(&s) % 100;
        if (rng_next(&s) % 50 == 0) {
            *now -= 3000;
        }
        for (j = 0; j < n_sms; j++) {
            struct cache_result res;

            cache_sm_apply(sms[j], *now, &op, &res);
            cache_result_clear(&res);
        }
    }
}

static void test_determinism(void **state)
{
    struct cache_sm *sms[2];
    uint64_t now = T0;

    (void)state;
    sms[0] = sm_make(4000, 0);
    sms[1] = sm_make(4000, 0);
    random_ops(sms, 2, 1, 20000, &now);
    assert_int_equal(cache_sm_digest(sms[0]), cache_sm_digest(sms[1]));
    assert_true(stats_of(sms[0]).evictions > 0);
    /* the digest sees data, flags and exptime */
    assert_int_equal(set(sms[0], now, "dk", "v"), CACHE_STORED);
    assert_int_equal(set(sms[1], now, "dk", "v"), CACHE_STORED);
    assert_int_equal(cache_sm_digest(sms[0]), cache_sm_digest(sms[1]));
    assert_int_equal(store(sms[0], now, CACHE_OP_SET, "dk", "w", 0, 0),
                     CACHE_STORED);
    assert_int_equal(store(sms[1], now, CACHE_OP_SET, "dk", "v", 1, 0),
                     CACHE_STORED);
    assert_int_not_equal(cache_sm_digest(sms[0]), cache_sm_digest(sms[1]));
    cache_sm_free(sms[0]);
    cache_sm_free(sms[1]);
}

static void snapshot_of(const struct cache_sm *sm, void **buf, size_t *len)
{
    assert_int_equal(cache_sm_snapshot(sm, malloc, buf, len), 0);
}

static void test_snapshot_roundtrip(void **state)
{
    struct cache_sm *sms[2];
    struct cache_sm *fresh;
    uint64_t now = T0;
    uint64_t now2;
    void *buf;
    size_t len;

    (void)state;
    sms[0] = sm_make(6000, 0);
    random_ops(sms, 1, 7, 5000, &now);
    /* leave a pending delayed flush in the state */
    assert_int_equal(simple(sms[0], now, CACHE_OP_FLUSH_ALL, NULL, 30),
                     CACHE_OK);
    snapshot_of(sms[0], &buf, &len);

    fresh = sm_make(6000, 0);
    assert_int_equal(set(fresh, T0, "junk", "to be replaced"), CACHE_STORED);
    assert_int_equal(cache_sm_restore(fresh, buf, len), 0);
    assert_int_equal(cache_sm_digest(fresh), cache_sm_digest(sms[0]));
    assert_int_equal(stats_of(fresh).curr_items, stats_of(sms[0]).curr_items);
    assert_int_equal(stats_of(fresh).bytes, stats_of(sms[0]).bytes);
    assert_int_equal(stats_of(fresh).next_cas, stats_of(sms[0]).next_cas);
    want_miss(fresh, T0, "junk");
    free(buf);

    /* the same future on both, evictions and the flush included */
    sms[1] = fresh;
    now2 = now;
    random_ops(sms, 2, 99, 5000, &now2);
    assert_int_equal(cache_sm_digest(sms[0]), cache_sm_digest(sms[1]));
    assert_true(stats_of(sms[0]).evictions > 0);

    /* a snapshot of a restored machine is byte-identical */
    {
        void *a;
        void *b;
        size_t alen;
        size_t blen;

        snapshot_of(sms[0], &a, &alen);
        snapshot_of(sms[1], &b, &blen);
        assert_int_equal(alen, blen);
        assert_memory_equal(a, b, alen);
        free(a);
        free(b);
    }
    cache_sm_free(sms[0]);
    cache_sm_free(sms[1]);
}

static void test_snapshot_empty(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_sm *other = sm_make(0, 0);
    void *buf;
    size_t len;

    (void)state;
    snapshot_of(sm, &buf, &len);
    /* v2 header (53: + the settings), v3's ring length (no ring: 0), v4's
     * moves (length, magic, count 0), v5's request ids (length, window,
     * client limit, count 0), checksum */
    assert_int_equal(len, 93);
    assert_int_equal(set(other, T0, "k", "v"), CACHE_STORED);
    assert_int_equal(cache_sm_restore(other, buf, len), 0);
    assert_int_equal(cache_sm_digest(other), cache_sm_digest(sm));
    assert_int_equal(stats_of(other).curr_items, 0);
    free(buf);
    cache_sm_free(sm);
    cache_sm_free(other);
}

static void *failing_alloc(size_t n)
{
    (void)n;
    return NULL;
}

static void test_restore_corrupt(void **state)
{
    struct cache_sm *src = sm_make(0, 0);
    struct cache_sm *dst = sm_make(0, 0);
    unsigned char *buf;
    unsigned char *copy;
    void *out;
    size_t out_len;
    size_t len;
    size_t i;
    uint64_t d;

    (void)state;
    assert_int_equal(store(src, T0, CACHE_OP_SET, "a", "alpha", 1, 100),
                     CACHE_STORED);
    assert_int_equal(set(src, T0, "b", ""), CACHE_STORED);
    assert_int_equal(set(src, T0, "c", "gamma"), CACHE_STORED);
    assert_int_equal(cache_sm_snapshot(src, failing_alloc, &out, &out_len), -1);
    snapshot_of(src, &out, &out_len);
    buf = out;
    len = out_len;

    assert_int_equal(set(dst, T0, "keep", "me"), CACHE_STORED);
    d = cache_sm_digest(dst);

    /* every truncation */
    for (i = 0; i < len; i++) {
        assert_int_equal(cache_sm_restore(dst, buf, i), -1);
    }
    assert_int_equal(cache_sm_restore(dst, NULL, len), -1);
    /* every single-bit flip */
    copy = malloc(len + 1);
    assert_non_null(copy);
    for (i = 0; i < len * 8; i++) {
        memcpy(copy, buf, len);
        copy[i / 8] ^= (unsigned char)(1u << (i % 8));
        assert_int_equal(cache_sm_restore(dst, copy, len), -1);
    }
    /* a trailing byte */
    memcpy(copy, buf, len);
    copy[len] = 0;
    assert_int_equal(cache_sm_restore(dst, copy, len + 1), -1);
    /* random garbage */
    {
        uint64_t s = 3;
        size_t round;

        for (round = 0; round < 200; round++) {
            for (i = 0; i < len; i++) {
                copy[i] = (unsigned char)rng_next(&s);
            }
            assert_int_equal(cache_sm_restore(dst, copy, len), -1);
        }
    }
    free(copy);
    /* the old state is untouched and still works */
    assert_int_equal(cache_sm_digest(dst), d);
    want_value(dst, T0, "keep", "me", 0);
    assert_int_equal(set(dst, T0, "more", "x"), CACHE_STORED);
    /* the intact buffer still restores */
    assert_int_equal(cache_sm_restore(dst, buf, len), 0);
    assert_int_equal(cache_sm_digest(dst), cache_sm_digest(src));
    free(buf);
    cache_sm_free(src);
    cache_sm_free(dst);
}

#define SNAP_HDR 40 /* magic, version, clock, next_cas, flush, count */

/* Snapshot writer for hand-made buffers, with a valid checksum, to reach
 * the checks behind the checksum. */
struct snap_builder {
    unsigned char buf[1024];
    size_t len;
};

static void sb_u8(struct snap_builder *b, uint8_t v)
{
    b->buf[b->len++] = v;
}

static void sb_u32(struct snap_builder *b, uint32_t v)
{
    int i;

    for (i = 0; i < 4; i++) {
        sb_u8(b, (uint8_t)(v >> (8 * i)));
    }
}

static void sb_u64(struct snap_builder *b, uint64_t v)
{
    sb_u32(b, (uint32_t)v);
    sb_u32(b, (uint32_t)(v >> 32));
}

static void sb_header(struct snap_builder *b,
                      uint32_t magic,
                      uint32_t version,
                      uint64_t next_cas,
                      uint64_t count)
{
    b->len = 0;
    sb_u32(b, magic);
    sb_u32(b, version);
    sb_u64(b, T0);
    sb_u64(b, next_cas);
    sb_u64(b, 0);
    sb_u64(b, count);
}

static void sb_item(struct snap_builder *b,
                    const char *key,
                    uint32_t vlen,
                    uint64_t cas)
{
    uint32_t i;

    sb_u8(b, (uint8_t)strlen(key));
    sb_u32(b, 0);
    sb_u32(b, vlen);
    sb_u64(b, 0);
    sb_u64(b, cas);
    memcpy(b->buf + b->len, key, strlen(key));
    b->len += strlen(key);
    for (i = 0; i < vlen; i++) {
        sb_u8(b, 'v');
    }
}

static int sb_restore(struct cache_sm *sm, struct snap_builder *b)
{
    /* The checksum seed is private to cache_sm.c; check the copy here
     * against a real snapshot's trailer once. */
    static uint64_t seed;
    static int have_seed;

    if (!have_seed) {
        struct cache_sm *tmp = sm_make(0, 0);
        unsigned char *real;
        void *out;
        size_t len;
        uint64_t want = 0;
        int i;

        snapshot_of(tmp, &out, &len);
        real = out;
        for (i = 0; i < 8; i++) {
            want |= (uint64_t)real[len - 8 + (size_t)i] << (8 * i);
        }
        seed = 0x736e617073686f74ULL;
        assert_int_equal(cache__hash(real, len - 8, seed), want);
        have_seed = 1;
        free(out);
        cache_sm_free(tmp);
    }
    sb_u64(b, cache__hash(b->buf, b->len, seed));
    return cache_sm_restore(sm, b->buf, b->len);
}

static void test_restore_crafted(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct snap_builder b;
    uint64_t d;

    (void)state;
    assert_int_equal(set(sm, T0, "keep", "me"), CACHE_STORED);
    d = cache_sm_digest(sm);

    /* well-formed: accepted */
    sb_header(&b, 0x43514d52U, 1, 10, 2);
    sb_item(&b, "x", 3, 1);
    sb_item(&b, "y", 0, 2);
    assert_int_equal(sb_restore(sm, &b), 0);
    want_value(sm, T0, "x", "vvv", 0);
    want_value(sm, T0, "y", "", 0);
    assert_int_equal(set(sm, T0, "keep", "me"), CACHE_STORED);
    assert_int_equal(cas_of(sm, T0, "keep"), 10);
    d = cache_sm_digest(sm);

    sb_header(&b, 0x43514d53U, 1, 10, 0); /* bad magic */
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 3, 10, 0); /* unknown version */
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 0, 0); /* next_cas 0 */
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, UINT64_MAX); /* huge count */
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 2); /* count larger than the items */
    sb_item(&b, "x", 3, 1);
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 1); /* bytes after the items */
    sb_item(&b, "x", 3, 1);
    sb_u8(&b, 0);
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 2); /* duplicate key */
    sb_item(&b, "x", 3, 1);
    sb_item(&b, "x", 3, 2);
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 1); /* invalid key */
    sb_item(&b, "a b", 3, 1);
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 1); /* empty key */
    sb_item(&b, "", 3, 1);
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 1); /* cas not below next_cas */
    sb_item(&b, "x", 3, 10);
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 1); /* cas 0 */
    sb_item(&b, "x", 3, 0);
    assert_int_equal(sb_restore(sm, &b), -1);
    sb_header(&b, 0x43514d52U, 1, 10, 1); /* value_len past the end */
    sb_item(&b, "x", 3, 1);
    b.buf[SNAP_HDR + 5] = 0xff; /* value_len low byte: 3 -> 255 */
    assert_int_equal(sb_restore(sm, &b), -1);

    assert_int_equal(cache_sm_digest(sm), d);
    want_value(sm, T0, "keep", "me", 0);
    cache_sm_free(sm);
}

/* -------------------------------------------------------------- scale */

static void test_many_keys(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_sm *copy = sm_make(0, 0);
    char key[32];
    char val[32];
    void *buf;
    size_t len;
    int i;

    (void)state;
    /* enough keys to go through several incremental resizes */
    for (i = 0; i < 50000; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(val, sizeof(val), "%d", i * 3);
        assert_int_equal(set(sm, T0 + (uint64_t)i, key, val), CACHE_STORED);
    }
    for (i = 0; i < 50000; i += 2) {
        snprintf(key, sizeof(key), "key:%d", i);
        assert_int_equal(simple(sm, T0 + 50000, CACHE_OP_DELETE, key, 0),
                         CACHE_DELETED);
    }
    for (i = 0; i < 50000; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(val, sizeof(val), "%d", i * 3);
        if (i % 2 == 0) {
            want_miss(sm, T0 + 50000, key);
        } else {
            want_value(sm, T0 + 50000, key, val, 0);
        }
    }
    assert_int_equal(stats_of(sm).curr_items, 25000);
    snapshot_of(sm, &buf, &len);
    assert_int_equal(cache_sm_restore(copy, buf, len), 0);
    free(buf);
    assert_int_equal(cache_sm_digest(copy), cache_sm_digest(sm));
    want_value(copy, T0 + 50000, "key:49999", "149997", 0);
    cache_sm_free(sm);
    cache_sm_free(copy);
}

/* ------------------------------------------------------------ settings */

static enum cache_status config(struct cache_sm *sm, uint64_t now,
                                uint64_t mem_limit, uint32_t item_size_max,
                                bool seed)
{
    struct cache_op op;
    struct cache_result res;

    memset(&op, 0, sizeof(op));
    op.type = CACHE_OP_CONFIG;
    op.config.mem_limit = mem_limit;
    op.config.item_size_max = item_size_max;
    op.config.seed = seed;
    cache_sm_apply(sm, now, &op, &res);
    return res.status; /* a config result holds nothing to clear */
}

/* A setting is applied by the log: a smaller limit evicts down to it at
 * once (oldest first), a smaller item size refuses larger items, 0 keeps a
 * field, and nothing else is touched. */
static void test_config_applies(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    char key[3] = "k0";
    int i;

    (void)state;
    assert_false(stats_of(sm).configured);
    for (i = 0; i < 8; i++) {
        key[1] = (char)('0' + i);
        assert_int_equal(set(sm, T0, key, val50), CACHE_STORED);
    }
    assert_int_equal(stats_of(sm).bytes, 800);
    assert_int_equal(config(sm, T0, 500, 0, false), CACHE_OK);
    assert_true(stats_of(sm).configured);
    assert_int_equal(stats_of(sm).limit_maxbytes, 500);
    assert_int_equal(stats_of(sm).item_size_max, CACHE_ITEM_SIZE_MAX_DEFAULT);
    assert_int_equal(stats_of(sm).bytes, 500);
    assert_int_equal(stats_of(sm).evictions, 3);
    want_miss(sm, T0, "k2");
    want_value(sm, T0, "k3", val50, 0);
    assert_int_equal(config(sm, T0, 0, 40, false), CACHE_OK);
    assert_int_equal(stats_of(sm).limit_maxbytes, 500);
    assert_int_equal(stats_of(sm).item_size_max, 40);
    assert_int_equal(set(sm, T0, "big", val50), CACHE_TOO_LARGE);
    /* nothing to set is a bad request, and changes nothing */
    assert_int_equal(config(sm, T0, 0, 0, false), CACHE_BAD_REQUEST);
    assert_int_equal(stats_of(sm).limit_maxbytes, 500);
    cache_sm_free(sm);
}

/* A seed applies only to a shard never configured: two leaders' seeds, or
 * a seed after `shard set`, change nothing. */
static void test_config_seed_once(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);

    (void)state;
    assert_int_equal(config(sm, T0, 4000, 2000, true), CACHE_OK);
    assert_int_equal(stats_of(sm).limit_maxbytes, 4000);
    assert_int_equal(stats_of(sm).item_size_max, 2000);
    assert_int_equal(config(sm, T0, 9000, 3000, true), CACHE_OK);
    assert_int_equal(stats_of(sm).limit_maxbytes, 4000);
    assert_int_equal(config(sm, T0, 6000, 0, false), CACHE_OK);
    assert_int_equal(config(sm, T0, 9000, 3000, true), CACHE_OK);
    assert_int_equal(stats_of(sm).limit_maxbytes, 6000);
    assert_int_equal(stats_of(sm).item_size_max, 2000);
    cache_sm_free(sm);
}

/* Settings are state: in the digest and in snapshots. A replica that
 * started with other settings (a node's old -m) and restores a snapshot
 * ends identical; a version 1 snapshot keeps the replica's own, not
 * configured. */
static void test_config_in_snapshot_and_digest(void **state)
{
    struct cache_sm *a = sm_make(0, 0);
    struct cache_sm *b = sm_make(0, 0);
    struct cache_sm *other = sm_make(2048, 100);
    void *buf;
    size_t len;

    (void)state;
    assert_int_equal(cache_sm_digest(a), cache_sm_digest(b));
    assert_int_equal(config(a, T0, 0, 5000, false), CACHE_OK);
    assert_true(cache_sm_digest(a) != cache_sm_digest(b));
    assert_int_equal(config(b, T0, 0, 5000, true), CACHE_OK);
    assert_int_equal(cache_sm_digest(a), cache_sm_digest(b));
    assert_int_equal(set(a, T0, "k", "v"), CACHE_STORED);
    snapshot_of(a, &buf, &len);
    assert_int_equal(cache_sm_restore(other, buf, len), 0);
    assert_int_equal(cache_sm_digest(other), cache_sm_digest(a));
    assert_int_equal(stats_of(other).limit_maxbytes,
                     stats_of(a).limit_maxbytes);
    assert_int_equal(stats_of(other).item_size_max, 5000);
    assert_true(stats_of(other).configured);
    {
        /* version 1 (no settings): the replica keeps its own, and is not
         * configured, so the next leader's seed applies */
        struct snap_builder sb;

        sb_header(&sb, 0x43514d52U, 1, 10, 0);
        assert_int_equal(sb_restore(other, &sb), 0);
        assert_false(stats_of(other).configured);
        assert_int_equal(stats_of(other).item_size_max, 5000);
    }
    free(buf);
    cache_sm_free(a);
    cache_sm_free(b);
    cache_sm_free(other);
}

/* ---- ownership (sm/shard_ring) ------------------------------------------ */

/* A map of shards "a" (weight 1) and "b" (weight @wb) at @epoch. */
static void ab_map(struct cluster_map *map, uint64_t epoch, unsigned wb)
{
    unsigned i;

    cluster_map_init(map);
    map->epoch = epoch;
    for (i = 0; i < 2; i++) {
        struct cluster_shard *s = cluster_map_append(map);
        s->name[0] = (char)('a' + i);
        s->weight = i == 0 ? 1 : wb;
    }
}

static enum cache_status ring_op_map(struct cache_sm *sm,
                                     const struct cluster_map *map,
                                     const char *self)
{
    struct cache_op op;
    struct cache_result res;
    void *spec;
    size_t len;

    spec = shard_ring_encode_map(map, self, &len);
    memset(&op, 0, sizeof(op));
    op.type = CACHE_OP_RING;
    op.value = spec;
    op.value_len = len;
    cache_sm_apply(sm, T0, &op, &res);
    free(spec);
    return res.status;
}

static enum cache_status ring_op(struct cache_sm *sm, uint64_t epoch,
                                 unsigned wb, const char *self, bool seed)
{
    struct cluster_map map;
    struct cache_op op;
    struct cache_result res;
    void *spec;
    size_t len;

    ab_map(&map, epoch, wb);
    spec = shard_ring_encode_map(&map, self, &len);
    memset(&op, 0, sizeof(op));
    op.type = CACHE_OP_RING;
    op.value = spec;
    op.value_len = len;
    op.config.seed = seed;
    cache_sm_apply(sm, T0, &op, &res);
    free(spec);
    cluster_map_clear(&map);
    return res.status;
}

/* A key of shard "b" and one of "a" under weights 1:wb. */
static void keys_of(unsigned wb, char *ka, char *kb)
{
    struct cluster_map map;
    struct shard_ring r;
    void *spec;
    size_t len;
    int i;

    ab_map(&map, 1, wb);
    spec = shard_ring_encode_map(&map, "a", &len);
    shard_ring_init(&r);
    assert_int_equal(shard_ring_decode(spec, len, &r), 0);
    ka[0] = kb[0] = '\0';
    for (i = 0; i < 1000 && (ka[0] == '\0' || kb[0] == '\0'); i++) {
        char k[16];
        snprintf(k, sizeof(k), "key%d", i);
        if (shard_ring_owns(&r, ring_hash(k, strlen(k)), NULL)) {
            strcpy(ka, k);
        } else {
            strcpy(kb, k);
        }
    }
    assert_true(ka[0] != '\0' && kb[0] != '\0');
    shard_ring_clear(&r);
    free(spec);
    cluster_map_clear(&map);
}

/* A shard refuses keys it does not own, naming the owner, and changes
 * nothing; its own keys are served; reads refuse too. */
static void test_ring_refuses_other_keys(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_result res;
    char ka[16], kb[16];
    uint64_t d;

    (void)state;
    keys_of(1, ka, kb);
    assert_int_equal(set(sm, T0, kb, "x"), CACHE_STORED); /* no ring */
    assert_int_equal(ring_op(sm, 3, 1, "a", false), CACHE_OK);
    assert_int_equal(cache_sm_ring_epoch(sm), 3);
    d = cache_sm_digest(sm);
    assert_int_equal(op_full(sm, T0, CACHE_OP_SET, kb, "y", 0, 0, 0, 0, &res),
                     CACHE_WRONG_OWNER);
    assert_int_equal(res.value_len, 1);
    assert_memory_equal(res.value, "b", 1);
    cache_result_clear(&res);
    assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, kb, 0), CACHE_WRONG_OWNER);
    assert_int_equal(cache_sm_digest(sm), d);
    cache_sm_get(sm, T0, kb, strlen(kb), &res);
    assert_int_equal(res.status, CACHE_WRONG_OWNER);
    cache_result_clear(&res);
    assert_int_equal(set(sm, T0, ka, "x"), CACHE_STORED);
    want_value(sm, T0, ka, "x", 0);
    cache_sm_free(sm);
}

/* Specs move forward only: a seed never replaces one, an older or equal
 * epoch is ignored, a newer one applies; malformed bytes are refused. */
static void test_ring_epochs(void **state)
{
    struct cache_sm *sm = sm_make(0, 0);
    struct cache_op op;
    struct cache_result res;
    char ka[16], kb[16];
    char kb3[16], ka3[16];

    (void)state;
    keys_of(1, ka, kb);
    assert_int_equal(ring_op(sm, 5, 1, "a", true), CACHE_OK); /* seed */
    assert_int_equal(cache_sm_ring_epoch(sm), 5);
    assert_int_equal(ring_op(sm, 9, 1, "b", true), CACHE_OK); /* seed again */
    assert_int_equal(cache_sm_ring_epoch(sm), 5);
    assert_int_equal(ring_op(sm, 4, 1, "b", false), CACHE_OK); /* older */
    assert_int_equal(cache_sm_ring_epoch(sm), 5);
    assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, kb, 0), CACHE_WRONG_OWNER);
    /* newer: shard "a" now owns nothing it did not before under 1:3 */
    keys_of(3, ka3, kb3);
    assert_int_equal(ring_op(sm, 6, 3, "b", false), CACHE_OK);
    assert_int_equal(cache_sm_ring_epoch(sm), 6);
    assert_int_equal(set(sm, T0, kb3, "x"), CACHE_STORED);
    assert_int_equal(set(sm, T0, ka3, "x"), CACHE_WRONG_OWNER);

    memset(&op, 0, sizeof(op));
    op.type = CACHE_OP_RING;
    op.value = "garbage";
    op.value_len = 7;
    cache_sm_apply(sm, T0, &op, &res);
    assert_int_equal(res.status, CACHE_BAD_REQUEST);
    assert_int_equal(cache_sm_ring_epoch(sm), 6);
    cache_sm_free(sm);
}

/* The spec is in snapshots and in the digest. */
static void test_ring_in_snapshot_and_digest(void **state)
{
    struct cache_sm *a = sm_make(0, 0);
    struct cache_sm *b = sm_make(0, 0);
    char ka[16], kb[16];
    void *buf;
    size_t len;

    (void)state;
    keys_of(1, ka, kb);
    assert_int_equal(cache_sm_digest(a), cache_sm_digest(b));
    assert_int_equal(ring_op(a, 3, 1, "a", false), CACHE_OK);
    assert_true(cache_sm_digest(a) != cache_sm_digest(b));
    snapshot_of(a, &buf, &len);
    assert_int_equal(cache_sm_restore(b, buf, len), 0);
    free(buf);
    assert_int_equal(cache_sm_digest(a), cache_sm_digest(b));
    assert_int_equal(cache_sm_ring_epoch(b), 3);
    assert_int_equal(set(b, T0, kb, "x"), CACHE_WRONG_OWNER);
    cache_sm_free(a);
    cache_sm_free(b);
}

/* ---- moves between two shards (sm/cache_move.h) ------------------------- */

/* Apply a move command built from @c at @sm; returns the status and fills
 * @r (cleared by the caller) when non-NULL. The reply's keys point into
 * the result's bytes, kept until the next command is encoded. */
static enum cache_status move_cmd(struct cache_sm *sm, uint64_t now,
                                  const struct cache_move_cmd *c,
                                  struct cache_move_reply *r)
{
    static struct cache_result held;
    struct cache_op op;
    struct cache_result res;
    enum cache_status st;
    void *buf;
    size_t len;

    buf = cache_move_cmd_encode(c, &len);
    cache_result_clear(&held); /* @c may point into it until encoded */
    memset(&op, 0, sizeof(op));
    op.type = CACHE_OP_MOVE;
    op.value = buf;
    op.value_len = len;
    cache_sm_apply(sm, now, &op, &res);
    free(buf);
    st = res.status;
    if (r != NULL) {
        assert_int_equal(cache_move_reply_decode(res.value, res.value_len, r),
                         0);
    }
    held = res;
    return st;
}

static void simple_move(struct cache_sm *sm, uint64_t now,
                        enum cache_move_kind kind, uint64_t id,
                        enum cache_status want)
{
    struct cache_move_cmd c = {.kind = kind, .move_id = id};

    assert_int_equal(move_cmd(sm, now, &c, NULL), want);
}

struct keylist {
    char **keys;
    size_t *lens;
    size_t n;
};

static void keylist_add(void *data, const char *key, size_t len)
{
    struct keylist *l = data;

    l->keys = realloc(l->keys, (l->n + 1) * sizeof(*l->keys));
    l->lens = realloc(l->lens, (l->n + 1) * sizeof(*l->lens));
    l->keys[l->n] = strndup(key, len);
    l->lens[l->n] = len;
    l->n++;
}

static void keylist_free(struct keylist *l)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        free(l->keys[i]);
    }
    free(l->keys);
    free(l->lens);
    memset(l, 0, sizeof(*l));
}

/* What a coordinator does with keys: S's current items (or tombstones)
 * imported at T. */
static void copy_keys(struct cache_sm *s, struct cache_sm *t, uint64_t now,
                      uint64_t id, char **keys, const size_t *lens, size_t n)
{
    struct cache_move_cmd c = {.kind = CACHE_MOVE_IMPORT, .move_id = id};
    struct cache_move_reply r;
    size_t i;

    if (n == 0) {
        return;
    }
    c.items = calloc(n, sizeof(*c.items));
    for (i = 0; i < n; i++) {
        cache_sm_export_item(s, keys[i], lens[i], &c.items[i]);
    }
    c.n_items = n;
    assert_int_equal(move_cmd(t, now, &c, &r), CACHE_OK);
    cache_move_reply_clear(&r);
    free(c.items);
}

static uint64_t cut_seq = 1;

/* CUT at S and import the items it answers; the count taken. */
static size_t cut_and_copy(struct cache_sm *s, struct cache_sm *t,
                           uint64_t now, uint64_t id)
{
    struct cache_move_cmd c = {.kind = CACHE_MOVE_CUT, .move_id = id,
                               .seq = cut_seq++};
    struct cache_move_cmd imp = {.kind = CACHE_MOVE_IMPORT, .move_id = id};
    struct cache_move_reply r;
    size_t n;

    assert_int_equal(move_cmd(s, now, &c, &r), CACHE_OK);
    n = r.n_items;
    if (n > 0) {
        imp.items = r.items;
        imp.n_items = r.n_items;
        assert_int_equal(move_cmd(t, now, &imp, NULL), CACHE_OK);
    }
    cache_move_reply_clear(&r);
    return n;
}

/* Shards "a" (source) and "b" (target) with a ring where "a" owns
 * everything; the move hands "b" the arcs of its share under 1:1. */
static void move_setup(struct cache_sm *s, struct cache_sm *t,
                       struct arc **arcs, size_t *n_arcs)
{
    struct cluster_map one, two;
    struct shard_ring r1, r2;
    struct arc_move *moves;
    void *buf;
    size_t len, n, i;

    ab_map(&one, 1, 1);
    one.n_shards = 1; /* only "a" */
    ab_map(&two, 2, 1);
    buf = shard_ring_encode_map(&one, "a", &len);
    shard_ring_init(&r1);
    assert_int_equal(shard_ring_decode(buf, len, &r1), 0);
    free(buf);
    buf = shard_ring_encode_map(&two, "a", &len);
    shard_ring_init(&r2);
    assert_int_equal(shard_ring_decode(buf, len, &r2), 0);
    free(buf);
    n = shard_ring_diff(&r1, &r2, &moves);
    assert_true(n > 0);
    *arcs = calloc(n, sizeof(**arcs));
    for (i = 0; i < n; i++) {
        assert_string_equal(moves[i].from, "a");
        assert_string_equal(moves[i].to, "b");
        (*arcs)[i] = moves[i].arc;
    }
    *n_arcs = n;
    free(moves);
    /* both start from the one-shard ring: "b" owns nothing by it */
    assert_int_equal(ring_op_map(s, &one, "a"), CACHE_OK);
    assert_int_equal(ring_op_map(t, &one, "b"), CACHE_OK);
    shard_ring_clear(&r1);
    shard_ring_clear(&r2);
    cluster_map_clear(&one);
    cluster_map_clear(&two);
}

/* The first key "k<i>", i >= @from, whose hash lies in @arcs. */
static size_t key_in_arcs(const struct arc *arcs, size_t n, size_t from,
                          char *key, size_t len)
{
    size_t i;

    for (i = from; i < 100000; i++) {
        snprintf(key, len, "k%zu", i);
        if (arcs_contain(arcs, n, ring_hash(key, strlen(key)))) {
            return i;
        }
    }
    fail_msg("no key in the arcs");
    return 0;
}

/* BEGIN of move @id at both ends, "a" (@s) to "b" (@t); @t NULL: the
 * source's only. */
static void begin_move(struct cache_sm *s, struct cache_sm *t, uint64_t now,
                       uint64_t id, struct arc *arcs, size_t n_arcs)
{
    struct cache_move_cmd c = {.kind = CACHE_MOVE_IN_BEGIN, .move_id = id,
                               .arcs = arcs, .n_arcs = n_arcs};

    if (t != NULL) {
        snprintf(c.peer, sizeof(c.peer), "a");
        assert_int_equal(move_cmd(t, now, &c, NULL), CACHE_OK);
    }
    snprintf(c.peer, sizeof(c.peer), "b");
    c.kind = CACHE_MOVE_OUT_BEGIN;
    assert_int_equal(move_cmd(s, now, &c, NULL), CACHE_OK);
}

/* A whole move under writes at every step: T ends with exactly what S had
 * in the arcs (values, flags, expiry, cas), deletes included; S refuses
 * moved keys naming T, purges them; T refuses until activated, then
 * serves; cas numbers at T stay above the imported ones. */
static void test_move_under_writes(void **state)
{
    struct cache_sm *s = sm_make(0, 0);
    struct cache_sm *t = sm_make(0, 0);
    struct cache_move_cmd c;
    struct cache_move_reply r;
    struct keylist l = {0};
    struct cache_result res;
    struct arc *arcs;
    size_t n_arcs, i, round;
    uint64_t now = T0, id = 77, digest, count, sd, sc;
    uint64_t rng = 12345;
    char key[32], val[32], moved[32];

    (void)state;
    move_setup(s, t, &arcs, &n_arcs);
    for (i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "k%zu", i);
        snprintf(val, sizeof(val), "v%zu", i);
        assert_int_equal(store(s, now, CACHE_OP_SET, key, val, (uint32_t)i,
                               i % 7 == 0 ? 3600 : 0),
                         CACHE_STORED);
    }
    begin_move(s, t, now, id, arcs, n_arcs);
    begin_move(s, t, now, id, arcs, n_arcs); /* again: done */
    assert_int_equal(cache_sm_move_state(s, id), CACHE_MOVE_TRACKING);

    /* copy, with writes and deletes in between */
    assert_int_equal(cache_sm_move_keys(s, id, keylist_add, &l), 0);
    assert_true(l.n > 700 && l.n < 1300); /* about half */
    for (i = 0; i < l.n; i += 100) {
        size_t k;
        copy_keys(s, t, now, id, l.keys + i, l.lens + i,
                  l.n - i < 100 ? l.n - i : 100);
        for (k = 0; k < 20; k++) {
            size_t x = (size_t)(rng_next(&rng) % 2000);
            snprintf(key, sizeof(key), "k%zu", x);
            if (k % 3 == 0) {
                simple(s, now, CACHE_OP_DELETE, key, 0);
            } else {
                set(s, now, key, "changed");
            }
        }
    }
    keylist_free(&l);
    /* a key of the arcs is refused at T until it is activated */
    key_in_arcs(arcs, n_arcs, 0, key, sizeof(key));
    cache_sm_get(t, now, key, strlen(key), &res);
    assert_int_equal(res.status, CACHE_MOVING);
    cache_result_clear(&res);
    /* catch up while it shrinks, then fence: writes refused, reads not */
    for (round = 0; round < 3; round++) {
        cut_and_copy(s, t, now, id);
        set(s, now, key, "late");
    }
    simple_move(s, now, CACHE_MOVE_FENCE, id, CACHE_OK);
    assert_int_equal(set(s, now, key, "fenced"), CACHE_MOVING);
    want_value(s, now, key, "late", 0);
    /* a hand-off before the last cut is refused: the dirty set is not
     * empty, or the digests differ */
    assert_int_equal(cache_sm_move_digest(t, id, &digest, &count), 0);
    c = (struct cache_move_cmd){.kind = CACHE_MOVE_HANDOFF, .move_id = id,
                                .digest = digest};
    assert_int_equal(move_cmd(s, now, &c, &r), CACHE_NOT_STORED);
    cache_move_reply_clear(&r);
    while (cut_and_copy(s, t, now, id) > 0) {
    }
    assert_int_equal(cache_sm_move_digest(t, id, &digest, &count), 0);
    assert_int_equal(cache_sm_move_digest(s, id, &sd, &sc), 0);
    assert_int_equal(digest, sd);
    assert_int_equal(count, sc);
    c.digest = digest + 1;
    assert_int_equal(move_cmd(s, now, &c, &r), CACHE_NOT_STORED);
    assert_int_equal(r.digest, sd);
    cache_move_reply_clear(&r);
    c.digest = digest;
    assert_int_equal(move_cmd(s, now, &c, &r), CACHE_OK);
    assert_int_equal(r.state, CACHE_MOVE_HANDED_OFF);
    cache_move_reply_clear(&r);
    /* S no longer serves the arcs: it names T; T not yet */
    assert_int_equal(op_full(s, now, CACHE_OP_SET, key, "x", 0, 0, 0, 0, &res),
                     CACHE_WRONG_OWNER);
    assert_memory_equal(res.value, "b", 1);
    cache_result_clear(&res);
    assert_int_equal(set(t, now, key, "x"), CACHE_MOVING);
    /* an abort after the hand-off is refused */
    simple_move(s, now, CACHE_MOVE_ABORT, id, CACHE_NOT_STORED);
    simple_move(t, now, CACHE_MOVE_ACTIVATE, id, CACHE_OK);
    simple_move(t, now, CACHE_MOVE_ACTIVATE, id, CACHE_OK);
    want_value(t, now, key, "late", 0);
    snprintf(moved, sizeof(moved), "%s", key);
    /* every key of the arcs: at T as at S, nothing lost or resurrected */
    for (i = 0; i < 2000; i++) {
        struct cache_result b;
        snprintf(key, sizeof(key), "k%zu", i);
        if (!arcs_contain(arcs, n_arcs, ring_hash(key, strlen(key)))) {
            continue;
        }
        {
            struct cache_move_item si;
            bool present = cache_sm_export_item(s, key, strlen(key), &si);
            cache_sm_get(t, now, key, strlen(key), &b);
            assert_int_equal(b.status, present ? CACHE_HIT : CACHE_NOT_FOUND);
            if (present) {
                assert_int_equal(b.value_len, si.value_len);
                assert_memory_equal(b.value, si.value, si.value_len);
                assert_int_equal(b.flags, si.flags);
                assert_int_equal(b.cas, si.cas);
            }
            cache_result_clear(&b);
        }
    }
    /* T's next cas is past every imported one */
    assert_int_equal(set(t, now, moved, "new"), CACHE_STORED);
    assert_true(cas_of(t, now, moved) > stats_of(s).next_cas - 1);
    simple_move(s, now, CACHE_MOVE_PURGE, id, CACHE_OK);
    simple_move(s, now, CACHE_MOVE_PURGE, id, CACHE_OK);
    assert_int_equal(cache_sm_move_digest(s, id, &sd, &sc), 0);
    assert_int_equal(sc, 0);
    free(arcs);
    cache_sm_free(s);
    cache_sm_free(t);
}

/* A CUT whose answer was lost is sent again with its number: it answers
 * the same keys, as they are now, and takes nothing new; an older number
 * is refused; the next number takes the next keys. */
static void test_move_cut_repeated(void **state)
{
    struct cache_sm *s = sm_make(0, 0);
    struct cache_sm *t = sm_make(0, 0);
    struct cache_move_cmd c;
    struct cache_move_reply r;
    struct arc *arcs;
    size_t n_arcs, i, first;
    uint64_t id = 11;
    char in_arc[2][32];

    (void)state;
    move_setup(s, t, &arcs, &n_arcs);
    begin_move(s, NULL, T0, id, arcs, n_arcs);
    i = key_in_arcs(arcs, n_arcs, 0, in_arc[0], sizeof(in_arc[0]));
    key_in_arcs(arcs, n_arcs, i + 1, in_arc[1], sizeof(in_arc[1]));
    assert_int_equal(set(s, T0, in_arc[0], "one"), CACHE_STORED);
    c = (struct cache_move_cmd){.kind = CACHE_MOVE_CUT, .move_id = id,
                                .seq = 100};
    assert_int_equal(move_cmd(s, T0, &c, &r), CACHE_OK);
    assert_int_equal(r.n_items, 1);
    assert_memory_equal(r.items[0].value, "one", 3);
    cache_move_reply_clear(&r);
    /* the answer was lost; meanwhile the key changed and another joined */
    assert_int_equal(set(s, T0, in_arc[0], "two"), CACHE_STORED);
    assert_int_equal(set(s, T0, in_arc[1], "x"), CACHE_STORED);
    assert_int_equal(move_cmd(s, T0, &c, &r), CACHE_OK);
    first = r.n_items;
    assert_int_equal(first, 1); /* the same key, nothing new taken */
    assert_memory_equal(r.items[0].key, in_arc[0], strlen(in_arc[0]));
    assert_memory_equal(r.items[0].value, "two", 3);
    assert_int_equal(r.count, 2); /* both are dirty again */
    cache_move_reply_clear(&r);
    c.seq = 99;
    assert_int_equal(move_cmd(s, T0, &c, NULL), CACHE_NOT_STORED);
    c.seq = 101;
    assert_int_equal(move_cmd(s, T0, &c, &r), CACHE_OK);
    assert_int_equal(r.n_items, 2);
    assert_int_equal(r.count, 0);
    cache_move_reply_clear(&r);
    free(arcs);
    cache_sm_free(s);
    cache_sm_free(t);
}

/* A flush at S breaks the move (the hand-off is refused); aborting at both
 * ends lets S serve as before and leaves T with nothing of the arcs. Moves
 * are in snapshots and digests. */
static void test_move_broken_abort_and_snapshot(void **state)
{
    struct cache_sm *s = sm_make(0, 0);
    struct cache_sm *t = sm_make(0, 0);
    struct cache_sm *copy = sm_make(0, 0);
    struct cache_move_cmd c;
    struct keylist l = {0};
    struct arc *arcs;
    size_t n_arcs, i;
    uint64_t now = T0, id = 5, digest, count;
    void *buf;
    size_t len;
    char key[32];

    (void)state;
    move_setup(s, t, &arcs, &n_arcs);
    for (i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "k%zu", i);
        set(s, now, key, "v");
    }
    begin_move(s, t, now, id, arcs, n_arcs);
    assert_int_equal(cache_sm_move_keys(s, id, keylist_add, &l), 0);
    copy_keys(s, t, now, id, l.keys, l.lens, l.n);
    keylist_free(&l);
    set(s, now, "k1", "dirty");
    /* the dirty set and the move survive a snapshot, and count in the
     * digest */
    snapshot_of(s, &buf, &len);
    assert_int_equal(cache_sm_restore(copy, buf, len), 0);
    free(buf);
    assert_int_equal(cache_sm_digest(copy), cache_sm_digest(s));
    assert_int_equal(cache_sm_move_state(copy, id), CACHE_MOVE_TRACKING);
    /* flush_all at S: broken */
    assert_int_equal(simple(s, now, CACHE_OP_FLUSH_ALL, NULL, 0), CACHE_OK);
    assert_int_equal(cache_sm_move_state(s, id), CACHE_MOVE_BROKEN);
    simple_move(s, now, CACHE_MOVE_FENCE, id, CACHE_NOT_STORED);
    assert_int_equal(cache_sm_move_digest(t, id, &digest, &count), 0);
    assert_true(count > 0);
    c = (struct cache_move_cmd){.kind = CACHE_MOVE_HANDOFF, .move_id = id,
                                .digest = digest};
    assert_int_equal(move_cmd(s, now, &c, NULL), CACHE_NOT_STORED);
    simple_move(s, now, CACHE_MOVE_ABORT, id, CACHE_OK);
    simple_move(t, now, CACHE_MOVE_ABORT, id, CACHE_OK);
    simple_move(t, now, CACHE_MOVE_ABORT, id, CACHE_OK); /* again: done */
    assert_int_equal(cache_sm_move_state(s, id), CACHE_MOVE_NONE);
    assert_int_equal(stats_of(t).curr_items, 0);
    assert_int_equal(set(s, now, "k1", "after"), CACHE_STORED);
    free(arcs);
    cache_sm_free(s);
    cache_sm_free(t);
    cache_sm_free(copy);
}

/* A fence lifts itself after CACHE_MOVES_FENCE_MAX_MS of the log's clock
 * (a coordinator that died after fencing): the move is aborted at the
 * source, writes apply again, and a late hand-off is refused. */
static void test_move_fence_expires(void **state)
{
    struct cache_sm *s = sm_make(0, 0);
    struct cache_sm *t = sm_make(0, 0);
    struct cache_move_cmd c;
    struct arc *arcs;
    size_t n_arcs;
    uint64_t id = 9;
    const char *owner;
    bool tracked;
    char key[32];

    (void)state;
    move_setup(s, t, &arcs, &n_arcs);
    key_in_arcs(arcs, n_arcs, 0, key, sizeof(key));
    begin_move(s, NULL, T0, id, arcs, n_arcs);
    simple_move(s, T0, CACHE_MOVE_FENCE, id, CACHE_OK);
    assert_int_equal(set(s, T0 + 1000, key, "x"), CACHE_MOVING);
    /* the leader's admission agrees, at its own clock */
    assert_int_equal(cache_sm_admit(s, T0 + 1000, key, strlen(key), true,
                                    &owner, &tracked),
                     CACHE_MOVING);
    assert_int_equal(cache_sm_admit(s, T0 + CACHE_MOVES_FENCE_MAX_MS, key,
                                    strlen(key), true, &owner, &tracked),
                     CACHE_OK);
    assert_int_equal(set(s, T0 + CACHE_MOVES_FENCE_MAX_MS, key, "x"),
                     CACHE_STORED);
    assert_int_equal(cache_sm_move_state(s, id), CACHE_MOVE_NONE);
    c = (struct cache_move_cmd){.kind = CACHE_MOVE_HANDOFF, .move_id = id};
    assert_int_equal(move_cmd(s, T0 + 3000, &c, NULL), CACHE_NOT_STORED);
    free(arcs);
    cache_sm_free(s);
    cache_sm_free(t);
}

/* A store whose item cannot be allocated must not answer NO_MEMORY and
 * leave this replica behind the others (they applied it): apply aborts,
 * so the replica restarts from its log. Run in a child whose address
 * space is capped just above what it uses. */
static void test_apply_aborts_when_malloc_fails(void **state)
{
    const size_t len = 64u << 20;
    pid_t pid;
    int st;

    (void)state;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0}, as;
        struct cache_sm *sm = sm_make(1ULL << 30, 128u << 20);
        struct cache_op op;
        struct cache_result res;
        char *value = malloc(len);
        unsigned long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");

        /* cmocka's handlers would go on running the suite in the child */
        signal(SIGABRT, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        if (value == NULL || f == NULL || fscanf(f, "%lu", &pages) != 1) {
            _exit(2);
        }
        fclose(f);
        memset(value, 'v', len);
        setrlimit(RLIMIT_CORE, &no_core);
        as.rlim_cur = as.rlim_max =
            (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (8u << 20);
        setrlimit(RLIMIT_AS, &as);
        memset(&op, 0, sizeof(op));
        op.type = CACHE_OP_SET;
        op.key = "big";
        op.key_len = 3;
        op.value = value;
        op.value_len = (uint32_t)len;
        cache_sm_apply(sm, T0, &op, &res);
        _exit(42); /* apply returned: the bug */
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_false(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    assert_false(WIFEXITED(st) && WEXITSTATUS(st) == 42);
    assert_true(WIFSIGNALED(st) || WEXITSTATUS(st) != 0);
}

/* cache_sm_check walks the state and aborts on a broken invariant: here
 * an item whose cas is not below next_cas (a later store could reuse it).
 * The sanitizer build runs the check after every command. */
static void test_check_catches_a_broken_invariant(void **state)
{
    struct cache_sm *sm = sm_make(1 << 20, 1 << 10);
    struct cache_move_item im;
    pid_t pid;
    int st;

    (void)state;
    assert_int_equal(set(sm, T0, "k", "v"), CACHE_STORED);
    cache_sm_check(sm); /* holds */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        struct cache_item *it;

        /* cmocka's handlers would go on running the suite in the child */
        signal(SIGABRT, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        setrlimit(RLIMIT_CORE, &no_core);
        if (!cache_sm_export_item(sm, "k", 1, &im)) {
            _exit(2);
        }
        /* the value follows the key in the item's data */
        it = (struct cache_item *)(uintptr_t)(im.value - im.key_len -
                                              offsetof(struct cache_item,
                                                       data));
        it->cas = UINT64_MAX;
        cache_sm_check(sm);
        _exit(42); /* not caught */
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    cache_sm_free(sm);
}

/* ---------------------------------------------------------- request ids */

/* @type at T0 with the request id (@client, @seq), as op_ided. */
static enum cache_status id_op(struct cache_sm *sm, enum cache_op_type type,
                               const char *key, const char *value,
                               uint64_t d, uint64_t client, uint64_t seq,
                               struct cache_result *out)
{
    return op_ided(sm, T0, type, key, value, 0, 0, 0, d, client, seq, out);
}

static struct cache_sm *sm_ids(uint32_t window, uint32_t clients)
{
    struct cache_sm_config cfg = {0, 0, window, clients};
    struct cache_sm *sm = cache_sm_new(&cfg);

    assert_non_null(sm);
    return sm;
}

/* A repeat answers what the first answered and changes nothing, whatever
 * happened to the key in between. */
static void test_ids_repeat_answers_first(void **state)
{
    struct cache_sm *sm = sm_ids(0, 0);
    struct cache_result first, again;
    uint64_t d;

    (void)state;
    assert_int_equal(id_op(sm, CACHE_OP_SET, "k", "10", 0, 7, 1, &first),
                     CACHE_STORED);
    assert_int_equal(set(sm, T0, "k", "20"), CACHE_STORED); /* another's */
    d = cache_sm_digest(sm);
    assert_int_equal(id_op(sm, CACHE_OP_SET, "k", "10", 0, 7, 1, &again),
                     CACHE_STORED);
    assert_int_equal(again.cas, first.cas);
    want_value(sm, T0, "k", "20", 0);
    assert_int_equal(cache_sm_digest(sm), d);

    /* incr: the first number again, not a second increment */
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "k", NULL, 5, 7, 2, &first),
                     CACHE_NUMBER);
    assert_int_equal(first.number, 25);
    d = cache_sm_digest(sm);
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "k", NULL, 5, 7, 2, &again),
                     CACHE_NUMBER);
    assert_int_equal(again.number, 25);
    assert_int_equal(again.cas, first.cas);
    want_value(sm, T0, "k", "25", 0);
    assert_int_equal(cache_sm_digest(sm), d);

    /* append: once */
    assert_int_equal(id_op(sm, CACHE_OP_APPEND, "k", "x", 0, 7, 3, NULL),
                     CACHE_STORED);
    assert_int_equal(id_op(sm, CACHE_OP_APPEND, "k", "x", 0, 7, 3, NULL),
                     CACHE_STORED);
    want_value(sm, T0, "k", "25x", 0);

    /* add: NOT_STORED stays the answer after the key is gone */
    assert_int_equal(id_op(sm, CACHE_OP_ADD, "k", "y", 0, 7, 4, NULL),
                     CACHE_NOT_STORED);
    assert_int_equal(simple(sm, T0, CACHE_OP_DELETE, "k", 0), CACHE_DELETED);
    assert_int_equal(id_op(sm, CACHE_OP_ADD, "k", "y", 0, 7, 4, NULL),
                     CACHE_NOT_STORED);
    want_miss(sm, T0, "k");

    /* the same seq of another client is another request */
    assert_int_equal(id_op(sm, CACHE_OP_ADD, "k", "z", 0, 8, 4, NULL),
                     CACHE_STORED);
    want_value(sm, T0, "k", "z", 0);

    /* the node's answer without the log */
    {
        struct cache_op op;

        memset(&op, 0, sizeof(op));
        op.type = CACHE_OP_INCR;
        op.key = "k";
        op.key_len = 1;
        op.delta = 5;
        op.client_id = 7;
        op.seq = 2;
        cache_result_clear(&again);
        assert_true(cache_sm_answered(sm, &op, &again));
        assert_int_equal(again.status, CACHE_NUMBER);
        assert_int_equal(again.number, 25);
        op.seq = 5;
        assert_false(cache_sm_answered(sm, &op, &again));
        op.seq = 0;
        assert_false(cache_sm_answered(sm, &op, &again));
    }
    cache_result_clear(&first);
    cache_result_clear(&again);
    cache_sm_free(sm);
}

/* A repeated GAT touches once and reads the item as it is now. */
static void test_ids_gat_repeat_reads(void **state)
{
    struct cache_sm *sm = sm_ids(0, 0);
    struct cache_result res;

    (void)state;
    assert_int_equal(id_op(sm, CACHE_OP_GAT, "g", NULL, 0, 3, 1, NULL),
                     CACHE_NOT_FOUND);
    assert_int_equal(set(sm, T0, "g", "v1"), CACHE_STORED);
    assert_int_equal(id_op(sm, CACHE_OP_GAT, "g", NULL, 0, 3, 1, NULL),
                     CACHE_NOT_FOUND); /* the first missed */
    assert_int_equal(id_op(sm, CACHE_OP_GAT, "g", NULL, 0, 3, 2, &res),
                     CACHE_HIT);
    cache_result_clear(&res);
    assert_int_equal(set(sm, T0, "g", "v2"), CACHE_STORED);
    assert_int_equal(id_op(sm, CACHE_OP_GAT, "g", NULL, 0, 3, 2, &res),
                     CACHE_HIT);
    assert_int_equal(res.value_len, 2);
    assert_memory_equal(res.value, "v2", 2);
    cache_result_clear(&res);
    cache_sm_free(sm);
}

/* Per client the last @window seqs; older repeats are refused, never
 * applied. The least recently recorded client goes past the limit. */
static void test_ids_window_and_clients(void **state)
{
    struct cache_sm *sm = sm_ids(4, 2);
    uint64_t seq, d;

    (void)state;
    assert_int_equal(set(sm, T0, "n", "0"), CACHE_STORED);
    for (seq = 1; seq <= 6; seq++) {
        assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 1, 1, seq, NULL),
                         CACHE_NUMBER);
    }
    d = cache_sm_digest(sm);
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 1, 1, 2, NULL),
                     CACHE_STALE_RETRY);
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 1, 1, 3, NULL),
                     CACHE_NUMBER);
    assert_int_equal(cache_sm_digest(sm), d);
    want_value(sm, T0, "n", "6", 0);
    /* a gap inside the window was never applied: it applies now */
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 1, 1, 9, NULL),
                     CACHE_NUMBER);
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 1, 1, 8, NULL),
                     CACHE_NUMBER);
    want_value(sm, T0, "n", "8", 0);
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 1, 1, 5, NULL),
                     CACHE_STALE_RETRY);

    /* clients 2 and 3 push client 1 (least recent) out */
    assert_int_equal(id_op(sm, CACHE_OP_SET, "a", "x", 0, 2, 1, NULL),
                     CACHE_STORED);
    assert_int_equal(stats_of(sm).dedup_clients, 2);
    assert_int_equal(id_op(sm, CACHE_OP_SET, "b", "x", 0, 3, 1, NULL),
                     CACHE_STORED);
    assert_int_equal(stats_of(sm).dedup_clients, 2);
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 1, 1, 9, NULL),
                     CACHE_NUMBER); /* forgotten: applied again */
    want_value(sm, T0, "n", "9", 0);
    assert_int_equal(id_op(sm, CACHE_OP_SET, "a", "y", 0, 2, 1, NULL),
                     CACHE_STORED); /* client 2 became least recent */
    want_value(sm, T0, "a", "y", 0);
    cache_sm_free(sm);
}

/* The table is state: a restored replica answers repeats alike, and the
 * digest tells two states apart by it alone. */
static void test_ids_in_snapshot_and_digest(void **state)
{
    struct cache_sm *sm = sm_ids(8, 4);
    struct cache_sm *other = sm_ids(0, 0);
    struct cache_sm *plain = sm_ids(8, 4);
    struct cache_result res;
    void *buf;
    size_t len;

    (void)state;
    assert_int_equal(set(sm, T0, "n", "5"), CACHE_STORED);
    assert_int_equal(set(plain, T0, "n", "5"), CACHE_STORED);
    assert_int_equal(id_op(sm, CACHE_OP_INCR, "n", NULL, 2, 9, 3, NULL),
                     CACHE_NUMBER);
    assert_int_equal(delta(plain, T0, CACHE_OP_INCR, "n", 2, CACHE_NUMBER), 7);
    assert_int_equal(id_op(sm, CACHE_OP_DELETE, "x", NULL, 0, 10, 1, NULL),
                     CACHE_NOT_FOUND);
    assert_int_equal(simple(plain, T0, CACHE_OP_DELETE, "x", 0),
                     CACHE_NOT_FOUND);
    /* same items, cas and clock: only the table differs */
    assert_int_not_equal(cache_sm_digest(sm), cache_sm_digest(plain));

    snapshot_of(sm, &buf, &len);
    assert_int_equal(cache_sm_restore(other, buf, len), 0);
    assert_int_equal(cache_sm_digest(other), cache_sm_digest(sm));
    assert_int_equal(stats_of(other).dedup_clients, 2);
    assert_int_equal(id_op(other, CACHE_OP_INCR, "n", NULL, 2, 9, 3, &res),
                     CACHE_NUMBER);
    assert_int_equal(res.number, 7);
    cache_result_clear(&res);
    want_value(other, T0, "n", "7", 0);
    /* the snapshot's window (8), not the replica's default */
    assert_int_equal(id_op(other, CACHE_OP_INCR, "n", NULL, 2, 9, 12, NULL),
                     CACHE_NUMBER);
    assert_int_equal(id_op(other, CACHE_OP_INCR, "n", NULL, 2, 9, 4, NULL),
                     CACHE_STALE_RETRY);
    /* a corrupt table is refused, the state kept */
    {
        unsigned char *p = buf;
        size_t i;
        uint64_t before = cache_sm_digest(plain);

        for (i = 0; i + 8 < len; i++) {
            unsigned char save = p[i];

            p[i] ^= 0x40;
            if (cache_sm_restore(plain, buf, len) == 0) {
                fail_msg("a changed byte %zu was accepted", i);
            }
            p[i] = save;
        }
        assert_int_equal(cache_sm_digest(plain), before);
    }
    free(buf);
    cache_sm_free(sm);
    cache_sm_free(other);
    cache_sm_free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get),
        cmocka_unit_test(test_apply_aborts_when_malloc_fails),
        cmocka_unit_test(test_check_catches_a_broken_invariant),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_append_prepend_keep_flags_and_exptime),
        cmocka_unit_test(test_append_prepend_missing),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_cas_on_expired_item),
        cmocka_unit_test(test_cas_unique_per_store),
        cmocka_unit_test(test_incr_decr_basic),
        cmocka_unit_test(test_incr_decr_shrink_pads_with_spaces),
        cmocka_unit_test(test_incr_wrap_and_decr_floor),
        cmocka_unit_test(test_incr_non_numeric),
        cmocka_unit_test(test_incr_strtoull_quirks),
        cmocka_unit_test(test_incr_expired_is_missing),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_touch),
        cmocka_unit_test(test_gat),
        cmocka_unit_test(test_expiry_relative_boundary),
        cmocka_unit_test(test_expiry_absolute),
        cmocka_unit_test(test_expiry_negative),
        cmocka_unit_test(test_expiry_30_day_boundary),
        cmocka_unit_test(test_reads_do_not_change_state),
        cmocka_unit_test(test_time_backwards),
        cmocka_unit_test(test_flush_all_now),
        cmocka_unit_test(test_flush_all_delayed),
        cmocka_unit_test(test_flush_all_delayed_absolute_and_replaced),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_key_validation),
        cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_eviction_counts_expired),
        cmocka_unit_test(test_no_memory),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_snapshot_roundtrip),
        cmocka_unit_test(test_snapshot_empty),
        cmocka_unit_test(test_ring_refuses_other_keys),
        cmocka_unit_test(test_ring_epochs),
        cmocka_unit_test(test_ring_in_snapshot_and_digest),
        cmocka_unit_test(test_move_under_writes),
        cmocka_unit_test(test_move_broken_abort_and_snapshot),
        cmocka_unit_test(test_move_fence_expires),
        cmocka_unit_test(test_move_cut_repeated),
        cmocka_unit_test(test_config_applies),
        cmocka_unit_test(test_config_seed_once),
        cmocka_unit_test(test_config_in_snapshot_and_digest),
        cmocka_unit_test(test_restore_corrupt),
        cmocka_unit_test(test_restore_crafted),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_ids_repeat_answers_first),
        cmocka_unit_test(test_ids_gat_repeat_reads),
        cmocka_unit_test(test_ids_window_and_clients),
        cmocka_unit_test(test_ids_in_snapshot_and_digest),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
