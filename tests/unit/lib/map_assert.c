/* map_assert: see map_assert.h. */
#include "tests/unit/lib/map_assert.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

void map_assert_equal(const struct cluster_map *a, const struct cluster_map *b)
{
    unsigned i;

    assert_int_equal(a->epoch, b->epoch);
    assert_int_equal(a->n_shards, b->n_shards);
    for (i = 0; i < a->n_shards; i++) {
        assert_memory_equal(&a->shards[i], &b->shards[i], sizeof(a->shards[i]));
    }
    assert_int_equal(a->n_meta, b->n_meta);
    assert_memory_equal(a->meta, b->meta, sizeof(a->meta));
    assert_int_equal(a->n_routers, b->n_routers);
    assert_memory_equal(a->routers, b->routers, sizeof(a->routers));
    assert_int_equal(a->n_queue_ring, b->n_queue_ring);
    if (a->n_queue_ring > 0) {
        assert_memory_equal(a->queue_ring, b->queue_ring,
                            a->n_queue_ring * sizeof(*a->queue_ring));
    }
    assert_int_equal(a->plan.id, b->plan.id);
    assert_int_equal(a->plan.state, b->plan.state);
    assert_int_equal(a->plan.n_target, b->plan.n_target);
    if (a->plan.n_target > 0) {
        assert_memory_equal(a->plan.target, b->plan.target,
                            a->plan.n_target * sizeof(*a->plan.target));
    }
}
