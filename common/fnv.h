/*
 * fnv: the 64-bit FNV-1a hash, for digests of snapshot bytes and small
 * in-memory hash sets where a fixed, portable function matters more than
 * speed (every replica must compute the same value).
 */
#ifndef RINGMQ_FNV_H
#define RINGMQ_FNV_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t fnv1a64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    return h;
}

#endif
