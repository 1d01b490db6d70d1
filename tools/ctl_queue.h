/*
 * ctl_queue: ringmqctl queue where|find|move|abort: where a queue lives (its
 * entry in the meta group's queue directory; find: which shards hold it),
 * and moving one queue to another shard (docs/resharding.md, "Moving a queue").
 *
 * A move keeps no state in the tool: every step is a command in the meta
 * log or in one of the two shards' logs, each safe to repeat, so running
 * `queue move` again after an interruption finishes the move (or finds it
 * done), and `queue abort` takes back a move the old shard still holds.
 *
 * Direction: called by ringmqctl.c; calls ctl and ctl_live. Errors are
 * printed; functions return 0 or an exit code (ctl.h).
 */
#ifndef RINGMQ_TOOLS_CTL_QUEUE_H
#define RINGMQ_TOOLS_CTL_QUEUE_H

#include "tools/ctl.h"
#include "tools/ctl_map.h"

/* queue where QUEUE | queue find QUEUE | queue move QUEUE SHARD |
 * queue abort QUEUE
 * (--cluster; the vhost is "/"). */
int cmd_queue(struct ctl *ctl, const struct ctl_map *m);

#endif
