/* test_rpc_frame: encoder/decoder of the internal RPC framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/lz.h"
#include "proto/rpc_frame.h"

/* A request whose cache value is @vlen bytes of @pattern (0: compressible
 * text, 1: pseudo-random). The value is owned by the caller (*value). */
static void make_request(Ringmq__RpcRequest *req,
                         Ringmq__CacheOp *op,
                         size_t vlen,
                         int pattern,
                         uint8_t **value)
{
    uint32_t x = 12345;
    size_t i;

    ringmq__rpc_request__init(req);
    ringmq__cache_op__init(op);
    *value = malloc(vlen ? vlen : 1);
    for (i = 0; i < vlen; i++) {
        if (pattern == 0) {
            (*value)[i] = (uint8_t)("hello ringmq "[i % 13]);
        } else {
            x = x * 1103515245u + 12345u;
            (*value)[i] = (uint8_t)(x >> 16);
        }
    }
    op->type = 1;
    op->key.data = (uint8_t *)"key";
    op->key.len = 3;
    op->value.data = *value;
    op->value.len = vlen;
    op->delta = 77;
    req->id = 42;
    req->epoch = 7;
    req->group = "cache";
    req->body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req->cache = op;
}

/* Decodes exactly one frame from @b fed in @chunk-sized pieces. */
static Ringmq__RpcRequest *decode_one(const struct buf *b,
                                      size_t chunk,
                                      uint8_t *flags)
{
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    Ringmq__RpcRequest *out = NULL;
    size_t off = 0;
    size_t used;
    int frames = 0;
    int rv;

    rpc_frame_decoder_init(&d, 0);
    while (off < b->len) {
        size_t n = b->len - off < chunk ? b->len - off : chunk;
        size_t p = 0;
        while (p < n) {
            rv =
                rpc_frame_decoder_feed(&d, b->data + off + p, n - p, &used, &f);
            assert_true(rv >= 0);
            p += used;
            if (rv == 1) {
                frames++;
                *flags = f.flags;
                assert_int_equal(rpc_frame_unpack_request(&f, &out), 0);
            } else {
                assert_int_equal(p, n);
            }
        }
        off += n;
    }
    assert_int_equal(frames, 1);
    rpc_frame_decoder_close(&d);
    return out;
}

static void test_roundtrip_small(void **state)
{
    Ringmq__RpcRequest req, *out;
    Ringmq__CacheOp op;
    uint8_t *value;
    uint8_t flags = 0xff;
    struct buf b;
    size_t chunks[] = {1, 2, 3, 5, 7, 4096};
    size_t i;

    (void)state;
    make_request(&req, &op, 100, 0, &value);
    buf_init(&b);
    assert_int_equal(rpc_frame_encode_request(&b, &req, 0, 0), 0);
    assert_int_equal(b.len, RPC_FRAME_HEADER_SIZE +
                                ringmq__rpc_request__get_packed_size(&req));
    assert_int_equal((uint8_t)b.data[4], 0);
    for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        out = decode_one(&b, chunks[i], &flags);
        assert_int_equal(flags, 0);
        assert_int_equal(out->id, 42);
        assert_int_equal(out->epoch, 7);
        assert_string_equal(out->group, "cache");
        assert_int_equal(out->body_case, RINGMQ__RPC_REQUEST__BODY_CACHE);
        assert_int_equal(out->cache->value.len, 100);
        assert_memory_equal(out->cache->value.data, value, 100);
        assert_int_equal(out->cache->delta, 77);
        ringmq__rpc_request__free_unpacked(out, NULL);
    }
    buf_free(&b);
    free(value);
}

static void test_large_compressed(void **state)
{
    Ringmq__RpcRequest req, *out;
    Ringmq__CacheOp op;
    uint8_t *value;
    uint8_t flags = 0;
    struct buf b;
    size_t vlen = 1 << 20;

    (void)state;
    make_request(&req, &op, vlen, 0, &value);
    buf_init(&b);
    assert_int_equal(rpc_frame_encode_request(&b, &req, 0, 0), 0);
    assert_true(b.len < vlen / 10);
    assert_int_equal((uint8_t)b.data[4], RPC_FRAME_FLAG_LZ4);
    out = decode_one(&b, 1000, &flags);
    assert_int_equal(flags, RPC_FRAME_FLAG_LZ4);
    assert_int_equal(out->cache->value.len, vlen);
    assert_memory_equal(out->cache->value.data, value, vlen);
    ringmq__rpc_request__free_unpacked(out, NULL);
    out = decode_one(&b, b.len, &flags); /* zero-copy path + lz */
    assert_memory_equal(out->cache->value.data, value, vlen);
    ringmq__rpc_request__free_unpacked(out, NULL);
    buf_free(&b);
    free(value);
}

static void test_incompressible_stays_raw(void **state)
{
    Ringmq__RpcRequest req, *out;
    Ringmq__CacheOp op;
    uint8_t *value;
    uint8_t flags = 0xff;
    struct buf b;

    (void)state;
    make_request(&req, &op, 100000, 1, &value);
    buf_init(&b);
    assert_int_equal(rpc_frame_encode_request(&b, &req, 0, 0), 0);
    assert_int_equal((uint8_t)b.data[4], 0);
    out = decode_one(&b, 3000, &flags);
    assert_int_equal(flags, 0);
    assert_memory_equal(out->cache->value.data, value, 100000);
    ringmq__rpc_request__free_unpacked(out, NULL);
    buf_free(&b);
    free(value);
}

static void test_compress_threshold(void **state)
{
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    uint8_t *value;
    struct buf b;

    (void)state;
    make_request(&req, &op, 8000, 0, &value);
    buf_init(&b);
    /* below the default threshold: raw */
    assert_int_equal(rpc_frame_encode_request(&b, &req, 0, 0), 0);
    assert_int_equal((uint8_t)b.data[4], 0);
    buf_reset(&b);
    /* explicit low threshold: compressed */
    assert_int_equal(rpc_frame_encode_request(&b, &req, 1024, 0), 0);
    assert_int_equal((uint8_t)b.data[4], RPC_FRAME_FLAG_LZ4);
    buf_reset(&b);
    assert_int_equal(
        rpc_frame_encode_request(&b, &req, RPC_FRAME_COMPRESS_NEVER, 0), 0);
    assert_int_equal((uint8_t)b.data[4], 0);
    buf_free(&b);
    free(value);
}

static void test_encode_too_big(void **state)
{
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    uint8_t *value;
    struct buf b;

    (void)state;
    make_request(&req, &op, 5000, 1, &value);
    buf_init(&b);
    buf_append(&b, "xyz", 3);
    assert_int_equal(rpc_frame_encode_request(&b, &req, 0, 4096),
                     RPC_FRAME_ETOOBIG);
    assert_int_equal(b.len, 3);
    /* compressible: fits once compressed? no: raw size is bounded too */
    free(value);
    make_request(&req, &op, 5000, 0, &value);
    assert_int_equal(rpc_frame_encode_request(&b, &req, 1024, 4096),
                     RPC_FRAME_ETOOBIG);
    assert_int_equal(b.len, 3);
    assert_int_equal(rpc_frame_encode_request(&b, &req, 1024, 8192), 0);
    buf_free(&b);
    free(value);
}

static void test_many_frames_one_feed(void **state)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__RpcResponse *out;
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    struct buf b;
    size_t off = 0, used;
    uint64_t next = 1;
    int i, rv;

    (void)state;
    buf_init(&b);
    for (i = 1; i <= 100; i++) {
        resp.id = (uint64_t)i;
        resp.error = i % 2 ? "odd" : "";
        assert_int_equal(rpc_frame_encode_response(&b, &resp, 0, 0), 0);
    }
    rpc_frame_decoder_init(&d, 0);
    while (off < b.len) {
        rv = rpc_frame_decoder_feed(&d, b.data + off, b.len - off, &used, &f);
        assert_int_equal(rv, 1);
        off += used;
        assert_int_equal(rpc_frame_unpack_response(&f, NULL, &out), 0);
        assert_int_equal(out->id, next);
        next++;
        ringmq__rpc_response__free_unpacked(out, NULL);
    }
    assert_int_equal(next, 101);
    rv = rpc_frame_decoder_feed(&d, NULL, 0, &used, &f);
    assert_int_equal(rv, 0);
    rpc_frame_decoder_close(&d);
    buf_free(&b);
}

static void test_empty_message(void **state)
{
    static const uint8_t frame[] = {0, 0, 0, 1, 0};
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    Ringmq__RpcRequest *out;
    size_t used;

    (void)state;
    rpc_frame_decoder_init(&d, 0);
    assert_int_equal(rpc_frame_decoder_feed(&d, frame, 5, &used, &f), 1);
    assert_int_equal(used, 5);
    assert_int_equal(f.len, 0);
    assert_int_equal(rpc_frame_unpack_request(&f, &out), 0);
    assert_int_equal(out->id, 0);
    assert_int_equal(out->body_case, RINGMQ__RPC_REQUEST__BODY__NOT_SET);
    ringmq__rpc_request__free_unpacked(out, NULL);
    rpc_frame_decoder_close(&d);
}

static int feed_all(struct rpc_frame_decoder *d, const void *data, size_t len)
{
    struct rpc_frame f;
    size_t used;
    int rv;

    do {
        rv = rpc_frame_decoder_feed(d, data, len, &used, &f);
        data = (const char *)data + used;
        len -= used;
    } while (rv == 1 && len > 0);
    return rv;
}

static void test_oversized_length(void **state)
{
    static const uint8_t big[] = {0x04, 0x00, 0x00, 0x01, 0x00, 'x'};
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    size_t used;

    (void)state;
    rpc_frame_decoder_init(&d, 0); /* 64 MiB */
    assert_int_equal(feed_all(&d, big, sizeof(big)), RPC_FRAME_ETOOBIG);
    /* sticky */
    assert_int_equal(rpc_frame_decoder_feed(&d, big, 1, &used, &f),
                     RPC_FRAME_ETOOBIG);
    assert_int_equal(used, 0);
    rpc_frame_decoder_close(&d);

    rpc_frame_decoder_init(&d, 1000);
    assert_int_equal(feed_all(&d, "\x00\x00\x03\xe9\x00", 5),
                     RPC_FRAME_ETOOBIG);
    rpc_frame_decoder_close(&d);
    rpc_frame_decoder_init(&d, 1000);
    assert_int_equal(feed_all(&d, "\x00\x00\x03\xe8\x00", 5), 0);
    rpc_frame_decoder_close(&d);
}

static void test_bad_flags(void **state)
{
    struct rpc_frame_decoder d;

    (void)state;
    rpc_frame_decoder_init(&d, 0);
    assert_int_equal(feed_all(&d, "\x00\x00\x00\x02\x02x", 6),
                     RPC_FRAME_EFLAGS);
    rpc_frame_decoder_close(&d);
    rpc_frame_decoder_init(&d, 0);
    assert_int_equal(feed_all(&d, "\x00\x00\x00\x00", 4), 0);
    assert_int_equal(feed_all(&d, "\x00", 1), RPC_FRAME_EFLAGS);
    rpc_frame_decoder_close(&d);
}

static void test_bad_lz4(void **state)
{
    struct rpc_frame_decoder d;
    struct buf b;
    void *z;
    size_t zlen;
    char raw[4096];
    uint8_t hdr[5];

    (void)state;
    /* flag set but not lz data */
    rpc_frame_decoder_init(&d, 0);
    assert_int_equal(feed_all(&d,
                              "\x00\x00\x00\x04\x01"
                              "abc",
                              8),
                     RPC_FRAME_ELZ4);
    rpc_frame_decoder_close(&d);

    /* valid lz header, corrupted block */
    memset(raw, 'a', sizeof(raw));
    assert_int_equal(lz_compress(raw, sizeof(raw), NULL, &z, &zlen), 0);
    ((uint8_t *)z)[zlen - 1] ^= 0xff;
    ((uint8_t *)z)[LZ_HEADER_SIZE] ^= 0x5a;
    buf_init(&b);
    hdr[0] = 0;
    hdr[1] = 0;
    hdr[2] = (uint8_t)((zlen + 1) >> 8);
    hdr[3] = (uint8_t)(zlen + 1);
    hdr[4] = RPC_FRAME_FLAG_LZ4;
    buf_append(&b, hdr, 5);
    buf_append(&b, z, zlen);
    rpc_frame_decoder_init(&d, 0);
    assert_int_equal(feed_all(&d, b.data, b.len), RPC_FRAME_ELZ4);
    rpc_frame_decoder_close(&d);

    /* raw length above max_frame */
    rpc_frame_decoder_init(&d, 1000);
    ((uint8_t *)z)[zlen - 1] ^= 0xff;
    ((uint8_t *)z)[LZ_HEADER_SIZE] ^= 0x5a;
    assert_int_equal(feed_all(&d, b.data, b.len), RPC_FRAME_ETOOBIG);
    rpc_frame_decoder_close(&d);

    /* raw length impossible for the compressed size */
    ((uint8_t *)b.data)[5 + 4 + 3] = 0x7f; /* raw ~ 2 GiB */
    rpc_frame_decoder_init(&d, (size_t)1 << 31);
    assert_int_equal(feed_all(&d, b.data, b.len), RPC_FRAME_ELZ4);
    rpc_frame_decoder_close(&d);
    buf_free(&b);
    free(z);
}

static void test_bad_protobuf(void **state)
{
    /* field 1 varint with a truncated value */
    static const uint8_t frame[] = {0, 0, 0, 3, 0, 0x08, 0xff};
    /* field 3 (string) claiming 100 bytes */
    static const uint8_t frame2[] = {0, 0, 0, 4, 0, 0x1a, 100, 'a'};
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    Ringmq__RpcRequest *req;
    Ringmq__RpcResponse *resp;
    size_t used;

    (void)state;
    rpc_frame_decoder_init(&d, 0);
    assert_int_equal(
        rpc_frame_decoder_feed(&d, frame, sizeof(frame), &used, &f), 1);
    assert_int_equal(rpc_frame_unpack_request(&f, &req), RPC_FRAME_EPROTO);
    assert_null(req);
    assert_int_equal(rpc_frame_unpack_response(&f, NULL, &resp), RPC_FRAME_EPROTO);
    assert_int_equal(
        rpc_frame_decoder_feed(&d, frame2, sizeof(frame2), &used, &f), 1);
    assert_int_equal(rpc_frame_unpack_request(&f, &req), RPC_FRAME_EPROTO);
    rpc_frame_decoder_close(&d);
}

/* A frame split at every possible point, with a second frame after it. */
static void test_split_everywhere(void **state)
{
    Ringmq__RpcRequest req, *out;
    Ringmq__CacheOp op;
    uint8_t *value;
    struct rpc_frame_decoder d;
    struct rpc_frame f;
    struct buf b;
    size_t cut, used, off;
    int frames, rv;

    (void)state;
    make_request(&req, &op, 300, 1, &value);
    buf_init(&b);
    assert_int_equal(rpc_frame_encode_request(&b, &req, 0, 0), 0);
    req.id = 43;
    assert_int_equal(rpc_frame_encode_request(&b, &req, 0, 0), 0);
    for (cut = 0; cut <= b.len; cut++) {
        size_t parts[2][2] = {{0, cut}, {cut, b.len}};
        int k;

        rpc_frame_decoder_init(&d, 0);
        frames = 0;
        for (k = 0; k < 2; k++) {
            off = parts[k][0];
            while (off < parts[k][1]) {
                rv = rpc_frame_decoder_feed(&d, b.data + off, parts[k][1] - off,
                                            &used, &f);
                assert_true(rv >= 0);
                off += used;
                if (rv == 1) {
                    assert_int_equal(rpc_frame_unpack_request(&f, &out), 0);
                    assert_int_equal(out->id, 42 + (uint64_t)frames);
                    assert_memory_equal(out->cache->value.data, value, 300);
                    ringmq__rpc_request__free_unpacked(out, NULL);
                    frames++;
                }
            }
        }
        assert_int_equal(frames, 2);
        rpc_frame_decoder_close(&d);
    }
    buf_free(&b);
    free(value);
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(rpc_frame_strerror(RPC_FRAME_ETOOBIG),
                        "frame too large");
    assert_non_null(rpc_frame_strerror(-100));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_small),
        cmocka_unit_test(test_large_compressed),
        cmocka_unit_test(test_incompressible_stays_raw),
        cmocka_unit_test(test_compress_threshold),
        cmocka_unit_test(test_encode_too_big),
        cmocka_unit_test(test_many_frames_one_feed),
        cmocka_unit_test(test_empty_message),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_bad_lz4),
        cmocka_unit_test(test_bad_protobuf),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
