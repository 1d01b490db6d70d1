/*
 * ctl_shard: ringmqctl shard set: change a shard's settings, the ones that
 * change what apply does (memory limit, largest item). They live in the
 * shard's log (a CONFIG command of its cache group), not in node flags, so
 * every replica applies the same change at the same point.
 *
 * Direction: called by ringmqctl.c (the command table); calls only the
 * shared modules ctl and ctl_map (ctl.h has the picture). Output goes to
 * stdout, errors to stderr; returns an exit code (ctl.h).
 */
#ifndef RINGMQ_TOOLS_CTL_SHARD_H
#define RINGMQ_TOOLS_CTL_SHARD_H

#include "tools/ctl.h"
#include "tools/ctl_map.h"

/* shard set SHARD memory-limit SIZE [item-size-max SIZE] (--cluster). */
int cmd_shard(struct ctl *ctl, const struct ctl_map *m);

#endif
