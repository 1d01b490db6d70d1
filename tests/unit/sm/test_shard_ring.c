/*
 * Unit tests for sm/shard_ring: ring specs, overrides and the arc diff that
 * plans a move (docs/resharding.md): which arcs change hands between two
 * rings, and that applying them as overrides to the old ring gives the new
 * ring's owner for every hash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/ring.h"
#include "sm/shard_ring.h"

/* A spec of shards s1..sN with @weights, for shard @self. */
static void spec(struct shard_ring *r, uint64_t epoch, const unsigned *weights,
                 unsigned n, const char *self)
{
    struct cluster_map map;
    unsigned i;
    void *buf;
    size_t len;

    cluster_map_init(&map);
    map.epoch = epoch;
    for (i = 0; i < n; i++) {
        struct cluster_shard *s = cluster_map_append(&map);
        snprintf(s->name, sizeof(s->name), "s%u", i + 1);
        s->weight = weights[i];
    }
    buf = shard_ring_encode_map(&map, self, &len);
    shard_ring_init(r);
    assert_int_equal(shard_ring_decode(buf, len, r), 0);
    free(buf);
    cluster_map_clear(&map);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* @from with every move of diff(@from, @to) applied as an override owns
 * every hash as @to does: checked at 10^6 random hashes and at both ends
 * of every arc and its neighbours. */
static void check_overrides_reach(const struct shard_ring *from,
                                  const struct shard_ring *to)
{
    struct shard_ring a;
    struct arc_move *moves;
    size_t n, i;
    void *buf;
    size_t len;

    buf = shard_ring_encode(from, &len);
    shard_ring_init(&a);
    assert_int_equal(shard_ring_decode(buf, len, &a), 0);
    free(buf);
    n = shard_ring_diff(from, to, &moves);
    for (i = 0; i < n; i++) {
        assert_true(moves[i].arc.lo <= moves[i].arc.hi);
        assert_true(i == 0 || moves[i].arc.lo > moves[i - 1].arc.hi);
        assert_string_equal(shard_ring_owner_hash(from, moves[i].arc.lo),
                            moves[i].from);
        assert_string_equal(shard_ring_owner_hash(to, moves[i].arc.hi),
                            moves[i].to);
        shard_ring_override(&a, &moves[i].arc, 1, moves[i].to);
    }
    for (i = 0; i < 1000000; i++) {
        uint32_t h = rnd32();
        assert_string_equal(shard_ring_owner_hash(&a, h),
                            shard_ring_owner_hash(to, h));
    }
    for (i = 0; i < n; i++) {
        uint32_t edges[4] = {moves[i].arc.lo, moves[i].arc.hi,
                             moves[i].arc.lo - 1, moves[i].arc.hi + 1};
        unsigned k;
        for (k = 0; k < 4; k++) {
            assert_string_equal(shard_ring_owner_hash(&a, edges[k]),
                                shard_ring_owner_hash(to, edges[k]));
        }
    }
    free(moves);
    shard_ring_clear(&a);
}

/* Equal weights, a third shard added: every arc goes to it, from both
 * old shards, and their length is its share of the ring. */
static void test_add_equal_weights(void **state)
{
    static const unsigned w[3] = {1, 1, 1};
    struct shard_ring r0, r1;
    struct arc_move *moves;
    double len = 0, shares[3];
    size_t n, i;

    (void)state;
    spec(&r0, 1, w, 2, "s1");
    spec(&r1, 2, w, 3, "s1");
    n = shard_ring_diff(&r0, &r1, &moves);
    assert_true(n > 100); /* about 160 arcs */
    for (i = 0; i < n; i++) {
        assert_string_equal(moves[i].to, "s3");
        assert_true(strcmp(moves[i].from, "s1") == 0 ||
                    strcmp(moves[i].from, "s2") == 0);
        len += (double)moves[i].arc.hi - moves[i].arc.lo + 1;
    }
    ring_shares(r1.ring, shares);
    assert_true(len / 4294967296.0 > shares[2] - 1e-9 &&
                len / 4294967296.0 < shares[2] + 1e-9);
    free(moves);
    check_overrides_reach(&r0, &r1);
    shard_ring_clear(&r0);
    shard_ring_clear(&r1);
}

/* Unequal weights move arcs among old shards too; removal and reweights
 * come out right as well. */
static void test_other_changes(void **state)
{
    static const unsigned w12[2] = {1, 2};
    static const unsigned w121[3] = {1, 2, 1};
    static const unsigned w131[3] = {1, 3, 1};
    struct shard_ring a, b, c;
    struct arc_move *moves;
    size_t n, i;
    bool among_old = false;

    (void)state;
    spec(&a, 1, w12, 2, "s1");
    spec(&b, 2, w121, 3, "s1");
    spec(&c, 3, w131, 3, "s1");
    n = shard_ring_diff(&a, &b, &moves);
    for (i = 0; i < n; i++) {
        among_old |= strcmp(moves[i].to, "s3") != 0;
    }
    free(moves);
    print_message("1:2 -> 1:2:1: %zu arcs, %s among old shards\n", n,
                  among_old ? "some" : "none");
    check_overrides_reach(&a, &b); /* add, unequal */
    check_overrides_reach(&b, &c); /* reweight */
    check_overrides_reach(&c, &a); /* remove s3 and reweight */
    assert_int_equal(shard_ring_diff(&b, &b, &moves), 0);
    shard_ring_clear(&a);
    shard_ring_clear(&b);
    shard_ring_clear(&c);
}

/* A ring with overrides diffs like the ring it stands for: moving arcs
 * back and forth (A -> B -> A) ends where it started. */
static void test_overrides_and_back(void **state)
{
    static const unsigned w[3] = {1, 1, 1};
    struct shard_ring r0, r1, mid;
    struct arc_move *moves;
    size_t n, i;
    void *buf;
    size_t len;

    (void)state;
    spec(&r0, 1, w, 2, "s1");
    spec(&r1, 2, w, 3, "s1");
    n = shard_ring_diff(&r0, &r1, &moves);
    /* half the arcs moved: mid is between the two */
    buf = shard_ring_encode(&r0, &len);
    shard_ring_init(&mid);
    assert_int_equal(shard_ring_decode(buf, len, &mid), 0);
    free(buf);
    for (i = 0; i < n; i += 2) {
        shard_ring_override(&mid, &moves[i].arc, 1, moves[i].to);
    }
    free(moves);
    check_overrides_reach(&mid, &r1); /* the rest */
    check_overrides_reach(&mid, &r0); /* and back */
    /* the spec with overrides survives its encoding */
    buf = shard_ring_encode(&mid, &len);
    {
        struct shard_ring again;
        shard_ring_init(&again);
        assert_int_equal(shard_ring_decode(buf, len, &again), 0);
        assert_int_equal(again.n_ov, mid.n_ov);
        for (i = 0; i < 100000; i++) {
            uint32_t h = rnd32();
            assert_string_equal(shard_ring_owner_hash(&again, h),
                                shard_ring_owner_hash(&mid, h));
        }
        shard_ring_clear(&again);
    }
    /* every truncation is refused */
    for (i = 0; i < len; i++) {
        struct shard_ring t;
        shard_ring_init(&t);
        assert_int_equal(shard_ring_decode(buf, i, &t), -1);
    }
    free(buf);
    shard_ring_clear(&r0);
    shard_ring_clear(&r1);
    shard_ring_clear(&mid);
}

/* Overlapping overrides cut what they cover. */
static void test_override_splits(void **state)
{
    static const unsigned w[1] = {1};
    struct shard_ring r;
    struct arc a1 = {100, 200}, a2 = {150, 160}, a3 = {50, 120};
    struct arc a4 = {0, UINT32_MAX};

    (void)state;
    spec(&r, 1, w, 1, "s1");
    shard_ring_override(&r, &a1, 1, "x");
    shard_ring_override(&r, &a2, 1, "y");
    shard_ring_override(&r, &a3, 1, "z");
    assert_int_equal(r.n_ov, 4); /* z 50-120, x 121-149, y 150-160, x 161-200 */
    assert_string_equal(shard_ring_owner_hash(&r, 49), "s1");
    assert_string_equal(shard_ring_owner_hash(&r, 50), "z");
    assert_string_equal(shard_ring_owner_hash(&r, 120), "z");
    assert_string_equal(shard_ring_owner_hash(&r, 121), "x");
    assert_string_equal(shard_ring_owner_hash(&r, 155), "y");
    assert_string_equal(shard_ring_owner_hash(&r, 161), "x");
    assert_string_equal(shard_ring_owner_hash(&r, 201), "s1");
    assert_true(arcs_valid(&r.ov[0].arc, 1));
    shard_ring_override(&r, &a4, 1, "w");
    assert_int_equal(r.n_ov, 1);
    assert_string_equal(shard_ring_owner_hash(&r, 7), "w");
    shard_ring_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_equal_weights),
        cmocka_unit_test(test_other_changes),
        cmocka_unit_test(test_overrides_and_back),
        cmocka_unit_test(test_override_splits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
