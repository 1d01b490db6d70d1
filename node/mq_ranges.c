/* mq_ranges: see mq_ranges.h. */
#include "node/mq_ranges.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "common/buf.h"
#include "common/le.h"

#define MAGIC "RMQMISS1"
#define MAGIC_LEN 8
#define ITEM_LEN 12

static uint64_t range_end(const struct mq_range *m)
{
    return (uint64_t)m->off + m->len;
}

static bool before(const struct mq_range *a, uint32_t seg, uint32_t off)
{
    return a->seg < seg || (a->seg == seg && a->off < off);
}

void mq_ranges_add(struct mq_ranges *r, uint32_t seg, uint32_t off,
                   uint32_t len)
{
    size_t i = 0;

    if (len == 0) {
        return;
    }
    assert(!mq_ranges_overlap(r, seg, off, len));
    while (i < r->n && before(&r->v[i], seg, off)) {
        i++;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 8;
        r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
    }
    memmove(&r->v[i + 1], &r->v[i], (r->n - i) * sizeof(*r->v));
    r->v[i] = (struct mq_range){seg, off, len};
    r->n++;
}

static void remove_at(struct mq_ranges *r, size_t i)
{
    memmove(&r->v[i], &r->v[i + 1], (r->n - i - 1) * sizeof(*r->v));
    r->n--;
}

unsigned mq_ranges_subtract(struct mq_ranges *r, uint32_t seg, uint64_t off,
                            uint64_t len)
{
    uint64_t end = off + len;
    unsigned gone = 0;
    size_t i = 0;

    while (i < r->n) {
        struct mq_range *m = &r->v[i];
        uint64_t m_end = range_end(m);

        if (m->seg != seg || m_end <= off || m->off >= end) {
            i++;
        } else if (m->off < off && m_end > end) {
            /* the part after @end goes in a range of its own */
            m->len = (uint32_t)(off - m->off);
            mq_ranges_add(r, seg, (uint32_t)end, (uint32_t)(m_end - end));
            return gone;
        } else if (m->off < off) {
            m->len = (uint32_t)(off - m->off);
            i++;
        } else if (m_end > end) {
            m->len = (uint32_t)(m_end - end);
            m->off = (uint32_t)end;
            i++;
        } else {
            remove_at(r, i);
            gone++;
        }
    }
    return gone;
}

void mq_ranges_drop_seg(struct mq_ranges *r, uint32_t seg)
{
    size_t i = 0;

    while (i < r->n) {
        if (r->v[i].seg == seg) {
            remove_at(r, i);
        } else {
            i++;
        }
    }
}

const struct mq_range *mq_ranges_from(const struct mq_ranges *r, uint32_t seg,
                                      uint64_t off)
{
    size_t i;

    for (i = 0; i < r->n && r->v[i].seg <= seg; i++) {
        if (r->v[i].seg == seg && range_end(&r->v[i]) > off) {
            return &r->v[i];
        }
    }
    return NULL;
}

bool mq_ranges_overlap(const struct mq_ranges *r, uint32_t seg, uint64_t off,
                       uint64_t len)
{
    const struct mq_range *m = mq_ranges_from(r, seg, off);

    return m != NULL && m->off < off + len;
}

uint64_t mq_ranges_bytes(const struct mq_ranges *r)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; i < r->n; i++) {
        n += r->v[i].len;
    }
    return n;
}

void mq_ranges_clear(struct mq_ranges *r)
{
    free(r->v);
    memset(r, 0, sizeof(*r));
}

static uint32_t form_crc(const unsigned char *p, size_t len)
{
    return (uint32_t)crc32(0L, p, (uInt)len);
}

void mq_ranges_encode(const struct mq_ranges *r, unsigned char **out,
                      size_t *len)
{
    size_t n = MAGIC_LEN + 4 + ITEM_LEN * r->n + 4;
    unsigned char *buf = xmalloc(n), *p;
    size_t i;

    memcpy(buf, MAGIC, MAGIC_LEN);
    p = le_put_u32(buf + MAGIC_LEN, (uint32_t)r->n);
    for (i = 0; i < r->n; i++) {
        p = le_put_u32(p, r->v[i].seg);
        p = le_put_u32(p, r->v[i].off);
        p = le_put_u32(p, r->v[i].len);
    }
    le_put_u32(p, form_crc(buf, n - 4));
    *out = buf;
    *len = n;
}

int mq_ranges_decode(struct mq_ranges *r, const unsigned char *bytes,
                     size_t len)
{
    struct le_reader rd = {bytes + MAGIC_LEN, 0};
    struct le_reader crc_rd = {bytes, len};
    uint32_t count, crc, i;

    r->n = 0;
    if (len < MAGIC_LEN + 8 || memcmp(bytes, MAGIC, MAGIC_LEN) != 0) {
        return -1;
    }
    crc_rd.p = bytes + len - 4;
    crc_rd.left = 4;
    if (!le_get_u32(&crc_rd, &crc) || crc != form_crc(bytes, len - 4)) {
        return -1;
    }
    rd.left = len - MAGIC_LEN - 4;
    if (!le_get_u32(&rd, &count) || rd.left / ITEM_LEN != count ||
        rd.left % ITEM_LEN != 0) {
        return -1;
    }
    for (i = 0; i < count; i++) {
        struct mq_range m;

        if (!le_get_u32(&rd, &m.seg) || !le_get_u32(&rd, &m.off) ||
            !le_get_u32(&rd, &m.len) ||
            mq_ranges_overlap(r, m.seg, m.off, m.len)) {
            r->n = 0;
            return -1;
        }
        mq_ranges_add(r, m.seg, m.off, m.len);
    }
    return 0;
}
