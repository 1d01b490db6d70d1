/* cache_moves: see cache_moves.h. */
#include "sm/cache_moves.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/fnv.h"
#include "common/le.h"
#include "sm/cache_op.h"

#define MOVES_MAGIC 0x53564d43u /* "CMVS" */
#define EMPTY UINT32_MAX

/* ---- keyset ------------------------------------------------------------- */

static uint64_t key_hash(const char *key, size_t len)
{
    return fnv1a64(key, len);
}

static void index_put(struct keyset *s, uint32_t i)
{
    size_t mask = s->index_cap - 1;
    size_t p = (size_t)key_hash(s->keys[i], s->lens[i]) & mask;

    while (s->index[p] != EMPTY) {
        p = (p + 1) & mask;
    }
    s->index[p] = i;
}

static void index_rebuild(struct keyset *s, size_t cap)
{
    size_t i;

    free(s->index);
    s->index_cap = cap;
    s->index = xmalloc(cap * sizeof(*s->index));
    for (i = 0; i < cap; i++) {
        s->index[i] = EMPTY;
    }
    for (i = s->head; i < s->n; i++) {
        index_put(s, (uint32_t)i);
    }
}

static bool keyset_has(const struct keyset *s, const char *key, size_t len)
{
    size_t mask, p;

    if (s->index_cap == 0) {
        return false;
    }
    mask = s->index_cap - 1;
    p = (size_t)key_hash(key, len) & mask;
    while (s->index[p] != EMPTY) {
        uint32_t i = s->index[p];
        if (s->lens[i] == len && memcmp(s->keys[i], key, len) == 0) {
            return true;
        }
        p = (p + 1) & mask;
    }
    return false;
}

static void keyset_add(struct keyset *s, const char *key, size_t len)
{
    if (keyset_has(s, key, len)) {
        return;
    }
    if (s->head > 0 && s->head == s->n) {
        /* everything was taken: start the arrays over */
        s->head = 0;
        s->n = 0;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->keys = xrealloc(s->keys, s->cap * sizeof(*s->keys));
        s->lens = xrealloc(s->lens, s->cap * sizeof(*s->lens));
    }
    s->keys[s->n] = xmemdup(key, len);
    s->lens[s->n] = (uint8_t)len;
    s->n++;
    if ((s->n - s->head) * 2 > s->index_cap) {
        index_rebuild(s, s->index_cap ? s->index_cap * 2 : 32);
    } else {
        index_put(s, (uint32_t)(s->n - 1));
    }
}

void keyset_clear(struct keyset *s)
{
    size_t i;

    for (i = s->head; i < s->n; i++) {
        free(s->keys[i]);
    }
    free(s->keys);
    free(s->lens);
    free(s->index);
    memset(s, 0, sizeof(*s));
}

size_t keyset_size(const struct keyset *s)
{
    return s->n - s->head;
}

void keyset_take(struct keyset *from, struct keyset *to, size_t max_bytes,
                 size_t (*cost)(void *data, const char *key, size_t len),
                 void *data)
{
    size_t bytes = 0;

    while (from->head < from->n) {
        size_t k = from->head;
        size_t c = cost(data, from->keys[k], from->lens[k]);

        if (keyset_size(to) > 0 && bytes + c > max_bytes) {
            break;
        }
        bytes += c;
        keyset_add(to, from->keys[k], from->lens[k]);
        free(from->keys[k]);
        from->keys[k] = NULL;
        from->head++;
    }
    /* the index still points at taken slots: rebuild it over the rest */
    index_rebuild(from, from->index_cap ? from->index_cap : 32);
}

const char *keyset_key(const struct keyset *s, size_t i, size_t *len)
{
    *len = s->lens[s->head + i];
    return s->keys[s->head + i];
}

/* ---- records ------------------------------------------------------------ */

void cache_moves_init(struct cache_moves *m)
{
    memset(m, 0, sizeof(*m));
}

static void rec_clear(struct cache_move_rec *r)
{
    free(r->arcs);
    keyset_clear(&r->dirty);
    keyset_clear(&r->cut);
    memset(r, 0, sizeof(*r));
}

void cache_moves_clear(struct cache_moves *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        rec_clear(&m->v[i]);
    }
    free(m->v);
    cache_moves_init(m);
}

struct cache_move_rec *cache_moves_find(struct cache_moves *m, uint64_t id)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        if (m->v[i].id == id) {
            return &m->v[i];
        }
    }
    return NULL;
}

struct cache_move_rec *cache_moves_add(struct cache_moves *m, uint64_t id,
                                       bool out, const char *peer,
                                       const struct arc *arcs, size_t n)
{
    struct cache_move_rec *r;

    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->v = xrealloc(m->v, m->cap * sizeof(*m->v));
    }
    r = &m->v[m->n++];
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->out = out;
    memcpy(r->peer, peer, strnlen(peer, CLUSTER_NAME_MAX - 1));
    r->arcs = n ? xmemdup(arcs, n * sizeof(*arcs)) : NULL;
    r->n_arcs = n;
    return r;
}

void cache_moves_remove(struct cache_moves *m, struct cache_move_rec *rec)
{
    size_t i = (size_t)(rec - m->v);

    rec_clear(rec);
    memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
    m->n--;
}

static bool is_done(const struct cache_move_rec *r)
{
    return r->state == CACHE_MOVE_ACTIVE || r->state == CACHE_MOVE_PURGED;
}

void cache_moves_finished(struct cache_moves *m, struct cache_move_rec *rec)
{
    size_t done = 0, i;

    keyset_clear(&rec->dirty);
    keyset_clear(&rec->cut);
    for (i = 0; i < m->n; i++) {
        done += is_done(&m->v[i]);
    }
    /* forget the oldest finished ones (creation order) */
    for (i = 0; i < m->n && done > CACHE_MOVES_DONE_KEPT;) {
        if (is_done(&m->v[i])) {
            cache_moves_remove(m, &m->v[i]);
            done--;
        } else {
            i++;
        }
    }
}

static bool live_out(const struct cache_move_rec *r)
{
    return r->out && (r->state == CACHE_MOVE_TRACKING ||
                      r->state == CACHE_MOVE_FENCED ||
                      r->state == CACHE_MOVE_BROKEN);
}

static bool fence_expired(const struct cache_move_rec *r, uint64_t now_ms)
{
    return r->state == CACHE_MOVE_FENCED &&
           now_ms >= r->fenced_at + CACHE_MOVES_FENCE_MAX_MS;
}

void cache_moves_expire(struct cache_moves *m, uint64_t now_ms)
{
    size_t i = 0;

    while (i < m->n) {
        if (m->v[i].out && fence_expired(&m->v[i], now_ms)) {
            cache_moves_remove(m, &m->v[i]);
        } else {
            i++;
        }
    }
}

enum cache_moves_verdict cache_moves_check(const struct cache_moves *m,
                                           uint32_t hash, uint64_t now_ms)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        const struct cache_move_rec *r = &m->v[i];

        if (!arcs_contain(r->arcs, r->n_arcs, hash)) {
            continue;
        }
        if (!r->out && r->state == CACHE_MOVE_IMPORTING) {
            return MOVES_IMPORTING;
        }
        if (r->out && r->state == CACHE_MOVE_FENCED) {
            return fence_expired(r, now_ms) ? MOVES_NONE : MOVES_FENCED;
        }
        if (live_out(r)) {
            return MOVES_TRACK;
        }
    }
    return MOVES_NONE;
}

bool cache_moves_live(const struct cache_moves *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        if (!is_done(&m->v[i])) {
            return true;
        }
    }
    return false;
}

bool cache_moves_tracking(const struct cache_moves *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        if (live_out(&m->v[i])) {
            return true;
        }
    }
    return false;
}

void cache_moves_dirty(struct cache_moves *m, uint32_t hash, const char *key,
                       size_t len)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        struct cache_move_rec *r = &m->v[i];

        if ((r->state == CACHE_MOVE_TRACKING ||
             r->state == CACHE_MOVE_FENCED) &&
            r->out && arcs_contain(r->arcs, r->n_arcs, hash)) {
            keyset_add(&r->dirty, key, len);
        }
    }
}

void cache_moves_flushed(struct cache_moves *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        if (live_out(&m->v[i])) {
            m->v[i].state = CACHE_MOVE_BROKEN;
            keyset_clear(&m->v[i].dirty);
            keyset_clear(&m->v[i].cut);
        }
    }
}

/* ---- encoding ----------------------------------------------------------- */

static void put_keyset(struct buf *out, const struct keyset *s)
{
    size_t k;

    buf_put_le32(out, (uint32_t)keyset_size(s));
    for (k = s->head; k < s->n; k++) {
        uint8_t len = s->lens[k];
        buf_append(out, &len, 1);
        buf_append(out, s->keys[k], len);
    }
}

static bool get_keyset(struct le_reader *rd, struct keyset *s)
{
    uint32_t n, k;

    if (!le_get_u32(rd, &n) || n > rd->left) {
        return false;
    }
    for (k = 0; k < n; k++) {
        const unsigned char *key;
        uint8_t klen;

        if (!le_get_u8(rd, &klen) || !le_get_bytes(rd, &key, klen) ||
            !cache_key_valid((const char *)key, klen)) {
            return false;
        }
        keyset_add(s, (const char *)key, klen);
    }
    return true;
}

void cache_moves_encode(const struct cache_moves *m, struct buf *out)
{
    size_t i, k;

    buf_put_le32(out, MOVES_MAGIC);
    buf_put_le32(out, (uint32_t)m->n);
    for (i = 0; i < m->n; i++) {
        const struct cache_move_rec *r = &m->v[i];
        uint8_t b[2] = {r->out ? 1 : 0, (uint8_t)r->state};

        buf_put_le64(out, r->id);
        buf_append(out, b, 2);
        buf_put_le64(out, r->fenced_at);
        buf_put_le32(out, (uint32_t)strlen(r->peer));
        buf_append(out, r->peer, strlen(r->peer));
        buf_put_le32(out, (uint32_t)r->n_arcs);
        for (k = 0; k < r->n_arcs; k++) {
            buf_put_le32(out, r->arcs[k].lo);
            buf_put_le32(out, r->arcs[k].hi);
        }
        put_keyset(out, &r->dirty);
        buf_put_le64(out, r->cut_seq);
        put_keyset(out, &r->cut);
    }
}

int cache_moves_decode(const void *buf, size_t len, struct cache_moves *out)
{
    struct le_reader rd = {buf, len};
    struct cache_moves m;
    uint32_t magic, n, i, k;

    cache_moves_init(&m);
    if (!le_get_u32(&rd, &magic) || magic != MOVES_MAGIC ||
        !le_get_u32(&rd, &n) || n > rd.left / 26) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        struct cache_move_rec *r;
        const unsigned char *peer;
        uint32_t peer_len, n_arcs;
        uint64_t id, fenced_at;
        uint8_t out_flag, state;

        if (!le_get_u64(&rd, &id) || !le_get_u8(&rd, &out_flag) ||
            out_flag > 1 || !le_get_u8(&rd, &state) ||
            state >= CACHE_MOVE_STATE__COUNT || !le_get_u64(&rd, &fenced_at) ||
            !le_get_u32(&rd, &peer_len) ||
            peer_len >= CLUSTER_NAME_MAX ||
            !le_get_bytes(&rd, &peer, peer_len) ||
            !le_get_u32(&rd, &n_arcs) || n_arcs > CACHE_MOVE_MAX_ARCS ||
            n_arcs > rd.left / 8) {
            goto err;
        }
        r = cache_moves_add(&m, id, out_flag, "", NULL, 0);
        memcpy(r->peer, peer, peer_len);
        r->state = (enum cache_move_state)state;
        r->fenced_at = fenced_at;
        r->arcs = n_arcs ? xcalloc(n_arcs, sizeof(*r->arcs)) : NULL;
        r->n_arcs = n_arcs;
        for (k = 0; k < n_arcs; k++) {
            le_get_u32(&rd, &r->arcs[k].lo);
            le_get_u32(&rd, &r->arcs[k].hi);
        }
        if (!arcs_valid(r->arcs, r->n_arcs) || !get_keyset(&rd, &r->dirty) ||
            !le_get_u64(&rd, &r->cut_seq) || !get_keyset(&rd, &r->cut)) {
            goto err;
        }
    }
    if (rd.left != 0) {
        goto err;
    }
    cache_moves_clear(out);
    *out = m;
    return 0;
err:
    cache_moves_clear(&m);
    return -1;
}
