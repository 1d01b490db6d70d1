/*
 * mq_segs: the body cursor and segment table; contract in mq_segs.h.
 */
#include "sm/mq_segs.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/invariant.h"

#define SNAP_FIXED (4 + 4 + 8 + 8)
#define SNAP_ENTRY (4 + 4 + 8)

void mq_segs_init(struct mq_segs *s, uint32_t seg_bytes)
{
    memset(s, 0, sizeof(*s));
    s->seg_bytes = seg_bytes != 0 ? seg_bytes : MQ_SEGS_SEG_BYTES;
    s->cur_seg = 1;
}

void mq_segs_free(struct mq_segs *s)
{
    uint32_t seg_bytes = s->seg_bytes;

    free(s->v);
    free(s->freed);
    mq_segs_init(s, seg_bytes);
}

uint64_t mq_segs_rec_len(uint32_t len)
{
    uint64_t rec = (uint64_t)MQ_SEGS_REC_HDR + len;

    return (rec + MQ_SEGS_REC_ALIGN - 1) / MQ_SEGS_REC_ALIGN * MQ_SEGS_REC_ALIGN;
}

size_t mq_segs_index(const struct mq_segs *s, uint32_t seg)
{
    size_t lo = 0;
    size_t hi = s->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->v[mid].seg < seg) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < s->n && s->v[lo].seg == seg ? lo : SIZE_MAX;
}

static void note_freed(struct mq_segs *s, uint32_t seg)
{
    if (s->n_freed == s->cap_freed) {
        s->cap_freed = s->cap_freed < 8 ? 8 : s->cap_freed * 2;
        s->freed = xrealloc(s->freed, s->cap_freed * sizeof(*s->freed));
    }
    s->freed[s->n_freed++] = seg;
}

static void drop(struct mq_segs *s, size_t i)
{
    note_freed(s, s->v[i].seg);
    memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
    s->n--;
}

void mq_segs_place(struct mq_segs *s, uint32_t len, uint32_t *seg,
                   uint32_t *off)
{
    uint64_t rec = mq_segs_rec_len(len);
    struct mq_seg *last;

    if (s->cur_off > 0 && (s->cur_off >= s->seg_bytes ||
                           rec > s->seg_bytes - s->cur_off)) {
        /* the cursor's segment is the last one listed */
        INVARIANT(s->n > 0 && s->v[s->n - 1].seg == s->cur_seg);
        if (s->v[s->n - 1].refs == 0) {
            drop(s, s->n - 1);
        }
        INVARIANT(s->cur_seg < UINT32_MAX);
        s->cur_seg++;
        s->cur_off = 0;
    }
    if (s->n == 0 || s->v[s->n - 1].seg != s->cur_seg) {
        if (s->n == s->cap) {
            s->cap = s->cap < 8 ? 8 : s->cap * 2;
            s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
        }
        s->v[s->n].seg = s->cur_seg;
        s->v[s->n].refs = 0;
        s->n++;
    }
    last = &s->v[s->n - 1];
    *seg = s->cur_seg;
    *off = (uint32_t)s->cur_off;
    s->cur_off += rec;
    last->used = s->cur_off;
    last->refs++;
}

void mq_segs_ref(struct mq_segs *s, uint32_t seg)
{
    size_t i = mq_segs_index(s, seg);

    INVARIANT(i != SIZE_MAX && s->v[i].refs < UINT32_MAX);
    s->v[i].refs++;
}

void mq_segs_unref(struct mq_segs *s, uint32_t seg)
{
    size_t i = mq_segs_index(s, seg);

    INVARIANT(i != SIZE_MAX && s->v[i].refs > 0);
    if (--s->v[i].refs == 0 && seg != s->cur_seg) {
        drop(s, i);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

uint32_t *mq_segs_take_freed(struct mq_segs *s, size_t *n)
{
    uint32_t *v = s->freed;

    /* a command may free an old segment after the cursor left a newer
     * empty one */
    if (s->n_freed > 1) {
        qsort(v, s->n_freed, sizeof(*v), cmp_u32);
    }
    *n = s->n_freed;
    s->freed = NULL;
    s->n_freed = 0;
    s->cap_freed = 0;
    return v;
}

size_t mq_segs_snap_len(const struct mq_segs *s)
{
    return SNAP_FIXED + s->n * (size_t)SNAP_ENTRY;
}

unsigned char *mq_segs_snap_put(const struct mq_segs *s, unsigned char *p)
{
    size_t i;

    p = le_put_u32(p, s->seg_bytes);
    p = le_put_u32(p, s->cur_seg);
    p = le_put_u64(p, s->cur_off);
    p = le_put_u64(p, s->n);
    for (i = 0; i < s->n; i++) {
        p = le_put_u32(p, s->v[i].seg);
        p = le_put_u32(p, s->v[i].refs);
        p = le_put_u64(p, s->v[i].used);
    }
    return p;
}

/* The shape of entry @i: what mq_segs_place and _unref leave. */
static bool entry_ok(const struct mq_segs *s, size_t i)
{
    const struct mq_seg *e = &s->v[i];

    if (e->seg == 0 || e->seg > s->cur_seg ||
        (i > 0 && e->seg <= s->v[i - 1].seg)) {
        return false;
    }
    if (e->seg == s->cur_seg) {
        return e->used == s->cur_off && e->used > 0;
    }
    return e->refs > 0 && e->used > 0;
}

bool mq_segs_snap_get(struct mq_segs *s, struct le_reader *r)
{
    uint64_t n;
    size_t i;

    if (!le_get_u32(r, &s->seg_bytes) || !le_get_u32(r, &s->cur_seg) ||
        !le_get_u64(r, &s->cur_off) || !le_get_u64(r, &n) ||
        s->seg_bytes == 0 || s->seg_bytes % MQ_SEGS_REC_ALIGN != 0 ||
        s->seg_bytes > MQ_SEGS_SEG_BYTES || s->cur_seg == 0 ||
        n > r->left / SNAP_ENTRY) {
        return false;
    }
    s->v = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(*s->v));
    s->cap = (size_t)(n > 0 ? n : 1);
    for (i = 0; i < n; i++) {
        le_get_u32(r, &s->v[i].seg);
        le_get_u32(r, &s->v[i].refs);
        le_get_u64(r, &s->v[i].used);
        s->n = i + 1;
        if (!entry_ok(s, i)) {
            return false;
        }
    }
    /* reserved bytes at the cursor are in the table */
    return s->cur_off == 0 || (s->n > 0 && s->v[s->n - 1].seg == s->cur_seg);
}

void mq_segs_check(const struct mq_segs *s, const uint32_t *refs)
{
    size_t i;

    INVARIANT(s->cur_seg > 0 && s->n <= s->cap);
    INVARIANT(s->cur_off == 0 ||
              (s->n > 0 && s->v[s->n - 1].seg == s->cur_seg));
    for (i = 0; i < s->n; i++) {
        INVARIANT(entry_ok(s, i));
        INVARIANT(refs[i] == s->v[i].refs);
    }
}
