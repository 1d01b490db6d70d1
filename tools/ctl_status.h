/*
 * ctl_status: ringmqctl status and digest: the groups of one node.
 *
 * Direction: called by ringmqctl.c (the command table); calls only the
 * shared modules ctl and ctl_map (ctl.h has the picture). Output goes to
 * stdout, errors to stderr; returns an exit code (ctl.h).
 */
#ifndef RINGMQ_TOOLS_CTL_STATUS_H
#define RINGMQ_TOOLS_CTL_STATUS_H

#include <stdbool.h>

#include "tools/ctl.h"

/* status [--format table|kv] (@digest_only false) or digest (true). */
int cmd_status(struct ctl *ctl, bool digest_only);

#endif
