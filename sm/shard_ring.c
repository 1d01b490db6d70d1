/*
 * shard_ring: see shard_ring.h.
 *
 * Encoding (little-endian):
 *   u32 magic "RING" | u64 epoch | str self | u32 n | n x (str name, u32 weight)
 * with str = u32 length + bytes.
 */
#include "sm/shard_ring.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/le.h"
#include "common/ring.h"

#define RING_MAGIC 0x474e4952u /* "RING" */

void shard_ring_init(struct shard_ring *r)
{
    memset(r, 0, sizeof(*r));
    r->self_index = -1;
}

void shard_ring_clear(struct shard_ring *r)
{
    free(r->names);
    free(r->weights);
    ring_free(r->ring);
    shard_ring_init(r);
}

static unsigned char *put_str(unsigned char *p, const char *s)
{
    size_t len = strlen(s);

    p = le_put_u32(p, (uint32_t)len);
    memcpy(p, s, len);
    return p + len;
}

static void *encode(uint64_t epoch, const char *self, unsigned n,
                    const char *(*name)(const void *, unsigned),
                    unsigned (*weight)(const void *, unsigned),
                    const void *src, size_t *len)
{
    size_t cap = 4 + 8 + 4 + strlen(self) + 4;
    unsigned char *buf, *p;
    unsigned i;

    for (i = 0; i < n; i++) {
        cap += 4 + strlen(name(src, i)) + 4;
    }
    buf = xmalloc(cap);
    p = le_put_u32(buf, RING_MAGIC);
    p = le_put_u64(p, epoch);
    p = put_str(p, self);
    p = le_put_u32(p, n);
    for (i = 0; i < n; i++) {
        p = put_str(p, name(src, i));
        p = le_put_u32(p, weight(src, i));
    }
    *len = (size_t)(p - buf);
    return buf;
}

static const char *map_name(const void *src, unsigned i)
{
    return ((const struct cluster_map *)src)->shards[i].name;
}

static unsigned map_weight(const void *src, unsigned i)
{
    return ((const struct cluster_map *)src)->shards[i].weight;
}

static const char *ring_name(const void *src, unsigned i)
{
    return ((const struct shard_ring *)src)->names[i];
}

static unsigned ring_weight(const void *src, unsigned i)
{
    return ((const struct shard_ring *)src)->weights[i];
}

void *shard_ring_encode_map(const struct cluster_map *map, const char *self,
                            size_t *len)
{
    return encode(map->epoch, self, map->n_shards, map_name, map_weight, map,
                  len);
}

void *shard_ring_encode(const struct shard_ring *r, size_t *len)
{
    if (r->epoch == 0) {
        *len = 0;
        return NULL;
    }
    return encode(r->epoch, r->self, r->n, ring_name, ring_weight, r, len);
}

static bool get_name(struct le_reader *rd, char *dst)
{
    const unsigned char *p;
    uint32_t len;

    if (!le_get_u32(rd, &len) || len == 0 || len >= CLUSTER_NAME_MAX ||
        !le_get_bytes(rd, &p, len) || memchr(p, '\0', len) != NULL) {
        return false;
    }
    memcpy(dst, p, len);
    dst[len] = '\0';
    return true;
}

int shard_ring_decode(const void *buf, size_t len, struct shard_ring *out)
{
    struct le_reader rd = {buf, len};
    struct shard_ring next;
    struct ring_node *nodes = NULL;
    uint32_t magic, n, i;

    shard_ring_init(&next);
    if (!le_get_u32(&rd, &magic) || magic != RING_MAGIC ||
        !le_get_u64(&rd, &next.epoch) || next.epoch == 0 ||
        !get_name(&rd, next.self) || !le_get_u32(&rd, &n) || n == 0 ||
        n > CLUSTER_MAX_SHARDS || n > rd.left / 9) {
        goto err;
    }
    next.n = n;
    next.names = xcalloc(n, sizeof(*next.names));
    next.weights = xcalloc(n, sizeof(*next.weights));
    nodes = xcalloc(n, sizeof(*nodes));
    for (i = 0; i < n; i++) {
        if (!get_name(&rd, next.names[i]) ||
            !le_get_u32(&rd, &next.weights[i]) || next.weights[i] == 0 ||
            next.weights[i] > CLUSTER_WEIGHT_MAX) {
            goto err;
        }
        nodes[i].name = next.names[i];
        nodes[i].weight = next.weights[i];
        if (strcmp(next.names[i], next.self) == 0) {
            next.self_index = (int)i;
        }
    }
    if (rd.left != 0) {
        goto err;
    }
    /* repeated names and weights too small for any point are refused */
    next.ring = ring_new(nodes, n, NULL, 0);
    if (next.ring == NULL) {
        goto err;
    }
    free(nodes);
    shard_ring_clear(out);
    *out = next;
    return 0;
err:
    free(nodes);
    shard_ring_clear(&next);
    return -1;
}

bool shard_ring_owns(const struct shard_ring *r, const void *key, size_t len,
                     const char **owner)
{
    unsigned i;

    if (r->epoch == 0) {
        return true;
    }
    i = ring_lookup(r->ring, key, len);
    if ((int)i == r->self_index) {
        return true;
    }
    if (owner != NULL) {
        *owner = r->names[i];
    }
    return false;
}
