/* lz: see lz.h. */
#include "common/lz.h"

#include <lz4.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char lz_magic[4] = {'R', 'L', 'Z', '4'};

bool lz_is_compressed(const void *in, size_t len)
{
    return len >= LZ_HEADER_SIZE && memcmp(in, lz_magic, 4) == 0;
}

int lz_compress(const void *in, size_t len, void *(*alloc)(size_t),
                void **out, size_t *out_len)
{
    uint8_t *dst;
    int bound;
    int n;
    int i;

    if (len > (size_t)LZ4_MAX_INPUT_SIZE) {
        return -1;
    }
    bound = LZ4_compressBound((int)len);
    dst = (alloc ? alloc : malloc)(LZ_HEADER_SIZE + (size_t)bound);
    if (dst == NULL) {
        return -1;
    }
    memcpy(dst, lz_magic, 4);
    for (i = 0; i < 8; i++) {
        dst[4 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    n = LZ4_compress_default(in, (char *)dst + LZ_HEADER_SIZE, (int)len,
                             bound);
    if (n <= 0 && len > 0) {
        free(dst);
        return -1;
    }
    *out = dst;
    *out_len = LZ_HEADER_SIZE + (size_t)n;
    return 0;
}

int lz_decompress(const void *in, size_t len, size_t max_raw,
                  void *(*alloc)(size_t), void **out, size_t *out_len)
{
    const uint8_t *src = in;
    uint64_t raw = 0;
    char *dst;
    int n;
    int i;

    if (!lz_is_compressed(in, len) || len - LZ_HEADER_SIZE > INT32_MAX) {
        return -1;
    }
    for (i = 0; i < 8; i++) {
        raw |= (uint64_t)src[4 + i] << (8 * i);
    }
    if (raw > max_raw || raw > (uint64_t)LZ4_MAX_INPUT_SIZE) {
        return -1;
    }
    dst = (alloc ? alloc : malloc)(raw ? (size_t)raw : 1);
    if (dst == NULL) {
        return -1;
    }
    n = LZ4_decompress_safe((const char *)src + LZ_HEADER_SIZE, dst,
                            (int)(len - LZ_HEADER_SIZE), (int)raw);
    if (n < 0 || (uint64_t)n != raw) {
        free(dst);
        return -1;
    }
    *out = dst;
    *out_len = (size_t)raw;
    return 0;
}
