/*
 * fuzz_mc_parse: libFuzzer target for the memcached text-protocol parser
 * (what the edge does with bytes from any client).
 *
 * Input: byte 0 picks the feed chunk size (0 = everything at once), byte 1
 * the item size limit (0 = default, else byte * 4, so small limits make
 * too-large values and swallowing common); the rest is the byte stream.
 *
 * The stream is parsed twice, whole and in chunks, like a connection would
 * (keep unconsumed bytes, append new ones). Checked: consumption stays
 * within the buffer, every pointer of a request points into it, the bytes
 * held never exceed the parser's bounds, and both feeds give the same
 * transcript (the parser is resumable: splitting never changes a result).
 * Seeds: tests/fuzz/corpus_mc_parse/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "sm/cache_op.h"
#include "proto/mc_parse.h"

static void check(int ok)
{
    if (!ok) {
        abort();
    }
}

static int within(const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && p + n <= base + len;
}

static void describe(struct buf *t, const struct mc_request *r,
                     const char *base, size_t len)
{
    size_t i;

    buf_printf(t, "%d|%s|%d%d", (int)r->cmd, r->error ? r->error : "",
               r->noreply, r->too_large);
    for (i = 0; i < r->nkeys; i++) {
        check(within(r->keys[i].data, r->keys[i].len, base, len));
        check(r->error != NULL ||
              cache_key_valid(r->keys[i].data, r->keys[i].len));
        buf_printf(t, "|k%zu:", r->keys[i].len);
        buf_append(t, r->keys[i].data, r->keys[i].len);
    }
    if (r->value) {
        check(within(r->value, r->value_len, base, len));
        buf_printf(t, "|v%zu:", r->value_len);
        buf_append(t, r->value, r->value_len);
    }
    buf_printf(t, "|%u|%lld|%llu|%llu\n", r->flags, (long long)r->exptime,
               (unsigned long long)r->cas, (unsigned long long)r->delta);
}

static void feed(const uint8_t *in, size_t len, size_t chunk,
                 uint32_t item_size_max, struct buf *t)
{
    struct mc_parser p;
    struct buf held;
    size_t off = 0;
    int closed = 0;
    uint32_t limit = item_size_max ? item_size_max
                                   : CACHE_ITEM_SIZE_MAX_DEFAULT;

    mc_parser_init(&p, item_size_max);
    buf_init(&held);
    while (off < len && !closed) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        buf_append(&held, in + off, n);
        off += n;
        for (;;) {
            struct mc_request r;
            size_t used;
            enum mc_parse_status st =
                mc_parse_next(&p, held.data, held.len, &r, &used);
            check(used <= held.len);
            if (st == MC_PARSE_AGAIN) {
                buf_consume(&held, used);
                /* What may stay buffered: a get line, or a command line and
                 * its data block. */
                check(held.len <= MC_PARSE_GET_LINE_MAX + 1 ||
                      held.len <= MC_PARSE_LINE_MAX + (size_t)limit + 2);
                break;
            }
            if (st == MC_PARSE_CLOSE) {
                buf_printf(t, "CLOSE %s\n", r.error ? r.error : "");
                closed = 1;
                break;
            }
            check(used > 0);
            describe(t, &r, held.data, held.len);
            buf_consume(&held, used);
        }
    }
    if (!closed) {
        buf_printf(t, "PARTIAL %zu\n", held.len);
    }
    buf_free(&held);
    mc_parser_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf whole;
    struct buf split;
    size_t chunk;
    uint32_t item_size_max;

    if (size < 2) {
        return 0;
    }
    chunk = data[0] % 17;
    item_size_max = (uint32_t)data[1] * 4;
    data += 2;
    size -= 2;

    buf_init(&whole);
    buf_init(&split);
    feed(data, size, 0, item_size_max, &whole);
    feed(data, size, chunk ? chunk : 1, item_size_max, &split);
    check(whole.len == split.len &&
          (whole.len == 0 || memcmp(whole.data, split.data, whole.len) == 0));
    buf_free(&whole);
    buf_free(&split);
    return 0;
}
