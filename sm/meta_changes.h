/*
 * meta_changes: the recent changes of a meta_sm, so that a copy of the
 * state (a router's view) follows it by the commands that changed it
 * rather than by whole states.
 *
 * Every command that changes a meta_sm moves its version by exactly one,
 * and meta_sm_apply is deterministic: a copy at version K that applies
 * the commands that made versions K+1..V, in order, holds version V, the
 * same state as the original. A replica records each command that
 * changed its state here, as its apply runs (meta_changes_add); every
 * replica applies the same log, so any one of them can tell a watcher
 * what changed since K, as long as its ring still holds K+1. The ring is
 * bounded (the oldest changes go first) and is not part of the state: a
 * replica that restored a snapshot starts it empty, and a watcher it
 * cannot serve from the ring gets the whole state.
 *
 * An answer for a watcher (meta_changes_answer) is therefore either the
 * changes since its version, or the whole state (meta_sm_snapshot bytes),
 * or nothing (it is up to date); meta_changes_take applies either kind to
 * a copy. The encoding of changes is this module's own, little-endian,
 * checked on decode (answers cross the network): see meta_changes.c.
 *
 * Pure, like meta_sm: no loop, no clock. Memory from xmalloc.
 */
#ifndef RINGMQ_META_CHANGES_H
#define RINGMQ_META_CHANGES_H

#include <stddef.h>
#include <stdint.h>

#include "sm/meta_sm.h"

/* Bounds of a replica's ring: enough for a burst of declarations
 * between two watches of a router, small next to any meta state worth
 * not sending whole. */
#define META_CHANGES_KEEP 4096
#define META_CHANGES_KEEP_BYTES (1u << 20)

struct meta_changes;

/* At most @max_changes changes and @max_bytes encoded bytes (each at
 * least 1; the newest change is kept whatever its size). */
struct meta_changes *meta_changes_new(size_t max_changes, size_t max_bytes);
void meta_changes_free(struct meta_changes *ch);

/* @cmd changed the state to @version (meta_sm_result.version with
 * changed true). A version that does not follow the newest recorded one
 * (the state was restored in between) empties the ring first. */
void meta_changes_add(struct meta_changes *ch, const struct meta_sm_cmd *cmd,
                      uint64_t version);
/* The state was replaced (a snapshot restored): forget every change. */
void meta_changes_reset(struct meta_changes *ch);

/* Changes held, and their encoded bytes. */
size_t meta_changes_count(const struct meta_changes *ch);
size_t meta_changes_bytes(const struct meta_changes *ch);

/* What a watcher whose copy is at @known needs to reach @sm (whose
 * changes @ch records; NULL: none recorded). Exactly one of:
 *   - nothing: @known is @sm's version or newer (*state and *changes
 *     NULL);
 *   - *changes (encoded, allocated with @alloc): @ch holds every change
 *     after @known up to @sm's version and @known is not 0;
 *   - *state (meta_sm_snapshot bytes, allocated with @alloc): otherwise
 *     (@known 0 asks for the whole state).
 * 0, or -1 (allocation or snapshot failed; nothing allocated). */
int meta_changes_answer(const struct meta_changes *ch,
                        const struct meta_sm *sm, uint64_t known,
                        void *(*alloc)(size_t), void **state,
                        size_t *state_len, void **changes,
                        size_t *changes_len);

/* Bring @copy to @version with an answer of meta_changes_answer: @state
 * (restored if @version is newer than @copy's) or @changes (those at or
 * below @copy's version skipped; the rest must continue it one version
 * at a time and each must land on its version), or neither (nothing to
 * do). Buffers borrowed. 0, or -1: the answer does not fit @copy (a gap,
 * a corrupt buffer, a command that did not land on its version, a state
 * that does not restore); @copy may then hold part of the changes: load
 * it whole again. */
int meta_changes_take(struct meta_sm *copy, uint64_t version,
                      const void *state, size_t state_len,
                      const void *changes, size_t changes_len);

#endif
