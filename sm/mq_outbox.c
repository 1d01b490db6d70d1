/*
 * mq_outbox: dead letters kept until settled; contract in mq_outbox.h.
 */
#include "sm/mq_outbox.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/invariant.h"

/* u64 id | u64 claim_ms | u64 msg_id | u64 gen | u8 reason | u8 has_dlrk
 * | u8 vhost_len | u8 queue_len | u8 dlx_len | u8 dlrk_len | u32 body_len
 * | u32 seg | u32 off | names
 * (bodies inline: no seg and off, the body after the names) */
#define SNAP_ENTRY_FIXED (8 * 4 + 6 + 4)
#define SNAP_ENTRY_REF 8
/* u64 next_id | u64 dropped | u64 count */
#define SNAP_FIXED (8 * 3)
#define REASONS 3 /* enum mq_sm_dl_reason */

static size_t entry_data_len(const struct mq_outbox_entry *e)
{
    return mq_outbox_names_len(e) + e->body_len;
}

void mq_outbox_init(struct mq_outbox *o)
{
    memset(o, 0, sizeof(*o));
    o->next_id = 1;
}

void mq_outbox_free(struct mq_outbox *o)
{
    size_t i;

    for (i = 0; i < o->n; i++) {
        free(o->v[i]);
    }
    free(o->v);
    free(o->ids);
    mq_outbox_init(o);
}

struct mq_outbox_entry *mq_outbox_entry_new(const struct mq_outbox_src *src)
{
    size_t names = (size_t)src->vhost_len + src->queue_len + src->dlx_len +
                   src->dlrk_len;
    size_t body = src->seg == 0 ? src->body_len : 0;
    struct mq_outbox_entry *e = xmalloc(sizeof(*e) + names + body);

    memset(e, 0, sizeof(*e));
    e->msg_id = src->msg_id;
    e->gen = src->gen;
    e->reason = src->reason;
    e->has_dlrk = src->has_dlrk;
    e->vhost_len = src->vhost_len;
    e->queue_len = src->queue_len;
    e->dlx_len = src->dlx_len;
    e->dlrk_len = src->dlrk_len;
    e->body_len = src->body_len;
    e->seg = src->seg;
    e->off = src->off;
    memcpy(e->data, src->names, names);
    if (body > 0) {
        memcpy(e->data + names, src->body, body);
    }
    return e;
}

/* ------------------------------------------------------------ claim order */

static void claim_unlink(struct mq_outbox *o, struct mq_outbox_entry *e)
{
    if (e->claim_prev != NULL) {
        e->claim_prev->claim_next = e->claim_next;
    } else {
        o->claim_first = e->claim_next;
    }
    if (e->claim_next != NULL) {
        e->claim_next->claim_prev = e->claim_prev;
    } else {
        o->claim_last = e->claim_prev;
    }
    e->claim_prev = e->claim_next = NULL;
}

/* Link @e after every claim not later than its own: at the end, but for
 * a claim time earlier than the last (not made by mq_sm, whose clock does
 * not go back). */
static void claim_link(struct mq_outbox *o, struct mq_outbox_entry *e)
{
    struct mq_outbox_entry *after = o->claim_last;

    while (after != NULL && after->claim_ms > e->claim_ms) {
        after = after->claim_prev;
    }
    e->claim_prev = after;
    e->claim_next = after != NULL ? after->claim_next : o->claim_first;
    if (e->claim_next != NULL) {
        e->claim_next->claim_prev = e;
    } else {
        o->claim_last = e;
    }
    if (after != NULL) {
        after->claim_next = e;
    } else {
        o->claim_first = e;
    }
}

static int by_claim(const void *a, const void *b)
{
    const struct mq_outbox_entry *x = *(struct mq_outbox_entry *const *)a;
    const struct mq_outbox_entry *y = *(struct mq_outbox_entry *const *)b;

    if (x->claim_ms != y->claim_ms) {
        return x->claim_ms < y->claim_ms ? -1 : 1;
    }
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The claim order of entries read in id order, whose claims may be in any
 * order: sorted once, not linked one by one. */
static void claim_rebuild(struct mq_outbox *o)
{
    struct mq_outbox_entry **by = xmalloc((o->n > 0 ? o->n : 1) * sizeof(*by));
    size_t n = 0;
    size_t i;

    for (i = 0; i < o->n; i++) {
        if (o->v[i] != NULL) {
            by[n++] = o->v[i];
        }
    }
    qsort(by, n, sizeof(*by), by_claim);
    o->claim_first = o->claim_last = NULL;
    for (i = 0; i < n; i++) {
        by[i]->claim_prev = o->claim_last;
        by[i]->claim_next = NULL;
        if (o->claim_last != NULL) {
            o->claim_last->claim_next = by[i];
        } else {
            o->claim_first = by[i];
        }
        o->claim_last = by[i];
    }
    free(by);
}

/* ------------------------------------------------------------------ slots */

/* Drop the holes; ids keep their order. */
static void compact(struct mq_outbox *o)
{
    size_t i;
    size_t j = 0;

    for (i = 0; i < o->n; i++) {
        if (o->v[i] != NULL) {
            o->v[j] = o->v[i];
            o->ids[j] = o->ids[i];
            j++;
        }
    }
    o->n = j;
    o->holes = 0;
}

static void append(struct mq_outbox *o, struct mq_outbox_entry *e)
{
    if (o->n == o->cap && o->holes > 0) {
        compact(o);
    }
    if (o->n == o->cap) {
        o->cap = o->cap < 16 ? 16 : o->cap * 2;
        o->v = xrealloc(o->v, o->cap * sizeof(*o->v));
        o->ids = xrealloc(o->ids, o->cap * sizeof(*o->ids));
    }
    o->v[o->n] = e;
    o->ids[o->n] = e->id;
    o->n++;
    o->bytes += entry_data_len(e);
}

bool mq_outbox_add(struct mq_outbox *o, struct mq_outbox_entry *e,
                   uint64_t now_ms)
{
    if (mq_outbox_count(o) >= MQ_OUTBOX_MAX ||
        o->bytes + entry_data_len(e) > MQ_OUTBOX_BYTES_MAX) {
        o->dropped++;
        e->id = 0;
        return false;
    }
    e->id = o->next_id++;
    e->claim_ms = now_ms;
    append(o, e);
    claim_link(o, e);
    return true;
}

/* The slot of @id, or o->n. */
static size_t slot_of(const struct mq_outbox *o, uint64_t id)
{
    size_t lo = 0;
    size_t hi = o->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (o->ids[mid] < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < o->n && o->ids[lo] == id ? lo : o->n;
}

size_t mq_outbox_settle(struct mq_outbox *o, const uint64_t *ids, size_t n,
                        void (*gone)(void *arg,
                                     const struct mq_outbox_entry *e),
                        void *arg)
{
    size_t removed = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        size_t s = slot_of(o, ids[i]);

        if (s == o->n || o->v[s] == NULL) {
            continue;
        }
        o->bytes -= entry_data_len(o->v[s]);
        claim_unlink(o, o->v[s]);
        if (gone != NULL) {
            gone(arg, o->v[s]);
        }
        free(o->v[s]);
        o->v[s] = NULL;
        o->holes++;
        removed++;
    }
    if (o->holes > 64 && o->holes * 2 > o->n) {
        compact(o);
    }
    return removed;
}

size_t mq_outbox_claim_due(struct mq_outbox *o, uint64_t now_ms,
                           uint64_t claim_ms, size_t max, uint64_t max_bytes,
                           void (*fn)(void *arg,
                                      const struct mq_outbox_entry *e),
                           void *arg)
{
    uint64_t bytes = 0;
    size_t handed = 0;
    size_t i;

    if (now_ms < claim_ms) {
        return 0; /* nothing can have been claimed that long ago */
    }
    if (o->claim_first == NULL ||
        o->claim_first->claim_ms > now_ms - claim_ms) {
        return 0; /* not even the oldest claim */
    }
    for (i = 0; i < o->n && handed < max; i++) {
        struct mq_outbox_entry *e = o->v[i];

        if (e == NULL || e->claim_ms > now_ms - claim_ms) {
            continue;
        }
        if (handed > 0 && bytes + e->body_len > max_bytes) {
            break;
        }
        bytes += e->body_len;
        claim_unlink(o, e);
        e->claim_ms = now_ms;
        claim_link(o, e);
        fn(arg, e);
        handed++;
    }
    return handed;
}

uint64_t mq_outbox_next_due(const struct mq_outbox *o, uint64_t claim_ms)
{
    const struct mq_outbox_entry *e = o->claim_first;

    if (e == NULL || e->claim_ms > UINT64_MAX - claim_ms) {
        return UINT64_MAX;
    }
    return e->claim_ms + claim_ms;
}

const struct mq_outbox_entry *mq_outbox_next(const struct mq_outbox *o,
                                             size_t *pos)
{
    while (*pos < o->n) {
        const struct mq_outbox_entry *e = o->v[(*pos)++];

        if (e != NULL) {
            return e;
        }
    }
    return NULL;
}

/* @old's place in the claim order and its slot go to @e. */
static void replace(struct mq_outbox *o, size_t slot,
                    struct mq_outbox_entry *old, struct mq_outbox_entry *e)
{
    e->claim_prev = old->claim_prev;
    e->claim_next = old->claim_next;
    if (e->claim_prev != NULL) {
        e->claim_prev->claim_next = e;
    } else {
        o->claim_first = e;
    }
    if (e->claim_next != NULL) {
        e->claim_next->claim_prev = e;
    } else {
        o->claim_last = e;
    }
    o->v[slot] = e;
}

void mq_outbox_externalize(struct mq_outbox *o,
                           void (*place)(void *arg,
                                         struct mq_outbox_entry *old,
                                         uint32_t *seg, uint32_t *off),
                           void *arg)
{
    size_t i;

    for (i = 0; i < o->n; i++) {
        struct mq_outbox_entry *old = o->v[i];
        struct mq_outbox_entry *e;
        size_t names;

        if (old == NULL) {
            continue;
        }
        INVARIANT(old->seg == 0);
        names = mq_outbox_names_len(old);
        e = xmalloc(sizeof(*e) + names);
        memcpy(e, old, sizeof(*e) + names);
        place(arg, old, &e->seg, &e->off);
        INVARIANT(e->seg != 0);
        replace(o, i, old, e);
    }
}

size_t mq_outbox_snap_len(const struct mq_outbox *o, bool inline_bodies)
{
    const struct mq_outbox_entry *e;
    size_t pos = 0;
    size_t len = SNAP_FIXED;

    while ((e = mq_outbox_next(o, &pos)) != NULL) {
        len += SNAP_ENTRY_FIXED + mq_outbox_names_len(e) +
               (inline_bodies ? e->body_len : SNAP_ENTRY_REF);
    }
    return len;
}

unsigned char *mq_outbox_snap_put(const struct mq_outbox *o, unsigned char *p,
                                  bool inline_bodies)
{
    const struct mq_outbox_entry *e;
    size_t pos = 0;
    size_t n;

    p = le_put_u64(p, o->next_id);
    p = le_put_u64(p, o->dropped);
    p = le_put_u64(p, mq_outbox_count(o));
    while ((e = mq_outbox_next(o, &pos)) != NULL) {
        p = le_put_u64(p, e->id);
        p = le_put_u64(p, e->claim_ms);
        p = le_put_u64(p, e->msg_id);
        p = le_put_u64(p, e->gen);
        *p++ = e->reason;
        *p++ = e->has_dlrk ? 1 : 0;
        *p++ = e->vhost_len;
        *p++ = e->queue_len;
        *p++ = e->dlx_len;
        *p++ = e->dlrk_len;
        p = le_put_u32(p, e->body_len);
        INVARIANT((e->seg == 0) == inline_bodies);
        if (!inline_bodies) {
            p = le_put_u32(p, e->seg);
            p = le_put_u32(p, e->off);
        }
        n = mq_outbox_names_len(e) + (inline_bodies ? e->body_len : 0);
        memcpy(p, e->data, n);
        p += n;
    }
    return p;
}

static struct mq_outbox_entry *get_entry(struct le_reader *r,
                                         bool inline_bodies)
{
    struct mq_outbox_src src;
    struct mq_outbox_entry *e;
    const unsigned char *data;
    uint64_t id, claim_ms;
    uint8_t has_dlrk;

    memset(&src, 0, sizeof(src));
    if (!le_get_u64(r, &id) || !le_get_u64(r, &claim_ms) ||
        !le_get_u64(r, &src.msg_id) || !le_get_u64(r, &src.gen) ||
        !le_get_u8(r, &src.reason) || !le_get_u8(r, &has_dlrk) ||
        !le_get_u8(r, &src.vhost_len) || !le_get_u8(r, &src.queue_len) ||
        !le_get_u8(r, &src.dlx_len) || !le_get_u8(r, &src.dlrk_len) ||
        !le_get_u32(r, &src.body_len) || src.reason >= REASONS ||
        has_dlrk > 1 || src.queue_len == 0 ||
        (!inline_bodies &&
         (!le_get_u32(r, &src.seg) || !le_get_u32(r, &src.off) ||
          src.seg == 0)) ||
        !le_get_bytes(r, &data,
                      (size_t)src.vhost_len + src.queue_len + src.dlx_len +
                          src.dlrk_len +
                          (inline_bodies ? src.body_len : 0))) {
        return NULL;
    }
    src.has_dlrk = has_dlrk;
    src.names = (const char *)data;
    src.body = data + (size_t)src.vhost_len + src.queue_len + src.dlx_len +
               src.dlrk_len;
    e = mq_outbox_entry_new(&src);
    e->id = id;
    e->claim_ms = claim_ms;
    return e;
}

bool mq_outbox_snap_get(struct mq_outbox *o, struct le_reader *r,
                        bool inline_bodies)
{
    uint64_t n;
    uint64_t i;

    if (!le_get_u64(r, &o->next_id) || !le_get_u64(r, &o->dropped) ||
        !le_get_u64(r, &n) || o->next_id == 0 || n > MQ_OUTBOX_MAX ||
        n > r->left / SNAP_ENTRY_FIXED) {
        return false;
    }
    for (i = 0; i < n; i++) {
        struct mq_outbox_entry *e = get_entry(r, inline_bodies);

        if (e == NULL) {
            return false;
        }
        /* ids ascending, all handed out by the counter */
        if (e->id == 0 || e->id >= o->next_id ||
            (o->n > 0 && e->id <= o->ids[o->n - 1]) ||
            o->bytes + entry_data_len(e) > MQ_OUTBOX_BYTES_MAX) {
            free(e);
            return false;
        }
        append(o, e);
    }
    claim_rebuild(o);
    return true;
}

/* Every entry once in claim order, claims not decreasing. */
static void check_claims(const struct mq_outbox *o)
{
    const struct mq_outbox_entry *e;
    const struct mq_outbox_entry *prev = NULL;
    size_t n = 0;

    for (e = o->claim_first; e != NULL; e = e->claim_next) {
        INVARIANT(e->claim_prev == prev);
        INVARIANT(prev == NULL || prev->claim_ms <= e->claim_ms);
        INVARIANT(n < mq_outbox_count(o));
        prev = e;
        n++;
    }
    INVARIANT(o->claim_last == prev && n == mq_outbox_count(o));
}

void mq_outbox_check(const struct mq_outbox *o)
{
    uint64_t bytes = 0;
    size_t holes = 0;
    size_t i;

    INVARIANT(o->n <= o->cap && o->next_id > 0);
    for (i = 0; i < o->n; i++) {
        INVARIANT(o->ids[i] > 0 && o->ids[i] < o->next_id);
        INVARIANT(i == 0 || o->ids[i - 1] < o->ids[i]);
        if (o->v[i] == NULL) {
            holes++;
            continue;
        }
        INVARIANT(o->v[i]->id == o->ids[i]);
        INVARIANT(o->v[i]->reason < REASONS && o->v[i]->queue_len > 0);
        bytes += entry_data_len(o->v[i]);
    }
    INVARIANT(holes == o->holes && bytes == o->bytes);
    check_claims(o);
    INVARIANT(mq_outbox_count(o) <= MQ_OUTBOX_MAX &&
              o->bytes <= MQ_OUTBOX_BYTES_MAX);
}
