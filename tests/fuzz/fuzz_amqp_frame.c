/*
 * fuzz_amqp_frame: libFuzzer target for the AMQP 0-9-1 codec (what the
 * edge does with bytes from any client).
 *
 * Input: byte 0 picks the feed chunk size (0 = everything at once), byte 1
 * the frame_max (0 = default, else 8 + byte * 16, so oversize frames are
 * common); the rest is the byte stream after the protocol header.
 *
 * The stream is split into frames twice, whole and in chunks; both must
 * give the same frames and the same final result (the decoder is
 * resumable). Every method frame is decoded; what decodes is re-encoded:
 * same length, and decoding the re-encoding gives it back (the only bytes
 * allowed to change are unused bits of bit octets, which are ignored).
 * Content headers and field tables (the payload after the class/method ids
 * read as a table) must re-encode byte-identically.
 * Seeds: tests/fuzz/corpus_amqp_frame/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "proto/amqp_frame.h"
#include "proto/amqp_method.h"
#include "proto/amqp_table.h"

static void check(int ok)
{
    if (!ok) {
        abort();
    }
}

static void check_method(const uint8_t *p, size_t len)
{
    struct amqp_method m, m2;
    struct buf enc, enc2;

    if (amqp_method_decode(p, len, &m) != 0) {
        return;
    }
    buf_init(&enc);
    buf_init(&enc2);
    check(amqp_method_encode_payload(&enc, &m) == 0);
    check(enc.len == len);
    check(memcmp(enc.data, p, 4) == 0);
    check(amqp_method_decode(enc.data, enc.len, &m2) == 0);
    check(amqp_method_encode_payload(&enc2, &m2) == 0);
    check(enc2.len == enc.len && memcmp(enc2.data, enc.data, enc.len) == 0);
    amqp_method_free(&m2);
    amqp_method_free(&m);
    buf_free(&enc);
    buf_free(&enc2);
}

static void check_header(const uint8_t *p, size_t len)
{
    struct amqp_content_header h;
    struct buf enc;

    if (amqp_content_header_decode(p, len, &h) != 0) {
        return;
    }
    buf_init(&enc);
    check(amqp_content_header_encode_payload(&enc, &h) == 0);
    check(enc.len == len && memcmp(enc.data, p, len) == 0);
    amqp_content_header_free(&h);
    buf_free(&enc);
}

static void check_table(const uint8_t *p, size_t len)
{
    struct amqp_table *t;
    struct buf enc;

    if (amqp_table_decode_entries(p, len, 0, &t) != 0) {
        return;
    }
    buf_init(&enc);
    check(amqp_table_encode(&enc, t) == 0);
    check(enc.len == len + 4);
    check(len == 0 || memcmp(enc.data + 4, p, len) == 0);
    amqp_table_free(t);
    buf_free(&enc);
}

/* Split into frames; append a transcript of them to @t. Returns the final
 * decoder result (0 or an error). */
static int feed(const uint8_t *in,
                size_t len,
                size_t chunk,
                size_t frame_max,
                struct buf *t,
                int deep)
{
    struct amqp_frame_decoder d;
    size_t off = 0;
    int rv = 0;

    amqp_frame_decoder_init(&d, frame_max);
    while (off < len && rv >= 0) {
        size_t give = chunk == 0 || chunk > len - off ? len - off : chunk;
        size_t pos = 0;
        while (pos < give) {
            struct amqp_frame f;
            size_t used;
            rv = amqp_frame_decoder_feed(&d, in + off + pos, give - pos, &used,
                                         &f);
            check(used <= give - pos);
            pos += used;
            if (rv < 0) {
                break;
            }
            if (rv == 1) {
                check(f.size + AMQP_FRAME_OVERHEAD <= d.frame_max);
                buf_printf(t, "%u/%u/%zu:", f.type, f.channel, f.size);
                buf_append(t, f.payload, f.size);
                if (deep && f.type == AMQP_FRAME_METHOD) {
                    check_method(f.payload, f.size);
                    if (f.size >= 4) {
                        check_table(f.payload + 4, f.size - 4);
                    }
                } else if (deep && f.type == AMQP_FRAME_HEADER) {
                    check_header(f.payload, f.size);
                }
            } else {
                check(pos == give); /* 0: all consumed */
            }
        }
        off += give;
    }
    buf_printf(t, "|%d", rv < 0 ? rv : 0);
    amqp_frame_decoder_close(&d);
    return rv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf t1, t2;
    size_t chunk, frame_max;

    if (size < 2) {
        return 0;
    }
    chunk = data[0];
    frame_max = data[1] ? 8 + (size_t)data[1] * 16 : 0;
    data += 2;
    size -= 2;
    buf_init(&t1);
    buf_init(&t2);
    feed(data, size, 0, frame_max, &t1, 1);
    feed(data, size, chunk, frame_max, &t2, 0);
    check(t1.len == t2.len && memcmp(t1.data, t2.data, t1.len) == 0);
    buf_free(&t1);
    buf_free(&t2);
    return 0;
}
