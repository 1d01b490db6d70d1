/* cache_table: items, key hashing and the incremental hash table; see
 * cache_table.h. */
#include "sm/cache_table.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

/* Small so that hundreds of idle shard groups per node cost little. */
#define TABLE_MIN_BUCKETS 256
/* Buckets moved per insert/remove. Growth doubles at load factor 1, so a
 * resize of N old buckets has N inserts to finish before the next one is
 * due; moving 4 per mutation finishes it well before that. */
#define TABLE_STEP 4

#define HASH_C1 0x87c37b91114253d5ULL
#define HASH_C2 0x4cf5ad432745937fULL
#define KEY_SEED 0x72696e676d712d6bULL /* "ringmq-k" */

struct cache_item *cache__item_new(const char *key,
                                   size_t key_len,
                                   uint64_t hash,
                                   size_t value_len)
{
    struct cache_item *it;

    /* the data starts inside the header's tail padding */
    it = xmalloc(offsetof(struct cache_item, data) + key_len + value_len);
    memset(it, 0, offsetof(struct cache_item, data));
    it->hash = hash;
    it->key_len = (uint8_t)key_len;
    it->value_len = (uint32_t)value_len;
    memcpy(it->data, key, key_len);
    return it;
}

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

uint64_t cache__mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t load_le64(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    size_t i;

    /* Byte by byte so the value does not depend on host endianness; the
     * compiler turns the full-word case into a single load on x86/arm. */
    for (i = 0; i < n; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t hash_word(uint64_t h, uint64_t k)
{
    k *= HASH_C1;
    k = rotl64(k, 31);
    k *= HASH_C2;
    h ^= k;
    h = rotl64(h, 27);
    return h * 5 + 0x52dce729;
}

uint64_t cache__hash_begin(size_t len, uint64_t seed)
{
    return seed ^ ((uint64_t)len * HASH_C2);
}

uint64_t cache__hash_update(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    size_t i;

    for (i = 0; i + 8 <= n; i += 8) {
        h = hash_word(h, load_le64(p + i, 8));
    }
    if (i < n) {
        h = hash_word(h, load_le64(p + i, n - i));
    }
    return h;
}

uint64_t cache__hash_end(uint64_t h, size_t len)
{
    return cache__mix64(h ^ (uint64_t)len);
}

uint64_t cache__hash(const void *data, size_t len, uint64_t seed)
{
    return cache__hash_end(
        cache__hash_update(cache__hash_begin(len, seed), data, len), len);
}

uint64_t cache__hash_key(const char *key, size_t key_len)
{
    return cache__hash(key, key_len, KEY_SEED);
}

int cache__table_init(struct cache_table *t, size_t hint)
{
    size_t n = TABLE_MIN_BUCKETS;

    memset(t, 0, sizeof(*t));
    while (n < hint && n < ((size_t)1 << 40)) {
        n <<= 1;
    }
    t->b[0] = calloc(n, sizeof(*t->b[0]));
    if (t->b[0] == NULL) {
        return -1;
    }
    t->mask[0] = n - 1;
    return 0;
}

void cache__table_close(struct cache_table *t)
{
    free(t->b[0]);
    free(t->b[1]);
    memset(t, 0, sizeof(*t));
}

static bool key_eq(const struct cache_item *it,
                   uint64_t hash,
                   const char *key,
                   size_t key_len)
{
    return it->hash == hash && it->key_len == key_len &&
           memcmp(it->data, key, key_len) == 0;
}

struct cache_item *cache__table_find(const struct cache_table *t,
                                     uint64_t hash,
                                     const char *key,
                                     size_t key_len)
{
    size_t i0 = hash & t->mask[0];
    struct cache_item *it;

    /* A b[0] bucket below rehash_pos has been moved to b[1] and is empty. */
    if (t->b[1] == NULL || i0 >= t->rehash_pos) {
        for (it = t->b[0][i0]; it != NULL; it = it->h_next) {
            if (key_eq(it, hash, key, key_len)) {
                return it;
            }
        }
    }
    if (t->b[1] != NULL) {
        for (it = t->b[1][hash & t->mask[1]]; it != NULL; it = it->h_next) {
            if (key_eq(it, hash, key, key_len)) {
                return it;
            }
        }
    }
    return NULL;
}

void cache__table_step(struct cache_table *t, size_t n)
{
    /* Bound the empty buckets visited too, so one step stays O(n). */
    size_t empty_budget = n * 10;

    if (t->b[1] == NULL) {
        return;
    }
    while (n > 0 && t->rehash_pos <= t->mask[0]) {
        struct cache_item *it = t->b[0][t->rehash_pos];

        if (it == NULL) {
            t->rehash_pos++;
            if (--empty_budget == 0) {
                break;
            }
            continue;
        }
        while (it != NULL) {
            struct cache_item *next = it->h_next;
            size_t j = it->hash & t->mask[1];

            it->h_next = t->b[1][j];
            t->b[1][j] = it;
            it = next;
        }
        t->b[0][t->rehash_pos] = NULL;
        t->rehash_pos++;
        n--;
    }
    if (t->rehash_pos > t->mask[0]) {
        free(t->b[0]);
        t->b[0] = t->b[1];
        t->mask[0] = t->mask[1];
        t->b[1] = NULL;
        t->mask[1] = 0;
        t->rehash_pos = 0;
    }
}

static void maybe_grow(struct cache_table *t)
{
    size_t n;

    if (t->b[1] != NULL || t->count < t->mask[0] + 1) {
        return;
    }
    n = (t->mask[0] + 1) * 2;
    if (n == 0 || n > SIZE_MAX / sizeof(*t->b[1])) {
        return;
    }
    /* On ENOMEM just keep the current size: lookups stay correct. */
    t->b[1] = calloc(n, sizeof(*t->b[1]));
    if (t->b[1] == NULL) {
        return;
    }
    t->mask[1] = n - 1;
    t->rehash_pos = 0;
}

void cache__table_insert(struct cache_table *t, struct cache_item *it)
{
    size_t side;
    size_t j;

    maybe_grow(t);
    cache__table_step(t, TABLE_STEP);
    side = t->b[1] != NULL ? 1 : 0;
    j = it->hash & t->mask[side];
    it->h_next = t->b[side][j];
    t->b[side][j] = it;
    t->count++;
}

static bool unchain(struct cache_item **head, struct cache_item *it)
{
    struct cache_item **pp;

    for (pp = head; *pp != NULL; pp = &(*pp)->h_next) {
        if (*pp == it) {
            *pp = it->h_next;
            it->h_next = NULL;
            return true;
        }
    }
    return false;
}

void cache__table_remove(struct cache_table *t, struct cache_item *it)
{
    size_t i0 = it->hash & t->mask[0];
    bool found = false;

    if (t->b[1] == NULL || i0 >= t->rehash_pos) {
        found = unchain(&t->b[0][i0], it);
    }
    if (!found && t->b[1] != NULL) {
        found = unchain(&t->b[1][it->hash & t->mask[1]], it);
    }
    if (found) {
        t->count--;
    }
    cache__table_step(t, TABLE_STEP);
}
