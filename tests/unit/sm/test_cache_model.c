/*
 * Model-based random test of sm/cache_sm: seeded random streams of
 * memcached writes go to several replicas and to a small reference model
 * written here from the contract (cache_sm.h, the decisions at the top of
 * cache_sm.c, memcached 1.6). After every step each replica's answer must
 * be the model's, every key read back at a random time must be the model's,
 * the counters that are state (items, bytes, cas counter, clock, settings)
 * must be the model's, and the digests of all replicas must be equal.
 *
 * Replicas: one with the default settings, two started with other local
 * settings (cache_sm_config): the stream starts with a seeding CONFIG, so
 * the log makes them equal; and one that is, at random points, replaced by
 * a fresh machine (other local settings again) restored from a snapshot of
 * another replica, which then continues with the rest of the stream.
 *
 * Covered: set, add, replace, append, prepend, cas, incr, decr, delete,
 * touch, gat, flush_all (now, delayed, replaced), CONFIG (seed and not,
 * one field or both, shrinking the limit), invalid keys; TTLs relative,
 * absolute, negative and past, with the leader's clock going back at
 * times; eviction oldest-written first under a small memory limit; items
 * and appends larger than the item size; reads at times before and after
 * the apply clock; request ids: most writes carry one (three clients),
 * and now and then a write of the last HIST ones is sent again, which must
 * answer what the first answered (a GAT that hit: the item as it is now)
 * and change nothing, or STALE_RETRY once its client's window (small here)
 * has moved past it. Left out: RING (key ownership) and MOVE/EXPORT (moves of
 * keys), which test_cache_sm.c covers by hand; host malloc failure.
 *
 * The model is plain arrays: one slot per key, write order as a sequence
 * number per item (the oldest is the smallest), expired items kept until a
 * write looks them up or eviction reaches them (as cache_sm.c says), so the
 * item and byte counts can be compared exactly.
 *
 * RINGMQ_TEST_SEED, RINGMQ_MODEL_SEEDS, RINGMQ_MODEL_STEPS: see model_run.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model_run.h"
#include "sm/cache_sm.h"

#define T0 1700000000000ULL /* the leader clock's start, ms */
#define N_KEYS 16
#define VALUE_MAX 1100      /* above the largest item size used */
#define ITEM_OVERHEAD 48    /* cache_sm.c's fixed per-item charge */
#define N_REPLICAS 4
#define RESTORED (N_REPLICAS - 1)
#define ID_CLIENTS 3
#define ID_WINDOW 16 /* every replica's dedup window, and the model's */
#define HIST 64      /* the last writes with ids, for repeats */

/* ------------------------------------------------------------------ model */

struct m_item {
    bool used;
    char value[VALUE_MAX];
    size_t value_len;
    uint32_t flags;
    uint64_t exp_ms; /* 0 = never */
    uint64_t cas;
    uint64_t wseq; /* write order: smallest is the oldest */
};

struct model {
    struct m_item items[N_KEYS];
    uint64_t clock_ms;
    uint64_t next_cas;
    uint64_t flush_ms;
    uint64_t next_wseq;
    uint64_t mem_limit;
    uint32_t item_size_max;
    bool configured;
    uint64_t max_seq[ID_CLIENTS + 1]; /* the highest seq applied, by client */
};

/* What an op should answer. */
struct m_answer {
    enum cache_status status;
    uint64_t cas;
    uint64_t number;
    const char *value; /* HIT */
    size_t value_len;
    uint32_t flags;
};

static char keys[N_KEYS][8];

static size_t key_len(int k)
{
    return strlen(keys[k]);
}

static uint64_t charge(int k, size_t value_len)
{
    return ITEM_OVERHEAD + key_len(k) + value_len;
}

static uint64_t m_bytes(const struct model *m)
{
    uint64_t b = 0;

    for (int k = 0; k < N_KEYS; k++) {
        if (m->items[k].used) {
            b += charge(k, m->items[k].value_len);
        }
    }
    return b;
}

static uint64_t m_count(const struct model *m)
{
    uint64_t n = 0;

    for (int k = 0; k < N_KEYS; k++) {
        n += m->items[k].used;
    }
    return n;
}

static bool dead_at(const struct m_item *it, uint64_t t)
{
    return it->exp_ms != 0 && t >= it->exp_ms;
}

static void m_remove(struct model *m, int k)
{
    m->items[k].used = false;
}

/* The item a write sees: an expired one is removed on the way. -1: none. */
static int m_live(struct model *m, int k)
{
    if (!m->items[k].used) {
        return -1;
    }
    if (dead_at(&m->items[k], m->clock_ms)) {
        m_remove(m, k);
        return -1;
    }
    return k;
}

static void m_touch_order(struct model *m, int k)
{
    m->items[k].wseq = m->next_wseq++;
}

/* Remove the oldest-written items until @more bytes fit. */
static void m_evict(struct model *m, uint64_t more)
{
    while (m_bytes(m) + more > m->mem_limit) {
        int oldest = -1;

        for (int k = 0; k < N_KEYS; k++) {
            if (m->items[k].used &&
                (oldest < 0 || m->items[k].wseq < m->items[oldest].wseq)) {
                oldest = k;
            }
        }
        if (oldest < 0) {
            return;
        }
        m_remove(m, oldest);
    }
}

static void m_insert(struct model *m, int k, const char *v, size_t len,
                     uint32_t flags, uint64_t exp_ms, uint64_t cas)
{
    struct m_item *it = &m->items[k];

    m_evict(m, charge(k, len));
    it->used = true;
    memcpy(it->value, v, len);
    it->value_len = len;
    it->flags = flags;
    it->exp_ms = exp_ms;
    it->cas = cas;
    m_touch_order(m, k);
}

/* memcached exptime: false when dead on arrival, else *exp (0 = never). */
static bool m_exptime(uint64_t clock_ms, int64_t e, uint64_t *exp)
{
    uint64_t t;

    if (e == 0) {
        *exp = 0;
        return true;
    }
    if (e < 0) {
        return false;
    }
    t = e <= CACHE_REALTIME_MAXDELTA ? clock_ms + (uint64_t)e * 1000
                                     : (uint64_t)e * 1000;
    *exp = t;
    return t > clock_ms;
}

static bool blank(char c)
{
    return c != '\0' && strchr(" \t\n\v\f\r", c) != NULL;
}

/* memcached's safe_strtoull on an item's data: blanks, an optional sign,
 * digits that fit 64 bits, then the end or a blank; the digits are negated
 * (unsigned, as strtoull does) after a '-', and a '-' is refused when the
 * result is negative as a signed number. */
static bool m_number(const char *s, size_t len, uint64_t *out)
{
    size_t i = 0, digits_from;
    bool neg = false;
    uint64_t v = 0;

    while (i < len && blank(s[i])) {
        i++;
    }
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        neg = s[i] == '-';
        i++;
    }
    digits_from = i;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > UINT64_MAX / 10 || v * 10 > UINT64_MAX - d) {
            return false; /* ERANGE */
        }
        v = v * 10 + d;
        i++;
    }
    if (i == digits_from || (i < len && !blank(s[i]))) {
        return false;
    }
    if (neg) {
        v = 0 - v;
        if (v > (uint64_t)INT64_MAX) {
            return false;
        }
    }
    *out = v;
    return true;
}

static void m_store(struct model *m, const struct cache_op *op, int k,
                    struct m_answer *a)
{
    uint64_t exp;
    bool alive;
    int old;

    if (op->value_len > m->item_size_max ||
        charge(k, op->value_len) > m->mem_limit) {
        a->status = op->value_len > m->item_size_max ? CACHE_TOO_LARGE
                                                     : CACHE_NO_MEMORY;
        if (op->type == CACHE_OP_SET && m_live(m, k) >= 0) {
            m_remove(m, k); /* memcached: a failed set drops the old value */
        }
        return;
    }
    old = m_live(m, k);
    if (op->type == CACHE_OP_ADD && old >= 0) {
        a->status = CACHE_NOT_STORED;
        return;
    }
    if (op->type == CACHE_OP_REPLACE && old < 0) {
        a->status = CACHE_NOT_STORED;
        return;
    }
    if (op->type == CACHE_OP_CAS && old < 0) {
        a->status = CACHE_NOT_FOUND;
        return;
    }
    if (op->type == CACHE_OP_CAS && m->items[k].cas != op->cas) {
        a->status = CACHE_EXISTS;
        return;
    }
    alive = m_exptime(m->clock_ms, op->exptime, &exp);
    a->status = CACHE_STORED;
    a->cas = m->next_cas++;
    m_remove(m, k);
    if (alive) {
        m_insert(m, k, op->value, op->value_len, op->flags, exp, a->cas);
    }
}

static void m_concat(struct model *m, const struct cache_op *op, int k,
                     struct m_answer *a)
{
    char v[2 * VALUE_MAX];
    struct m_item old;
    size_t len;

    if (op->value_len > m->item_size_max) {
        a->status = CACHE_TOO_LARGE;
        return;
    }
    if (m_live(m, k) < 0) {
        a->status = CACHE_NOT_STORED;
        return;
    }
    old = m->items[k];
    len = old.value_len + op->value_len;
    if (len > m->item_size_max || charge(k, len) > m->mem_limit) {
        a->status = CACHE_NOT_STORED;
        return;
    }
    if (op->type == CACHE_OP_APPEND) {
        memcpy(v, old.value, old.value_len);
        memcpy(v + old.value_len, op->value, op->value_len);
    } else {
        memcpy(v, op->value, op->value_len);
        memcpy(v + op->value_len, old.value, old.value_len);
    }
    a->status = CACHE_STORED;
    a->cas = m->next_cas++;
    m_remove(m, k);
    m_insert(m, k, v, len, old.flags, old.exp_ms, a->cas);
}

static void m_delta(struct model *m, const struct cache_op *op, int k,
                    struct m_answer *a)
{
    struct m_item *it = &m->items[k];
    char text[32];
    uint64_t v;
    size_t n;

    if (m_live(m, k) < 0) {
        a->status = CACHE_NOT_FOUND;
        return;
    }
    if (!m_number(it->value, it->value_len, &v)) {
        a->status = CACHE_NON_NUMERIC;
        return;
    }
    if (op->type == CACHE_OP_INCR) {
        v += op->delta;
    } else {
        v = v < op->delta ? 0 : v - op->delta;
    }
    n = (size_t)snprintf(text, sizeof(text), "%" PRIu64, v);
    if (n <= it->value_len) {
        /* memcached 1.6 writes a number that fits in place, space padded */
        memset(it->value, ' ', it->value_len);
        memcpy(it->value, text, n);
        it->cas = m->next_cas++;
        m_touch_order(m, k);
    } else {
        struct m_item old = *it;

        if (charge(k, n) > m->mem_limit) {
            a->status = CACHE_NO_MEMORY;
            return;
        }
        m_remove(m, k);
        m_insert(m, k, text, n, old.flags, old.exp_ms, m->next_cas++);
    }
    a->status = CACHE_NUMBER;
    a->number = v;
    a->cas = it->cas;
}

static void m_touch(struct model *m, const struct cache_op *op, int k,
                    struct m_answer *a, struct m_item *gat_copy)
{
    uint64_t exp;

    if (m_live(m, k) < 0) {
        a->status = CACHE_NOT_FOUND;
        return;
    }
    if (op->type == CACHE_OP_GAT) {
        *gat_copy = m->items[k];
        a->status = CACHE_HIT;
        a->value = gat_copy->value;
        a->value_len = gat_copy->value_len;
        a->flags = gat_copy->flags;
        a->cas = gat_copy->cas;
    } else {
        a->status = CACHE_TOUCHED;
    }
    if (m_exptime(m->clock_ms, op->exptime, &exp)) {
        m->items[k].exp_ms = exp;
        m_touch_order(m, k);
    } else {
        m_remove(m, k);
    }
}

static void m_clear(struct model *m)
{
    for (int k = 0; k < N_KEYS; k++) {
        m_remove(m, k);
    }
}

/* @k: the key's index, -1 for an invalid key or a keyless op. */
/* What every apply does first: the clock, a flush that came due. */
static void m_advance(struct model *m, uint64_t now)
{
    if (now > m->clock_ms) {
        m->clock_ms = now;
    }
    if (m->flush_ms != 0 && m->clock_ms >= m->flush_ms) {
        m_clear(m);
        m->flush_ms = 0;
    }
}

static void m_apply(struct model *m, uint64_t now, const struct cache_op *op,
                    int k, struct m_answer *a, struct m_item *gat_copy)
{
    uint64_t deadline;

    memset(a, 0, sizeof(*a));
    m_advance(m, now);
    if (op->seq > m->max_seq[op->client_id]) {
        m->max_seq[op->client_id] = op->seq;
    }
    switch (op->type) {
        case CACHE_OP_FLUSH_ALL:
            a->status = CACHE_OK;
            if (op->exptime > 0 &&
                m_exptime(m->clock_ms, op->exptime, &deadline)) {
                m->flush_ms = deadline;
            } else {
                m_clear(m);
                m->flush_ms = 0;
            }
            return;
        case CACHE_OP_CONFIG:
            if (op->config.mem_limit == 0 && op->config.item_size_max == 0) {
                a->status = CACHE_BAD_REQUEST;
                return;
            }
            a->status = CACHE_OK;
            if (op->config.seed && m->configured) {
                return;
            }
            if (op->config.mem_limit != 0) {
                m->mem_limit = op->config.mem_limit;
            }
            if (op->config.item_size_max != 0) {
                m->item_size_max = op->config.item_size_max;
            }
            m->configured = true;
            m_evict(m, 0);
            return;
        default:
            break;
    }
    if (k < 0) {
        a->status = CACHE_BAD_REQUEST;
        return;
    }
    switch (op->type) {
        case CACHE_OP_SET:
        case CACHE_OP_ADD:
        case CACHE_OP_REPLACE:
        case CACHE_OP_CAS:
            m_store(m, op, k, a);
            break;
        case CACHE_OP_APPEND:
        case CACHE_OP_PREPEND:
            m_concat(m, op, k, a);
            break;
        case CACHE_OP_INCR:
        case CACHE_OP_DECR:
            m_delta(m, op, k, a);
            break;
        case CACHE_OP_DELETE:
            if (m_live(m, k) >= 0) {
                m_remove(m, k);
                a->status = CACHE_DELETED;
            } else {
                a->status = CACHE_NOT_FOUND;
            }
            break;
        case CACHE_OP_TOUCH:
        case CACHE_OP_GAT:
            m_touch(m, op, k, a, gat_copy);
            break;
        default:
            fail_msg("op %d not generated", (int)op->type);
    }
}

/* A read at @t never changes anything. NULL: a miss. */
static const struct m_item *m_get(const struct model *m, int k, uint64_t t)
{
    const struct m_item *it = &m->items[k];

    if (m->flush_ms != 0 && t >= m->flush_ms) {
        return NULL;
    }
    return it->used && !dead_at(it, t) ? it : NULL;
}

/* A write with a request id as it was first applied. */
struct hist {
    struct cache_op op; /* value points at the copy below */
    char value[VALUE_MAX];
    int k;
    struct m_answer a; /* its answer (value not kept) */
};

/* @h sent again: the first answer, nothing changed (but the clock). */
static void m_repeat(struct model *m, uint64_t now, const struct hist *h,
                     struct m_answer *a)
{
    const struct m_item *it;

    memset(a, 0, sizeof(*a));
    m_advance(m, now);
    if (m->max_seq[h->op.client_id] - h->op.seq >= ID_WINDOW) {
        a->status = CACHE_STALE_RETRY;
        return;
    }
    if (h->op.type != CACHE_OP_GAT || h->a.status != CACHE_HIT) {
        *a = h->a;
        return;
    }
    it = m_get(m, h->k, m->clock_ms);
    if (it == NULL) {
        a->status = CACHE_NOT_FOUND;
        return;
    }
    a->status = CACHE_HIT;
    a->cas = it->cas;
    a->value = it->value;
    a->value_len = it->value_len;
    a->flags = it->flags;
}

/* ------------------------------------------------------------- generator */

struct gen {
    struct model_rng rng;
    char value[VALUE_MAX];
};

static const char *const numbers[] = {
    "0", "1", "7", "99", "100", "12345", " 42", "42 ", "\t9\n", "+7",
    "-0", "-5", "4x", "", " ", "x", "18446744073709551615",
    "18446744073709551616", "18446744073709551614", "-18446744073709551615",
    "9223372036854775807", "-9223372036854775808",
};

static size_t gen_value(struct gen *g)
{
    uint64_t r = model_below(&g->rng, 100);
    size_t len;

    if (r < 40) {
        const char *s = numbers[model_below(
            &g->rng, sizeof(numbers) / sizeof(numbers[0]))];
        len = strlen(s);
        memcpy(g->value, s, len);
        return len;
    }
    if (r < 80) {
        len = (size_t)model_below(&g->rng, 40);
    } else if (r < 96) {
        len = 40 + (size_t)model_below(&g->rng, 260);
    } else {
        len = 300 + (size_t)model_below(&g->rng, VALUE_MAX - 300);
    }
    for (size_t i = 0; i < len; i++) {
        g->value[i] = (char)('a' + model_below(&g->rng, 26));
    }
    return len;
}

static int64_t gen_exptime(struct gen *g, uint64_t clock_ms)
{
    int64_t clock_s = (int64_t)(clock_ms / 1000);
    uint64_t r = model_below(&g->rng, 100);

    if (r < 50) {
        return 0;
    }
    if (r < 58) {
        return -1 - (int64_t)model_below(&g->rng, 3);
    }
    if (r < 80) {
        return 1 + (int64_t)model_below(&g->rng, 4);
    }
    if (r < 88) {
        return clock_s + 1 + (int64_t)model_below(&g->rng, 4); /* absolute */
    }
    if (r < 92) {
        return clock_s - (int64_t)model_below(&g->rng, 3); /* past */
    }
    if (r < 96) {
        return CACHE_REALTIME_MAXDELTA; /* the largest relative time */
    }
    return CACHE_REALTIME_MAXDELTA + 1; /* absolute, in 1970: dead */
}

static uint64_t gen_now(struct gen *g, uint64_t clock_ms)
{
    uint64_t r = model_below(&g->rng, 100);

    if (r < 10) {
        return clock_ms;
    }
    if (r < 70) {
        return clock_ms + model_below(&g->rng, 300);
    }
    if (r < 90) {
        return clock_ms + 300 + model_below(&g->rng, 2500);
    }
    /* a new leader whose clock is behind: time must not go back */
    return clock_ms - model_below(&g->rng, 5000);
}

static const uint64_t limits[] = {1000, 2500, 5000, 10000};
static const uint32_t item_sizes[] = {64, 128, 256, 512, 1024};

static void gen_config(struct gen *g, struct cache_op *op, bool seed)
{
    op->type = CACHE_OP_CONFIG;
    op->config.seed = seed;
    op->config.mem_limit = limits[model_below(&g->rng, 4)];
    op->config.item_size_max = item_sizes[model_below(&g->rng, 5)];
    if (!seed) {
        uint64_t r = model_below(&g->rng, 10);
        if (r < 3) {
            op->config.mem_limit = 0;
        } else if (r < 6) {
            op->config.item_size_max = 0;
        } else if (r < 7) {
            op->config.mem_limit = 0; /* nothing to set: refused */
            op->config.item_size_max = 0;
        }
        op->config.seed = model_percent(&g->rng, 30);
    }
}

/* One random op on @m's state; returns the key index (-1: none/invalid). */
static int gen_op(struct gen *g, const struct model *m, struct cache_op *op)
{
    static const struct {
        enum cache_op_type type;
        unsigned weight;
    } mix[] = {
        {CACHE_OP_SET, 20},    {CACHE_OP_ADD, 7},     {CACHE_OP_REPLACE, 7},
        {CACHE_OP_APPEND, 6},  {CACHE_OP_PREPEND, 5}, {CACHE_OP_CAS, 8},
        {CACHE_OP_INCR, 8},    {CACHE_OP_DECR, 6},    {CACHE_OP_DELETE, 8},
        {CACHE_OP_TOUCH, 6},   {CACHE_OP_GAT, 6},     {CACHE_OP_FLUSH_ALL, 1},
        {CACHE_OP_CONFIG, 1},
    };
    int k = (int)model_below(&g->rng, N_KEYS);

    memset(op, 0, sizeof(*op));
    op->type = mix[MODEL_PICK(&g->rng, mix)].type;
    if (op->type == CACHE_OP_CONFIG) {
        gen_config(g, op, false);
        return -1;
    }
    if (op->type == CACHE_OP_FLUSH_ALL) {
        uint64_t r = model_below(&g->rng, 10);
        op->exptime = r < 4   ? 0
                      : r < 8 ? 1 + (int64_t)model_below(&g->rng, 3)
                      : r < 9 ? -1
                              : (int64_t)(m->clock_ms / 1000) + 2;
        return -1;
    }
    op->key = keys[k];
    op->key_len = key_len(k);
    if (model_percent(&g->rng, 1)) {
        op->key = "bad key";
        op->key_len = 7;
        k = -1;
    }
    op->value = g->value;
    op->value_len = gen_value(g);
    op->flags = (uint32_t)model_below(&g->rng, 4) * 0x40000001U;
    op->exptime = gen_exptime(g, m->clock_ms);
    if (op->type == CACHE_OP_CAS) {
        op->cas = k >= 0 && m->items[k].used && model_percent(&g->rng, 70)
                      ? m->items[k].cas
                      : model_below(&g->rng, m->next_cas + 2);
    }
    if (op->type == CACHE_OP_INCR || op->type == CACHE_OP_DECR) {
        uint64_t r = model_below(&g->rng, 10);
        op->delta = r < 7   ? model_below(&g->rng, 200)
                    : r < 9 ? UINT64_MAX - model_below(&g->rng, 3)
                            : model_next(&g->rng);
    }
    return k;
}

/* ---------------------------------------------------------------- checks */

static struct model_where where;

static void check_answer(const struct m_answer *want,
                         const struct cache_result *got, int replica)
{
    MODEL_CHECK(&where, got->status == want->status,
                "replica %d: status %s, model %s", replica,
                cache_status_name(got->status),
                cache_status_name(want->status));
    if (want->status == CACHE_STORED || want->status == CACHE_NUMBER ||
        want->status == CACHE_HIT) {
        MODEL_CHECK(&where, got->cas == want->cas,
                    "replica %d: cas %" PRIu64 ", model %" PRIu64, replica,
                    got->cas, want->cas);
    }
    if (want->status == CACHE_NUMBER) {
        MODEL_CHECK(&where, got->number == want->number,
                    "replica %d: number %" PRIu64 ", model %" PRIu64,
                    replica, got->number, want->number);
    }
    if (want->status == CACHE_HIT) {
        MODEL_CHECK(&where,
                    got->value_len == want->value_len &&
                        (want->value_len == 0 ||
                         memcmp(got->value, want->value, want->value_len) ==
                             0) &&
                        got->flags == want->flags,
                    "replica %d: value/flags differ from the model (len "
                    "%zu vs %zu)",
                    replica, got->value_len, want->value_len);
    } else {
        MODEL_CHECK(&where, got->value_len == 0,
                    "replica %d: a value with %s", replica,
                    cache_status_name(got->status));
    }
}

static void check_state(struct cache_sm *const *r, const struct model *m,
                        struct model_rng *rng)
{
    uint64_t d0 = cache_sm_digest(r[0]);
    uint64_t t = m->clock_ms + model_below(rng, 2500);

    if (t > T0 + 500) {
        t -= 500; /* reads may come at a time before the apply clock */
    }
    for (int i = 0; i < N_REPLICAS; i++) {
        struct cache_sm_stats st;

        cache_sm_stats(r[i], &st);
        MODEL_CHECK(&where,
                    st.curr_items == m_count(m) && st.bytes == m_bytes(m),
                    "replica %d: %" PRIu64 " items %" PRIu64
                    " bytes, model %" PRIu64 " items %" PRIu64 " bytes",
                    i, st.curr_items, st.bytes, m_count(m), m_bytes(m));
        MODEL_CHECK(&where,
                    st.next_cas == m->next_cas && st.clock_ms == m->clock_ms &&
                        st.limit_maxbytes == m->mem_limit &&
                        st.item_size_max == m->item_size_max &&
                        st.configured == m->configured,
                    "replica %d: counters or settings differ from the model",
                    i);
        MODEL_CHECK(&where, cache_sm_digest(r[i]) == d0,
                    "replica %d: digest differs from replica 0", i);
        for (int k = 0; k < N_KEYS; k++) {
            const struct m_item *it = m_get(m, k, t);
            struct m_answer want = {0};
            struct cache_result got;

            want.status = CACHE_NOT_FOUND;
            if (it != NULL) {
                want.status = CACHE_HIT;
                want.value = it->value;
                want.value_len = it->value_len;
                want.flags = it->flags;
                want.cas = it->cas;
            }
            cache_sm_get(r[i], t, keys[k], key_len(k), &got);
            check_answer(&want, &got, i);
            cache_result_clear(&got);
        }
    }
}

static void check_snapshots_equal(struct cache_sm *const *r)
{
    void *s0, *s;
    size_t n0, n;

    assert_int_equal(cache_sm_snapshot(r[0], malloc, &s0, &n0), 0);
    for (int i = 1; i < N_REPLICAS; i++) {
        assert_int_equal(cache_sm_snapshot(r[i], malloc, &s, &n), 0);
        MODEL_CHECK(&where, n == n0 && memcmp(s, s0, n) == 0,
                    "replica %d: snapshot bytes differ from replica 0", i);
        free(s);
    }
    free(s0);
}

/* A fresh machine with local settings of its own, restored from a snapshot
 * of replica @from, takes the place of the restored replica. */
static void replace_by_restore(struct cache_sm **r, int from,
                               struct model_rng *rng)
{
    /* the dedup limits come from the snapshot (a default window here) */
    struct cache_sm_config cfg = {limits[model_below(rng, 4)] / 2,
                                  item_sizes[model_below(rng, 5)] / 2, 0, 0};
    struct cache_sm *fresh = cache_sm_new(&cfg);
    void *snap;
    size_t len;

    assert_non_null(fresh);
    assert_int_equal(cache_sm_snapshot(r[from], malloc, &snap, &len), 0);
    MODEL_CHECK(&where, cache_sm_restore(fresh, snap, len) == 0,
                "restore of replica %d's snapshot failed", from);
    free(snap);
    cache_sm_free(r[RESTORED]);
    r[RESTORED] = fresh;
}

/* ------------------------------------------------------------------ runs */

static void run_seed(uint64_t seed, unsigned long steps)
{
    static const struct cache_sm_config local[N_REPLICAS] = {
        {0, 0, ID_WINDOW, 0},
        {900, 100, ID_WINDOW, 0},
        {1 << 20, 4096, ID_WINDOW, 0},
        {0, 0, ID_WINDOW, 0}};
    static struct hist hist[HIST];
    unsigned long n_hist = 0;
    uint64_t next_seq[ID_CLIENTS + 1] = {0};
    struct cache_sm *r[N_REPLICAS];
    struct model m;
    struct gen g;
    struct cache_op op;
    struct m_answer want;
    struct m_item gat_copy;
    unsigned long restore_at;

    memset(&m, 0, sizeof(m));
    m.clock_ms = 0;
    m.next_cas = 1;
    m.next_wseq = 1;
    m.mem_limit = 64ULL * 1024 * 1024; /* the defaults until CONFIG */
    m.item_size_max = CACHE_ITEM_SIZE_MAX_DEFAULT;
    g.rng.s = seed;
    where.seed = seed;
    for (int i = 0; i < N_REPLICAS; i++) {
        r[i] = cache_sm_new(&local[i]);
        assert_non_null(r[i]);
    }
    restore_at = 1 + (unsigned long)model_below(&g.rng, steps);

    /* the shard's first entry: the first leader seeds the settings */
    memset(&op, 0, sizeof(op));
    gen_config(&g, &op, true);
    for (where.step = 0; where.step <= steps; where.step++) {
        uint64_t now = where.step == 0 ? T0 : gen_now(&g, m.clock_ms);
        int k = where.step == 0 ? -1 : gen_op(&g, &m, &op);

        if (where.step == restore_at ||
            (where.step > 0 && model_below(&g.rng, 1000) < 3)) {
            replace_by_restore(r, (int)model_below(&g.rng, RESTORED), &g.rng);
        }
        if (where.step > 0 && n_hist > 0 && model_percent(&g.rng, 5)) {
            const struct hist *h =
                &hist[model_below(&g.rng, n_hist < HIST ? n_hist : HIST)];

            op = h->op;
            m_repeat(&m, now, h, &want);
        } else {
            bool with_id = where.step > 0 && op.type != CACHE_OP_CONFIG &&
                           model_percent(&g.rng, 70);

            if (with_id) {
                op.client_id = 1 + model_below(&g.rng, ID_CLIENTS);
                op.seq = ++next_seq[op.client_id];
            }
            m_apply(&m, now, &op, k, &want, &gat_copy);
            if (with_id) {
                struct hist *h = &hist[n_hist++ % HIST];

                h->op = op;
                if (op.value_len > 0) {
                    memcpy(h->value, op.value, op.value_len);
                }
                h->op.value = h->value;
                h->k = k;
                h->a = want;
                h->a.value = NULL;
                h->a.value_len = 0;
            }
        }
        for (int i = 0; i < N_REPLICAS; i++) {
            struct cache_result got;

            cache_sm_apply(r[i], now, &op, &got);
            check_answer(&want, &got, i);
            cache_result_clear(&got);
        }
        check_state(r, &m, &g.rng);
        if (where.step % 500 == 0) {
            check_snapshots_equal(r);
        }
    }
    check_snapshots_equal(r);
    for (int i = 0; i < N_REPLICAS; i++) {
        cache_sm_free(r[i]);
    }
}

static void test_cache_model(void **state)
{
    unsigned long steps = model_env("RINGMQ_MODEL_STEPS", 5000);
    uint64_t first, last;

    (void)state;
    for (int k = 0; k < N_KEYS; k++) {
        snprintf(keys[k], sizeof(keys[k]), "k%d", k * 7);
    }
    model_seeds(10, &first, &last);
    for (uint64_t seed = first; seed <= last; seed++) {
        run_seed(seed, steps);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
