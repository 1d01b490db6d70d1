/*
 * mq_body_store: in-memory body store for mq_sm tests; contract in
 * mq_body_store.h.
 */
#include "tests/unit/lib/mq_body_store.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/le.h"

struct seg_bytes {
    unsigned char *buf;
    size_t len;
    size_t cap; /* grown by doubling: a test writes many small records */
    bool freed;
};

struct mbs {
    struct seg_bytes *segs; /* by segment number */
    size_t n;
};

static uint32_t check_of(const unsigned char *p, uint32_t len)
{
    uint32_t h = 2166136261u;
    uint32_t i;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

struct mbs *mbs_new(void)
{
    struct mbs *s = calloc(1, sizeof(*s));

    assert_non_null(s);
    return s;
}

struct mbs *mbs_clone(const struct mbs *s)
{
    struct mbs *c = mbs_new();
    size_t i;

    c->n = s->n;
    c->segs = calloc(s->n + 1, sizeof(*c->segs));
    assert_non_null(c->segs);
    for (i = 0; i < s->n; i++) {
        c->segs[i] = s->segs[i];
        if (s->segs[i].len > 0) {
            c->segs[i].buf = malloc(s->segs[i].len);
            c->segs[i].cap = s->segs[i].len;
            assert_non_null(c->segs[i].buf);
            memcpy(c->segs[i].buf, s->segs[i].buf, s->segs[i].len);
        }
    }
    return c;
}

void mbs_free(struct mbs *s)
{
    size_t i;

    if (s == NULL) {
        return;
    }
    for (i = 0; i < s->n; i++) {
        free(s->segs[i].buf);
    }
    free(s->segs);
    free(s);
}

static struct seg_bytes *seg_at(struct mbs *s, uint32_t seg)
{
    if (seg >= s->n) {
        size_t n = (size_t)seg + 1;

        s->segs = realloc(s->segs, n * sizeof(*s->segs));
        assert_non_null(s->segs);
        memset(s->segs + s->n, 0, (n - s->n) * sizeof(*s->segs));
        s->n = n;
    }
    return &s->segs[seg];
}

static void store(struct mbs *s, const struct mq_sm_write *w)
{
    struct seg_bytes *b = seg_at(s, w->seg);
    size_t end = (size_t)w->off + MQ_SM_REC_HDR + w->len;
    unsigned char *p;

    assert_true(w->seg > 0);
    assert_false(b->freed); /* never named again once freed */
    assert_non_null(w->body); /* also for an empty one (mq_sm.h) */
    end = (end + MQ_SM_REC_ALIGN - 1) / MQ_SM_REC_ALIGN * MQ_SM_REC_ALIGN;
    if (end > b->cap) {
        size_t cap = b->cap > 0 ? b->cap : 4096;

        while (cap < end) {
            cap *= 2;
        }
        b->buf = realloc(b->buf, cap);
        assert_non_null(b->buf);
        b->cap = cap;
    }
    if (end > b->len) {
        memset(b->buf + b->len, 0, end - b->len);
        b->len = end;
    }
    p = b->buf + w->off;
    p = le_put_u32(p, w->len);
    p = le_put_u32(p, check_of(w->body, w->len));
    if (w->len > 0) {
        memcpy(p, w->body, w->len);
    }
}

int mbs_read(void *arg, uint32_t seg, uint32_t off, uint32_t len, void *out)
{
    struct mbs *s = arg;
    const struct seg_bytes *b;
    struct le_reader r;
    uint32_t got_len, got_check;

    if (seg >= s->n) {
        return -1;
    }
    b = &s->segs[seg];
    if (b->freed || (size_t)off + MQ_SM_REC_HDR + len > b->len) {
        return -1;
    }
    r.p = b->buf + off;
    r.left = MQ_SM_REC_HDR;
    le_get_u32(&r, &got_len);
    le_get_u32(&r, &got_check);
    if (got_len != len ||
        got_check != check_of(b->buf + off + MQ_SM_REC_HDR, len)) {
        return -1;
    }
    if (len > 0) {
        memcpy(out, b->buf + off + MQ_SM_REC_HDR, len);
    }
    return 0;
}

static void *read_body(struct mbs *s, uint32_t seg, uint32_t off,
                       size_t len)
{
    void *body;

    if (len == 0) {
        return NULL;
    }
    body = malloc(len);
    assert_non_null(body);
    assert_int_equal(mbs_read(s, seg, off, (uint32_t)len, body), 0);
    return body;
}

/* A body the machine kept inline comes copied: NULL only if empty. */
static void assert_inline(uint32_t off, const void *body, size_t len)
{
    assert_int_equal(off, 0);
    assert_true((body != NULL) == (len > 0));
}

void mbs_result(struct mbs *s, struct mq_sm_result *res)
{
    size_t i;

    for (i = 0; i < res->n_writes; i++) {
        store(s, &res->writes[i]);
    }
    for (i = 0; i < res->n_deliveries; i++) {
        struct mq_sm_delivery *d = &res->deliveries[i];

        if (d->seg == 0) { /* inline: filled by the machine */
            assert_inline(d->off, d->body, d->body_len);
            continue;
        }
        assert_null(d->body);
        d->body = read_body(s, d->seg, d->off, d->body_len);
    }
    for (i = 0; i < res->n_dead; i++) {
        struct mq_sm_dead_letter *d = &res->dead[i];

        if (d->seg == 0) {
            assert_inline(d->off, d->body, d->body_len);
        } else if (d->body == NULL) { /* one filled already is kept */
            d->body = read_body(s, d->seg, d->off, d->body_len);
        }
    }
    for (i = 0; i < res->n_freed; i++) {
        struct seg_bytes *b = seg_at(s, res->freed[i]);

        assert_false(b->freed);
        assert_true(i == 0 || res->freed[i - 1] < res->freed[i]);
        free(b->buf);
        b->buf = NULL;
        b->len = 0;
        b->cap = 0;
        b->freed = true;
    }
}

size_t mbs_segments(const struct mbs *s)
{
    size_t i, n = 0;

    for (i = 0; i < s->n; i++) {
        n += s->segs[i].len > 0;
    }
    return n;
}

/* ------------------------------------------------------------ registry */

#define MBS_MACHINES 1024

static struct {
    const struct mq_sm *sm;
    struct mbs *s;
} reg[MBS_MACHINES];

static size_t slot_of(const struct mq_sm *sm)
{
    size_t i, free_slot = MBS_MACHINES;

    for (i = 0; i < MBS_MACHINES; i++) {
        if (reg[i].sm == sm) {
            return i;
        }
        if (reg[i].sm == NULL && free_slot == MBS_MACHINES) {
            free_slot = i;
        }
    }
    assert_true(free_slot < MBS_MACHINES);
    reg[free_slot].sm = sm;
    reg[free_slot].s = mbs_new();
    return free_slot;
}

struct mbs *mbs_of(const struct mq_sm *sm)
{
    return reg[slot_of(sm)].s;
}

struct mbs *mbs_fresh(const struct mq_sm *sm)
{
    struct mbs *s = mbs_new();

    mbs_set(sm, s);
    return s;
}

void mbs_forget(const struct mq_sm *sm)
{
    size_t i;

    for (i = 0; i < MBS_MACHINES; i++) {
        if (reg[i].sm == sm) {
            mbs_free(reg[i].s);
            reg[i].sm = NULL;
            reg[i].s = NULL;
        }
    }
}

void mbs_set(const struct mq_sm *sm, struct mbs *s)
{
    size_t i = slot_of(sm);

    if (reg[i].s != s) {
        mbs_free(reg[i].s);
        reg[i].s = s;
    }
}
