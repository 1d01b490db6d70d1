/* lz: see lz.h. */
#include "common/lz.h"

#include <lz4.h>
#include <lz4frame.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/le.h"

static const char lz_magic[4] = {'R', 'L', 'Z', '4'};

/* LZ4F_MAGICNUMBER, as it lies in memory (little-endian) */
static const unsigned char frame_magic[4] = {0x04, 0x22, 0x4d, 0x18};

/* What lz_frame_begin writes first: a skippable frame of the LZ4 frame
 * format (magic 0x184D2A50 + n, n 0..15, then a 4-byte little-endian
 * size and that many bytes, which readers skip) holding "RMQZ". Why: raft
 * 0.15 decompresses a snapshot file that starts with the frame magic when
 * it loads it, trusting the header's content size, and a leader would
 * then send the raw state to followers. The lz4 tool reads it as is. */
#define SKIP_MAGIC_LOW 0x184d2a50u
#define SKIP_HEADER 8
static const unsigned char skip_tag[SKIP_HEADER + 4] = {
    0x52, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 'R', 'M', 'Q', 'Z'};

static bool is_skippable(const void *in, size_t len)
{
    return len >= SKIP_HEADER && (le_load_u32(in) & ~0xfu) == SKIP_MAGIC_LOW;
}

/* The frames we write. 64 KiB independent blocks: LZ4 matches reach back
 * 64 KiB anyway, so larger blocks gain little ratio; a snapshot's 4 MiB
 * chunks are whole blocks, compressed straight from the chunk; and a
 * reader's scratch is a block (each decode allocates it: 1 MiB blocks
 * made every restore, and the frame tests under ASan, pay for a 1 MiB
 * mapping). */
static void frame_prefs(LZ4F_preferences_t *p, uint64_t total)
{
    memset(p, 0, sizeof *p);
    p->frameInfo.blockSizeID = LZ4F_max64KB;
    p->frameInfo.blockMode = LZ4F_blockIndependent;
    p->frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    p->frameInfo.contentSize = total;
    p->autoFlush = 1; /* nothing held back between updates */
}

bool lz_is_compressed(const void *in, size_t len)
{
    return len >= LZ_HEADER_SIZE && memcmp(in, lz_magic, 4) == 0;
}

bool lz_is_frame(const void *in, size_t len)
{
    return is_skippable(in, len) ||
           (len >= sizeof frame_magic &&
            memcmp(in, frame_magic, sizeof frame_magic) == 0);
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

static int rlz4_decompress(const void *in, size_t len, size_t max_raw,
                           void *(*alloc)(size_t), void **out,
                           size_t *out_len)
{
    const uint8_t *src = in;
    uint64_t raw = 0;
    char *dst;
    int n;
    int i;

    if (len - LZ_HEADER_SIZE > INT32_MAX) {
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

/* Decode into one buffer of the size the header gives, which is checked
 * before anything is allocated; the library checks the blocks, the content
 * size against what decoded, and the checksums. */
static int frame_decompress(const void *in, size_t len, size_t max_raw,
                            void *(*alloc)(size_t), void **out,
                            size_t *out_len)
{
    const unsigned char *src = in;
    LZ4F_decompressOptions_t opts = {.stableDst = 1};
    LZ4F_dctx *dctx;
    LZ4F_frameInfo_t info;
    unsigned char *dst = NULL;
    size_t raw;
    size_t in_off, out_off;
    size_t r;

    if (is_skippable(src, len)) {
        size_t skip = le_load_u32(src + 4);

        if (skip > len - SKIP_HEADER) {
            return -1;
        }
        src += SKIP_HEADER + skip;
        len -= SKIP_HEADER + skip;
    }
    if (len < sizeof frame_magic ||
        memcmp(src, frame_magic, sizeof frame_magic) != 0) {
        return -1; /* one frame of data, after one skippable at most */
    }
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        return -1;
    }
    in_off = len;
    r = LZ4F_getFrameInfo(dctx, &info, src, &in_off);
    if (LZ4F_isError(r) || info.contentSize == 0 ||
        info.contentSize > max_raw || info.contentSize > SIZE_MAX) {
        goto err;
    }
    raw = (size_t)info.contentSize;
    dst = (alloc ? alloc : malloc)(raw);
    if (dst == NULL) {
        goto err;
    }
    out_off = 0;
    while (r != 0) {
        size_t src_n = len - in_off;
        size_t dst_n = raw - out_off;

        r = LZ4F_decompress(dctx, dst + out_off, &dst_n, src + in_off,
                            &src_n, &opts);
        if (LZ4F_isError(r)) {
            goto err;
        }
        in_off += src_n;
        out_off += dst_n;
        if (r != 0 && src_n == 0 && dst_n == 0) {
            goto err; /* truncated, or more content than the header said */
        }
    }
    /* the frame is whole: all of it, and nothing after it */
    if (out_off != raw || in_off != len) {
        goto err;
    }
    LZ4F_freeDecompressionContext(dctx);
    *out = dst;
    *out_len = raw;
    return 0;

err:
    free(dst);
    LZ4F_freeDecompressionContext(dctx);
    return -1;
}

int lz_decompress(const void *in, size_t len, size_t max_raw,
                  void *(*alloc)(size_t), void **out, size_t *out_len)
{
    if (lz_is_compressed(in, len)) {
        return rlz4_decompress(in, len, max_raw, alloc, out, out_len);
    }
    if (lz_is_frame(in, len)) {
        return frame_decompress(in, len, max_raw, alloc, out, out_len);
    }
    return -1;
}

/* Room for @need more bytes of output. */
static int frame_reserve(struct lz_frame *f, size_t need)
{
    size_t cap = f->cap;
    unsigned char *p;

    if (f->cap - f->len >= need) {
        return 0;
    }
    if (need > SIZE_MAX / 2 - f->len) {
        return -1;
    }
    while (cap - f->len < need) {
        cap = cap < 4096 ? 4096 : cap * 2;
    }
    p = f->grow(f->out, cap);
    if (p == NULL) {
        return -1;
    }
    f->out = p;
    f->cap = cap;
    return 0;
}

static void frame_release(struct lz_frame *f)
{
    LZ4F_freeCompressionContext(f->cctx);
    f->cctx = NULL;
    if (f->out != NULL) {
        f->release(f->out);
        f->out = NULL;
    }
}

int lz_frame_begin(struct lz_frame *f, uint64_t total,
                   void *(*grow)(void *, size_t), void (*release)(void *))
{
    LZ4F_preferences_t prefs;
    LZ4F_cctx *cctx;
    size_t r;

    memset(f, 0, sizeof *f);
    if (total == 0) {
        return -1;
    }
    if (LZ4F_isError(LZ4F_createCompressionContext(&cctx, LZ4F_VERSION))) {
        return -1;
    }
    f->cctx = cctx;
    f->grow = grow;
    f->release = release;
    f->total = total;
    frame_prefs(&prefs, total);
    if (frame_reserve(f, sizeof skip_tag + LZ4F_HEADER_SIZE_MAX) != 0) {
        goto err;
    }
    memcpy(f->out, skip_tag, sizeof skip_tag);
    r = LZ4F_compressBegin(cctx, f->out + sizeof skip_tag,
                           f->cap - sizeof skip_tag, &prefs);
    if (LZ4F_isError(r)) {
        goto err;
    }
    f->len = sizeof skip_tag + r;
    return 0;

err:
    frame_release(f);
    return -1;
}

int lz_frame_update(struct lz_frame *f, const void *in, size_t n)
{
    LZ4F_preferences_t prefs;
    size_t r;

    if (n > f->total - f->fed) {
        return -1;
    }
    frame_prefs(&prefs, f->total);
    if (frame_reserve(f, LZ4F_compressBound(n, &prefs)) != 0) {
        return -1;
    }
    r = LZ4F_compressUpdate(f->cctx, f->out + f->len, f->cap - f->len, in, n,
                            NULL);
    if (LZ4F_isError(r)) {
        return -1;
    }
    f->len += r;
    f->fed += n;
    return 0;
}

int lz_frame_end(struct lz_frame *f, void **out, size_t *out_len)
{
    LZ4F_preferences_t prefs;
    size_t r;

    frame_prefs(&prefs, f->total);
    if (f->fed != f->total ||
        frame_reserve(f, LZ4F_compressBound(0, &prefs)) != 0) {
        goto err;
    }
    r = LZ4F_compressEnd(f->cctx, f->out + f->len, f->cap - f->len, NULL);
    if (LZ4F_isError(r)) {
        goto err;
    }
    f->len += r;
    *out = f->out;
    *out_len = f->len;
    f->out = NULL; /* the caller's */
    frame_release(f);
    return 0;

err:
    frame_release(f);
    return -1;
}

void lz_frame_abort(struct lz_frame *f)
{
    frame_release(f);
}
