/*
 * cache_export: a cache shard leader's answers to a move coordinator's
 * reads (CACHE_OP_EXPORT, sm/cache_move.h): the items of a move's arcs in
 * batches, the items of given keys, the digest of the arcs, the move's
 * state. They read the leader's state machine and go through no log.
 *
 * The items of a move's arcs are handed out from a listing of their keys
 * made at the first request (one scan of the cache), then by offset. The
 * listing lives only in this leader's memory: a new leader makes a new
 * one, under a new generation, and the coordinator starts its copy over
 * (items changed meanwhile are in the move's dirty set anyway; a key gone
 * from the cache is skipped: its deletion is in the dirty set too).
 *
 * Ownership: the export owns its listing (cache_export_free). Loop thread.
 */
#ifndef RINGMQ_CACHE_EXPORT_H
#define RINGMQ_CACHE_EXPORT_H

#include "sm/cache_op.h"
#include "sm/cache_sm.h"

struct cache_export;

struct cache_export *cache_export_new(void);
void cache_export_free(struct cache_export *e);

/* Answer @op (a CACHE_OP_EXPORT) from @sm into @res: CACHE_OK with a
 * cache_move_reply as value, or CACHE_BAD_REQUEST. */
void cache_export_read(struct cache_export *e, const struct cache_sm *sm,
                       const struct cache_op *op, struct cache_result *res);

#endif
