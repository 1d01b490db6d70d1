/*
 * map_assert: cmocka checks on cluster maps (sm/cluster_map.h), shared by
 * the tests of the map's state machine, its encodings and its scale.
 */
#ifndef RINGMQ_TEST_MAP_ASSERT_H
#define RINGMQ_TEST_MAP_ASSERT_H

#include "sm/cluster_map.h"

/* @a and @b are the same map: epoch, shards in the same order with the
 * same members, meta, routers, queue ring and plan. Fails the test if not. */
void map_assert_equal(const struct cluster_map *a, const struct cluster_map *b);

#endif
