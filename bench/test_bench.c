/*
 * test_bench: mcload's reply parser and histogram, checked without a
 * server. The parser is fed every reply stream at every split point, so
 * a reply cut anywhere by a short read must parse the same as a whole one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench/hist.h"
#include "bench/mcreply.h"
#include "bench/pace.h"

struct seen {
    unsigned n;
    enum mcreply_kind kind[16];
    unsigned n_values[16];
    uint64_t value_bytes[16];
    char key[16][32];
    char msg[16][64];
};

static void collect(void *arg, const struct mcreply *r)
{
    struct seen *s = arg;

    assert_true(s->n < 16);
    s->kind[s->n] = r->kind;
    s->n_values[s->n] = r->n_values;
    s->value_bytes[s->n] = r->value_bytes;
    s->key[s->n][0] = '\0';
    if (r->key != NULL) {
        assert_true(r->key_len < sizeof(s->key[0]));
        memcpy(s->key[s->n], r->key, r->key_len);
        s->key[s->n][r->key_len] = '\0';
    }
    s->msg[s->n][0] = '\0';
    if (r->msg != NULL) {
        assert_true(r->msg_len < sizeof(s->msg[0]));
        memcpy(s->msg[s->n], r->msg, r->msg_len);
        s->msg[s->n][r->msg_len] = '\0';
    }
    s->n++;
}

/* Feed @text in two pieces split at @at; return the parser's verdict. */
static int feed_split(const char *text, size_t at, struct seen *s)
{
    struct mcreply_parser p;
    size_t len = strlen(text);
    int rv;

    memset(s, 0, sizeof(*s));
    mcreply_init(&p);
    rv = mcreply_feed(&p, text, at, collect, s);
    if (rv != 0) {
        return rv;
    }
    return mcreply_feed(&p, text + at, len - at, collect, s);
}

static const char STREAM[] =
    "STORED\r\n"
    "VALUE key:00000042 0 5\r\nhello\r\nEND\r\n"
    "END\r\n"
    "VALUE key:00000007 12 0 99\r\n\r\nEND\r\n"
    "SERVER_ERROR out of memory storing object\r\n"
    "VALUE a 0 2\r\n\r\n\r\nVALUE b 0 1\r\nx\r\nEND\r\n"
    "NOT_STORED\r\nEXISTS\r\nNOT_FOUND\r\nERROR\r\n"
    "CLIENT_ERROR bad data chunk\r\n";

static void check_stream(const struct seen *s)
{
    assert_int_equal(s->n, 11);
    assert_int_equal(s->kind[0], MCREPLY_STORED);
    assert_int_equal(s->kind[1], MCREPLY_GET);
    assert_int_equal(s->n_values[1], 1);
    assert_int_equal(s->value_bytes[1], 5);
    assert_string_equal(s->key[1], "key:00000042");
    assert_int_equal(s->kind[2], MCREPLY_GET);
    assert_int_equal(s->n_values[2], 0);
    assert_int_equal(s->kind[3], MCREPLY_GET); /* empty value, with cas */
    assert_int_equal(s->n_values[3], 1);
    assert_int_equal(s->value_bytes[3], 0);
    assert_int_equal(s->kind[4], MCREPLY_SERVER_ERROR);
    assert_string_equal(s->msg[4], "out of memory storing object");
    assert_int_equal(s->kind[5], MCREPLY_GET); /* value holding "\r\n" */
    assert_int_equal(s->n_values[5], 2);
    assert_int_equal(s->value_bytes[5], 3);
    assert_string_equal(s->key[5], "a");
    assert_int_equal(s->kind[6], MCREPLY_NOT_STORED);
    assert_int_equal(s->kind[7], MCREPLY_EXISTS);
    assert_int_equal(s->kind[8], MCREPLY_NOT_FOUND);
    assert_int_equal(s->kind[9], MCREPLY_ERROR);
    assert_int_equal(s->kind[10], MCREPLY_CLIENT_ERROR);
    assert_string_equal(s->msg[10], "bad data chunk");
}

static void test_every_split(void **state)
{
    struct seen s;
    size_t at;

    (void)state;
    for (at = 0; at <= strlen(STREAM); at++) {
        assert_int_equal(feed_split(STREAM, at, &s), 0);
        check_stream(&s);
    }
}

static void test_byte_at_a_time(void **state)
{
    struct mcreply_parser p;
    struct seen s;
    size_t i;

    (void)state;
    memset(&s, 0, sizeof(s));
    mcreply_init(&p);
    for (i = 0; i < strlen(STREAM); i++) {
        assert_int_equal(mcreply_feed(&p, STREAM + i, 1, collect, &s), 0);
    }
    check_stream(&s);
}

static void test_large_value_no_copy(void **state)
{
    const size_t n = 1 << 20;
    const char *hdr = "VALUE big 0 1048576\r\n";
    char *buf = malloc(strlen(hdr) + n + 7);
    struct mcreply_parser p;
    struct seen s;
    size_t len, off;

    (void)state;
    assert_non_null(buf);
    len = strlen(hdr);
    memcpy(buf, hdr, len);
    memset(buf + len, 'v', n);
    memcpy(buf + len + n, "\r\nEND\r\n", 7);
    len += n + 7;
    memset(&s, 0, sizeof(s));
    mcreply_init(&p);
    for (off = 0; off < len; off += 4093) { /* odd-sized reads */
        size_t k = len - off < 4093 ? len - off : 4093;

        assert_int_equal(mcreply_feed(&p, buf + off, k, collect, &s), 0);
    }
    assert_int_equal(s.n, 1);
    assert_int_equal(s.value_bytes[0], n);
    free(buf);
}

static void test_protocol_errors(void **state)
{
    static const char *bad[] = {
        "HELLO\r\n",
        "VALUE k 0\r\n",                  /* no length */
        "VALUE k 0 x\r\n",                /* bad length */
        "VALUE k 0 3\r\nabcX\r\nEND\r\n", /* value longer than said */
        "VALUE k 0 1\r\nx\r\nSTORED\r\n", /* not END after a value */
        "STOREDX\r\n",
    };
    char longline[MCREPLY_LINE_MAX + 16];
    struct seen s;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(feed_split(bad[i], strlen(bad[i]) / 2, &s), -1);
    }
    memset(longline, 'E', sizeof(longline) - 3);
    memcpy(longline + sizeof(longline) - 3, "\r\n", 3);
    assert_int_equal(feed_split(longline, 10, &s), -1);
    assert_int_equal(feed_split(longline, sizeof(longline) - 3, &s), -1);
}

static void test_hist_exact_and_relative(void **state)
{
    struct hist *h = malloc(sizeof(*h));
    uint64_t v, got;

    (void)state;
    assert_non_null(h);
    hist_init(h);
    assert_int_equal(hist_percentile(h, 50), 0);
    for (v = 1; v <= 100; v++) {
        hist_record(h, v); /* below 2^8: exact */
    }
    assert_int_equal(hist_percentile(h, 50), 50);
    assert_int_equal(hist_percentile(h, 99), 99);
    assert_int_equal(hist_percentile(h, 100), 100);
    assert_int_equal(h->min, 1);

    /* Large values: within 1/128 above the true value, never below. */
    for (v = 300; v < (UINT64_C(1) << 36); v = v * 3 + 7) {
        hist_init(h);
        hist_record(h, v);
        hist_record(h, HIST_MAX_VALUE); /* so the max cap hides nothing */
        got = hist_percentile(h, 50);
        assert_true(got >= v);
        assert_true(got - v <= v / 128 + 1);
    }
    hist_init(h);
    hist_record(h, UINT64_MAX); /* clamped, max stays exact */
    assert_int_equal(h->max, UINT64_MAX);
    assert_int_equal(hist_percentile(h, 50), HIST_MAX_VALUE);
    free(h);
}

static void test_hist_percentiles_merge(void **state)
{
    struct hist *a = malloc(sizeof(*a));
    struct hist *b = malloc(sizeof(*b));
    uint64_t i, p99;

    (void)state;
    assert_non_null(a);
    assert_non_null(b);
    hist_init(a);
    hist_init(b);
    for (i = 0; i < 990; i++) {
        hist_record(a, 100000); /* 100 us */
    }
    for (i = 0; i < 10; i++) {
        hist_record(b, 5000000); /* 5 ms */
    }
    hist_add(a, b);
    assert_int_equal(a->count, 1000);
    p99 = hist_percentile(a, 99);
    assert_true(p99 >= 100000 && p99 < 101000);
    assert_true(hist_percentile(a, 99.9) >= 5000000);
    assert_int_equal(hist_percentile(a, 99.9), 5000000); /* capped at max */
    free(a);
    free(b);
}

/* --rate: a request sent at the first tick after it was due counts from
 * then; one the pipeline held back counts from one tick after it was due,
 * so a 50 ms stall shows as ~49 ms, not as the moment it finally went. */
static void test_pace(void **state)
{
    const uint64_t ms = 1000000;

    (void)state;
    assert_int_equal(pace_latency_start(10 * ms, 10 * ms + ms / 2),
                     10 * ms + ms / 2);
    assert_int_equal(pace_latency_start(10 * ms, 11 * ms), 11 * ms);
    assert_int_equal(pace_latency_start(10 * ms, 60 * ms), 11 * ms);
    /* due at 10, 12, 14, 16 ms (interval 2 ms), none sent by 16.5 ms */
    assert_int_equal(pace_backlog(10 * ms, 2 * ms, 16 * ms + ms / 2), 4);
    assert_int_equal(pace_backlog(17 * ms, 2 * ms, 16 * ms), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_large_value_no_copy),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_hist_exact_and_relative),
        cmocka_unit_test(test_hist_percentiles_merge),
        cmocka_unit_test(test_pace),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
