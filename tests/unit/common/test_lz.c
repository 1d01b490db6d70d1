/* test_lz: common/lz round trips, corrupt and truncated input, max_raw. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
