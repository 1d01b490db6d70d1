/*
 * ring: the weighted consistent-hashing ring (ketama), shared by routers,
 * nodes (ownership checks) and ringmqctl (which shard owns a key).
 *
 * Compatible point for point with libmemcached's weighted ketama
 * (MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA +
 * MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, md5) and with twemproxy's "distribution:
 * ketama, hash: md5", so a client that does ketama itself and our router pick
 * the same shard for every key. tests/unit/common/test_ring.c proves it with vectors
 * produced by libmemcached.
 *
 * The scheme, for n nodes of total weight W:
 *   - node i gets 4 * floor(w_i / W * 40 * n) points, computed in IEEE
 *     single precision exactly as libmemcached does (the float rounding is
 *     part of the contract: 25 equal nodes get 156 points each, not 160);
 *   - point group j (j = 0, 1, ...) of node i is md5("<name>-<j>"), its 16
 *     bytes read as four little-endian uint32 points;
 *   - points are sorted by (hash, node index);
 *   - a key goes to the node of the first point >= ring_hash(key), wrapping
 *     to the first point.
 *
 * Client settings: libmemcached must be in *weighted* ketama with md5 key
 * hashing: MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED = 1 (it sets both; pylibmc
 * "ketama_weighted": True). Plain MEMCACHED_BEHAVIOR_KETAMA with all weights
 * 1 is a different ring (100 points per server, one per digest, key hash
 * one-at-a-time unless set), and a weight > 1 switches on weighted points
 * without switching the key hash to md5.
 *
 * Node names (what clients must configure to agree with us):
 *   - libmemcached (and pylibmc, PHP memcached, ...) hashes "host" when the
 *     server's port is 11211 and "host:port" otherwise, with host exactly as
 *     the client was given it ("127.0.0.1" and "localhost" are different
 *     rings). So a client listing 127.0.0.1:11211 and 127.0.0.1:11212 agrees
 *     with ring names "127.0.0.1" and "127.0.0.1:11212".
 *   - twemproxy hashes the server's name: "host:port" unless the servers:
 *     line gives an explicit name ("127.0.0.1:11211:1 127.0.0.1" to match
 *     libmemcached on the default port). Its pool must say hash: md5.
 *   - Node order matters only for ties between two nodes' points (the lower
 *     index wins, as in libmemcached); twemproxy breaks such ties arbitrarily.
 *
 * Thread safety: a ring is immutable once built; lookups only read it, so any
 * number of threads may share one. A membership or weight change builds a new
 * ring (and a new epoch) rather than editing the old one.
 */
#ifndef RINGMQ_RING_H
#define RINGMQ_RING_H

#include <stddef.h>
#include <stdint.h>

/* Limits enforced by ring_new(); far above any real cluster. */
#define RING_MAX_NODES 4096
#define RING_MAX_NAME 1024 /* bytes, excluding the NUL */

/* Points per node when all weights are equal (40 md5 digests x 4). */
#define RING_POINTS_PER_NODE 160

struct ring;

/* One member of the ring, as given to ring_new(). */
struct ring_node {
    /* Identity hashed for the node's points (see "Node names" above).
     * Non-empty, at most RING_MAX_NAME bytes, unique within the ring. */
    const char *name;
    /* Relative share of keys, >= 1. */
    unsigned weight;
};

/*
 * Build a ring of @n nodes. @nodes and the names are copied; the caller may
 * free them afterwards. Lookups return indexes into @nodes.
 *
 * Returns the ring, or NULL with errno set and a one-line reason in @err
 * (@errlen bytes, always NUL-terminated; @err may be NULL if @errlen is 0):
 *   EINVAL  @n is 0 or above RING_MAX_NODES; a name is NULL, empty, too long
 *           or repeated; a weight is 0; or a weight is so small against the
 *           total that ketama would give the node no points at all (it would
 *           silently own no keys: libmemcached accepts that, we refuse it).
 *   ENOMEM  allocation failed.
 */
struct ring *ring_new(const struct ring_node *nodes,
                      unsigned n,
                      char *err,
                      size_t errlen);

/* Release @r and everything it owns. NULL is a no-op. */
void ring_free(struct ring *r);

/* The ketama key hash: md5(@key), first 4 bytes as a little-endian uint32.
 * @key is borrowed for the call; @len may be 0. */
uint32_t ring_hash(const void *key, size_t len);

/* Index (into the nodes given to ring_new) of the node owning @key.
 * Same as ring_lookup_hash(r, ring_hash(key, len)). */
unsigned ring_lookup(const struct ring *r, const void *key, size_t len);

/* The ring key of AMQP queue @queue in @vhost, written to @buf: the queue
 * name itself in the default vhost "/" (a queue lives on the shard a cache
 * key of the same name would), "vhost/queue" in others. Returns its length
 * (truncated to @buflen). */
size_t ring_queue_key(const char *vhost, size_t vhost_len, const char *queue,
                      size_t queue_len, char *buf, size_t buflen);

/* Index of the node owning a key whose ring_hash() is @hash: for callers that
 * hash a composite identity (e.g. AMQP vhost + queue) or reuse a hash. */
unsigned ring_lookup_hash(const struct ring *r, uint32_t hash);

/* Total points on the ring (the sum over nodes of their ketama points). */
unsigned ring_points(const struct ring *r);

/* Number of nodes, and the copied name of node @i, owned by the ring and
 * valid until ring_free() (NULL if @i >= ring_nodes(r)). */
unsigned ring_nodes(const struct ring *r);
const char *ring_node_name(const struct ring *r, unsigned i);

/* Exact share of the hash space (so, of uniformly hashed keys) each node
 * owns: fills @shares[0 .. ring_nodes(r) - 1], summing to 1. With 160 points
 * per node, ketama shares scatter around the weights: for two nodes of
 * weights 1 and 2 the lighter one's share has a standard deviation of about
 * 2.8 percentage points over random names (see test_ring.c), so ringmqctl
 * should show these rather than the weights. */
void ring_shares(const struct ring *r, double *shares);

/* The @i-th point in ring order (@i < ring_points(r)): its hash and node
 * index. For tests, diagnostics and ringmqctl; lookups never need it. */
void ring_point_at(const struct ring *r,
                   unsigned i,
                   uint32_t *hash,
                   unsigned *node);

#endif
