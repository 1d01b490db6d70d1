/* cache_export: see cache_export.h. */
#include "node/cache_export.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/random_id.h"
#include "sm/cache_move.h"

struct cache_export {
    uint64_t move_id;
    uint64_t generation; /* 0: no listing */
    char **keys;
    size_t *lens;
    size_t n, cap;
};

struct cache_export *cache_export_new(void)
{
    return xcalloc(1, sizeof(struct cache_export));
}

static void listing_clear(struct cache_export *e)
{
    size_t i;

    for (i = 0; i < e->n; i++) {
        free(e->keys[i]);
    }
    free(e->keys);
    free(e->lens);
    e->keys = NULL;
    e->lens = NULL;
    e->n = e->cap = 0;
    e->generation = 0;
    e->move_id = 0;
}

void cache_export_free(struct cache_export *e)
{
    if (e != NULL) {
        listing_clear(e);
        free(e);
    }
}

static void listing_add(void *data, const char *key, size_t len)
{
    struct cache_export *e = data;

    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 256;
        e->keys = xrealloc(e->keys, e->cap * sizeof(*e->keys));
        e->lens = xrealloc(e->lens, e->cap * sizeof(*e->lens));
    }
    e->keys[e->n] = xmemdup(key, len);
    e->lens[e->n] = len;
    e->n++;
}

/* Items of @q's listing from its offset, up to its byte bound (one at
 * least); a new listing if @q names none of ours. */
static void ranges(struct cache_export *e, const struct cache_sm *sm,
                   const struct cache_export_req *q,
                   struct cache_move_reply *r)
{
    size_t i, bytes = 0, cap = 0;
    uint64_t off = q->offset;

    if (e->generation == 0 || e->move_id != q->move_id ||
        e->generation != q->generation) {
        listing_clear(e);
        if (cache_sm_move_keys(sm, q->move_id, listing_add, e) != 0) {
            return; /* no such move here: state NONE says it */
        }
        e->move_id = q->move_id;
        e->generation = random_id_nonzero();
        off = 0; /* a new listing starts over */
    }
    r->generation = e->generation;
    for (i = (size_t)off; i < e->n; i++) {
        struct cache_move_item it;

        if (!cache_sm_export_item(sm, e->keys[i], e->lens[i], &it)) {
            continue; /* deleted since: its tombstone is in the dirty set */
        }
        if (r->n_items > 0 &&
            bytes + it.key_len + it.value_len + 32 > q->max_bytes) {
            break;
        }
        if (r->n_items == cap) {
            cap = cap ? cap * 2 : 64;
            r->items = xrealloc(r->items, cap * sizeof(*r->items));
        }
        r->items[r->n_items++] = it;
        bytes += it.key_len + it.value_len + 32;
    }
    r->next_offset = i;
    r->done = i >= e->n;
}

void cache_export_read(struct cache_export *e, const struct cache_sm *sm,
                       const struct cache_op *op, struct cache_result *res)
{
    struct cache_export_req q;
    struct cache_move_reply r;
    size_t i;

    if (cache_export_req_decode(op->value, op->value_len, &q) != 0) {
        res->status = CACHE_BAD_REQUEST;
        return;
    }
    memset(&r, 0, sizeof(r));
    r.state = cache_sm_move_state(sm, q.move_id);
    switch (q.kind) {
    case CACHE_EXPORT_RANGES:
        ranges(e, sm, &q, &r);
        break;
    case CACHE_EXPORT_KEYS:
        r.items = q.n_keys ? xcalloc(q.n_keys, sizeof(*r.items)) : NULL;
        for (i = 0; i < q.n_keys; i++) {
            cache_sm_export_item(sm, q.keys[i], q.key_lens[i], &r.items[i]);
        }
        r.n_items = q.n_keys;
        break;
    case CACHE_EXPORT_DIGEST:
        (void)cache_sm_move_digest(sm, q.move_id, &r.digest, &r.count);
        break;
    default: /* STATE */
        break;
    }
    /* the items point into the cache and the request: encode now */
    res->value = cache_move_reply_encode(&r, &res->value_len);
    res->status = CACHE_OK;
    free(r.items);
    cache_export_req_clear(&q);
}
