/* test_lz: common/lz round trips, corrupt and truncated input, max_raw,
 * in both formats (RLZ4 blocks and LZ4 frames written a piece at a time). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lz4frame.h>
#include <raft.h>

#include "common/lz.h"

static void round_trip(const void *in, size_t len)
{
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 99;

    assert_int_equal(lz_compress(in, len, NULL, &z, &zlen), 0);
    assert_true(zlen >= LZ_HEADER_SIZE);
    assert_true(lz_is_compressed(z, zlen));
    assert_int_equal(lz_decompress(z, zlen, len, NULL, &out, &outlen), 0);
    assert_int_equal(outlen, len);
    if (len > 0) {
        assert_memory_equal(out, in, len);
    }
    free(out);
    free(z);
}

static void test_empty(void **state)
{
    (void)state;
    round_trip("", 0);
}

static void test_small(void **state)
{
    static const char s[] = "hello, ringmq";

    (void)state;
    round_trip(s, sizeof s);
    round_trip("x", 1);
}

static void test_big_random(void **state)
{
    size_t len = 1u << 20;
    uint8_t *p = malloc(len);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    size_t i;

    (void)state;
    for (i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
    round_trip(p, len);
    free(p);
}

static void test_big_compressible(void **state)
{
    size_t len = 1u << 20;
    char *p = malloc(len);
    void *z = NULL;
    size_t zlen = 0;
    size_t i;

    (void)state;
    for (i = 0; i < len; i++) {
        p[i] = "abcdefgh"[(i / 64) % 8];
    }
    round_trip(p, len);
    assert_int_equal(lz_compress(p, len, NULL, &z, &zlen), 0);
    assert_true(zlen < len / 20);
    free(z);
    free(p);
}

/* The allocator hook: raft_malloc'd output, as the snapshot code uses it. */
static void *raft_alloc(size_t n)
{
    return raft_malloc(n);
}

static void test_custom_alloc(void **state)
{
    static const char s[] = "compressed into a raft buffer";
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;

    (void)state;
    assert_int_equal(lz_compress(s, sizeof s, raft_alloc, &z, &zlen), 0);
    assert_int_equal(
        lz_decompress(z, zlen, sizeof s, raft_alloc, &out, &outlen), 0);
    assert_int_equal(outlen, sizeof s);
    assert_memory_equal(out, s, sizeof s);
    raft_free(out);
    raft_free(z);
}

static void test_corrupt(void **state)
{
    char in[4096];
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof in; i++) {
        in[i] = (char)(i * 7 % 251);
    }
    assert_int_equal(lz_compress(in, sizeof in, NULL, &z, &zlen), 0);

    /* not lz at all */
    assert_false(lz_is_compressed("nope", 4));
    assert_int_equal(lz_decompress("nope", 4, 1 << 20, NULL, &out, &outlen),
                     -1);
    assert_int_equal(lz_decompress(in, sizeof in, 1 << 20, NULL, &out, &outlen),
                     -1);
    /* header only, and every truncation */
    for (i = 0; i < zlen; i++) {
        assert_int_equal(lz_decompress(z, i, 1 << 20, NULL, &out, &outlen), -1);
    }
    /* wrong raw length in the header */
    {
        uint8_t *h = malloc(zlen);

        memcpy(h, z, zlen);
        h[4] ^= 0x01;
        assert_int_equal(lz_decompress(h, zlen, 1 << 20, NULL, &out, &outlen),
                         -1);
        memcpy(h, z, zlen);
        h[11] = 0xff; /* absurd length */
        assert_int_equal(lz_decompress(h, zlen, SIZE_MAX, NULL, &out, &outlen),
                         -1);
        /* garbage body */
        memcpy(h, z, zlen);
        memset(h + LZ_HEADER_SIZE, 0xff, zlen - LZ_HEADER_SIZE);
        assert_int_equal(lz_decompress(h, zlen, 1 << 20, NULL, &out, &outlen),
                         -1);
        free(h);
    }
    free(z);
}

static void test_max_raw(void **state)
{
    char in[1000];
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;

    (void)state;
    memset(in, 'q', sizeof in);
    assert_int_equal(lz_compress(in, sizeof in, NULL, &z, &zlen), 0);
    assert_int_equal(lz_decompress(z, zlen, 999, NULL, &out, &outlen), -1);
    assert_int_equal(lz_decompress(z, zlen, 1000, NULL, &out, &outlen), 0);
    assert_int_equal(outlen, 1000);
    free(out);
    free(z);
}

/* ---- LZ4 frames ---------------------------------------------------------- */

static void *plain_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

/* @in compressed as a frame fed in pieces of @piece bytes (the last one
 * shorter), with @grow/@release. */
static void frame_of(const void *in, size_t len, size_t piece,
                     void *(*grow)(void *, size_t), void (*release)(void *),
                     void **z, size_t *zlen)
{
    struct lz_frame f;
    size_t off;

    assert_int_equal(lz_frame_begin(&f, len, grow, release), 0);
    for (off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;

        assert_int_equal(lz_frame_update(&f, (const char *)in + off, n), 0);
    }
    assert_int_equal(lz_frame_end(&f, z, zlen), 0);
    assert_true(lz_is_frame(*z, *zlen));
    assert_false(lz_is_compressed(*z, *zlen));
}

static void frame_round_trip(const void *in, size_t len, size_t piece)
{
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;

    frame_of(in, len, piece, plain_realloc, free, &z, &zlen);
    assert_int_equal(lz_decompress(z, zlen, len, NULL, &out, &outlen), 0);
    assert_int_equal(outlen, len);
    assert_memory_equal(out, in, len);
    free(out);
    free(z);
}

static uint8_t *random_bytes(size_t len, uint64_t x)
{
    uint8_t *p = malloc(len);
    size_t i;

    for (i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
    return p;
}

/* Any cut of the input into pieces gives a frame that reads back: one
 * byte at a time, pieces across the library's 64 KiB blocks (and not a
 * multiple of them), one piece. */
static void test_frame_round_trip(void **state)
{
    size_t len = (3u << 20) + 5;
    uint8_t *rnd = random_bytes(len, 0x9e3779b97f4a7c15ull);
    char *txt = malloc(len);
    size_t i;

    (void)state;
    for (i = 0; i < len; i++) {
        txt[i] = "abcdefgh"[(i / 64) % 8];
    }
    frame_round_trip("x", 1, 1);
    frame_round_trip("hello, ringmq", 13, 1);
    frame_round_trip(rnd, 70000, 1);
    frame_round_trip(rnd, len, 4u << 20);
    frame_round_trip(rnd, len, (1u << 20) + 8);
    frame_round_trip(rnd, len, (64u << 10) - 8);
    frame_round_trip(txt, len, 64);
    frame_round_trip(txt, len, 4u << 20);
    free(txt);
    free(rnd);
}

/* The output grows with raft_realloc, so raft can free it (snapshots). */
static void test_frame_raft_heap(void **state)
{
    size_t len = 300000;
    uint8_t *in = random_bytes(len, 7);
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;

    (void)state;
    frame_of(in, len, 4096, raft_realloc, raft_free, &z, &zlen);
    assert_int_equal(lz_decompress(z, zlen, len, raft_alloc, &out, &outlen),
                     0);
    assert_int_equal(outlen, len);
    assert_memory_equal(out, in, len);
    raft_free(out);
    raft_free(z);
    free(in);
}

/* The writer holds the caller to the size it promised. */
static void test_frame_size_promised(void **state)
{
    struct lz_frame f;
    void *z = NULL;
    size_t zlen = 0;

    (void)state;
    assert_int_equal(lz_frame_begin(&f, 0, plain_realloc, free), -1);
    /* short */
    assert_int_equal(lz_frame_begin(&f, 10, plain_realloc, free), 0);
    assert_int_equal(lz_frame_update(&f, "12345", 5), 0);
    assert_int_equal(lz_frame_end(&f, &z, &zlen), -1);
    assert_null(z);
    /* long */
    assert_int_equal(lz_frame_begin(&f, 4, plain_realloc, free), 0);
    assert_int_equal(lz_frame_update(&f, "123", 3), 0);
    assert_int_equal(lz_frame_update(&f, "45", 2), -1);
    lz_frame_abort(&f);
    /* abandoned half way (a snapshot aborted) */
    assert_int_equal(lz_frame_begin(&f, 1000, plain_realloc, free), 0);
    assert_int_equal(lz_frame_update(&f, "123", 3), 0);
    lz_frame_abort(&f);
}

static void test_frame_max_raw(void **state)
{
    char in[1000];
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;

    (void)state;
    memset(in, 'q', sizeof in);
    frame_of(in, sizeof in, 100, plain_realloc, free, &z, &zlen);
    assert_int_equal(lz_decompress(z, zlen, 999, NULL, &out, &outlen), -1);
    assert_int_equal(lz_decompress(z, zlen, 1000, NULL, &out, &outlen), 0);
    assert_int_equal(outlen, 1000);
    free(out);
    free(z);
}

/* Every truncation, every byte flipped, bytes after the frame: refused
 * (a flip the checksums cannot see must still give back the same bytes;
 * the sanitizer build sees any read or write out of bounds). */
static void test_frame_corrupt(void **state)
{
    size_t len = 5000;
    uint8_t *in = random_bytes(len, 3);
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;
    uint8_t *h;
    size_t i;
    unsigned bit;

    (void)state;
    memset(in + 1000, 'a', 3000); /* compressed and literal blocks both */
    frame_of(in, len, 1024, plain_realloc, free, &z, &zlen);
    for (i = 0; i < zlen; i++) {
        assert_int_equal(lz_decompress(z, i, len, NULL, &out, &outlen), -1);
    }
    h = malloc(zlen + 1);
    for (i = 0; i < zlen; i++) {
        for (bit = 0; bit < 8; bit += 3) {
            memcpy(h, z, zlen);
            h[i] ^= (uint8_t)(1u << bit);
            if (lz_decompress(h, zlen, len, NULL, &out, &outlen) == 0) {
                assert_int_equal(outlen, len);
                assert_memory_equal(out, in, len);
                free(out);
            }
        }
    }
    memcpy(h, z, zlen);
    h[zlen] = 0;
    assert_int_equal(lz_decompress(h, zlen + 1, len, NULL, &out, &outlen),
                     -1);
    free(h);
    free(z);
    free(in);
}

/* A frame without its content size (written by another tool, say) is
 * refused: the reader would not know what to allocate. */
static void test_frame_unknown_size(void **state)
{
    static const char s[] = "a frame without a content size";
    LZ4F_preferences_t prefs;
    char z[256];
    void *out = NULL;
    size_t outlen = 0;
    size_t zlen;

    (void)state;
    memset(&prefs, 0, sizeof prefs);
    zlen = LZ4F_compressFrame(z, sizeof z, s, sizeof s, &prefs);
    assert_false(LZ4F_isError(zlen));
    assert_true(lz_is_frame(z, zlen));
    assert_int_equal(lz_decompress(z, zlen, 1 << 20, NULL, &out, &outlen),
                     -1);
    /* the same with its size reads */
    prefs.frameInfo.contentSize = sizeof s;
    zlen = LZ4F_compressFrame(z, sizeof z, s, sizeof s, &prefs);
    assert_false(LZ4F_isError(zlen));
    assert_int_equal(lz_decompress(z, zlen, 1 << 20, NULL, &out, &outlen),
                     0);
    assert_int_equal(outlen, sizeof s);
    assert_memory_equal(out, s, sizeof s);
    free(out);
}

/* Our frames start with a skippable frame, not with the frame magic that
 * raft 0.15's snapshot loader decompresses on its own; a bare frame (the
 * skippable one cut off) reads the same, and a skippable frame whose size
 * runs past the end, or with no frame after it, is refused. */
static void test_frame_skippable_first(void **state)
{
    static const unsigned char lz4f_magic[4] = {0x04, 0x22, 0x4d, 0x18};
    char in[3000];
    void *z = NULL;
    void *out = NULL;
    size_t zlen = 0;
    size_t outlen = 0;
    uint8_t *h;

    (void)state;
    memset(in, 'k', sizeof in);
    frame_of(in, sizeof in, 1000, plain_realloc, free, &z, &zlen);
    h = z;
    assert_true(memcmp(h, lz4f_magic, 4) != 0);
    assert_int_equal(h[0] & 0xf0, 0x50); /* 0x184D2A5x */
    assert_int_equal(h[1], 0x2a);
    assert_memory_equal(h + 12, lz4f_magic, 4);
    /* bare */
    assert_true(lz_is_frame(h + 12, zlen - 12));
    assert_int_equal(
        lz_decompress(h + 12, zlen - 12, sizeof in, NULL, &out, &outlen), 0);
    assert_int_equal(outlen, sizeof in);
    assert_memory_equal(out, in, sizeof in);
    free(out);
    /* a skippable size past the end; one skipping over the frame */
    h[4] = 0xff;
    assert_int_equal(lz_decompress(h, zlen, sizeof in, NULL, &out, &outlen),
                     -1);
    h[4] = (uint8_t)(zlen - 8);
    h[5] = (uint8_t)((zlen - 8) >> 8);
    assert_int_equal(lz_decompress(h, zlen, sizeof in, NULL, &out, &outlen),
                     -1);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_small),
        cmocka_unit_test(test_big_random),
        cmocka_unit_test(test_big_compressible),
        cmocka_unit_test(test_custom_alloc),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_max_raw),
        cmocka_unit_test(test_frame_round_trip),
        cmocka_unit_test(test_frame_raft_heap),
        cmocka_unit_test(test_frame_size_promised),
        cmocka_unit_test(test_frame_max_raw),
        cmocka_unit_test(test_frame_corrupt),
        cmocka_unit_test(test_frame_unknown_size),
        cmocka_unit_test(test_frame_skippable_first),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
