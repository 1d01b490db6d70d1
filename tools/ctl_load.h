/*
 * ctl_load: ringmqctl load and verify: many keys written or read back,
 * pipelined, following the leader across the --node list.
 *
 * Direction: called by ringmqctl.c (the command table); calls only the
 * shared modules ctl and ctl_map (ctl.h has the picture). Output goes to
 * stdout, errors to stderr; returns an exit code (ctl.h).
 */
#ifndef RINGMQ_TOOLS_CTL_LOAD_H
#define RINGMQ_TOOLS_CTL_LOAD_H

#include <stdbool.h>

#include "tools/ctl.h"

/* load (@verify false) or verify (true), with the --acked FILE. Runs
 * ctl->loop with clients of its own. */
int cmd_load(struct ctl *ctl, bool verify);

#endif
