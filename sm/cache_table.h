/*
 * cache_table: the items of a cache shard and the hash table that indexes
 * them by key. Internal to sm/cache_sm (cross-file symbols use the cache__
 * prefix); cache_sm.c is the only user.
 *
 * An item is one allocation: header, then the key bytes, then the value
 * bytes (neither NUL-terminated). The table chains items through
 * item->h_next and grows by doubling with incremental rehashing (Redis
 * dict style), so no single operation pays for rehashing the whole table:
 * a cache with millions of keys must not stall the Raft apply loop.
 *
 * The table never changes observable behaviour: lookups give the same answer
 * whatever the layout, so replicas may differ in layout (e.g. one grew its
 * table later after a failed allocation) and still have equal state.
 */
#ifndef RINGMQ_CACHE_TABLE_H
#define RINGMQ_CACHE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache_item {
    struct cache_item *h_next; /* hash chain */
    struct cache_item *older;  /* write order list, toward the oldest */
    struct cache_item *newer;  /* write order list, toward the newest */
    uint64_t hash;             /* cache__hash_key() of the key */
    /* Where the item stands in the write order: every append to the
     * newest end takes a larger one (sm/cache_snap.h merges by it). Local
     * to this replica: never in the digest or a snapshot. */
    uint64_t order;
    uint64_t exp_ms;           /* absolute expiry in ms; 0 = never */
    uint64_t cas;
    uint32_t flags;
    uint32_t value_len;
    uint8_t key_len; /* 1..CACHE_KEY_MAX (250) */
    char data[];     /* key_len key bytes, then value_len bytes */
};

/* The bytes of @it's allocation (what a copy of it takes). */
static inline size_t cache__item_size(const struct cache_item *it)
{
    return offsetof(struct cache_item, data) + it->key_len + it->value_len;
}

static inline const char *cache__item_key(const struct cache_item *it)
{
    return it->data;
}

static inline char *cache__item_value(struct cache_item *it)
{
    return it->data + it->key_len;
}

static inline const char *cache__item_cvalue(const struct cache_item *it)
{
    return it->data + it->key_len;
}

/* One allocation holding header, key and room for @value_len bytes (left
 * uninitialized). Links are NULL, order/exp_ms/cas/flags 0. @key is copied.
 * Never NULL: out of memory aborts (apply must not depend on malloc). */
struct cache_item *cache__item_new(const char *key,
                                   size_t key_len,
                                   uint64_t hash,
                                   size_t value_len);

/*
 * Two bucket arrays while a resize is in progress: b[0] is the old one,
 * b[1] the new one, and buckets of b[0] below rehash_pos have been moved.
 * New items go to b[1] during a resize, so a lookup whose b[0] bucket is not
 * yet moved must search both.
 */
struct cache_table {
    struct cache_item **b[2];
    size_t mask[2];    /* bucket count - 1 (powers of two) */
    size_t count;      /* items in the table */
    size_t rehash_pos; /* next b[0] bucket to move; meaningful if b[1] */
};

/* Allocate buckets for about @hint items (at least a small minimum).
 * Returns 0 or -1 on ENOMEM (then @t is unusable). */
int cache__table_init(struct cache_table *t, size_t hint);
/* Free the bucket arrays only; the caller owns (and frees) the items. */
void cache__table_close(struct cache_table *t);

struct cache_item *cache__table_find(const struct cache_table *t,
                                     uint64_t hash,
                                     const char *key,
                                     size_t key_len);
/* @it must not be in the table (no duplicate check). Never fails: if growing
 * cannot allocate, chains just get longer. */
void cache__table_insert(struct cache_table *t, struct cache_item *it);
/* @it must be in the table. */
void cache__table_remove(struct cache_table *t, struct cache_item *it);
/* Move up to @n buckets of a resize in progress; cheap no-op otherwise. */
void cache__table_step(struct cache_table *t, size_t n);

/*
 * A 64-bit non-cryptographic hash (murmur3-style body and finalizer) with
 * bytes read little-endian, so it is the same on every architecture: it
 * feeds the digest and the snapshot checksum, which replicas compare.
 */
uint64_t cache__hash(const void *data, size_t len, uint64_t seed);
/* The same hash of @len bytes given in pieces: h = begin(len, seed), then
 * h = update(h, piece, n) for each piece in order, every piece but the
 * last a multiple of 8 bytes long (the hash reads 8-byte words), then
 * end(h, len). */
uint64_t cache__hash_begin(size_t len, uint64_t seed);
uint64_t cache__hash_update(uint64_t h, const void *data, size_t n);
uint64_t cache__hash_end(uint64_t h, size_t len);
/* The murmur3 64-bit finalizer: a bijective mix of one word. */
uint64_t cache__mix64(uint64_t x);
uint64_t cache__hash_key(const char *key, size_t key_len);

#endif
