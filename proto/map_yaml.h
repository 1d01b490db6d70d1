/*
 * map_yaml: the cluster map file, which bootstraps a cluster's map (the
 * meta group holds it from then on; docs/cluster.md is the reference).
 *
 *   epoch: 1                       # the bootstrap map's epoch
 *   shards:
 *     - name: s1
 *       weight: 1                  # share of the key space (ketama points)
 *       members:                   # a Raft group: 1, 3 or 5 storage nodes
 *         - {id: 1, raft: 127.0.0.1:7201, rpc: 127.0.0.1:7101}
 *         - {id: 4, raft: ..., rpc: ..., join: true}  # added later
 *   routers:
 *     - {name: r1, memcached: 127.0.0.1:11211, http: 127.0.0.1:9101}
 *
 * A node with id N runs one replica of every shard that lists member N, and
 * serves RPC on that member's rpc address. The meta group's members are the
 * first shard's, at raft ports + 2 (cluster_map_default_meta). Parsed with
 * libyaml; the result passes cluster_map_validate.
 *
 * Errors: 0, or -1 with a reason in @err and @map left empty. @map is
 * overwritten: it must own no shards (initialised or cleared).
 */
#ifndef RINGMQ_MAP_YAML_H
#define RINGMQ_MAP_YAML_H

#include <stddef.h>

#include "sm/cluster_map.h"

int cluster_map_load(struct cluster_map *map, const char *path, char *err,
                     size_t errlen);

#endif
