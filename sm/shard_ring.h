/*
 * shard_ring: which keys a cache shard owns, as replicated state of that
 * shard (docs/resharding.md, "Ownership and refusals").
 *
 * The cluster map is the directory; this is the truth each shard acts on.
 * A RING command in the shard's own log installs a spec: the ring's shards
 * in map order with their weights (the ketama ring of common/ring.h), the
 * name of the shard itself, and the epoch of the map it came from. A spec
 * replaces the current one only if its epoch is newer, so specs applied
 * out of order cannot go back. Every replica then decides ownership the
 * same way, at the same point of the log.
 *
 * The spec travels as bytes (the value of a CACHE_OP_RING op) in this
 * module's little-endian encoding; decoding checks everything (the bytes
 * come from the network and from snapshots).
 *
 * Pure: no I/O. Memory from xmalloc. Not thread-safe.
 */
#ifndef RINGMQ_SHARD_RING_H
#define RINGMQ_SHARD_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/cluster_map.h"

struct ring;

/* A closed interval [lo, hi] of ring_hash() values. */
struct arc {
    uint32_t lo;
    uint32_t hi;
};

#define SHARD_RING_MAX_ARCS 65536

/* Whether @hash lies in one of @arcs (sorted, disjoint). */
bool arcs_contain(const struct arc *arcs, size_t n, uint32_t hash);
/* Sorted, disjoint, lo <= hi, at most SHARD_RING_MAX_ARCS. */
bool arcs_valid(const struct arc *arcs, size_t n);

/* Arcs whose owner is not the ring's: moved by a finished move. */
struct shard_ring_override {
    struct arc arc;
    char owner[CLUSTER_NAME_MAX];
};

struct shard_ring {
    uint64_t epoch; /* 0: no spec: the shard owns every key */
    char self[CLUSTER_NAME_MAX];
    unsigned n;
    char (*names)[CLUSTER_NAME_MAX];
    unsigned *weights;
    struct ring *ring;
    int self_index; /* -1: the shard is not on the ring (owns nothing) */
    struct shard_ring_override *ov; /* sorted, disjoint */
    size_t n_ov;
};

void shard_ring_init(struct shard_ring *r);
void shard_ring_clear(struct shard_ring *r);

/* The spec of @map's ring (its ring shards: cluster_map_ring_size) for
 * shard @self, encoded (xmalloc'ed, @len). */
void *shard_ring_encode_map(const struct cluster_map *map, const char *self,
                            size_t *len);
/* @r's spec encoded (xmalloc'ed); NULL with *len 0 when it has none. */
void *shard_ring_encode(const struct shard_ring *r, size_t *len);

/* Decode @buf into @out (initialised; replaced on success). 0, or -1
 * (malformed: bad counts, names, weights, a ring common/ring refuses). */
int shard_ring_decode(const void *buf, size_t len, struct shard_ring *out);

/* Whether @r owns the key of ring_hash() @hash: true without a spec. When
 * it does not, @owner (may be NULL) gets the owner's name (borrowed from
 * @r). */
bool shard_ring_owns(const struct shard_ring *r, uint32_t hash,
                     const char **owner);
/* The owner of hash @hash (overrides first, then the ring); NULL without
 * a spec. */
const char *shard_ring_owner_hash(const struct shard_ring *r, uint32_t hash);
/* From now on @owner owns @arcs (sorted, disjoint), whatever the ring or
 * an earlier override says. A newer spec (shard_ring_decode) replaces
 * the overrides: it is meant to include them. */
void shard_ring_override(struct shard_ring *r, const struct arc *arcs,
                         size_t n, const char *owner);

/* One arc changing hands between two views of the ring. */
struct arc_move {
    struct arc arc;
    char from[CLUSTER_NAME_MAX];
    char to[CLUSTER_NAME_MAX];
};

/* The arcs whose owner differs between @a and @b (both with a spec;
 * overrides count), neighbours with the same owners merged, ascending.
 * The count; *@out xmalloc'ed (NULL when 0). */
size_t shard_ring_diff(const struct shard_ring *a, const struct shard_ring *b,
                       struct arc_move **out);

#endif
