/*
 * cache_move: see cache_move.h. Encodings only; the state a shard keeps
 * for its moves is cache_sm's.
 *
 * Every encoding starts with a u32 magic and a u8 kind/state; strings and
 * byte strings are u32 length + bytes; counts are u32 and checked against
 * the bytes left before anything is allocated.
 */
#include "sm/cache_move.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/le.h"
#include "sm/cache_op.h"

#define CMD_MAGIC 0x444d4d43u   /* "CMMD" */
#define EXP_MAGIC 0x51584d43u   /* "CMXQ" */
#define REPLY_MAGIC 0x52584d43u /* "CMXR" */

/* ---- writing ------------------------------------------------------------ */

static void put_u8(struct buf *b, uint8_t v)
{
    buf_append(b, &v, 1);
}

static void put_bytes(struct buf *b, const void *p, size_t len)
{
    buf_put_le32(b, (uint32_t)len);
    if (len > 0) {
        buf_append(b, p, len);
    }
}

static void put_items(struct buf *b, const struct cache_move_item *items,
                      size_t n)
{
    size_t i;

    buf_put_le32(b, (uint32_t)n);
    for (i = 0; i < n; i++) {
        const struct cache_move_item *it = &items[i];
        put_u8(b, it->tombstone ? 1 : 0);
        put_bytes(b, it->key, it->key_len);
        if (!it->tombstone) {
            put_bytes(b, it->value, it->value_len);
            buf_put_le32(b, it->flags);
            buf_put_le64(b, it->exp_ms);
            buf_put_le64(b, it->cas);
        }
    }
}

static void put_keys(struct buf *b, const char *const *keys,
                     const size_t *lens, size_t n)
{
    size_t i;

    buf_put_le32(b, (uint32_t)n);
    for (i = 0; i < n; i++) {
        put_bytes(b, keys[i], lens[i]);
    }
}

static void *finish(struct buf *b, size_t *len)
{
    *len = b->len;
    return b->data; /* the caller frees it */
}

/* ---- reading ------------------------------------------------------------ */

static bool get_bytes(struct le_reader *r, const char **p, size_t *len,
                      size_t max)
{
    const unsigned char *q;
    uint32_t n;

    if (!le_get_u32(r, &n) || n > max || !le_get_bytes(r, &q, n)) {
        return false;
    }
    *p = (const char *)q;
    *len = n;
    return true;
}

static bool get_key(struct le_reader *r, const char **p, size_t *len)
{
    return get_bytes(r, p, len, CACHE_KEY_MAX) && cache_key_valid(*p, *len);
}

static bool get_items(struct le_reader *r, struct cache_move_item **out,
                      size_t *n_out)
{
    struct cache_move_item *items;
    uint32_t n, i;

    /* an item takes at least 5 bytes */
    if (!le_get_u32(r, &n) || n > r->left / 5) {
        return false;
    }
    items = n > 0 ? xcalloc(n, sizeof(*items)) : NULL;
    for (i = 0; i < n; i++) {
        struct cache_move_item *it = &items[i];
        uint8_t tomb;

        if (!le_get_u8(r, &tomb) || tomb > 1 ||
            !get_key(r, &it->key, &it->key_len)) {
            goto err;
        }
        it->tombstone = tomb;
        if (!tomb && (!get_bytes(r, &it->value, &it->value_len,
                                 CACHE_ITEM_SIZE_MAX) ||
                      !le_get_u32(r, &it->flags) ||
                      !le_get_u64(r, &it->exp_ms) ||
                      !le_get_u64(r, &it->cas) || it->cas == 0)) {
            goto err;
        }
    }
    *out = items;
    *n_out = n;
    return true;
err:
    free(items);
    return false;
}

static bool get_keys(struct le_reader *r, const char ***keys, size_t **lens,
                     size_t *n_out)
{
    uint32_t n, i;

    if (!le_get_u32(r, &n) || n > r->left / 5) {
        return false;
    }
    *keys = n > 0 ? xcalloc(n, sizeof(**keys)) : NULL;
    *lens = n > 0 ? xcalloc(n, sizeof(**lens)) : NULL;
    *n_out = n;
    for (i = 0; i < n; i++) {
        if (!get_key(r, &(*keys)[i], &(*lens)[i])) {
            return false; /* the caller clears */
        }
    }
    return true;
}

/* ---- commands ------------------------------------------------------------ */

void *cache_move_cmd_encode(const struct cache_move_cmd *c, size_t *len)
{
    struct buf b;
    size_t i;

    buf_init(&b);
    buf_put_le32(&b, CMD_MAGIC);
    put_u8(&b, (uint8_t)c->kind);
    buf_put_le64(&b, c->move_id);
    put_bytes(&b, c->peer, strlen(c->peer));
    buf_put_le32(&b, (uint32_t)c->n_arcs);
    for (i = 0; i < c->n_arcs; i++) {
        buf_put_le32(&b, c->arcs[i].lo);
        buf_put_le32(&b, c->arcs[i].hi);
    }
    buf_put_le64(&b, c->digest);
    buf_put_le64(&b, c->seq);
    put_items(&b, c->items, c->n_items);
    return finish(&b, len);
}

void cache_move_cmd_clear(struct cache_move_cmd *c)
{
    free(c->arcs);
    free(c->items);
    memset(c, 0, sizeof(*c));
}

int cache_move_cmd_decode(const void *buf, size_t len,
                          struct cache_move_cmd *out)
{
    struct le_reader r = {buf, len};
    const char *peer;
    size_t peer_len;
    uint32_t magic, n, i;
    uint8_t kind;

    memset(out, 0, sizeof(*out));
    if (!le_get_u32(&r, &magic) || magic != CMD_MAGIC ||
        !le_get_u8(&r, &kind) || kind == 0 ||
        kind >= CACHE_MOVE_KIND__COUNT || !le_get_u64(&r, &out->move_id) ||
        out->move_id == 0 ||
        !get_bytes(&r, &peer, &peer_len, CLUSTER_NAME_MAX - 1) ||
        !le_get_u32(&r, &n) || n > CACHE_MOVE_MAX_ARCS || n > r.left / 8) {
        goto err;
    }
    out->kind = (enum cache_move_kind)kind;
    memcpy(out->peer, peer, peer_len);
    out->peer[peer_len] = '\0';
    out->arcs = n > 0 ? xcalloc(n, sizeof(*out->arcs)) : NULL;
    out->n_arcs = n;
    for (i = 0; i < n; i++) {
        le_get_u32(&r, &out->arcs[i].lo);
        le_get_u32(&r, &out->arcs[i].hi);
    }
    if (!arcs_valid(out->arcs, out->n_arcs) ||
        !le_get_u64(&r, &out->digest) || !le_get_u64(&r, &out->seq) ||
        !get_items(&r, &out->items, &out->n_items) || r.left != 0) {
        goto err;
    }
    if ((out->kind == CACHE_MOVE_IN_BEGIN ||
         out->kind == CACHE_MOVE_OUT_BEGIN) &&
        (out->n_arcs == 0 || !cluster_shard_name_ok(out->peer))) {
        goto err;
    }
    return 0;
err:
    cache_move_cmd_clear(out);
    return -1;
}

/* ---- export requests ------------------------------------------------------ */

void *cache_export_req_encode(const struct cache_export_req *q, size_t *len)
{
    struct buf b;

    buf_init(&b);
    buf_put_le32(&b, EXP_MAGIC);
    put_u8(&b, (uint8_t)q->kind);
    buf_put_le64(&b, q->move_id);
    buf_put_le64(&b, q->generation);
    buf_put_le64(&b, q->offset);
    buf_put_le32(&b, q->max_bytes);
    put_keys(&b, q->keys, q->key_lens, q->n_keys);
    return finish(&b, len);
}

void cache_export_req_clear(struct cache_export_req *q)
{
    free(q->keys);
    free(q->key_lens);
    memset(q, 0, sizeof(*q));
}

int cache_export_req_decode(const void *buf, size_t len,
                            struct cache_export_req *out)
{
    struct le_reader r = {buf, len};
    uint32_t magic;
    uint8_t kind;

    memset(out, 0, sizeof(*out));
    if (!le_get_u32(&r, &magic) || magic != EXP_MAGIC ||
        !le_get_u8(&r, &kind) || kind == 0 ||
        kind >= CACHE_EXPORT_KIND__COUNT || !le_get_u64(&r, &out->move_id) ||
        !le_get_u64(&r, &out->generation) || !le_get_u64(&r, &out->offset) ||
        !le_get_u32(&r, &out->max_bytes) ||
        !get_keys(&r, &out->keys, &out->key_lens, &out->n_keys) ||
        r.left != 0) {
        cache_export_req_clear(out);
        return -1;
    }
    out->kind = (enum cache_export_kind)kind;
    return 0;
}

/* ---- replies --------------------------------------------------------------- */

const char *cache_move_state_name(enum cache_move_state s)
{
    static const char *names[CACHE_MOVE_STATE__COUNT] = {
        "none",  "importing", "active",     "tracking",
        "fenced", "broken",   "handed-off", "purged",
    };
    return (unsigned)s < CACHE_MOVE_STATE__COUNT ? names[s] : "?";
}

void *cache_move_reply_encode(const struct cache_move_reply *p, size_t *len)
{
    struct buf b;

    buf_init(&b);
    buf_put_le32(&b, REPLY_MAGIC);
    put_u8(&b, (uint8_t)p->state);
    buf_put_le64(&b, p->generation);
    buf_put_le64(&b, p->next_offset);
    put_u8(&b, p->done ? 1 : 0);
    buf_put_le64(&b, p->digest);
    buf_put_le64(&b, p->count);
    put_items(&b, p->items, p->n_items);
    return finish(&b, len);
}

void cache_move_reply_clear(struct cache_move_reply *p)
{
    free(p->items);
    memset(p, 0, sizeof(*p));
}

int cache_move_reply_decode(const void *buf, size_t len,
                            struct cache_move_reply *out)
{
    struct le_reader r = {buf, len};
    uint32_t magic;
    uint8_t state, done;

    memset(out, 0, sizeof(*out));
    if (!le_get_u32(&r, &magic) || magic != REPLY_MAGIC ||
        !le_get_u8(&r, &state) || state >= CACHE_MOVE_STATE__COUNT ||
        !le_get_u64(&r, &out->generation) ||
        !le_get_u64(&r, &out->next_offset) || !le_get_u8(&r, &done) ||
        done > 1 || !le_get_u64(&r, &out->digest) ||
        !le_get_u64(&r, &out->count) ||
        !get_items(&r, &out->items, &out->n_items) || r.left != 0) {
        cache_move_reply_clear(out);
        return -1;
    }
    out->state = (enum cache_move_state)state;
    out->done = done;
    return 0;
}
