/*
 * ctl_plan: the coordinator of ring changes (docs/resharding.md): ringmqctl
 * shard add|remove|weight start a plan in the cluster map the meta group
 * holds and run it; ringmqctl plan status|pause|resume|abort look at and
 * steer the plan that runs.
 *
 * The coordinator holds no state. A plan in the map is a target ring; the
 * moves it needs are the arc diff of the map's ring and the target,
 * grouped by (source, target) shard, each under an id derived from (plan
 * id, source, target), so any run computes the same moves and asks the
 * shards where each stands (ctl_move). When every move is done it commits
 * the plan (the target becomes the map's ring, a new epoch) and installs
 * the new ring on every shard. A run killed at any point is resumed by
 * running the same command again (or plan resume).
 *
 * Direction: called by ringmqctl.c (the command table); calls ctl,
 * ctl_map, ctl_live and ctl_move. Output goes to stdout, errors to
 * stderr; returns an exit code (ctl.h): 0 when the plan is done,
 * EXIT_NEGATIVE when it stopped because it was paused, EXIT_ERROR with
 * the reason otherwise.
 */
#ifndef RINGMQ_TOOLS_CTL_PLAN_H
#define RINGMQ_TOOLS_CTL_PLAN_H

#include "tools/ctl.h"
#include "tools/ctl_map.h"

/* Default pace of imports: --rate BYTES_PER_S. */
#define CTL_PLAN_RATE_DEFAULT (32ULL * 1024 * 1024)

/* shard add NAME [--weight W] --members ID@RAFT@RPC[,...] |
 * shard remove NAME | shard weight NAME W (--cluster). */
int cmd_shard_plan(struct ctl *ctl, const struct ctl_map *m);

/* plan status|pause|resume|abort (--cluster). */
int cmd_plan(struct ctl *ctl, const struct ctl_map *m);

#endif
