/*
 * map_sm: the cluster map as replicated state, applied by the meta group
 * (node/meta_svc), and the deltas its followers (routers, nodes, ringmqctl)
 * keep their copies current with.
 *
 *   - The map's epoch is its version: 0 before INIT, then the bootstrap
 *     map's epoch, +1 for every command that changes something. Every
 *     command but INIT carries the epoch it was decided on
 *     (expected_epoch, a compare-and-set; 0 = any): a command decided on
 *     an older map is refused with MAP_SM_CONFLICT and changes nothing, so
 *     two operators (or a stale coordinator) cannot undo each other.
 *   - A command that would leave an invalid map (cluster_map_validate) is
 *     refused with MAP_SM_INVALID and the reason. One that changes nothing
 *     (a member added twice) succeeds without a new epoch: commands can be
 *     repeated after an unknown outcome.
 *   - Shards are appended and removal keeps the others' order, so a
 *     follower rebuilds the same ring (ketama ties go by index).
 *
 * Deltas. Each shard remembers the epoch it was added and last changed
 * at, and the last MAP_SM_TOMBSTONES removed shards are kept with their
 * epoch. A follower at epoch K gets what changed after K: the removed
 * names, the shards changed or added (in map order), and meta's members,
 * the routers and the plan when they changed. That costs the size of the change,
 * not of the map. A follower too far behind (a removal it would miss was
 * forgotten) or at 0 gets the whole map. map_delta_apply() brings a copy
 * at K to the delta's epoch.
 *
 * Pure: no clock, no I/O. Memory from xmalloc (out of memory aborts).
 * Ownership: a command's pointers are borrowed for the call; a delta owns
 * its copies (map_delta_clear). Not thread-safe.
 */
#ifndef RINGMQ_MAP_SM_H
#define RINGMQ_MAP_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/cluster_map.h"

/* Removed shards remembered for deltas. */
#define MAP_SM_TOMBSTONES 256
/* The group name member commands use for the meta group itself. */
#define MAP_SM_META "meta"

enum map_sm_cmd_type {
    MAP_SM_INIT = 0,      /* map: the whole map, only on an empty state */
    MAP_SM_MEMBER_ADD,    /* group, member */
    MAP_SM_MEMBER_REMOVE, /* group, member.id */
    MAP_SM_SHARD_ADD,     /* shard (appended) */
    MAP_SM_SHARD_WEIGHT,  /* group, weight */
    MAP_SM_SHARD_STATE,   /* group, state */
    MAP_SM_SHARD_REMOVE,  /* group */
    MAP_SM_PLAN_START,    /* plan: its target (id and state set here) */
    MAP_SM_PLAN_STATE,    /* plan_state: running or paused */
    MAP_SM_PLAN_COMMIT,   /* plan_id: the ring becomes the target: target
                           * weights, joining shards serve, the others
                           * (draining) leave the map; the plan ends */
    MAP_SM_PLAN_ABORT,    /* plan_id: the plan ends, the ring stays */
    MAP_SM_CMD__COUNT
};

struct map_sm_cmd {
    enum map_sm_cmd_type type;
    uint64_t expected_epoch; /* 0 = any; ignored by INIT */
    const struct cluster_map *map;     /* INIT */
    const char *group;                 /* a shard's name, or MAP_SM_META */
    struct cluster_member member;      /* MEMBER_ADD; MEMBER_REMOVE: id */
    const struct cluster_shard *shard; /* SHARD_ADD */
    unsigned weight;                   /* SHARD_WEIGHT */
    enum cluster_shard_state state;    /* SHARD_STATE */
    const struct cluster_plan *plan;   /* PLAN_START: target */
    enum cluster_plan_state plan_state; /* PLAN_STATE */
    uint64_t plan_id;                  /* PLAN_STATE, COMMIT, ABORT */
};

enum map_sm_code {
    MAP_SM_OK = 0,
    MAP_SM_CONFLICT, /* expected_epoch is not the map's (INIT: a map exists) */
    MAP_SM_INVALID,  /* the change would make the map invalid: @why */
    MAP_SM_NOT_FOUND /* no such group or member */
};

struct map_sm_result {
    enum map_sm_code code;
    bool changed;
    uint64_t epoch; /* the map's epoch after the command */
    char why[192];  /* "" when OK */
};

struct map_sm;

struct map_sm *map_sm_new(void);
void map_sm_free(struct map_sm *sm);

void map_sm_apply(struct map_sm *sm, const struct map_sm_cmd *cmd,
                  struct map_sm_result *res);

uint64_t map_sm_epoch(const struct map_sm *sm);
/* The current map (epoch 0 and no shards before INIT). Borrowed: valid
 * until the next apply or restore. */
const struct cluster_map *map_sm_map(const struct map_sm *sm);

/* What changed after epoch @known. */
struct map_delta {
    uint64_t from; /* the follower's epoch it applies to (0 if full) */
    uint64_t epoch;
    bool full; /* @part is the whole map */
    /* the shards added or changed, in map order (full: all), and meta's
     * members and the routers when @has_meta / @has_routers */
    struct cluster_map part;
    bool has_meta;
    bool has_routers;
    bool has_plan; /* part.plan is the plan now */
    bool has_queue_ring; /* part.queue_ring is the queue ring now */
    char (*removed)[CLUSTER_NAME_MAX];
    unsigned n_removed;
};

void map_delta_init(struct map_delta *d);
void map_delta_clear(struct map_delta *d);
/* @d (initialised) := what a follower at @known needs. Nothing when
 * @known >= the map's epoch (d->epoch is the map's: a follower ahead of
 * this replica ignores it). */
void map_sm_delta(const struct map_sm *sm, uint64_t known,
                  struct map_delta *d);

/* Bring @view (a follower's copy) up to @d. A delta for another epoch
 * than @view's (from != view->epoch, not full) or older is refused (-1,
 * @view unchanged): ask again with the view's epoch. 0 when applied or
 * nothing to do. */
int map_delta_apply(struct cluster_map *view, const struct map_delta *d);

/* 64-bit hash of the snapshot bytes: equal on replicas that applied the
 * same commands. */
uint64_t map_sm_digest(const struct map_sm *sm);

/* Whole state into one buffer from @alloc. 0 or -1 (alloc failed). */
int map_sm_snapshot(const struct map_sm *sm, void *(*alloc)(size_t),
                    void **out, size_t *out_len);
/* Replace the whole state; @buf borrowed; on error (-1) the state is
 * kept. */
int map_sm_restore(struct map_sm *sm, const void *buf, size_t len);

#endif
