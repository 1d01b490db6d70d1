/*
 * cache_snap: the items part of an incremental snapshot of a cache shard.
 * Internal to sm/cache_sm (cross-file symbols use the cache__ prefix);
 * cache_sm.c is the only user.
 *
 * At begin the snapshot stands at one point of the log, N. It writes the
 * items that were live at N, oldest-written first, as the records of the
 * snapshot format (cache_sm.c), a slice at a time, while apply goes on
 * changing the state. It reads two sources, merged by write-order key
 * (cache_item.order, which only grows along the write-order list):
 *
 *   - the live list from the cursor on: items not changed since N. Every
 *     item of the list from the cursor up to order last_order is pending
 *     (live at N, not written yet): nothing is ever inserted in the middle
 *     of the list, and whatever is written, touched or moved after N gets
 *     an order above last_order;
 *   - saved items, in a min-heap by order: the before-images of pending
 *     items that apply removed (the item itself, handed over instead of
 *     freed) or is about to change in place (a copy), so the snapshot
 *     still writes them as they were at N.
 *
 * So cache_sm calls cache__snap_pending before it frees, changes or moves
 * an item, and cache__snap_save (removal) or cache__snap_save_copy
 * (in-place change) when it is. A record may be split across steps: the
 * record being written is always the smallest order of both sources, so
 * the offset into it survives the item being saved in the middle.
 *
 * Costs: begin O(1); a step O(bytes written + saved items popped * log);
 * a save O(log saved) plus, for a copy, the item's size. Saved items are
 * freed as they are written.
 */
#ifndef RINGMQ_CACHE_SNAP_H
#define RINGMQ_CACHE_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/cache_table.h"

/* key_len, flags, value_len, exp_ms, cas: the fixed part of a record */
#define CACHE_SNAP_ITEM_FIXED (1 + 4 + 4 + 8 + 8)

struct cache__snap {
    struct cache_item *cursor; /* the oldest pending live item, or NULL */
    uint64_t last_order;       /* the newest item at N */
    struct cache_item **heap;  /* saved items, min-heap by order; owned */
    size_t n_heap, cap_heap;
    size_t rec_off;            /* bytes of the next record already written */
    uint64_t items_left;       /* records not yet whole */
};

/* Start at the state as it is now: @oldest is the list's oldest item and
 * @newest its newest (NULL, NULL: no items); @count items in all. */
void cache__snap_init(struct cache__snap *s, struct cache_item *oldest,
                      struct cache_item *newest, uint64_t count);
/* Free what is saved (a snapshot abandoned or finished). */
void cache__snap_close(struct cache__snap *s);

/* @it, a live item, is live at N and not written yet. */
static inline bool cache__snap_pending(const struct cache__snap *s,
                                       const struct cache_item *it)
{
    return s->cursor != NULL && it->order >= s->cursor->order &&
           it->order <= s->last_order;
}

/* A pending @it leaves the state: the snapshot takes it (the caller
 * unlinks it and must not free it). Call before unlinking. */
void cache__snap_save(struct cache__snap *s, struct cache_item *it);
/* A pending @it is about to change in place or move: the snapshot keeps
 * a copy of it as it is now. */
void cache__snap_save_copy(struct cache__snap *s, struct cache_item *it);

/* Write the next records (a last one possibly cut at @room) into @out.
 * Returns the bytes written: 0 only when no record is left. */
size_t cache__snap_step(struct cache__snap *s, unsigned char *out,
                        size_t room);

#endif
