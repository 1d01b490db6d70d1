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

struct shard_ring {
    uint64_t epoch; /* 0: no spec: the shard owns every key */
    char self[CLUSTER_NAME_MAX];
    unsigned n;
    char (*names)[CLUSTER_NAME_MAX];
    unsigned *weights;
    struct ring *ring;
    int self_index; /* -1: the shard is not on the ring (owns nothing) */
};

void shard_ring_init(struct shard_ring *r);
void shard_ring_clear(struct shard_ring *r);

/* The spec of @map's ring for shard @self, encoded (xmalloc'ed, @len). */
void *shard_ring_encode_map(const struct cluster_map *map, const char *self,
                            size_t *len);
/* @r's spec encoded (xmalloc'ed); NULL with *len 0 when it has none. */
void *shard_ring_encode(const struct shard_ring *r, size_t *len);

/* Decode @buf into @out (initialised; replaced on success). 0, or -1
 * (malformed: bad counts, names, weights, a ring common/ring refuses). */
int shard_ring_decode(const void *buf, size_t len, struct shard_ring *out);

/* Whether @r owns @key: true without a spec. When it does not, @owner
 * (may be NULL) gets the owner's name (borrowed from @r). */
bool shard_ring_owns(const struct shard_ring *r, const void *key, size_t len,
                     const char **owner);

#endif
