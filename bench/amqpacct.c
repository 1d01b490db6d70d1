/*
 * amqpacct: amqpload's body header, seen-set, confirm window and --rate
 * pace (see amqpacct.h).
 */
#include "bench/amqpacct.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------ message body ----------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    unsigned i;

    for (i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    unsigned i;

    for (i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    unsigned i;

    for (i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* Layout: magic u32, publisher u32, seq u64, sent_ns u64, run_id u64. */
void amqpacct_body_encode(const struct amqpacct_body *b, uint8_t *buf)
{
    put32(buf, AMQPACCT_MAGIC);
    put32(buf + 4, b->publisher);
    put64(buf + 8, b->seq);
    put64(buf + 16, b->sent_ns);
    put64(buf + 24, b->run_id);
}

int amqpacct_body_decode(const uint8_t *buf,
                         size_t len,
                         struct amqpacct_body *b)
{
    if (len < AMQPACCT_HDR_SIZE || get32(buf) != AMQPACCT_MAGIC) {
        return -1;
    }
    b->publisher = get32(buf + 4);
    b->seq = get64(buf + 8);
    b->sent_ns = get64(buf + 16);
    b->run_id = get64(buf + 24);
    return 0;
}

/* ------------------------------- seen-set -------------------------------- */

int amqpacct_seen_init(struct amqpacct_seen *s, unsigned n_pubs)
{
    s->n_pubs = n_pubs;
    s->pubs = calloc(n_pubs ? n_pubs : 1, sizeof(*s->pubs));
    return s->pubs ? 0 : -1;
}

void amqpacct_seen_free(struct amqpacct_seen *s)
{
    unsigned i;

    if (s->pubs == NULL) {
        return;
    }
    for (i = 0; i < s->n_pubs; i++) {
        free(s->pubs[i].words);
    }
    free(s->pubs);
    s->pubs = NULL;
}

/* Make room for word @w in @b (doubling, zero-filled). */
static int bits_reserve(struct amqpacct_bits *b, uint64_t w)
{
    uint64_t n;
    uint64_t *words;

    if (w < b->n_words) {
        return 0;
    }
    n = b->n_words ? b->n_words : 64;
    while (n <= w) {
        n *= 2;
    }
    words = realloc(b->words, n * sizeof(*words));
    if (words == NULL) {
        return -1;
    }
    memset(words + b->n_words, 0, (n - b->n_words) * sizeof(*words));
    b->words = words;
    b->n_words = n;
    return 0;
}

int amqpacct_seen_add(struct amqpacct_seen *s, unsigned pub, uint64_t seq)
{
    struct amqpacct_bits *b;
    uint64_t mask = UINT64_C(1) << (seq % 64);

    if (pub >= s->n_pubs) {
        return -1;
    }
    b = &s->pubs[pub];
    if (bits_reserve(b, seq / 64) != 0) {
        return -1;
    }
    if (b->words[seq / 64] & mask) {
        return 0;
    }
    b->words[seq / 64] |= mask;
    b->count++;
    return 1;
}

int amqpacct_seen_has(const struct amqpacct_seen *s, unsigned pub, uint64_t seq)
{
    const struct amqpacct_bits *b;

    if (pub >= s->n_pubs) {
        return 0;
    }
    b = &s->pubs[pub];
    if (seq / 64 >= b->n_words) {
        return 0;
    }
    return (b->words[seq / 64] >> (seq % 64)) & 1;
}

uint64_t amqpacct_seen_count(const struct amqpacct_seen *s)
{
    uint64_t n = 0;
    unsigned i;

    for (i = 0; i < s->n_pubs; i++) {
        n += s->pubs[i].count;
    }
    return n;
}

int64_t amqpacct_seen_merge(struct amqpacct_seen *dst,
                            const struct amqpacct_seen *src)
{
    int64_t both = 0;
    unsigned i;
    uint64_t w;

    for (i = 0; i < src->n_pubs && i < dst->n_pubs; i++) {
        const struct amqpacct_bits *sb = &src->pubs[i];
        struct amqpacct_bits *db = &dst->pubs[i];

        if (sb->n_words && bits_reserve(db, sb->n_words - 1) != 0) {
            return -1;
        }
        for (w = 0; w < sb->n_words; w++) {
            uint64_t common = db->words[w] & sb->words[w];
            uint64_t added = sb->words[w] & ~db->words[w];

            both += __builtin_popcountll(common);
            db->count += (uint64_t)__builtin_popcountll(added);
            db->words[w] |= sb->words[w];
        }
    }
    return both;
}

uint64_t amqpacct_seen_diff(const struct amqpacct_seen *a,
                            const struct amqpacct_seen *b)
{
    uint64_t n = 0;
    unsigned i;
    uint64_t w;

    for (i = 0; i < a->n_pubs; i++) {
        const struct amqpacct_bits *ab = &a->pubs[i];
        const struct amqpacct_bits *bb = i < b->n_pubs ? &b->pubs[i] : NULL;

        for (w = 0; w < ab->n_words; w++) {
            uint64_t other = bb && w < bb->n_words ? bb->words[w] : 0;

            n += (uint64_t)__builtin_popcountll(ab->words[w] & ~other);
        }
    }
    return n;
}

/* ----------------------------- confirm window ---------------------------- */

int amqpacct_window_init(struct amqpacct_window *w, uint64_t limit)
{
    uint64_t cap = 64;

    /* Twice the limit: a slow tag at the bottom does not stop the window
     * at once when later ones are confirmed around it. */
    while (cap < 2 * limit) {
        cap *= 2;
    }
    memset(w, 0, sizeof(*w));
    w->next_tag = 1;
    w->base = 1;
    w->cap = cap;
    w->sent_ns = calloc(cap, sizeof(*w->sent_ns));
    return w->sent_ns ? 0 : -1;
}

void amqpacct_window_free(struct amqpacct_window *w)
{
    free(w->sent_ns);
    w->sent_ns = NULL;
}

int amqpacct_window_full(const struct amqpacct_window *w, uint64_t limit)
{
    return w->outstanding >= limit || w->next_tag - w->base >= w->cap;
}

uint64_t amqpacct_window_push(struct amqpacct_window *w, uint64_t now_ns)
{
    uint64_t tag = w->next_tag++;

    w->sent_ns[tag & (w->cap - 1)] = now_ns ? now_ns : 1;
    w->outstanding++;
    return tag;
}

static int64_t resolve_one(struct amqpacct_window *w,
                           uint64_t tag,
                           int acked,
                           amqpacct_window_cb cb,
                           void *arg)
{
    uint64_t *slot = &w->sent_ns[tag & (w->cap - 1)];
    uint64_t sent = *slot;

    if (sent == 0) {
        return 0;
    }
    *slot = 0;
    w->outstanding--;
    if (cb) {
        cb(arg, tag, sent, acked);
    }
    return 1;
}

int64_t amqpacct_window_resolve(struct amqpacct_window *w,
                                uint64_t tag,
                                int multiple,
                                int acked,
                                amqpacct_window_cb cb,
                                void *arg)
{
    int64_t n = 0;
    uint64_t t;

    if (tag >= w->next_tag || (tag == 0 && !multiple)) {
        return -1;
    }
    if (tag == 0) {
        tag = w->next_tag - 1;
    }
    if (tag < w->base) {
        return 0;
    }
    if (multiple) {
        for (t = w->base; t <= tag; t++) {
            n += resolve_one(w, t, acked, cb, arg);
        }
    } else {
        n = resolve_one(w, tag, acked, cb, arg);
    }
    while (w->base < w->next_tag && w->sent_ns[w->base & (w->cap - 1)] == 0) {
        w->base++;
    }
    return n;
}

/* --------------------------------- pacing -------------------------------- */

void amqpacct_pace_init(struct amqpacct_pace *p,
                        double rate,
                        unsigned n,
                        unsigned i,
                        uint64_t start_ns,
                        uint64_t slack_ns)
{
    assert(rate > 0 && n > 0 && i < n);
    p->interval_ns = (uint64_t)(1e9 * (double)n / rate);
    if (p->interval_ns == 0) {
        p->interval_ns = 1;
    }
    p->slack_ns = slack_ns;
    p->next_ns = start_ns + p->interval_ns / n * i;
}

uint64_t amqpacct_pace_wait(const struct amqpacct_pace *p, uint64_t now_ns)
{
    return now_ns >= p->next_ns ? 0 : p->next_ns - now_ns;
}

void amqpacct_pace_take(struct amqpacct_pace *p, uint64_t now_ns)
{
    assert(now_ns >= p->next_ns);
    p->next_ns += p->interval_ns;
    if (p->next_ns + p->slack_ns < now_ns) {
        p->next_ns = now_ns - p->slack_ns; /* older slots are dropped */
    }
}
