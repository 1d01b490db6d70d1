/*
 * ctl_move: one move of cache keys between two shards, driven from
 * ringmqctl (sm/cache_move.h has the protocol, docs/resharding.md the
 * design). A move takes a set of arcs from shard S to shard T under a
 * move id; this module issues its steps to each shard's leader as
 * ordinary cache RPCs and holds no state of its own between runs: every
 * step is idempotent at the shards, and a run first asks both shards
 * where the move stands.
 *
 *   T IN_BEGIN -> S OUT_BEGIN -> copy (S EXPORT RANGES -> T IMPORT)
 *   -> catch up (S CUT -> S EXPORT KEYS -> T IMPORT, while it shrinks)
 *   -> S FENCE -> last catch-up (until a CUT takes nothing)
 *   -> T DIGEST -> S HANDOFF(digest) -> T ACTIVATE -> S PURGE
 *
 * A refused hand-off (a flush_all broke the move at S, or the digests
 * differ) aborts the move at both shards and starts it again, a few
 * times at most. A move found half done by an earlier run that cannot be
 * continued safely (the earlier run's last catch-up may have been lost)
 * is aborted and started again; one handed off is finished.
 *
 * Direction: called by ctl_plan; calls only ctl. Progress goes to stdout,
 * errors to stderr; functions return 0, CTL_MOVE_STOPPED or EXIT_ERROR.
 */
#ifndef RINGMQ_TOOLS_CTL_MOVE_H
#define RINGMQ_TOOLS_CTL_MOVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/cache_move.h"
#include "sm/cluster_map.h"
#include "tools/ctl.h"

/* A run stopped because its stop hook asked (the plan was paused). */
#define CTL_MOVE_STOPPED 3

/* One move. Everything is borrowed for the calls it is passed to. */
struct ctl_move {
    uint64_t id; /* nonzero */
    const struct cluster_shard *from;
    const struct cluster_shard *to;
    const struct arc *arcs; /* sorted, disjoint */
    size_t n_arcs;
};

/* Asked where stopping is harmless (never between FENCE and HANDOFF):
 * true stops the run. */
typedef bool (*ctl_move_stop_fn)(void *data);

struct ctl_mover;

/* A mover on @ctl: it keeps a connection to each shard's leader it found.
 * @rate: bytes per second imported at most (0 = no limit). @stop may be
 * NULL. */
struct ctl_mover *ctl_mover_new(struct ctl *ctl, uint64_t rate,
                                ctl_move_stop_fn stop, void *stop_data);
void ctl_mover_free(struct ctl_mover *mv);

/* Where @m stands at S and at T. 0 or EXIT_ERROR. */
int ctl_move_state(struct ctl_mover *mv, const struct ctl_move *m,
                   enum cache_move_state *at_from,
                   enum cache_move_state *at_to);

/* Whether a move in these states is finished (handed off and purged). */
bool ctl_move_done(enum cache_move_state at_from, enum cache_move_state at_to);

/* Run @m to the end from wherever it stands; prints a line when it is
 * done ("move s1->s3: 83 arcs, 1234 keys copied, handed off"). 0,
 * CTL_MOVE_STOPPED (the move was aborted at both shards first), or
 * EXIT_ERROR. */
int ctl_move_run(struct ctl_mover *mv, const struct ctl_move *m);

/* A move handed off goes forward only: ACTIVATE at T, PURGE at S. */
int ctl_move_finish(struct ctl_mover *mv, const struct ctl_move *m);

/* ABORT at S, then at T (a move not handed off). */
int ctl_move_abort(struct ctl_mover *mv, const struct ctl_move *m);

/* Install @map's ring spec on @shard's cache group (CACHE_OP_RING; the
 * shard takes it only if its epoch is newer than its own). */
int ctl_move_install_ring(struct ctl_mover *mv, const struct cluster_map *map,
                          const struct cluster_shard *shard);

/* A harmless read answered only by @shard's leader (EXPORT STATE), asked
 * until one answers or --seconds pass. 0 or EXIT_ERROR. */
int ctl_move_wait_leader(struct ctl_mover *mv,
                         const struct cluster_shard *shard);

#endif
