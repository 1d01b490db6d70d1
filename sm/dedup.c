/*
 * dedup: see dedup.h.
 *
 * A client's answers sit in a ring of @window slots, seq s in slot
 * s % window. Slots are never cleared: a slot answers for s only while it
 * holds s and s is inside the window, so moving the window up costs
 * nothing. Clients are found by a chained hash of their id (buckets sized
 * once for max_clients) and kept on an LRU list.
 */
#include "sm/dedup.h"

#include <stdlib.h>
#include <string.h>

#include "common/fnv.h"
#include "common/invariant.h"
#include "common/le.h"

struct dedup_slot {
    uint64_t seq; /* 0: empty */
    struct dedup_answer a;
};

struct dedup_client {
    struct dedup_client *chain;
    struct dedup_client *prev; /* LRU */
    struct dedup_client *next;
    uint64_t id;
    uint64_t max_seq;
    struct dedup_slot slots[];
};

/* client id, max_seq, answer count */
#define ENC_CLIENT_LEN (8 + 8 + 4)
/* seq, code, number, cas */
#define ENC_ANSWER_LEN (8 + 4 + 8 + 8)

static uint64_t id_hash(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return id;
}

void dedup_init(struct dedup *d, uint32_t window, uint32_t max_clients)
{
    uint32_t n = 1;

    INVARIANT(window >= 1 && window <= DEDUP_LIMIT);
    INVARIANT(max_clients >= 1 && max_clients <= DEDUP_LIMIT);
    memset(d, 0, sizeof(*d));
    d->window = window;
    d->max_clients = max_clients;
    while (n < max_clients) {
        n <<= 1;
    }
    d->mask = n - 1;
    d->buckets = xcalloc(n, sizeof(*d->buckets));
}

void dedup_clear(struct dedup *d)
{
    struct dedup_client *c = d->lru_first;

    while (c != NULL) {
        struct dedup_client *next = c->next;
        free(c);
        c = next;
    }
    if (d->buckets != NULL) {
        memset(d->buckets, 0, ((size_t)d->mask + 1) * sizeof(*d->buckets));
    }
    d->lru_first = NULL;
    d->lru_last = NULL;
    d->n_clients = 0;
}

void dedup_close(struct dedup *d)
{
    dedup_clear(d);
    free(d->buckets);
    d->buckets = NULL;
}

static struct dedup_client **bucket_of(const struct dedup *d, uint64_t id)
{
    return &d->buckets[id_hash(id) & d->mask];
}

static struct dedup_client *find(const struct dedup *d, uint64_t id)
{
    struct dedup_client *c;

    for (c = *bucket_of(d, id); c != NULL; c = c->chain) {
        if (c->id == id) {
            return c;
        }
    }
    return NULL;
}

static bool in_window(const struct dedup *d, const struct dedup_client *c,
                      uint64_t seq)
{
    return seq <= c->max_seq && c->max_seq - seq < d->window;
}

enum dedup_verdict dedup_check(const struct dedup *d, uint64_t client,
                               uint64_t seq, struct dedup_answer *out)
{
    const struct dedup_client *c = find(d, client);
    const struct dedup_slot *s;

    if (c == NULL || seq > c->max_seq) {
        return DEDUP_NEW;
    }
    if (!in_window(d, c, seq)) {
        return DEDUP_STALE;
    }
    s = &c->slots[seq % d->window];
    if (s->seq != seq) {
        return DEDUP_NEW;
    }
    *out = s->a;
    return DEDUP_DUPLICATE;
}

static void lru_remove(struct dedup *d, struct dedup_client *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        d->lru_first = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    } else {
        d->lru_last = c->prev;
    }
    c->prev = NULL;
    c->next = NULL;
}

static void lru_append(struct dedup *d, struct dedup_client *c)
{
    c->prev = d->lru_last;
    c->next = NULL;
    if (d->lru_last != NULL) {
        d->lru_last->next = c;
    } else {
        d->lru_first = c;
    }
    d->lru_last = c;
}

static void forget(struct dedup *d, struct dedup_client *c)
{
    struct dedup_client **pp = bucket_of(d, c->id);

    while (*pp != c) {
        pp = &(*pp)->chain;
    }
    *pp = c->chain;
    lru_remove(d, c);
    d->n_clients--;
    free(c);
}

static struct dedup_client *add(struct dedup *d, uint64_t id)
{
    struct dedup_client **b = bucket_of(d, id);
    struct dedup_client *c;

    if (d->n_clients == d->max_clients) {
        forget(d, d->lru_first);
    }
    c = xcalloc(1, sizeof(*c) + (size_t)d->window * sizeof(c->slots[0]));
    c->id = id;
    c->chain = *b;
    *b = c;
    lru_append(d, c);
    d->n_clients++;
    return c;
}

void dedup_record(struct dedup *d, uint64_t client, uint64_t seq,
                  const struct dedup_answer *a)
{
    struct dedup_client *c = find(d, client);
    struct dedup_slot *s;

    INVARIANT(seq != 0);
    if (c == NULL) {
        c = add(d, client);
    } else {
        lru_remove(d, c);
        lru_append(d, c);
    }
    if (seq > c->max_seq) {
        c->max_seq = seq;
    }
    INVARIANT(in_window(d, c, seq));
    s = &c->slots[seq % d->window];
    s->seq = seq;
    s->a = *a;
}

/*
 * Encoding, little-endian:
 *   u32 window | u32 max_clients | u32 client count
 *   per client, least recently recorded first:
 *     u64 id | u64 max_seq | u32 answer count
 *     per answer in the window, by seq: u64 seq | u32 code | u64 number
 *                                       | u64 cas
 */
void dedup_encode(const struct dedup *d, struct buf *out)
{
    const struct dedup_client *c;

    buf_put_le32(out, d->window);
    buf_put_le32(out, d->max_clients);
    buf_put_le32(out, d->n_clients);
    for (c = d->lru_first; c != NULL; c = c->next) {
        uint64_t lo = c->max_seq >= d->window ? c->max_seq - d->window + 1 : 1;
        uint32_t n = 0;
        size_t count_at;
        uint64_t seq;

        buf_put_le64(out, c->id);
        buf_put_le64(out, c->max_seq);
        count_at = out->len;
        buf_put_le32(out, 0);
        for (seq = lo; seq <= c->max_seq; seq++) {
            const struct dedup_slot *s = &c->slots[seq % d->window];

            if (s->seq != seq) {
                continue;
            }
            buf_put_le64(out, s->seq);
            buf_put_le32(out, s->a.code);
            buf_put_le64(out, s->a.number);
            buf_put_le64(out, s->a.cas);
            n++;
        }
        le_put_u32((unsigned char *)out->data + count_at, n);
    }
}

static bool decode_client(struct dedup *d, struct le_reader *r)
{
    struct dedup_client *c;
    uint64_t id, max_seq, prev = 0;
    uint32_t n, i;

    if (!le_get_u64(r, &id) || !le_get_u64(r, &max_seq) ||
        !le_get_u32(r, &n) || n > d->window || max_seq == 0 ||
        find(d, id) != NULL || d->n_clients == d->max_clients) {
        return false;
    }
    c = add(d, id);
    c->max_seq = max_seq;
    for (i = 0; i < n; i++) {
        struct dedup_answer a;
        uint64_t seq;

        /* ascending seqs inside the window: one per slot */
        if (!le_get_u64(r, &seq) || !le_get_u32(r, &a.code) ||
            !le_get_u64(r, &a.number) || !le_get_u64(r, &a.cas) ||
            seq <= prev || !in_window(d, c, seq)) {
            return false;
        }
        prev = seq;
        c->slots[seq % d->window].seq = seq;
        c->slots[seq % d->window].a = a;
    }
    return true;
}

int dedup_decode(const void *data, size_t len, struct dedup *d)
{
    struct le_reader r = {.p = data, .left = len};
    uint32_t window, max_clients, n, i;

    dedup_clear(d);
    if (!le_get_u32(&r, &window) || !le_get_u32(&r, &max_clients) ||
        !le_get_u32(&r, &n) || window == 0 || window > DEDUP_LIMIT ||
        max_clients == 0 || max_clients > DEDUP_LIMIT || n > max_clients ||
        n > r.left / ENC_CLIENT_LEN) {
        return -1;
    }
    dedup_close(d);
    dedup_init(d, window, max_clients);
    for (i = 0; i < n; i++) {
        if (!decode_client(d, &r)) {
            goto err;
        }
    }
    if (r.left != 0) {
        goto err;
    }
    return 0;

err:
    dedup_clear(d);
    return -1;
}

uint64_t dedup_digest(const struct dedup *d)
{
    struct buf b;
    uint64_t h;

    buf_init(&b);
    dedup_encode(d, &b);
    h = fnv1a64(b.data, b.len);
    buf_free(&b);
    return h;
}

void dedup_check_invariants(const struct dedup *d)
{
    const struct dedup_client *c, *prev = NULL;
    uint32_t n = 0;

    for (c = d->lru_first; c != NULL; prev = c, c = c->next) {
        INVARIANT(c->prev == prev);
        INVARIANT(find(d, c->id) == c);
        INVARIANT(c->max_seq != 0);
        n++;
    }
    INVARIANT(prev == d->lru_last);
    INVARIANT(n == d->n_clients && n <= d->max_clients);
}
