/*
 * mq_ranges: a set of byte ranges of body segments, (seg, off, len), kept
 * sorted by (seg, off) and disjoint: the ranges a queue replica's body
 * store lacks (node/mq_store.h, "Missing ranges"), and its file form.
 *
 * File form (the record bodies/missing): "RMQMISS1", u32 count, count x
 * (u32 seg, u32 off, u32 len), u32 crc32 (zlib) of everything before; all
 * little-endian. Decoding trusts nothing: a form that does not check is
 * refused whole.
 *
 * A handful of ranges is the rule (one per segment to fetch): lookups
 * scan.
 */
#ifndef RINGMQ_MQ_RANGES_H
#define RINGMQ_MQ_RANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_range {
    uint32_t seg;
    uint32_t off;
    uint32_t len; /* > 0 */
};

struct mq_ranges {
    struct mq_range *v;
    size_t n;
    size_t cap;
};

/* Add [off, off + len) of @seg, disjoint from every range there (len 0:
 * nothing). */
void mq_ranges_add(struct mq_ranges *r, uint32_t seg, uint32_t off,
                   uint32_t len);
/* Take [off, off + len) of @seg out (a range may split in two). Returns
 * how many ranges went completely. */
unsigned mq_ranges_subtract(struct mq_ranges *r, uint32_t seg, uint64_t off,
                            uint64_t len);
/* Drop every range of @seg. */
void mq_ranges_drop_seg(struct mq_ranges *r, uint32_t seg);
/* The first range of @seg that ends after @off, or NULL. */
const struct mq_range *mq_ranges_from(const struct mq_ranges *r, uint32_t seg,
                                      uint64_t off);
/* Does any range overlap [off, off + len) of @seg? */
bool mq_ranges_overlap(const struct mq_ranges *r, uint32_t seg, uint64_t off,
                       uint64_t len);
uint64_t mq_ranges_bytes(const struct mq_ranges *r);
/* Empty it and free its memory. */
void mq_ranges_clear(struct mq_ranges *r);

/* The file form: a malloc'd buffer (*@out, *@len). */
void mq_ranges_encode(const struct mq_ranges *r, unsigned char **out,
                      size_t *len);
/* Replace @r's ranges with those of @bytes: 0, or -1 (@r left empty) when
 * the form does not check. */
int mq_ranges_decode(struct mq_ranges *r, const unsigned char *bytes,
                     size_t len);

#endif
