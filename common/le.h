/*
 * le: little-endian encoding for the state machines' snapshots, which must
 * be byte-identical on every replica whatever the host byte order.
 *
 * Writers append at @p and return the next position (the caller sized the
 * buffer). Readers never read past @left: they return false and leave the
 * reader unchanged when the input is too short (snapshots are untrusted).
 * le_load_u32 is the bare load under le_get_u32, for callers that checked
 * the length themselves (record headers, magic numbers).
 */
#ifndef RINGMQ_LE_H
#define RINGMQ_LE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct le_reader {
    const unsigned char *p;
    size_t left;
};

/* The u32 at @p, which the caller knows has 4 bytes. */
static inline uint32_t le_load_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline unsigned char *le_put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    return p + 2;
}

static inline unsigned char *le_put_u32(unsigned char *p, uint32_t v)
{
    int i;

    for (i = 0; i < 4; i++) {
        *p++ = (unsigned char)(v >> (8 * i));
    }
    return p;
}

static inline unsigned char *le_put_u64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++) {
        *p++ = (unsigned char)(v >> (8 * i));
    }
    return p;
}

static inline bool le_get_bytes(struct le_reader *r, const unsigned char **p,
                                size_t n)
{
    if (r->left < n) {
        return false;
    }
    *p = r->p;
    r->p += n;
    r->left -= n;
    return true;
}

static inline bool le_get_u8(struct le_reader *r, uint8_t *v)
{
    const unsigned char *p;

    if (!le_get_bytes(r, &p, 1)) {
        return false;
    }
    *v = p[0];
    return true;
}

static inline bool le_get_u16(struct le_reader *r, uint16_t *v)
{
    const unsigned char *p;

    if (!le_get_bytes(r, &p, 2)) {
        return false;
    }
    *v = (uint16_t)(p[0] | p[1] << 8);
    return true;
}

static inline bool le_get_u32(struct le_reader *r, uint32_t *v)
{
    const unsigned char *p;

    if (!le_get_bytes(r, &p, 4)) {
        return false;
    }
    *v = le_load_u32(p);
    return true;
}

static inline bool le_get_u64(struct le_reader *r, uint64_t *v)
{
    const unsigned char *p;
    int i;

    if (!le_get_bytes(r, &p, 8)) {
        return false;
    }
    *v = 0;
    for (i = 0; i < 8; i++) {
        *v |= (uint64_t)p[i] << (8 * i);
    }
    return true;
}

#endif
