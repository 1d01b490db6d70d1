/* pb_arena: unpacking through it gives the same message as malloc does;
 * once warm, an unpack allocates nothing outside the block; the block
 * stays bounded; allocations never overlap and are aligned. */
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/pb_arena.h"
#include "raft_entry.pb-c.h"

/* A batch of @n commands of @len bytes each, packed; free() it. */
static uint8_t *pack_batch(unsigned n, size_t len, size_t *out_len)
{
    Ringmq__RaftBatch b = RINGMQ__RAFT_BATCH__INIT;
    ProtobufCBinaryData *cmds = calloc(n, sizeof(*cmds));
    uint8_t *body = malloc(len ? len : 1);
    uint8_t *out;
    unsigned i;

    memset(body, 'v', len);
    for (i = 0; i < n; i++) {
        cmds[i].data = body;
        cmds[i].len = len;
    }
    b.proposer = 7;
    b.seq = 42;
    b.time_ms = 1000;
    b.n_cmds = n;
    b.cmds = cmds;
    *out_len = ringmq__raft_batch__get_packed_size(&b);
    out = malloc(*out_len);
    assert_int_equal(ringmq__raft_batch__pack(&b, out), *out_len);
    free(cmds);
    free(body);
    return out;
}

static void assert_same_batch(const Ringmq__RaftBatch *x,
                              const Ringmq__RaftBatch *y)
{
    size_t i;

    assert_int_equal(x->proposer, y->proposer);
    assert_int_equal(x->seq, y->seq);
    assert_int_equal(x->time_ms, y->time_ms);
    assert_int_equal(x->n_cmds, y->n_cmds);
    for (i = 0; i < x->n_cmds; i++) {
        assert_int_equal(x->cmds[i].len, y->cmds[i].len);
        assert_memory_equal(x->cmds[i].data, y->cmds[i].data, x->cmds[i].len);
    }
}

static void test_same_as_malloc(void **state)
{
    struct pb_arena a;
    size_t len;
    uint8_t *wire = pack_batch(16, 100, &len);
    Ringmq__RaftBatch *ref = ringmq__raft_batch__unpack(NULL, len, wire);
    Ringmq__RaftBatch *b;
    int round;

    (void)state;
    assert_non_null(ref);
    pb_arena_init(&a);
    for (round = 0; round < 3; round++) {
        b = ringmq__raft_batch__unpack(pb_arena_allocator(&a), len, wire);
        assert_non_null(b);
        assert_same_batch(ref, b);
        pb_arena_reset(&a);
    }
    ringmq__raft_batch__free_unpacked(ref, NULL);
    pb_arena_close(&a);
    free(wire);
}

/* The first unpack spills; after its reset the block holds the next one
 * whole: nothing outside it. */
static void test_warm_arena_does_not_spill(void **state)
{
    struct pb_arena a;
    size_t len;
    uint8_t *wire = pack_batch(64, 200, &len);

    (void)state;
    pb_arena_init(&a);
    assert_non_null(
        ringmq__raft_batch__unpack(pb_arena_allocator(&a), len, wire));
    assert_true(a.spilled > 0); /* no block yet */
    pb_arena_reset(&a);
    assert_true(a.size >= 64 * 200);
    assert_non_null(
        ringmq__raft_batch__unpack(pb_arena_allocator(&a), len, wire));
    assert_int_equal(a.spilled, 0);
    assert_null(a.spills);
    pb_arena_reset(&a);
    pb_arena_close(&a);
    free(wire);
}

/* A message larger than PB_ARENA_KEEP_MAX still unpacks, every time, and
 * the block stays at the bound. */
static void test_block_bounded(void **state)
{
    struct pb_arena a;
    size_t len;
    uint8_t *wire = pack_batch(4, PB_ARENA_KEEP_MAX, &len);
    Ringmq__RaftBatch *b;
    int round;

    (void)state;
    pb_arena_init(&a);
    for (round = 0; round < 3; round++) {
        b = ringmq__raft_batch__unpack(pb_arena_allocator(&a), len, wire);
        assert_non_null(b);
        assert_int_equal(b->n_cmds, 4);
        assert_int_equal(b->cmds[3].data[PB_ARENA_KEEP_MAX - 1], 'v');
        pb_arena_reset(&a);
        assert_true(a.size <= PB_ARENA_KEEP_MAX);
    }
    assert_int_equal(a.size, PB_ARENA_KEEP_MAX);
    pb_arena_close(&a);
    free(wire);
}

/* Random sizes, some zero: every pointer non-NULL and aligned, every
 * allocation still holds its own bytes when the round ends (no two
 * overlap), over rounds that grow the block and spill. */
static void test_random_allocations_do_not_overlap(void **state)
{
    enum { ROUNDS = 50, MAX_ALLOCS = 200 };
    struct pb_arena a;
    ProtobufCAllocator *al;
    unsigned char *p[MAX_ALLOCS];
    size_t n[MAX_ALLOCS];
    unsigned seed = 12345;
    int round, i, k;

    (void)state;
    pb_arena_init(&a);
    al = pb_arena_allocator(&a);
    for (round = 0; round < ROUNDS; round++) {
        int count = 1 + rand_r(&seed) % MAX_ALLOCS;

        for (i = 0; i < count; i++) {
            n[i] = rand_r(&seed) % 8 == 0 ? 0 : (size_t)(rand_r(&seed) % 3000);
            p[i] = al->alloc(al->allocator_data, n[i]);
            assert_non_null(p[i]);
            assert_int_equal((uintptr_t)p[i] % alignof(max_align_t), 0);
            memset(p[i], i & 0xff, n[i]);
            if (i % 5 == 0) {
                al->free(al->allocator_data, p[i]); /* a no-op */
                memset(p[i], i & 0xff, n[i]);
            }
        }
        for (i = 0; i < count; i++) {
            for (k = 0; k < (int)n[i]; k++) {
                assert_int_equal(p[i][k], i & 0xff);
            }
        }
        pb_arena_reset(&a);
        assert_int_equal(a.used, 0);
        assert_true(a.size <= PB_ARENA_KEEP_MAX);
    }
    pb_arena_close(&a);
}

/* Never used: nothing to free (and closing anyway is harmless). */
static void test_unused_arena(void **state)
{
    struct pb_arena a;

    (void)state;
    pb_arena_init(&a);
    assert_null(a.block);
    pb_arena_reset(&a);
    assert_null(a.block);
    pb_arena_close(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_malloc),
        cmocka_unit_test(test_warm_arena_does_not_spill),
        cmocka_unit_test(test_block_bounded),
        cmocka_unit_test(test_random_allocations_do_not_overlap),
        cmocka_unit_test(test_unused_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
