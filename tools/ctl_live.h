/*
 * ctl_live: the cluster map as the meta group holds it (sm/map_sm.h), as
 * opposed to the --cluster file, which only bootstraps it and tells
 * ringmqctl where the meta group is. `ringmqctl map` prints it; member and
 * shard commands record their changes in it.
 *
 * Direction: called by ringmqctl.c and the command modules; calls only
 * ctl. Errors are printed; functions return 0 or EXIT_ERROR.
 */
#ifndef RINGMQ_TOOLS_CTL_LIVE_H
#define RINGMQ_TOOLS_CTL_LIVE_H

#include "sm/map_sm.h"
#include "tools/ctl.h"

/* The meta group of @seed as a "shard" (name "meta", its members), for
 * ctl_call_leader. */
void ctl_live_meta_group(const struct cluster_map *seed,
                         struct cluster_shard *out);

/* The map from any replica of @seed's meta group into @out (initialised),
 * within --seconds. */
int ctl_live_fetch(struct ctl *ctl, const struct cluster_map *seed,
                   struct cluster_map *out);

/* Apply @cmd at the meta leader, asked again while no leader answers
 * (map commands are idempotent or compare-and-set). 0 with @res, whose
 * code may still refuse the change, or EXIT_ERROR. */
int ctl_live_change(struct ctl *ctl, const struct cluster_map *seed,
                    const struct map_sm_cmd *cmd, struct map_sm_result *res);

/* `map`: print the live map. */
int cmd_map(struct ctl *ctl, const struct cluster_map *seed);

#endif
