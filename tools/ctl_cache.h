/*
 * ctl_cache: ringmqctl's single cache operations (get, set, cas, incr,
 * ..., flush_all) against one group, following NOT_LEADER hints.
 *
 * Direction: called by ringmqctl.c (the command table); calls only the
 * shared modules ctl and ctl_map (ctl.h has the picture). Output goes to
 * stdout, errors to stderr; returns an exit code (ctl.h).
 */
#ifndef RINGMQ_TOOLS_CTL_CACHE_H
#define RINGMQ_TOOLS_CTL_CACHE_H

#include "tools/ctl.h"

/* @args: OP ARGS... (a leading "cache" already stripped), @n of them
 * (at least one). Exit code 1 for a negative outcome (NOT_STORED, EXISTS,
 * NOT_FOUND). */
int cmd_cache(struct ctl *ctl, const char *const *args, int n);

#endif
