/*
 * ctl_member: ringmqctl member add|remove|list: change and list the
 * members of a shard's Raft groups.
 *
 * Direction: called by ringmqctl.c (the command table); calls only the
 * shared modules ctl and ctl_map (ctl.h has the picture). Output goes to
 * stdout, errors to stderr; returns an exit code (ctl.h).
 */
#ifndef RINGMQ_TOOLS_CTL_MEMBER_H
#define RINGMQ_TOOLS_CTL_MEMBER_H

#include "tools/ctl.h"
#include "tools/ctl_map.h"

/* member add|remove SHARD ID, or member list SHARD (--cluster). */
int cmd_member(struct ctl *ctl, const struct ctl_map *m);

#endif
