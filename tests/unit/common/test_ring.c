/*
 * test_ring: common/ring against libmemcached's weighted ketama (fixed
 * vectors in ring_vectors.h, see there for how they were produced), weight
 * proportionality, how few keys move on membership and weight changes, and
 * the edge cases of ring_new/ring_lookup.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/ring.h"
#include "tests/unit/common/ring_vectors.h"

#define NKEYS_BIG 100000

static struct ring *must_ring(const struct ring_node *nodes, unsigned n)
{
    char err[256];
    struct ring *r = ring_new(nodes, n, err, sizeof err);

    if (r == NULL) {
        fail_msg("ring_new: %s", err);
    }
    return r;
}

static size_t key_of(char *buf, size_t cap, unsigned i)
{
    return (size_t)snprintf(buf, cap, "key:%u", i);
}

/* Same digest the vector generator computed over libmemcached's continuum. */
static uint64_t ring_digest(const struct ring *r)
{
    uint64_t h = 1469598103934665603ULL;
    unsigned i;
    int k;
    int b;

    for (i = 0; i < ring_points(r); i++) {
        uint32_t w[2];
        unsigned node;

        ring_point_at(r, i, &w[0], &node);
        w[1] = node;
        for (k = 0; k < 2; k++) {
            for (b = 0; b < 4; b++) {
                h ^= (w[k] >> (8 * b)) & 0xff;
                h *= 1099511628211ULL;
            }
        }
    }
    return h;
}

/* --- compatibility with libmemcached ------------------------------------ */

static void test_hash_vectors(void **state)
{
    char k250[250];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof rv_hashes / sizeof rv_hashes[0]; i++) {
        assert_int_equal(ring_hash(rv_hashes[i].key, strlen(rv_hashes[i].key)),
                         rv_hashes[i].hash);
    }
    memset(k250, 'k', sizeof k250);
    assert_int_equal(ring_hash(k250, sizeof k250), RV_HASH_K250);
    /* NULL is fine for an empty key. */
    assert_int_equal(ring_hash(NULL, 0), rv_hashes[0].hash);
}

static void test_libmemcached_configs(void **state)
{
    char key[32];
    char k250[250];
    size_t c;
    unsigned i;

    (void)state;
    memset(k250, 'k', sizeof k250);
    for (c = 0; c < sizeof rv_configs / sizeof rv_configs[0]; c++) {
        const struct rv_config *v = &rv_configs[c];
        struct ring *r = must_ring(v->nodes, v->n);
        unsigned same = 0;

        assert_int_equal(ring_points(r), v->points);
        /* Whole continuum, point for point, ties included. */
        assert_true(ring_digest(r) == v->digest);
        for (i = 0; i < RV_NKEYS; i++) {
            size_t len = key_of(key, sizeof key, i);

            same += ring_lookup(r, key, len) == v->map[i];
        }
        print_message(
            "libmemcached %-14s %u nodes %5u points: %u/%u keys "
            "on the same server, continuum digest equal\n",
            v->id, v->n, ring_points(r), same, RV_NKEYS);
        assert_int_equal(same, RV_NKEYS);
        assert_int_equal(ring_lookup(r, "", 0), v->empty);
        assert_int_equal(ring_lookup(r, k250, sizeof k250), v->k250);
        ring_free(r);
    }
}

/* The point count is computed in float exactly as libmemcached does; these
 * tables catch any drift (n = 25 equal nodes: 3900 points, not 4000). */
static void test_point_counts(void **state)
{
    struct ring_node nodes[64];
    char names[64][16];
    unsigned n;
    unsigned i;
    int ramp;

    (void)state;
    for (i = 0; i < 64; i++) {
        snprintf(names[i], sizeof names[i], "h%u", i);
        nodes[i].name = names[i];
    }
    for (ramp = 0; ramp < 2; ramp++) {
        const unsigned *want = ramp ? rv_ramp_points : rv_eq_points;

        for (i = 0; i < 64; i++) {
            nodes[i].weight = ramp ? i + 1 : 1;
        }
        for (n = 1; n <= 64; n++) {
            struct ring *r = must_ring(nodes, n);

            assert_int_equal(ring_points(r), want[n - 1]);
            ring_free(r);
        }
    }
}

/* --- behaviour ---------------------------------------------------------- */

static void count_owners(const struct ring *r, unsigned *counts, unsigned n)
{
    char key[32];
    unsigned i;

    memset(counts, 0, n * sizeof *counts);
    for (i = 0; i < NKEYS_BIG; i++) {
        size_t len = key_of(key, sizeof key, i);
        unsigned idx = ring_lookup(r, key, len);

        assert_true(idx < n);
        counts[idx]++;
    }
}

/* Square root by Newton's method, so the test does not need libm. */
static double root(double x)
{
    double y = x > 1 ? x : 1;
    int i;

    for (i = 0; i < 60 && x > 0; i++) {
        y = (y + x / y) / 2;
    }
    return x > 0 ? y : 0;
}

/* Sampled shares of NKEYS_BIG keys must match the ring's exact arc shares
 * (this checks lookups, not ketama's balance); returns the exact shares. */
static void check_sampled(const struct ring *r,
                          unsigned n,
                          double *exact,
                          const char *what)
{
    unsigned counts[8];
    unsigned i;

    assert_true(n <= 8);
    count_owners(r, counts, n);
    ring_shares(r, exact);
    for (i = 0; i < n; i++) {
        double sampled = (double)counts[i] / NKEYS_BIG;

        print_message(
            "%s node %u \"%s\": %u keys, sampled %.4f, exact "
            "share %.4f\n",
            what, i, ring_node_name(r, i), counts[i], sampled, exact[i]);
        assert_true(sampled > exact[i] - 0.01 && sampled < exact[i] + 0.01);
    }
}

/*
 * Ketama gives each node points in proportion to its weight, but with only
 * 160 points per node the share of the hash space a given set of names gets
 * scatters around the weight. So the proportionality claim is checked as
 * ketama can honour it: on average over many name pairs (tight), and for
 * fixed names (within a few percent, which is a property of those names).
 */
static void test_distribution_weights_1_2(void **state)
{
    /* The local cluster's routers as a ketama client lists them... */
    static const struct ring_node routers[] = {{"127.0.0.1", 1},
                                               {"127.0.0.1:11212", 2}};
    /* ...and the shards of scripts/local-cluster (ring names = shard names),
     * whose exact shares happen to land within 2 points of 1:2. */
    static const struct ring_node shards[] = {{"s1", 1}, {"s2", 2}};
    struct ring *r;
    double exact[2];
    double sum = 0;
    double sumsq = 0;
    double worst = 0;
    double mean;
    double sd;
    unsigned outside = 0;
    unsigned t;

    (void)state;
    r = must_ring(shards, 2);
    check_sampled(r, 2, exact, "weights 1:2");
    assert_true(exact[0] > 1.0 / 3 - 0.03 && exact[0] < 1.0 / 3 + 0.03);
    assert_true(exact[1] > 2.0 / 3 - 0.03 && exact[1] < 2.0 / 3 + 0.03);
    ring_free(r);

    r = must_ring(routers, 2);
    check_sampled(r, 2, exact, "weights 1:2");
    print_message(
        "  (the router names are %.1f points off 1/3: ketama "
        "scatter, below)\n",
        100 * (exact[0] - 1.0 / 3));
    ring_free(r);

    for (t = 0; t < 500; t++) {
        char a[32];
        char b[32];
        struct ring_node nodes[2] = {{a, 1}, {b, 2}};
        double d;

        snprintf(a, sizeof a, "10.1.%u.%u", t / 200, t % 200);
        snprintf(b, sizeof b, "10.2.%u.%u:11212", t / 200, t % 200);
        r = must_ring(nodes, 2);
        ring_shares(r, exact);
        d = exact[0] - 1.0 / 3;
        sum += d;
        sumsq += d * d;
        worst = d > worst ? d : -d > worst ? -d : worst;
        outside += d > 0.03 || d < -0.03;
        ring_free(r);
    }
    mean = sum / t;
    sd = root(sumsq / t - mean * mean);
    print_message(
        "weights 1:2 over %u name pairs: weight-1 share = 1/3 %+.4f "
        "on average, sd %.4f, worst %.4f, %u pairs off by > 0.03\n",
        t, mean, sd, worst, outside);
    /* 104 of 316 points = 0.329: proportional up to ketama's rounding. */
    assert_true(mean > -0.01 && mean < 0.01);
    assert_true(sd < 0.04);
}

static void test_distribution_1_2_3(void **state)
{
    static const struct ring_node nodes[] = {
        {"10.0.1.1", 1}, {"10.0.1.2", 2}, {"cache-3.example.com:22122", 3}};
    struct ring *r = must_ring(nodes, 3);
    double exact[3];
    unsigned i;

    (void)state;
    check_sampled(r, 3, exact, "weights 1:2:3");
    for (i = 0; i < 3; i++) {
        double ideal = (double)nodes[i].weight / 6;

        assert_true(exact[i] > ideal - 0.03 && exact[i] < ideal + 0.03);
    }
    ring_free(r);
}

/* Fraction of keys whose owner differs; fails if any key moves other than
 * from a node in @from_mask... to a node in @to_mask (bit i = node i). */
static double moved_fraction(const struct ring *a,
                             const struct ring *b,
                             unsigned from_mask,
                             unsigned to_mask)
{
    char key[32];
    unsigned moved = 0;
    unsigned i;

    for (i = 0; i < NKEYS_BIG; i++) {
        size_t len = key_of(key, sizeof key, i);
        unsigned was = ring_lookup(a, key, len);
        unsigned now = ring_lookup(b, key, len);

        if (was != now) {
            assert_true(from_mask & (1u << was));
            assert_true(to_mask & (1u << now));
            moved++;
        }
    }
    return (double)moved / NKEYS_BIG;
}

static void test_movement_add_shard(void **state)
{
    static const struct ring_node three[] = {
        {"shard-a", 1}, {"shard-b", 1}, {"shard-c", 1}};
    struct ring *before = must_ring(three, 2);
    struct ring *after = must_ring(three, 3);
    double f;

    (void)state;
    /* Only keys that move TO the new shard (index 2) may move. */
    f = moved_fraction(before, after, 0x3, 0x4);
    print_message(
        "add 3rd equal shard to 2: %.4f of keys moved, all to the "
        "new shard (ideal 0.3333)\n",
        f);
    assert_true(f > 1.0 / 3 - 0.05 && f < 1.0 / 3 + 0.05);
    ring_free(before);
    ring_free(after);
}

static void test_movement_weight_change(void **state)
{
    static const struct ring_node w11[] = {{"shard-a", 1}, {"shard-b", 1}};
    static const struct ring_node w12[] = {{"shard-a", 1}, {"shard-b", 2}};
    struct ring *before = must_ring(w11, 2);
    struct ring *after = must_ring(w12, 2);
    double f;

    (void)state;
    /* a keeps a prefix of its point groups and b gains groups, so keys only
     * go a -> b; ideally 1/2 - 1/3 = 1/6 of them. */
    f = moved_fraction(before, after, 0x1, 0x2);
    print_message(
        "weight of one of 2 shards 1 -> 2: %.4f of keys moved, "
        "all to it (ideal 0.1667)\n",
        f);
    assert_true(f > 0.10 && f < 0.25);
    ring_free(before);
    ring_free(after);
}

static void test_movement_remove_shard(void **state)
{
    static const struct ring_node three[] = {
        {"shard-a", 1}, {"shard-b", 1}, {"shard-c", 1}};
    struct ring *before = must_ring(three, 3);
    struct ring *after = must_ring(three, 2);
    double f;

    (void)state;
    /* Only the removed shard's keys move. */
    f = moved_fraction(before, after, 0x4, 0x3);
    print_message(
        "remove 1 of 3 equal shards: %.4f of keys moved, all from "
        "it (ideal 0.3333)\n",
        f);
    assert_true(f > 1.0 / 3 - 0.05 && f < 1.0 / 3 + 0.05);
    ring_free(before);
    ring_free(after);
}

/* --- edge cases --------------------------------------------------------- */

static void test_lookup_wrap_and_bounds(void **state)
{
    static const struct ring_node nodes[] = {
        {"a", 1}, {"b", 2}, {"c", 3}, {"d", 1}};
    struct ring *r = must_ring(nodes, 4);
    unsigned last = ring_points(r) - 1;
    uint32_t h;
    uint32_t h_next;
    unsigned node;
    unsigned node_next;
    unsigned first;
    unsigned i;

    (void)state;
    ring_point_at(r, 0, &h, &first);
    assert_int_equal(ring_lookup_hash(r, 0), first);
    assert_int_equal(ring_lookup_hash(r, h), first);
    /* Past the last point: wrap to the first. */
    ring_point_at(r, last, &h, &node);
    assert_int_equal(ring_lookup_hash(r, h), node);
    if (h != UINT32_MAX) {
        assert_int_equal(ring_lookup_hash(r, h + 1), first);
        assert_int_equal(ring_lookup_hash(r, UINT32_MAX), first);
    }
    /* Points are sorted; a hash just above a point goes to the next one. */
    for (i = 0; i + 1 < ring_points(r); i++) {
        ring_point_at(r, i, &h, &node);
        ring_point_at(r, i + 1, &h_next, &node_next);
        assert_true(h <= h_next);
        if (h < h_next) {
            assert_int_equal(ring_lookup_hash(r, h), node);
            assert_int_equal(ring_lookup_hash(r, h + 1), node_next);
        }
    }
    assert_int_equal(ring_nodes(r), 4);
    assert_string_equal(ring_node_name(r, 2), "c");
    assert_null(ring_node_name(r, 4));
    ring_free(r);
}

static void test_one_node(void **state)
{
    static const struct ring_node one[] = {{"only:11300", 5}};
    struct ring *r = must_ring(one, 1);
    char key[32];
    char k250[250];
    unsigned i;

    (void)state;
    assert_int_equal(ring_points(r), RING_POINTS_PER_NODE);
    for (i = 0; i < 1000; i++) {
        assert_int_equal(ring_lookup(r, key, key_of(key, sizeof key, i)), 0);
    }
    memset(k250, 'x', sizeof k250);
    assert_int_equal(ring_lookup(r, "", 0), 0);
    assert_int_equal(ring_lookup(r, k250, sizeof k250), 0);
    ring_free(r);
}

static void expect_einval(const struct ring_node *nodes,
                          unsigned n,
                          const char *needle)
{
    char err[256];
    struct ring *r;

    errno = 0;
    r = ring_new(nodes, n, err, sizeof err);
    assert_null(r);
    assert_int_equal(errno, EINVAL);
    if (strstr(err, needle) == NULL) {
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
    }
}

static void test_rejects(void **state)
{
    static const struct ring_node zero_w[] = {{"a", 1}, {"b", 0}};
    static const struct ring_node no_name[] = {{"a", 1}, {NULL, 1}};
    static const struct ring_node empty_name[] = {{"", 1}};
    static const struct ring_node dup[] = {{"a", 1}, {"b", 1}, {"a", 2}};
    /* 1/1001 * 40 * 2 < 1: libmemcached would give "a" no points. */
    static const struct ring_node tiny[] = {{"a", 1}, {"b", 1000}};
    static const struct ring_node ok[] = {{"a", 1}};
    struct ring_node *many;
    char *longname;
    unsigned i;

    (void)state;
    expect_einval(ok, 0, "no nodes");
    expect_einval(NULL, 1, "no nodes");
    expect_einval(zero_w, 2, "weight 0");
    expect_einval(no_name, 2, "no name");
    expect_einval(empty_name, 1, "no name");
    expect_einval(dup, 3, "appears twice");
    expect_einval(tiny, 2, "no ketama points");

    longname = malloc(RING_MAX_NAME + 2);
    assert_non_null(longname);
    memset(longname, 'n', RING_MAX_NAME + 1);
    longname[RING_MAX_NAME + 1] = '\0';
    {
        struct ring_node big[] = {{longname, 1}};

        expect_einval(big, 1, "longer than");
        longname[RING_MAX_NAME] = '\0'; /* exactly the limit is fine */
        ring_free(must_ring(big, 1));
    }
    free(longname);

    many = calloc(RING_MAX_NODES + 1, sizeof *many);
    assert_non_null(many);
    for (i = 0; i <= RING_MAX_NODES; i++) {
        many[i].name = "x";
        many[i].weight = 1;
    }
    expect_einval(many, RING_MAX_NODES + 1, "at most");
    free(many);

    /* No error buffer is fine too. */
    errno = 0;
    assert_null(ring_new(zero_w, 2, NULL, 0));
    assert_int_equal(errno, EINVAL);
    ring_free(NULL);
}

static void test_names_copied(void **state)
{
    char a[16] = "alpha";
    char b[16] = "beta:11212";
    struct ring_node nodes[2] = {{a, 1}, {b, 2}};
    struct ring *r = must_ring(nodes, 2);
    unsigned before[64];
    char key[32];
    unsigned i;

    (void)state;
    for (i = 0; i < 64; i++) {
        before[i] = ring_lookup(r, key, key_of(key, sizeof key, i));
    }
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    assert_string_equal(ring_node_name(r, 0), "alpha");
    assert_string_equal(ring_node_name(r, 1), "beta:11212");
    for (i = 0; i < 64; i++) {
        assert_int_equal(ring_lookup(r, key, key_of(key, sizeof key, i)),
                         before[i]);
    }
    ring_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_vectors),
        cmocka_unit_test(test_libmemcached_configs),
        cmocka_unit_test(test_point_counts),
        cmocka_unit_test(test_distribution_weights_1_2),
        cmocka_unit_test(test_distribution_1_2_3),
        cmocka_unit_test(test_movement_add_shard),
        cmocka_unit_test(test_movement_weight_change),
        cmocka_unit_test(test_movement_remove_shard),
        cmocka_unit_test(test_lookup_wrap_and_bounds),
        cmocka_unit_test(test_one_node),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_names_copied),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
