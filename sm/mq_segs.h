/*
 * mq_segs: where mq_sm puts message bodies (mq_sm.h, "Message bodies"):
 * the cursor and the table of segments in use. Part of mq_sm's replicated
 * state, so pure and deterministic: a record's place is a function of the
 * reservations before it.
 *
 * The table lists every segment with refs > 0, and the cursor's segment
 * once something was reserved in it, ascending (segments are only ever
 * added at the cursor, which only moves up: appends). A segment leaves it
 * when its last ref goes while the cursor is elsewhere, or when the cursor
 * leaves it with no ref; it is then put on the freed list, which mq_sm
 * hands to the command's result (mq_segs_take_freed).
 * Lookups are binary searches over the few segments in use (a 5 GB
 * backlog is about 80).
 */
#ifndef RINGMQ_MQ_SEGS_H
#define RINGMQ_MQ_SEGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/le.h"

/* Body records, defined here only: what the state reserves for a body
 * (a header, the body, padding to the alignment, within a segment) is
 * what node/mq_store writes there. mq_sm.h and mq_store.h name them
 * MQ_SM_* and MQ_STORE_*. */
#define MQ_SEGS_REC_HDR 8u
#define MQ_SEGS_REC_ALIGN 8u
#define MQ_SEGS_SEG_BYTES (64u * 1024 * 1024)

struct mq_seg {
    uint32_t seg;
    uint32_t refs; /* messages and outbox entries naming it */
    uint64_t used; /* bytes reserved in it */
};

struct mq_segs {
    uint32_t seg_bytes; /* segment size: MQ_SEGS_SEG_BYTES but in tests */
    uint32_t cur_seg;   /* >= 1 */
    uint64_t cur_off;
    struct mq_seg *v; /* ascending */
    size_t n;
    size_t cap;
    /* freed since the last mq_segs_take_freed(), ascending; not state */
    uint32_t *freed;
    size_t n_freed;
    size_t cap_freed;
};

/* @seg_bytes: a multiple of MQ_SEGS_REC_ALIGN, 0 = MQ_SEGS_SEG_BYTES. */
void mq_segs_init(struct mq_segs *s, uint32_t seg_bytes);
void mq_segs_free(struct mq_segs *s);

/* The record size of a body of @len bytes. */
uint64_t mq_segs_rec_len(uint32_t len);

/* Reserve the record of a body of @len bytes at the cursor (moving it
 * first if the record does not fit): its place, holding one ref. */
void mq_segs_place(struct mq_segs *s, uint32_t len, uint32_t *seg,
                   uint32_t *off);
/* One more / one less ref of @seg, which is in the table. */
void mq_segs_ref(struct mq_segs *s, uint32_t seg);
void mq_segs_unref(struct mq_segs *s, uint32_t seg);

/* The index of @seg in v, or SIZE_MAX if it is not in the table. */
size_t mq_segs_index(const struct mq_segs *s, uint32_t seg);

/* The freed list, handed over (NULL if empty; the caller frees it). */
uint32_t *mq_segs_take_freed(struct mq_segs *s, size_t *n);

/* Snapshot part: u32 seg_bytes | u32 cur_seg | u64 cur_off | u64 count
 * | count x (u32
 * seg | u32 refs | u64 used). Reading checks the table's shape (ascending,
 * below or at the cursor, the cursor's used is cur_off, the others have
 * refs and fit); the refs themselves are for the caller to check against
 * what names them. */
size_t mq_segs_snap_len(const struct mq_segs *s);
unsigned char *mq_segs_snap_put(const struct mq_segs *s, unsigned char *p);
bool mq_segs_snap_get(struct mq_segs *s, struct le_reader *r);

/* Abort on a broken invariant of the table's shape (as snap_get checks);
 * @refs: the refs a walk over the state counted for each v[i]. */
void mq_segs_check(const struct mq_segs *s, const uint32_t *refs);

#endif
