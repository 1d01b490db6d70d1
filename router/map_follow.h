/*
 * map_follow: the router's copy of the cluster map, kept current from the
 * meta group, which holds the map (sm/map_sm.h).
 *
 * A long poll (RPC MapWatch) at one member of the meta group at a time
 * asks for what changed after the copy's epoch and gets a delta (the
 * changed shards, removed names, meta's members and routers when they
 * changed): a change costs its own size, not the map's. Any replica
 * answers, so the poll stays where it is until that member fails, then
 * moves to the next member of meta (as the latest map lists them).
 *
 *   start: the seed map (the YAML) ──> first answer: the meta group's map,
 *   whatever its epoch (the file only bootstraps) ──> then deltas, each
 *   applied to a copy, checked (cluster_map_validate) and adopted only if
 *   its epoch is newer.
 *
 * Each adopted map is handed to @changed (borrowed for the call) on the
 * loop thread. While meta is unreachable the copy stays as it is and
 * traffic goes on with it (a map changes rarely; nodes refuse keys their
 * shard does not own, so a stale copy cannot misplace a write).
 *
 * Errors: map_follow_new fails (NULL, @errmsg) only on a seed without meta
 * members. Everything runs on the loop thread.
 */
#ifndef RINGMQ_MAP_FOLLOW_H
#define RINGMQ_MAP_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "sm/cluster_map.h"

/* The long poll's wait at the node, and the pause after a failure. */
#define MAP_FOLLOW_WAIT_MS 10000
#define MAP_FOLLOW_RETRY_MS 200

struct map_follow_config {
    const struct cluster_map *seed; /* copied */
    void (*changed)(void *data, const struct cluster_map *map);
    void *data;
};

struct map_follow;

struct map_follow *map_follow_new(uv_loop_t *loop,
                                  const struct map_follow_config *cfg,
                                  char *errmsg, size_t errlen);

/* The current copy; valid until the next change or close. */
const struct cluster_map *map_follow_map(const struct map_follow *f);

/* Counters since start. */
struct map_follow_counters {
    uint64_t changes;  /* maps adopted */
    uint64_t answers;  /* watch answers */
    uint64_t failures; /* watches that failed (member down, refused) */
};
void map_follow_counters(const struct map_follow *f,
                         struct map_follow_counters *out);

/* Stop the watch; freed before @cb(@data) runs (@cb may be NULL). */
void map_follow_close(struct map_follow *f, void (*cb)(void *data),
                      void *data);

#endif
