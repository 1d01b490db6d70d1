/*
 * test_mc_parse: the memcached text-protocol parser.
 *
 * Every request the parser yields is rendered as one transcript line
 * (command, error, noreply, keys, numbers, data), so a test states the whole
 * outcome of an input in one string. The same inputs are also fed one byte
 * at a time and in odd chunks: the transcript must not change. Expected
 * error lines are the ones memcached 1.6.18 sends for the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "proto/mc_parse.h"

static void describe(struct buf *t, const struct mc_request *r)
{
    size_t i;

    buf_printf(t, "%s", r->cmd == MC_CMD_NONE ? "?" : mc_cmd_name(r->cmd));
    if (r->error) {
        buf_printf(t, " ERR(%s)", r->error);
    }
    if (r->noreply) {
        buf_printf(t, " NR");
    }
    if (r->too_large) {
        buf_printf(t, " TL");
    }
    for (i = 0; i < r->nkeys; i++) {
        buf_printf(t, " k=%.*s", (int)r->keys[i].len, r->keys[i].data);
    }
    if (r->error) {
        return;
    }
    switch (r->cmd) {
    case MC_CMD_CAS:
        buf_printf(t, " c=%llu", (unsigned long long)r->cas);
        /* fallthrough */
    case MC_CMD_SET:
    case MC_CMD_ADD:
    case MC_CMD_REPLACE:
    case MC_CMD_APPEND:
    case MC_CMD_PREPEND:
        buf_printf(t, " f=%u e=%lld v=%.*s", r->flags, (long long)r->exptime,
                   (int)r->value_len, r->value);
        break;
    case MC_CMD_INCR:
    case MC_CMD_DECR:
        buf_printf(t, " d=%llu", (unsigned long long)r->delta);
        break;
    case MC_CMD_TOUCH:
    case MC_CMD_GAT:
    case MC_CMD_GATS:
    case MC_CMD_FLUSH_ALL:
        buf_printf(t, " e=%lld", (long long)r->exptime);
        break;
    default:
        break;
    }
}

/*
 * Feed @in to a fresh parser @chunk bytes at a time (0: all at once), like
 * a connection would: keep unconsumed bytes, append new ones. Returns the
 * transcript (caller frees): one line per request, "CLOSE(...)" when the
 * parser closes, "PARTIAL n" when n bytes are left waiting.
 * *max_buffered gets the largest number of bytes ever held.
 */
static char *feed(const char *in, size_t len, size_t chunk,
                  uint32_t item_size_max, size_t *max_buffered)
{
    struct mc_parser p;
    struct buf held;
    struct buf t;
    size_t off = 0;
    size_t maxb = 0;
    bool closed = false;

    mc_parser_init(&p, item_size_max);
    buf_init(&held);
    buf_init(&t);
    while (off < len && !closed) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        buf_append(&held, in + off, n);
        off += n;
        if (held.len > maxb) {
            maxb = held.len;
        }
        for (;;) {
            struct mc_request r;
            size_t used = 12345;
            enum mc_parse_status st =
                mc_parse_next(&p, held.data, held.len, &r, &used);
            assert_true(used <= held.len);
            if (st == MC_PARSE_AGAIN) {
                buf_consume(&held, used);
                break;
            }
            if (st == MC_PARSE_CLOSE) {
                buf_printf(&t, "CLOSE(%s)\n", r.error ? r.error : "");
                closed = true;
                break;
            }
            describe(&t, &r);
            buf_append_str(&t, "\n");
            buf_consume(&held, used);
        }
    }
    if (!closed && held.len > 0) {
        buf_printf(&t, "PARTIAL %zu\n", held.len);
    }
    buf_append(&t, "", 1);
    buf_free(&held);
    mc_parser_free(&p);
    if (max_buffered) {
        *max_buffered = maxb;
    }
    return t.data;
}

/* Parse @in whole, byte by byte and in 3- and 7-byte chunks; all four must
 * give @want. */
static void check_n(const char *in, size_t len, const char *want)
{
    static const size_t chunks[] = {0, 1, 3, 7};
    size_t i;

    for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        char *got = feed(in, len, chunks[i], 0, NULL);
        int differs = strcmp(got, want) != 0;

        if (differs) {
            print_error("input %.*s (chunk %zu)\nwant:\n%sgot:\n%s\n",
                        (int)(len > 200 ? 200 : len), in, chunks[i], want,
                        got);
        }
        /* Freed before fail(): cmocka's fail() is not marked noreturn. */
        free(got);
        if (differs) {
            fail();
        }
    }
}

static void check(const char *in, const char *want)
{
    check_n(in, strlen(in), want);
}

static char *repeat(char c, size_t n)
{
    char *s = xmalloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- grammar ----------------------------------------------------------- */

static void test_get_family(void **state)
{
    (void)state;
    check("get a\r\n", "get k=a\n");
    check("get a b  c\r\n", "get k=a k=b k=c\n");
    check("gets a b\r\n", "gets k=a k=b\n");
    check("gat 10 a b\r\n", "gat k=a k=b e=10\n");
    check("gats -1 a\r\n", "gats k=a e=-1\n");
    /* memcached answers END to a gat without keys. */
    check("gat 10\r\n", "gat e=10\n");
    check("get\r\n", "? ERR(ERROR)\n");
    check("get \r\n", "? ERR(ERROR)\n");
    check("gets\r\n", "? ERR(ERROR)\n");
    check("gat\r\n", "? ERR(ERROR)\n");
    check("gat x a\r\n", "gat ERR(CLIENT_ERROR invalid exptime argument)\n");
    /* get has no noreply: it is a key. */
    check("get a noreply\r\n", "get k=a k=noreply\n");
    /* Leading spaces and a bare \n are fine; only \r\n's \r is dropped. */
    check(" get a\n", "get k=a\n");
    check("GET a\r\n", "? ERR(ERROR)\n");
}

static void test_get_many_keys(void **state)
{
    struct buf in;
    struct buf want;
    int i;

    (void)state;
    buf_init(&in);
    buf_init(&want);
    buf_append_str(&in, "get");
    buf_append_str(&want, "get");
    for (i = 0; i < 600; i++) {
        buf_printf(&in, " key%04d", i);
        buf_printf(&want, " k=key%04d", i);
    }
    buf_append_str(&in, "\r\n");
    buf_append_str(&want, "\n");
    buf_append(&want, "", 1);
    check_n(in.data, in.len, want.data);
    buf_free(&in);
    buf_free(&want);
}

static void test_store_family(void **state)
{
    (void)state;
    check("set a 5 10 3\r\nabc\r\n", "set k=a f=5 e=10 v=abc\n");
    check("add a 0 0 0\r\n\r\n", "add k=a f=0 e=0 v=\n");
    check("replace a 4294967295 -1 1\r\nx\r\n",
          "replace k=a f=4294967295 e=-1 v=x\n");
    check("append a 0 0 1\r\nx\r\n", "append k=a f=0 e=0 v=x\n");
    check("prepend a 0 0 1\r\nx\r\n", "prepend k=a f=0 e=0 v=x\n");
    check("cas a 1 2 3 99\r\nabc\r\n", "cas k=a c=99 f=1 e=2 v=abc\n");
    check("set a 0 0 1 noreply\r\nx\r\n", "set NR k=a f=0 e=0 v=x\n");
    check("cas a 0 0 1 7 noreply\r\nx\r\n", "cas NR k=a c=7 f=0 e=0 v=x\n");
    /* memcached ignores any other sixth token. */
    check("set a 0 0 1 foo\r\nx\r\n", "set k=a f=0 e=0 v=x\n");
    check("set  a   0 0  +1\r\nx\r\n", "set k=a f=0 e=0 v=x\n");
    /* Data may hold anything, CRLF and NUL included. */
    check_n("set a 0 0 4\r\n\r\n\0x\r\n", 19, "set k=a f=0 e=0 v=\r\n\n");
    /* Wrong argument counts: ERROR, and the data is the next "command". */
    check("set a 0 0\r\n", "? ERR(ERROR)\n");
    check("set a 0 0 1 noreply extra\r\nx\r\n",
          "? ERR(ERROR)\n? ERR(ERROR)\n");
    check("cas a 0 0 1\r\nx\r\n", "? ERR(ERROR)\n? ERR(ERROR)\n");
    check("set\ta 0 0 1\r\nx\r\n", "? ERR(ERROR)\n? ERR(ERROR)\n");
}

static void test_store_errors(void **state)
{
    const char *fmt = "CLIENT_ERROR bad command line format";
    char want[256];

    (void)state;
    snprintf(want, sizeof(want), "set ERR(%s)\n? ERR(ERROR)\n", fmt);
    check("set a 0 0 -1\r\nx\r\n", want);
    check("set a 0 0 abc\r\nx\r\n", want);
    check("set a 0 0 1x\r\nx\r\n", want);
    check("set a -1 0 1\r\nx\r\n", want);
    check("set a 0 x 1\r\nx\r\n", want);
    /* Flags must fit 32 bits (memcached silently truncates them). */
    check("set a 4294967296 0 1\r\nx\r\n", want);
    snprintf(want, sizeof(want), "cas ERR(%s)\n? ERR(ERROR)\n", fmt);
    check("cas a 0 0 1 abc\r\nx\r\n", want);
    check("cas a 0 0 1 -5\r\nx\r\n", want);
    /* Lengths memcached refuses, and 2^32, which it truncates to 0. */
    snprintf(want, sizeof(want), "set ERR(%s)\n", fmt);
    check("set a 0 0 2147483647\r\n", want);
    check("set a 0 0 2147483648\r\n", want);
    check("set a 0 0 4294967296\r\n", want);
    check("set a 0 0 18446744073709551616\r\n", want);
    /* noreply silences the error (memcached: only ERROR for the data). */
    check("set a 0 0 -1 noreply\r\n",
          "set ERR(CLIENT_ERROR bad command line format) NR\n");
}

static void test_bad_data_chunk(void **state)
{
    (void)state;
    check("set a 0 0 2\r\nabc\r\n",
          "set ERR(CLIENT_ERROR bad data chunk) k=a\n? ERR(ERROR)\n");
    /* bytes + 2 are taken, the rest is parsed as commands. */
    check("set a 0 0 2\r\nabcdef\r\nget a\r\n",
          "set ERR(CLIENT_ERROR bad data chunk) k=a\n? ERR(ERROR)\nget k=a\n");
    check("set a 0 0 1\r\nx\nget a\r\n",
          "set ERR(CLIENT_ERROR bad data chunk) k=a\n? ERR(ERROR)\n");
    check("set a 0 0 1 noreply\r\nxx\r\n",
          "set ERR(CLIENT_ERROR bad data chunk) NR k=a\n? ERR(ERROR)\n");
}

static void test_keys(void **state)
{
    char *k250 = repeat('k', 250);
    char *k251 = repeat('k', 251);
    char in[1024];
    char want[1024];

    (void)state;
    snprintf(in, sizeof(in), "get %s\r\n", k250);
    snprintf(want, sizeof(want), "get k=%s\n", k250);
    check(in, want);
    snprintf(in, sizeof(in), "get %s\r\n", k251);
    check(in, "get ERR(CLIENT_ERROR bad command line format)\n");
    /* One bad key spoils the whole get, as in memcached. */
    snprintf(in, sizeof(in), "get a %s b\r\n", k251);
    check(in, "get ERR(CLIENT_ERROR bad command line format)\n");
    snprintf(in, sizeof(in), "set %s 0 0 1\r\nx\r\n", k251);
    check(in, "set ERR(CLIENT_ERROR bad command line format)\n"
              "? ERR(ERROR)\n");
    snprintf(in, sizeof(in), "set %s 0 0 1 noreply\r\nx\r\n", k251);
    check(in, "set ERR(CLIENT_ERROR bad command line format) NR\n"
              "? ERR(ERROR)\n");
    snprintf(in, sizeof(in), "delete %s\r\n", k251);
    check(in, "delete ERR(CLIENT_ERROR bad command line format)\n");
    snprintf(in, sizeof(in), "incr %s 1\r\n", k251);
    check(in, "incr ERR(CLIENT_ERROR bad command line format)\n");
    snprintf(in, sizeof(in), "touch %s 1\r\n", k251);
    check(in, "touch ERR(CLIENT_ERROR bad command line format)\n");
    /* Control characters: memcached takes them, we refuse them. */
    check("get a\x01" "b\r\n", "get ERR(CLIENT_ERROR bad command line format)\n");
    check("get a\r\r\n", "get ERR(CLIENT_ERROR bad command line format)\n");
    check("set a\x7f 0 0 1\r\nx\r\n",
          "set ERR(CLIENT_ERROR bad command line format)\n? ERR(ERROR)\n");
    free(k250);
    free(k251);
}

static void test_arith(void **state)
{
    (void)state;
    check("incr a 5\r\n", "incr k=a d=5\n");
    check("decr a 18446744073709551615\r\n",
          "decr k=a d=18446744073709551615\n");
    check("incr a +1\r\n", "incr k=a d=1\n");
    check("incr a 1 noreply\r\n", "incr NR k=a d=1\n");
    check("incr a 1 foo\r\n", "incr k=a d=1\n");
    check("incr a x\r\n",
          "incr ERR(CLIENT_ERROR invalid numeric delta argument)\n");
    check("incr a -1\r\n",
          "incr ERR(CLIENT_ERROR invalid numeric delta argument)\n");
    check("incr a 1x\r\n",
          "incr ERR(CLIENT_ERROR invalid numeric delta argument)\n");
    check("decr a 18446744073709551616\r\n",
          "decr ERR(CLIENT_ERROR invalid numeric delta argument)\n");
    check("incr a x noreply\r\n",
          "incr ERR(CLIENT_ERROR invalid numeric delta argument) NR\n");
    check("incr a\r\n", "? ERR(ERROR)\n");
    check("incr a 1 noreply x\r\n", "? ERR(ERROR)\n");
    check("incr\r\n", "? ERR(ERROR)\n");
}

static void test_delete_touch(void **state)
{
    const char *usage = "delete ERR(CLIENT_ERROR bad command line format.  "
                        "Usage: delete <key> [noreply])\n";

    (void)state;
    check("delete a\r\n", "delete k=a\n");
    check("delete a 0\r\n", "delete k=a\n");
    check("delete a noreply\r\n", "delete NR k=a\n");
    check("delete a 0 noreply\r\n", "delete NR k=a\n");
    /* A key named noreply is a key. */
    check("delete noreply\r\n", "delete k=noreply\n");
    check("delete a 1\r\n", usage);
    check("delete a x\r\n", usage);
    check("delete a noreply x\r\n", usage);
    check("delete a x noreply\r\n",
          "delete ERR(CLIENT_ERROR bad command line format.  "
          "Usage: delete <key> [noreply]) NR\n");
    check("delete\r\n", "? ERR(ERROR)\n");
    check("delete a 0 noreply x\r\n", "? ERR(ERROR)\n");

    check("touch a 10\r\n", "touch k=a e=10\n");
    check("touch a 10 noreply\r\n", "touch NR k=a e=10\n");
    check("touch a 10 x\r\n", "touch k=a e=10\n");
    check("touch a x\r\n",
          "touch ERR(CLIENT_ERROR invalid exptime argument)\n");
    check("touch a x noreply\r\n",
          "touch ERR(CLIENT_ERROR invalid exptime argument) NR\n");
    check("touch a\r\n", "? ERR(ERROR)\n");
    check("touch a 10 x y\r\n", "? ERR(ERROR)\n");
}

static void test_misc_commands(void **state)
{
    (void)state;
    check("flush_all\r\n", "flush_all e=0\n");
    check("flush_all 10\r\n", "flush_all e=10\n");
    check("flush_all -1\r\n", "flush_all e=-1\n");
    check("flush_all noreply\r\n", "flush_all NR e=0\n");
    check("flush_all 10 noreply\r\n", "flush_all NR e=10\n");
    check("flush_all 0 x\r\n", "flush_all e=0\n");
    check("flush_all x\r\n",
          "flush_all ERR(CLIENT_ERROR invalid exptime argument)\n");
    check("flush_all x noreply\r\n",
          "flush_all ERR(CLIENT_ERROR invalid exptime argument) NR\n");
    check("flush_all 0 noreply x\r\n", "? ERR(ERROR)\n");
    check("version\r\n", "version\n");
    check("version x\r\n", "version\n");
    check("verbosity 1\r\n", "verbosity\n");
    check("verbosity 1 2\r\n", "verbosity\n");
    check("verbosity 1 noreply\r\n", "verbosity NR\n");
    check("verbosity noreply\r\n",
          "verbosity ERR(CLIENT_ERROR bad command line format) NR\n");
    check("verbosity x\r\n",
          "verbosity ERR(CLIENT_ERROR bad command line format)\n");
    check("verbosity\r\n", "? ERR(ERROR)\n");
    check("verbosity 1 2 3\r\n", "? ERR(ERROR)\n");
    check("quit\r\n", "quit\n");
    check("stats\r\n", "stats\n");
    check("stats  \r\n", "stats\n");
    check("stats reset\r\n", "stats reset\n");
    check("stats foo\r\n", "? ERR(ERROR)\n");
    check("foo\r\n", "? ERR(ERROR)\n");
    check("\r\n", "? ERR(ERROR)\n");
    check("\n", "? ERR(ERROR)\n");
    check("GET / HTTP/1.1\r\nHost: x\r\n", "CLOSE()\n");
}

static void test_pipeline_and_partial(void **state)
{
    (void)state;
    check("set a 0 0 1\r\nx\r\nget a\r\ndelete a\r\nincr n 2\r\nversion\r\n",
          "set k=a f=0 e=0 v=x\nget k=a\ndelete k=a\nincr k=n d=2\n"
          "version\n");
    check("get a\r\nget b", "get k=a\nPARTIAL 5\n");
    check("set a 0 0 5\r\nab", "PARTIAL 15\n");
    check("set a 0 0 5\r\nabcde\r", "PARTIAL 19\n");
}

/* ---- limits ------------------------------------------------------------ */

static void test_too_large_swallowed(void **state)
{
    struct buf in;
    char *got;
    size_t maxb;

    (void)state;
    buf_init(&in);
    buf_append_str(&in, "get a\r\nset a 0 0 1000 noreply\r\n");
    {
        char *v = repeat('v', 1000);
        buf_append(&in, v, 1000);
        free(v);
    }
    /* memcached swallows bytes + 2 without checking for \r\n. */
    buf_append_str(&in, "XYget b\r\n");
    got = feed(in.data, in.len, 0, 100, NULL);
    assert_string_equal(got,
                        "get k=a\n"
                        "set ERR(SERVER_ERROR object too large for cache) NR "
                        "TL k=a\n"
                        "get k=b\n");
    free(got);
    got = feed(in.data, in.len, 1, 100, &maxb);
    assert_string_equal(got,
                        "get k=a\n"
                        "set ERR(SERVER_ERROR object too large for cache) NR "
                        "TL k=a\n"
                        "get k=b\n");
    free(got);
    buf_free(&in);
}

static void test_huge_length_not_buffered(void **state)
{
    struct mc_parser p;
    struct mc_request r;
    const char *line = "set big 0 0 2147483645\r\n";
    char chunk[65536];
    size_t used;
    uint64_t left = 2147483645ull + 2;
    int i;

    (void)state;
    mc_parser_init(&p, 0);
    assert_int_equal(mc_parse_next(&p, line, strlen(line), &r, &used),
                     MC_PARSE_OK);
    assert_int_equal(used, strlen(line));
    assert_true(r.too_large);
    assert_string_equal(r.error, "SERVER_ERROR object too large for cache");
    memset(chunk, 'z', sizeof(chunk));
    /* 64 MiB of the 2 GiB: every byte is consumed as it arrives. */
    for (i = 0; i < 1024; i++) {
        assert_int_equal(mc_parse_next(&p, chunk, sizeof(chunk), &r, &used),
                         MC_PARSE_AGAIN);
        assert_int_equal(used, sizeof(chunk));
        left -= sizeof(chunk);
    }
    assert_int_equal(mc_parse_need(&p), 0);
    mc_parser_free(&p);
    (void)left;
}

static void test_line_too_long(void **state)
{
    char *x = repeat('x', 3000);
    char *got;
    struct buf in;
    size_t maxb;
    int i;

    (void)state;
    /* memcached closes without a word after 2048 bytes without \n. */
    check(x, "CLOSE()\n");
    x[2500] = '\n';
    check(x, "CLOSE()\n");
    free(x);
    x = repeat('x', 2048);
    got = feed(x, 2048, 0, 0, NULL);
    assert_string_equal(got, "PARTIAL 2048\n");
    free(got);
    free(x);

    /* Get lines may be long, up to our bound. */
    buf_init(&in);
    buf_append_str(&in, "get");
    for (i = 0; (size_t)in.len < MC_PARSE_GET_LINE_MAX + 100; i++) {
        buf_printf(&in, " k%d", i);
    }
    got = feed(in.data, in.len, 4096, 0, &maxb);
    assert_string_equal(got, "CLOSE(CLIENT_ERROR line too long)\n");
    assert_true(maxb <= MC_PARSE_GET_LINE_MAX + 4096);
    free(got);
    buf_append_str(&in, "\r\n");
    got = feed(in.data, in.len, 0, 0, NULL);
    assert_string_equal(got, "CLOSE(CLIENT_ERROR line too long)\n");
    free(got);
    buf_free(&in);
}

static void test_binary_protocol(void **state)
{
    static const char bin[] = "\x80\x01\x00\x00\x00\x00\x00\x00";

    (void)state;
    check_n(bin, sizeof(bin) - 1,
            "CLOSE(SERVER_ERROR binary protocol is not supported)\n");
    /* Only the first byte of a connection selects the protocol. */
    check_n("get a\r\n\x80\r\n", 10, "get k=a\n? ERR(ERROR)\n");
}

/* Random bytes, and valid commands with random bytes flipped, fed in random
 * chunks: no crash, no over-read (ASan), consumption within bounds. */
static void test_random_bytes(void **state)
{
    static const char *seeds[] = {
        "set a 0 0 3\r\nabc\r\n", "get a b c\r\n", "gat 1 a\r\n",
        "cas k 1 2 3 4 noreply\r\nxyz\r\n", "delete a 0 noreply\r\n",
        "incr a 1\r\n", "flush_all 5\r\n", "stats\r\n",
    };
    char in[512];
    int iter;

    (void)state;
    srand(12345);
    for (iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)(rand() % (int)sizeof(in));
        size_t i;
        char *got;
        if (iter % 2) {
            for (i = 0; i < len; i++) {
                in[i] = (char)(rand() % 8 == 0 ? ' ' : rand());
            }
        } else {
            size_t n = 0;
            while (n < sizeof(in) - 64) {
                const char *s = seeds[rand() % 8];
                memcpy(in + n, s, strlen(s));
                n += strlen(s);
            }
            len = n;
            for (i = 0; i < 4; i++) {
                in[rand() % (int)len] = (char)rand();
            }
        }
        got = feed(in, len, (size_t)(rand() % 9), (uint32_t)(rand() % 64),
                   NULL);
        free(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_family),
        cmocka_unit_test(test_get_many_keys),
        cmocka_unit_test(test_store_family),
        cmocka_unit_test(test_store_errors),
        cmocka_unit_test(test_bad_data_chunk),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_arith),
        cmocka_unit_test(test_delete_touch),
        cmocka_unit_test(test_misc_commands),
        cmocka_unit_test(test_pipeline_and_partial),
        cmocka_unit_test(test_too_large_swallowed),
        cmocka_unit_test(test_huge_length_not_buffered),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_binary_protocol),
        cmocka_unit_test(test_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
