/*
 * mq_outbox: the dead letters of one queue shard that the edge has not yet
 * confirmed republished (the at-least-once dead-lettering of mq_sm.h).
 *
 * Part of mq_sm's replicated state, so pure and deterministic: entries are
 * named by ids from a per-shard counter (1, 2, ...) and kept in id order;
 * each remembers when (replicated clock) it was last handed to an edge,
 * its claim. mq_sm adds an entry where a message with a dead-letter
 * exchange leaves its queue, hands out entries whose claim is old on
 * EXPIRE, and removes them on DL_SETTLE.
 *
 * Bodies: an entry keeps the ref (seg, off, body_len) of its message's
 * body in the body store (mq_sm.h, "Message bodies"), and mq_sm counts it
 * as a ref of that segment; or, while mq_sm keeps bodies inline (before
 * its switch to external bodies), seg 0 and the body itself after the
 * names.
 *
 * Bounded: at most MQ_OUTBOX_MAX entries and MQ_OUTBOX_BYTES_MAX bytes of
 * names and bodies (body bytes count wherever they are kept: the bound
 * decides which dead letters are kept, and so is replicated). A dead
 * letter that does not fit is not kept (counted in dropped): it is
 * republished once from the result of the command that made it, at most
 * once, as before the outbox.
 *
 * Settled entries leave holes in the id-ordered array, compacted once
 * they are half of it, so a settle is O(log n) amortized. The entries are
 * also linked in claim order (derived, rebuilt by a restore), so the next
 * time one is due, and an EXPIRE with none due, are O(1).
 */
#ifndef RINGMQ_MQ_OUTBOX_H
#define RINGMQ_MQ_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/le.h"

#define MQ_OUTBOX_MAX 65536
#define MQ_OUTBOX_BYTES_MAX (256u * 1024 * 1024)

struct mq_outbox_entry {
    uint64_t id;
    uint64_t claim_ms; /* last handed out (replicated clock) */
    uint64_t msg_id;
    uint64_t gen;      /* the source queue's placement gen */
    uint8_t reason;    /* enum mq_sm_dl_reason */
    bool has_dlrk;
    uint8_t vhost_len;
    uint8_t queue_len;
    uint8_t dlx_len;
    uint8_t dlrk_len;
    uint32_t body_len;
    uint32_t seg; /* the body's ref; 0: the body is inline, in data */
    uint32_t off;
    /* Claim order, oldest first (equal claims: as claimed or restored). */
    struct mq_outbox_entry *claim_prev;
    struct mq_outbox_entry *claim_next;
    char data[]; /* vhost, queue, dlx, dlrk; the body if inline */
};

struct mq_outbox {
    struct mq_outbox_entry **v; /* id ascending; NULL: settled (a hole) */
    uint64_t *ids;              /* v[i]'s id, also for holes */
    size_t n;                   /* slots used, holes included */
    size_t cap;
    size_t holes;
    uint64_t bytes;   /* data bytes of the entries kept */
    uint64_t next_id; /* the id of the next entry kept */
    uint64_t dropped; /* dead letters not kept: the outbox was full */
    struct mq_outbox_entry *claim_first; /* the oldest claim */
    struct mq_outbox_entry *claim_last;
};

/* Names (borrowed) and body of a new entry: its ref, or with seg 0 the
 * bytes at body (borrowed, copied into the entry). */
struct mq_outbox_src {
    uint8_t reason;
    bool has_dlrk;
    uint64_t msg_id;
    uint64_t gen;
    const char *names; /* vhost, queue, dlx, dlrk back to back */
    uint8_t vhost_len;
    uint8_t queue_len;
    uint8_t dlx_len;
    uint8_t dlrk_len;
    uint32_t seg;
    uint32_t off;
    const void *body; /* seg 0 only */
    uint32_t body_len;
};

void mq_outbox_init(struct mq_outbox *o);
void mq_outbox_free(struct mq_outbox *o);

static inline size_t mq_outbox_names_len(const struct mq_outbox_entry *e)
{
    return (size_t)e->vhost_len + e->queue_len + e->dlx_len + e->dlrk_len;
}

/* The inline body of @e, or NULL if @e names it by a ref. */
static inline const void *mq_outbox_body(const struct mq_outbox_entry *e)
{
    return e->seg == 0 ? e->data + mq_outbox_names_len(e) : NULL;
}

/* A new entry (id 0: not kept) from @src; the caller owns it until
 * mq_outbox_add() keeps it. */
struct mq_outbox_entry *mq_outbox_entry_new(const struct mq_outbox_src *src);

/* Keep @e with the next id, claimed at @now_ms: true. False when it does
 * not fit (counted in dropped; @e stays the caller's, id 0). @now_ms is
 * not before any claim made so far (the replicated clock), which keeps
 * this O(1). */
bool mq_outbox_add(struct mq_outbox *o, struct mq_outbox_entry *e,
                   uint64_t now_ms);

/* Remove the entries with these ids; unknown or settled ids are ignored
 * (a settle may be repeated). Each removed entry is shown to @gone (may
 * be NULL) before it is freed. Returns how many were removed. */
size_t mq_outbox_settle(struct mq_outbox *o, const uint64_t *ids, size_t n,
                        void (*gone)(void *arg,
                                     const struct mq_outbox_entry *e),
                        void *arg);

/* Hand out entries claimed at or before @now_ms - @claim_ms, in id
 * order: each is claimed at @now_ms and given to @fn, until @max entries
 * or @max_bytes of bodies (at least one entry) are handed. Returns how
 * many. */
size_t mq_outbox_claim_due(struct mq_outbox *o, uint64_t now_ms,
                           uint64_t claim_ms, size_t max, uint64_t max_bytes,
                           void (*fn)(void *arg,
                                      const struct mq_outbox_entry *e),
                           void *arg);

/* The earliest time at which mq_outbox_claim_due() with @claim_ms would
 * hand out an entry (its claim + @claim_ms), UINT64_MAX if none is kept.
 * O(1). */
uint64_t mq_outbox_next_due(const struct mq_outbox *o, uint64_t claim_ms);

/* Entries kept. */
static inline size_t mq_outbox_count(const struct mq_outbox *o)
{
    return o->n - o->holes;
}

/* The kept entry after slot *@pos (start with 0), in id order, or NULL;
 * advances *@pos. */
const struct mq_outbox_entry *mq_outbox_next(const struct mq_outbox *o,
                                             size_t *pos);

/* Give every entry, in id order, its body's ref: @place reserves the
 * body's record (the entry's body is inline: mq_outbox_body()) and takes
 * the entry, which stays valid until the caller frees it; the outbox
 * keeps a copy of it with the ref instead (names only), in its place. */
void mq_outbox_externalize(struct mq_outbox *o,
                           void (*place)(void *arg,
                                         struct mq_outbox_entry *old,
                                         uint32_t *seg, uint32_t *off),
                           void *arg);

/* Snapshot part: bytes it takes, writing them, reading them into an empty
 * outbox (false: corrupt; @o then holds what was read, for the caller to
 * free). @inline_bodies: the entries carry their bodies (mq_sm snapshot
 * version 5, and 7 with bodies inline), else their refs; every entry of
 * @o must be of that form. */
size_t mq_outbox_snap_len(const struct mq_outbox *o, bool inline_bodies);
unsigned char *mq_outbox_snap_put(const struct mq_outbox *o, unsigned char *p,
                                  bool inline_bodies);
bool mq_outbox_snap_get(struct mq_outbox *o, struct le_reader *r,
                        bool inline_bodies);

/* Abort on a broken invariant (ids ascending and below next_id, counts and
 * bytes agree, within the bounds). */
void mq_outbox_check(const struct mq_outbox *o);

#endif
