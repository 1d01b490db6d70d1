/*
 * meta_rules: the rules of the meta group that span its two state
 * machines, the queue directory (sm/meta_sm) and the cluster map
 * (sm/map_sm), checked before a command is applied to either:
 *   - a queue is placed, or moved, only onto a shard the map has and that
 *     serves (joining and draining shards take no queue);
 *   - a shard that the directory still names (a queue placed on it, or
 *     moving to it) cannot start draining or leave the map: its queues
 *     are moved first (ringmqctl queue move).
 * Pure and deterministic, as the state machines: every replica refuses
 * the same commands. A refused command changes nothing.
 *
 * Threads and ownership: none; the state machines are borrowed.
 */
#ifndef RINGMQ_META_RULES_H
#define RINGMQ_META_RULES_H

#include <stdbool.h>

#include "sm/map_sm.h"
#include "sm/meta_sm.h"

#define META_RULES_NOT_SERVING                                              \
    "PRECONDITION_FAILED - no serving shard of that name"

/* Whether @c (any meta command) may go to meta_sm_apply; when not, @res
 * is the refusal (406, META_RULES_NOT_SERVING). */
bool meta_rules_directory_ok(const struct meta_sm *sm,
                             const struct map_sm *map,
                             const struct meta_sm_cmd *c,
                             struct meta_sm_result *res);

/* Whether @c (any map command) may go to map_sm_apply; when not, @res is
 * the refusal (MAP_SM_INVALID, with why). */
bool meta_rules_map_ok(const struct meta_sm *sm, const struct map_sm *map,
                       const struct map_sm_cmd *c, struct map_sm_result *res);

#endif
