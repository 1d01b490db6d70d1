/*
 * shard_ring: see shard_ring.h.
 *
 * Encoding (little-endian):
 *   u32 magic "RING" | u64 epoch | str self | u32 n | n x (str name, u32 weight)
 *   | u32 n_ov | n_ov x (u32 lo, u32 hi, str owner)
 * with str = u32 length + bytes.
 */
#include "sm/shard_ring.h"

#include <stdio.h>
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

bool arcs_valid(const struct arc *arcs, size_t n)
{
    size_t i;

    if (n > SHARD_RING_MAX_ARCS) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (arcs[i].lo > arcs[i].hi ||
            (i > 0 && arcs[i].lo <= arcs[i - 1].hi)) {
            return false;
        }
    }
    return true;
}

/* Index of the first of @n arcs (stride @stride bytes) whose hi >= @hash. */
static size_t first_reaching(const void *base, size_t n, size_t stride,
                             uint32_t hash)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct arc *a =
            (const struct arc *)((const char *)base + mid * stride);
        if (a->hi < hash) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

bool arcs_contain(const struct arc *arcs, size_t n, uint32_t hash)
{
    size_t i = first_reaching(arcs, n, sizeof(*arcs), hash);

    return i < n && arcs[i].lo <= hash;
}

void shard_ring_clear(struct shard_ring *r)
{
    free(r->ov);
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
                    const void *src, const struct shard_ring_override *ov,
                    size_t n_ov, size_t *len)
{
    size_t cap = 4 + 8 + 4 + strlen(self) + 4 + 4;
    unsigned char *buf, *p;
    unsigned i;

    for (i = 0; i < n; i++) {
        cap += 4 + strlen(name(src, i)) + 4;
    }
    for (i = 0; i < n_ov; i++) {
        cap += 8 + 4 + strlen(ov[i].owner);
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
    p = le_put_u32(p, (uint32_t)n_ov);
    for (i = 0; i < n_ov; i++) {
        p = le_put_u32(p, ov[i].arc.lo);
        p = le_put_u32(p, ov[i].arc.hi);
        p = put_str(p, ov[i].owner);
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
    return encode(map->epoch, self, cluster_map_ring_size(map), map_name,
                  map_weight, map, NULL, 0, len);
}

void *shard_ring_encode(const struct shard_ring *r, size_t *len)
{
    if (r->epoch == 0) {
        *len = 0;
        return NULL;
    }
    return encode(r->epoch, r->self, r->n, ring_name, ring_weight, r, r->ov,
                  r->n_ov, len);
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
    if (!le_get_u32(&rd, &n) || n > SHARD_RING_MAX_ARCS || n > rd.left / 13) {
        goto err;
    }
    next.ov = n ? xcalloc(n, sizeof(*next.ov)) : NULL;
    next.n_ov = n;
    for (i = 0; i < n; i++) {
        if (!le_get_u32(&rd, &next.ov[i].arc.lo) ||
            !le_get_u32(&rd, &next.ov[i].arc.hi) ||
            !get_name(&rd, next.ov[i].owner) ||
            next.ov[i].arc.lo > next.ov[i].arc.hi ||
            (i > 0 && next.ov[i].arc.lo <= next.ov[i - 1].arc.hi)) {
            goto err;
        }
    }
    if (rd.left != 0) {
        goto err;
    }
    /* repeated names and weights too small for any point are refused */
    next.ring = ring_new(nodes, next.n, NULL, 0);
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

const char *shard_ring_owner_hash(const struct shard_ring *r, uint32_t hash)
{
    size_t i;

    if (r->epoch == 0) {
        return NULL;
    }
    i = first_reaching(r->ov, r->n_ov, sizeof(*r->ov), hash);
    if (i < r->n_ov && r->ov[i].arc.lo <= hash) {
        return r->ov[i].owner;
    }
    return r->names[ring_lookup_hash(r->ring, hash)];
}

bool shard_ring_owns(const struct shard_ring *r, uint32_t hash,
                     const char **owner)
{
    const char *o;

    if (r->epoch == 0) {
        return true;
    }
    o = shard_ring_owner_hash(r, hash);
    if (strcmp(o, r->self) == 0) {
        return true;
    }
    if (owner != NULL) {
        *owner = o;
    }
    return false;
}

void shard_ring_override(struct shard_ring *r, const struct arc *arcs,
                         size_t n, const char *owner)
{
    size_t a;

    for (a = 0; a < n; a++) {
        struct arc x = arcs[a];
        struct shard_ring_override *out =
            xcalloc(r->n_ov + 2 + 1, sizeof(*out));
        size_t i, k = 0;
        bool placed = false;

        /* keep what lies outside x (cutting overrides that straddle it),
         * and put x in its place in the order */
        for (i = 0; i < r->n_ov; i++) {
            struct shard_ring_override o = r->ov[i];

            if (o.arc.hi < x.lo || o.arc.lo > x.hi) {
                if (!placed && o.arc.lo > x.hi) {
                    out[k].arc = x;
                    snprintf(out[k].owner, CLUSTER_NAME_MAX, "%s", owner);
                    k++;
                    placed = true;
                }
                out[k++] = o;
                continue;
            }
            if (o.arc.lo < x.lo) {
                out[k] = o;
                out[k].arc.hi = x.lo - 1;
                k++;
            }
            if (!placed) {
                out[k].arc = x;
                snprintf(out[k].owner, CLUSTER_NAME_MAX, "%s", owner);
                k++;
                placed = true;
            }
            if (o.arc.hi > x.hi) {
                out[k] = o;
                out[k].arc.lo = x.hi + 1;
                k++;
            }
        }
        if (!placed) {
            out[k].arc = x;
            snprintf(out[k].owner, CLUSTER_NAME_MAX, "%s", owner);
            k++;
        }
        free(r->ov);
        r->ov = out;
        r->n_ov = k;
    }
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

    return a < b ? -1 : a > b;
}

/* Where ownership may change in @r: after each point and at the ends of
 * its overrides. Appended to @v. */
static size_t breakpoints(const struct shard_ring *r, uint32_t *v, size_t n)
{
    unsigned i, points = ring_points(r->ring);
    size_t k;

    for (i = 0; i < points; i++) {
        uint32_t h;
        unsigned node;
        ring_point_at(r->ring, i, &h, &node);
        v[n++] = h;
    }
    for (k = 0; k < r->n_ov; k++) {
        if (r->ov[k].arc.lo > 0) {
            v[n++] = r->ov[k].arc.lo - 1;
        }
        v[n++] = r->ov[k].arc.hi;
    }
    return n;
}

size_t shard_ring_diff(const struct shard_ring *a, const struct shard_ring *b,
                       struct arc_move **out)
{
    size_t cap = ring_points(a->ring) + ring_points(b->ring) +
                 2 * (a->n_ov + b->n_ov) + 1;
    uint32_t *v = xmalloc(cap * sizeof(*v));
    struct arc_move *moves = NULL;
    size_t n = 0, n_moves = 0, cap_moves = 0, i;
    uint64_t start = 0;

    n = breakpoints(a, v, n);
    n = breakpoints(b, v, n);
    v[n++] = UINT32_MAX;
    qsort(v, n, sizeof(*v), cmp_u32);
    /* every elementary interval [start, v[i]] has one owner in each view:
     * ask at its upper end */
    for (i = 0; i < n; i++) {
        const char *from, *to;

        if (i > 0 && v[i] == v[i - 1]) {
            continue;
        }
        from = shard_ring_owner_hash(a, v[i]);
        to = shard_ring_owner_hash(b, v[i]);
        if (strcmp(from, to) != 0) {
            struct arc_move *last = n_moves ? &moves[n_moves - 1] : NULL;

            if (last != NULL && last->arc.hi + 1 == start &&
                strcmp(last->from, from) == 0 && strcmp(last->to, to) == 0) {
                last->arc.hi = v[i];
            } else {
                if (n_moves == cap_moves) {
                    cap_moves = cap_moves ? cap_moves * 2 : 64;
                    moves = xrealloc(moves, cap_moves * sizeof(*moves));
                }
                memset(&moves[n_moves], 0, sizeof(moves[n_moves]));
                moves[n_moves].arc.lo = (uint32_t)start;
                moves[n_moves].arc.hi = v[i];
                snprintf(moves[n_moves].from, CLUSTER_NAME_MAX, "%s", from);
                snprintf(moves[n_moves].to, CLUSTER_NAME_MAX, "%s", to);
                n_moves++;
            }
        }
        start = (uint64_t)v[i] + 1;
    }
    free(v);
    *out = moves;
    return n_moves;
}
