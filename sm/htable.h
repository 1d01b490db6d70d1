/*
 * htable: an intrusive chained hash table for the state machines' indexes.
 *
 * Elements embed a struct hnode whose hash the caller sets before
 * ht_insert; lookups walk ht_chain(t, hash) and compare keys on every
 * entry (chains mix hashes). Power-of-two buckets, doubled in one go when
 * the count exceeds them, never shrunk. The layout depends on growth
 * history, so nothing replicated may depend on it: walk a list of your
 * own for any order that counts. Out of memory aborts (xcalloc).
 */
#ifndef RINGMQ_HTABLE_H
#define RINGMQ_HTABLE_H

#include <stddef.h>
#include <stdint.h>

struct hnode {
    struct hnode *next;
    uint64_t hash;
};

struct htable {
    struct hnode **b;
    size_t mask;
    size_t count;
};

/* At least @hint buckets (16 at least). Returns 0. */
int ht_init(struct htable *t, size_t hint);
/* Frees the buckets, not the elements. */
void ht_close(struct htable *t);
void ht_insert(struct htable *t, struct hnode *e);
/* @e must be in @t. */
void ht_remove(struct htable *t, struct hnode *e);

static inline struct hnode *ht_chain(const struct htable *t, uint64_t hash)
{
    return t->b[hash & t->mask];
}

#endif
