/*
 * ring: weighted ketama; see ring.h for the scheme and the naming contract.
 *
 * Everything that decides where a point lands (the float arithmetic for the
 * point count, the "<name>-<j>" strings, the byte order of the md5 words, the
 * sort key, the >= search with wrap) follows libmemcached's update_continuum
 * and dispatch_host; a difference in any of them moves keys, which the fixed
 * vectors in tests/unit/common/test_ring.c would catch.
 */
#include "common/ring.h"

#include <errno.h>
#include <md5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/le.h"

/* Each md5 digest yields 4 points, hence 160 points = 40 digests. */
#define POINTS_PER_DIGEST 4

struct ring_point {
    uint32_t hash;
    uint32_t node;
};

struct ring {
    unsigned nnodes;
    unsigned npoints;
    char **names;              /* nnodes copies, owned */
    struct ring_point *points; /* npoints, sorted by (hash, node) */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

uint32_t ring_hash(const void *key, size_t len)
{
    uint8_t digest[MD5_DIGEST_LENGTH];
    MD5_CTX ctx;

    MD5Init(&ctx);
    /* libmd dereferences nothing when len is 0, but keep NULL out of it. */
    if (len > 0) {
        MD5Update(&ctx, key, len);
    }
    MD5Final(digest, &ctx);
    return le_load_u32(digest);
}

/*
 * Ketama point count for one node, in single precision step by step as
 * libmemcached computes it:
 *   floor((float)w / (float)W * 160 / 4 * (float)n + 1e-10f) * 4
 * The float rounding is deliberate compatibility, not sloppiness: with 25
 * equal nodes (0.04f * 40 * 25) comes out just under 40, so each node gets
 * 156 points, and clients do the same. The value is >= 0, so the cast to
 * unsigned is floor() without pulling in libm.
 */
static unsigned ketama_points(unsigned weight, uint64_t total, unsigned n)
{
    float pct = (float)weight / (float)total;
    float units = pct * (float)RING_POINTS_PER_NODE;

    units = units / (float)POINTS_PER_DIGEST;
    units = units * (float)n;
    units = units + 0.0000000001f;
    return (unsigned)units * POINTS_PER_DIGEST;
}

/* Append the 4 points of md5("<name>-<group>") for @node at @out. */
static void add_digest_points(struct ring_point *out,
                              const char *name,
                              unsigned group,
                              unsigned node)
{
    uint8_t digest[MD5_DIGEST_LENGTH];
    char suffix[16];
    MD5_CTX ctx;
    int len;
    int k;

    len = snprintf(suffix, sizeof suffix, "-%u", group);
    MD5Init(&ctx);
    MD5Update(&ctx, (const uint8_t *)name, strlen(name));
    MD5Update(&ctx, (const uint8_t *)suffix, (size_t)len);
    MD5Final(digest, &ctx);
    for (k = 0; k < POINTS_PER_DIGEST; k++) {
        out[k].hash = le_load_u32(digest + 4 * k);
        out[k].node = node;
    }
}

/* libmemcached's order: by hash, then by node index, so that equal hashes
 * from two nodes resolve to the lower index on every platform (qsort is not
 * stable, so the index must be part of the key). */
static int point_cmp(const void *a, const void *b)
{
    const struct ring_point *pa = a;
    const struct ring_point *pb = b;

    if (pa->hash != pb->hash) {
        return pa->hash < pb->hash ? -1 : 1;
    }
    if (pa->node != pb->node) {
        return pa->node < pb->node ? -1 : 1;
    }
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* EINVAL with a message if two names are equal: they would get identical
 * points and the higher index would silently own nothing. */
static int check_unique(char **names, unsigned n, char *err, size_t errlen)
{
    char **sorted;
    unsigned i;
    int rv = 0;

    sorted = malloc(n * sizeof *sorted);
    if (sorted == NULL) {
        return ENOMEM;
    }
    memcpy(sorted, names, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, name_cmp);
    for (i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            set_err(err, errlen, "ring: node name \"%s\" appears twice",
                    sorted[i]);
            rv = EINVAL;
            break;
        }
    }
    free(sorted);
    return rv;
}

static int check_nodes(const struct ring_node *nodes,
                       unsigned n,
                       char *err,
                       size_t errlen)
{
    unsigned i;

    if (nodes == NULL || n == 0) {
        set_err(err, errlen, "ring: no nodes");
        return EINVAL;
    }
    if (n > RING_MAX_NODES) {
        set_err(err, errlen, "ring: %u nodes, at most %u", n, RING_MAX_NODES);
        return EINVAL;
    }
    for (i = 0; i < n; i++) {
        if (nodes[i].name == NULL || nodes[i].name[0] == '\0') {
            set_err(err, errlen, "ring: node %u has no name", i);
            return EINVAL;
        }
        if (strlen(nodes[i].name) > RING_MAX_NAME) {
            set_err(err, errlen, "ring: node %u name longer than %u bytes", i,
                    RING_MAX_NAME);
            return EINVAL;
        }
        if (nodes[i].weight == 0) {
            set_err(err, errlen, "ring: node \"%s\" has weight 0",
                    nodes[i].name);
            return EINVAL;
        }
    }
    return 0;
}

struct ring *ring_new(const struct ring_node *nodes,
                      unsigned n,
                      char *err,
                      size_t errlen)
{
    struct ring *r;
    unsigned *counts;
    uint64_t total = 0;
    unsigned npoints = 0;
    unsigned at = 0;
    unsigned i;
    unsigned g;
    int rv;

    set_err(err, errlen, "%s", "");
    rv = check_nodes(nodes, n, err, errlen);
    if (rv != 0) {
        goto err;
    }
    for (i = 0; i < n; i++) {
        total += nodes[i].weight;
    }

    rv = ENOMEM;
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        goto err;
    }
    r->nnodes = n;
    r->names = calloc(n, sizeof *r->names);
    if (r->names == NULL) {
        goto err_after_ring;
    }
    for (i = 0; i < n; i++) {
        r->names[i] = strdup(nodes[i].name);
        if (r->names[i] == NULL) {
            goto err_after_names;
        }
    }
    rv = check_unique(r->names, n, err, errlen);
    if (rv != 0) {
        goto err_after_names;
    }

    rv = ENOMEM;
    counts = malloc(n * sizeof *counts);
    if (counts == NULL) {
        goto err_after_names;
    }
    for (i = 0; i < n; i++) {
        counts[i] = ketama_points(nodes[i].weight, total, n);
        if (counts[i] == 0) {
            set_err(err, errlen,
                    "ring: node \"%s\" weight %u of total %llu gets no "
                    "ketama points (raise it)",
                    nodes[i].name, nodes[i].weight, (unsigned long long)total);
            rv = EINVAL;
            goto err_after_counts;
        }
        /* No overflow: each count is about 160 * n * w / W, n <= 4096. */
        npoints += counts[i];
    }

    r->points = malloc((size_t)npoints * sizeof *r->points);
    if (r->points == NULL) {
        goto err_after_counts;
    }
    for (i = 0; i < n; i++) {
        for (g = 0; g < counts[i] / POINTS_PER_DIGEST; g++) {
            add_digest_points(r->points + at, r->names[i], g, i);
            at += POINTS_PER_DIGEST;
        }
    }
    r->npoints = npoints;
    qsort(r->points, npoints, sizeof *r->points, point_cmp);
    free(counts);
    return r;

err_after_counts:
    free(counts);
err_after_names:
    for (i = 0; i < n; i++) {
        free(r->names[i]);
    }
    free(r->names);
err_after_ring:
    free(r);
err:
    if (rv == ENOMEM) {
        set_err(err, errlen, "ring: out of memory");
    }
    errno = rv;
    return NULL;
}

void ring_free(struct ring *r)
{
    unsigned i;

    if (r == NULL) {
        return;
    }
    for (i = 0; i < r->nnodes; i++) {
        free(r->names[i]);
    }
    free(r->names);
    free(r->points);
    free(r);
}

unsigned ring_lookup_hash(const struct ring *r, uint32_t hash)
{
    unsigned lo = 0;
    unsigned hi = r->npoints;

    /* First point with point.hash >= hash (lower bound)... */
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;

        if (r->points[mid].hash < hash) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    /* ...and past the last point the circle wraps to the first. */
    if (lo == r->npoints) {
        lo = 0;
    }
    return r->points[lo].node;
}

unsigned ring_lookup(const struct ring *r, const void *key, size_t len)
{
    return ring_lookup_hash(r, ring_hash(key, len));
}

unsigned ring_points(const struct ring *r)
{
    return r->npoints;
}

unsigned ring_nodes(const struct ring *r)
{
    return r->nnodes;
}

const char *ring_node_name(const struct ring *r, unsigned i)
{
    return i < r->nnodes ? r->names[i] : NULL;
}

void ring_shares(const struct ring *r, double *shares)
{
    uint32_t prev = r->points[r->npoints - 1].hash;
    unsigned i;

    for (i = 0; i < r->nnodes; i++) {
        shares[i] = 0;
    }
    /* A point owns the hashes in (previous point, point], as
     * ring_lookup_hash resolves them; the unsigned subtraction gives the
     * first point's arc across the wrap too. The sums stay integers below
     * 2^32, so doubles hold them exactly. */
    for (i = 0; i < r->npoints; i++) {
        uint32_t h = r->points[i].hash;

        shares[r->points[i].node] += (double)(uint32_t)(h - prev);
        prev = h;
    }
    for (i = 0; i < r->nnodes; i++) {
        shares[i] /= 4294967296.0;
    }
}

void ring_point_at(const struct ring *r,
                   unsigned i,
                   uint32_t *hash,
                   unsigned *node)
{
    *hash = r->points[i].hash;
    *node = r->points[i].node;
}

size_t ring_queue_key(const char *vhost, size_t vhost_len, const char *queue,
                      size_t queue_len, char *buf, size_t buflen)
{
    size_t n = 0;

    if (!(vhost_len == 1 && vhost[0] == '/')) {
        n = vhost_len < buflen ? vhost_len : buflen;
        memcpy(buf, vhost, n);
        if (n < buflen) {
            buf[n++] = '/';
        }
    }
    if (queue_len > buflen - n) {
        queue_len = buflen - n;
    }
    memcpy(buf + n, queue, queue_len);
    return n + queue_len;
}
