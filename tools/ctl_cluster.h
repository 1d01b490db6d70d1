/*
 * ctl_cluster: ringmqctl's map commands: owner (which shard owns a key)
 * and cluster (every shard replica of the map, from each node's status).
 *
 * Direction: called by ringmqctl.c (the command table); calls only the
 * shared modules ctl and ctl_map (ctl.h has the picture). Output goes to
 * stdout, errors to stderr; returns an exit code (ctl.h).
 */
#ifndef RINGMQ_TOOLS_CTL_CLUSTER_H
#define RINGMQ_TOOLS_CTL_CLUSTER_H

#include "tools/ctl.h"
#include "tools/ctl_map.h"

/* owner KEY... | owner - (keys from stdin). Needs no connection. */
int cmd_owner(const struct ctl_map *m, const struct opts *o);

/* cluster: one row per shard replica. */
int cmd_cluster(struct ctl *ctl, const struct ctl_map *m);

#endif
