/*
 * map_pb: the cluster map, its commands and deltas (sm/cluster_map.h,
 * sm/map_sm.h) to and from their protobuf form (proto/map.proto).
 *
 * To protobuf: the messages point into the C structs given (strings are
 * borrowed, not copied) and into blocks of @arena, which the caller frees
 * with map_pb_arena_clear() once the message is packed.
 *
 * From protobuf: untrusted input. Every string is checked against the
 * limits of sm/cluster_map.h and every enum against its range; a message
 * that does not fit is refused (-1) and the output left empty. The output
 * owns its data (copied out of the message).
 *
 * Out of memory aborts (xmalloc). No state, no threads.
 */
#ifndef RINGMQ_MAP_PB_H
#define RINGMQ_MAP_PB_H

#include <stddef.h>

#include "proto/map.pb-c.h"
#include "sm/cluster_map.h"
#include "sm/map_sm.h"

struct map_pb_arena {
    void **blocks;
    size_t n;
    size_t cap;
};

void map_pb_arena_clear(struct map_pb_arena *a);

void map_pb_map_to(const struct cluster_map *map, Ringmq__ClusterMap *out,
                   struct map_pb_arena *a);
/* @out: initialised (emptied first). */
int map_pb_map_from(const Ringmq__ClusterMap *pb, struct cluster_map *out);

/* A command decoded from protobuf, with the storage its pointers use. */
struct map_pb_cmd {
    struct map_sm_cmd cmd;
    struct cluster_map map;
    struct cluster_shard shard;
    struct cluster_plan plan;
    char group[CLUSTER_NAME_MAX];
};

void map_pb_cmd_to(const struct map_sm_cmd *c, Ringmq__MapCommand *out,
                   struct map_pb_arena *a);
/* @out is overwritten; free it with map_pb_cmd_clear() (also after -1). */
int map_pb_cmd_from(const Ringmq__MapCommand *pb, struct map_pb_cmd *out);
void map_pb_cmd_clear(struct map_pb_cmd *c);

void map_pb_result_to(const struct map_sm_result *r, Ringmq__MapResult *out);
int map_pb_result_from(const Ringmq__MapResult *pb, struct map_sm_result *out);

void map_pb_delta_to(const struct map_delta *d, Ringmq__MapDelta *out,
                     struct map_pb_arena *a);
/* @out: initialised (map_delta_init; emptied first). */
int map_pb_delta_from(const Ringmq__MapDelta *pb, struct map_delta *out);

#endif
