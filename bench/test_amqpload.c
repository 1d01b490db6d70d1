/*
 * test_amqpload: amqpload's bookkeeping without a broker: the body header
 * round trip, the seen-set's duplicate and missing counts across merged
 * per-consumer sets, and the confirm window under single, multiple,
 * out-of-order, repeated and bogus acks and nacks, and the --rate pace
 * (schedule, stagger, jitter, no catch-up burst).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench/amqpacct.h"

/* ------------------------------ message body ----------------------------- */

static void test_body_round_trip(void **state)
{
    struct amqpacct_body in = {UINT64_C(0x0123456789abcdef), 7,
                               UINT64_C(1) << 40, UINT64_C(99)};
    struct amqpacct_body out;
    uint8_t buf[64];

    (void)state;
    memset(buf, 'x', sizeof(buf));
    amqpacct_body_encode(&in, buf);
    assert_int_equal(amqpacct_body_decode(buf, sizeof(buf), &out), 0);
    assert_true(out.run_id == in.run_id);
    assert_int_equal(out.publisher, 7);
    assert_true(out.seq == in.seq);
    assert_true(out.sent_ns == 99);
    /* Little-endian on the wire whatever the host. */
    assert_int_equal(buf[0], 'R');
    assert_int_equal(buf[3], 'L');
    assert_int_equal(buf[13], 1); /* bit 40 of seq: byte 8 + 5 */
    assert_int_equal(buf[AMQPACCT_HDR_SIZE], 'x');
}

static void test_body_rejects_foreign(void **state)
{
    struct amqpacct_body b = {1, 2, 3, 4};
    struct amqpacct_body out;
    uint8_t buf[AMQPACCT_HDR_SIZE];

    (void)state;
    amqpacct_body_encode(&b, buf);
    assert_int_equal(amqpacct_body_decode(buf, AMQPACCT_HDR_SIZE - 1, &out),
                     -1);
    buf[0] ^= 1;
    assert_int_equal(amqpacct_body_decode(buf, sizeof(buf), &out), -1);
    assert_int_equal(amqpacct_body_decode((const uint8_t *)"hello", 5, &out),
                     -1);
}

/* ------------------------------- seen-set -------------------------------- */

static void test_seen_add_has(void **state)
{
    struct amqpacct_seen s;

    (void)state;
    assert_int_equal(amqpacct_seen_init(&s, 2), 0);
    assert_int_equal(amqpacct_seen_add(&s, 0, 0), 1);
    assert_int_equal(amqpacct_seen_add(&s, 0, 0), 0);
    assert_int_equal(amqpacct_seen_add(&s, 1, 0), 1); /* other publisher */
    assert_int_equal(amqpacct_seen_add(&s, 1, 1000000), 1); /* grows */
    assert_int_equal(amqpacct_seen_add(&s, 1, 1000000), 0);
    assert_int_equal(amqpacct_seen_add(&s, 2, 0), -1); /* out of range */
    assert_true(amqpacct_seen_has(&s, 1, 1000000));
    assert_false(amqpacct_seen_has(&s, 1, 999999));
    assert_false(amqpacct_seen_has(&s, 0, UINT64_C(1) << 40)); /* beyond */
    assert_false(amqpacct_seen_has(&s, 5, 0));
    assert_true(amqpacct_seen_count(&s) == 3);
    amqpacct_seen_free(&s);
}

/* Two consumers share 0..999 of one publisher with an overlap of 10, miss
 * 5: merged duplicates and missing come out right. */
static void test_seen_merge_diff(void **state)
{
    struct amqpacct_seen expected, c1, c2, got;
    uint64_t i;

    (void)state;
    assert_int_equal(amqpacct_seen_init(&expected, 1), 0);
    assert_int_equal(amqpacct_seen_init(&c1, 1), 0);
    assert_int_equal(amqpacct_seen_init(&c2, 1), 0);
    assert_int_equal(amqpacct_seen_init(&got, 1), 0);
    for (i = 0; i < 1000; i++) {
        amqpacct_seen_add(&expected, 0, i);
        if (i < 500) {
            amqpacct_seen_add(&c1, 0, i);
        }
        if (i >= 490 && (i < 700 || i > 704)) {
            amqpacct_seen_add(&c2, 0, i);
        }
    }
    amqpacct_seen_add(&c2, 0, 5000); /* consumed, never expected */
    assert_true(amqpacct_seen_merge(&got, &c1) == 0);
    assert_true(amqpacct_seen_merge(&got, &c2) == 10);
    assert_true(amqpacct_seen_count(&got) == 996);
    assert_true(amqpacct_seen_diff(&expected, &got) == 5);
    assert_true(amqpacct_seen_diff(&got, &expected) == 1);
    assert_true(amqpacct_seen_diff(&expected, &expected) == 0);
    amqpacct_seen_free(&expected);
    amqpacct_seen_free(&c1);
    amqpacct_seen_free(&c2);
    amqpacct_seen_free(&got);
}

static void test_seen_diff_shorter_other(void **state)
{
    struct amqpacct_seen a, b;

    (void)state;
    assert_int_equal(amqpacct_seen_init(&a, 3), 0);
    assert_int_equal(amqpacct_seen_init(&b, 3), 0);
    amqpacct_seen_add(&a, 2, 100000); /* b has no words for publisher 2 */
    amqpacct_seen_add(&a, 0, 1);
    amqpacct_seen_add(&b, 0, 1);
    assert_true(amqpacct_seen_diff(&a, &b) == 1);
    assert_true(amqpacct_seen_diff(&b, &a) == 0);
    amqpacct_seen_free(&a);
    amqpacct_seen_free(&b);
}

/* ----------------------------- confirm window ---------------------------- */

struct resolved {
    unsigned n;
    uint64_t tags[256];
    uint64_t sent[256];
    int acked[256];
};

static void collect(void *arg, uint64_t tag, uint64_t sent_ns, int acked)
{
    struct resolved *r = arg;

    assert_true(r->n < 256);
    r->tags[r->n] = tag;
    r->sent[r->n] = sent_ns;
    r->acked[r->n] = acked;
    r->n++;
}

static void test_window_single_and_multiple(void **state)
{
    struct amqpacct_window w;
    struct resolved r = {0};
    uint64_t i;

    (void)state;
    assert_int_equal(amqpacct_window_init(&w, 8), 0);
    for (i = 1; i <= 5; i++) {
        assert_true(amqpacct_window_push(&w, 100 * i) == i);
    }
    assert_true(w.outstanding == 5);
    /* Out of order: 3 alone, then 1..4 multiple resolves 1, 2, 4. */
    assert_true(amqpacct_window_resolve(&w, 3, 0, 1, collect, &r) == 1);
    assert_true(w.base == 1);
    assert_true(amqpacct_window_resolve(&w, 4, 1, 1, collect, &r) == 3);
    assert_true(w.base == 5);
    assert_int_equal(r.n, 4);
    assert_true(r.tags[0] == 3 && r.sent[0] == 300);
    assert_true(r.tags[1] == 1 && r.tags[2] == 2 && r.tags[3] == 4);
    /* Repeats resolve nothing; a tag never sent is an error. */
    assert_true(amqpacct_window_resolve(&w, 3, 0, 1, collect, &r) == 0);
    assert_true(amqpacct_window_resolve(&w, 2, 1, 1, collect, &r) == 0);
    assert_true(amqpacct_window_resolve(&w, 6, 0, 1, collect, &r) == -1);
    assert_true(amqpacct_window_resolve(&w, 0, 0, 1, collect, &r) == -1);
    /* A nack. */
    assert_true(amqpacct_window_resolve(&w, 5, 0, 0, collect, &r) == 1);
    assert_int_equal(r.acked[4], 0);
    assert_true(w.outstanding == 0 && w.base == 6);
    amqpacct_window_free(&w);
}

static void test_window_tag0_multiple_is_all(void **state)
{
    struct amqpacct_window w;
    struct resolved r = {0};
    uint64_t i;

    (void)state;
    assert_int_equal(amqpacct_window_init(&w, 4), 0);
    for (i = 0; i < 4; i++) {
        amqpacct_window_push(&w, 1 + i);
    }
    assert_true(amqpacct_window_resolve(&w, 0, 1, 1, collect, &r) == 4);
    assert_true(w.outstanding == 0);
    amqpacct_window_free(&w);
}

/* The limit counts outstanding tags; the ring stops a publisher whose
 * oldest tag is stuck even when later ones are confirmed. */
static void test_window_full(void **state)
{
    struct amqpacct_window w;
    uint64_t limit = 40;
    uint64_t t;

    (void)state;
    assert_int_equal(amqpacct_window_init(&w, limit), 0);
    assert_true(w.cap == 128);
    while (!amqpacct_window_full(&w, limit)) {
        amqpacct_window_push(&w, 1);
    }
    assert_true(w.outstanding == limit);
    /* Confirm all but tag 1, one by one, publishing as room appears. */
    for (t = 2; w.next_tag - w.base < w.cap; t++) {
        assert_true(amqpacct_window_resolve(&w, t, 0, 1, NULL, NULL) == 1);
        while (!amqpacct_window_full(&w, limit)) {
            amqpacct_window_push(&w, 1);
        }
    }
    /* One more confirm: below the limit, but the ring is full. */
    assert_true(amqpacct_window_resolve(&w, t++, 0, 1, NULL, NULL) == 1);
    assert_true(w.outstanding < limit);
    assert_true(w.next_tag - w.base == w.cap);
    assert_true(amqpacct_window_full(&w, limit));
    /* Tag 1 comes: the ring drains to the next unresolved tag. */
    assert_true(amqpacct_window_resolve(&w, 1, 0, 1, NULL, NULL) == 1);
    assert_true(w.base == t);
    assert_false(amqpacct_window_full(&w, limit));
    /* Wrap-around: resolve everything, many laps of the ring. */
    for (t = 0; t < 1000; t++) {
        while (!amqpacct_window_full(&w, limit)) {
            amqpacct_window_push(&w, 1);
        }
        assert_true(
            amqpacct_window_resolve(&w, w.next_tag - 1, 1, 1, NULL, NULL) > 0);
        assert_true(w.outstanding == 0);
    }
    amqpacct_window_free(&w);
}

/* --------------------------------- pacing -------------------------------- */

#define MS UINT64_C(1000000)
#define T0 (UINT64_C(1000) * 1000 * MS) /* an arbitrary monotonic start */

static void test_pace_schedule(void **state)
{
    struct amqpacct_pace p;

    (void)state;
    amqpacct_pace_init(&p, 1000, 1, 0, T0, 0); /* one publisher, 1 ms apart */
    assert_true(amqpacct_pace_wait(&p, T0) == 0);
    amqpacct_pace_take(&p, T0);
    assert_true(amqpacct_pace_wait(&p, T0) == MS);
    assert_true(amqpacct_pace_wait(&p, T0 + MS / 4) == 3 * MS / 4);
    assert_true(amqpacct_pace_wait(&p, T0 + MS) == 0);
    /* 0.2 ms late: the slot after stays at 2 ms, not 2.2 ms. */
    amqpacct_pace_take(&p, T0 + MS + MS / 5);
    assert_true(amqpacct_pace_wait(&p, T0 + MS + MS / 5) == 4 * MS / 5);
}

static void test_pace_stagger(void **state)
{
    struct amqpacct_pace a, b;

    (void)state;
    /* 2,000 msg/s over 2 publishers: 1 ms each, sends 0.5 ms apart. */
    amqpacct_pace_init(&a, 2000, 2, 0, T0, 0);
    amqpacct_pace_init(&b, 2000, 2, 1, T0, 0);
    assert_true(a.interval_ns == MS && b.interval_ns == MS);
    assert_true(amqpacct_pace_wait(&a, T0) == 0);
    assert_true(amqpacct_pace_wait(&b, T0) == MS / 2);
}

/* Simulate a publisher with @slack_ns that sends as soon as it may, waking
 * up @late_ns after the due time whenever it had to wait, for @span_ns with
 * a stall of @stall_ns at half time; return the number of sends. */
static uint64_t pace_simulate(double rate,
                              uint64_t slack_ns,
                              uint64_t late_ns,
                              uint64_t span_ns,
                              uint64_t stall_ns)
{
    struct amqpacct_pace p;
    uint64_t now = T0;
    uint64_t sends = 0;
    int stalled = 0;

    amqpacct_pace_init(&p, rate, 1, 0, T0, slack_ns);
    while (now < T0 + span_ns) {
        uint64_t wait = amqpacct_pace_wait(&p, now);

        now += wait ? wait + late_ns : 0;
        if (!stalled && now >= T0 + span_ns / 2) {
            now += stall_ns;
            stalled = 1;
        }
        if (now >= T0 + span_ns) {
            break;
        }
        amqpacct_pace_take(&p, now);
        sends++;
    }
    return sends;
}

static void test_pace_rate_holds_under_jitter(void **state)
{
    (void)state;
    /* Woken 0.3 ms late every time at 1 ms intervals: still 1,000 in 1 s,
     * with or without slack. */
    assert_true(pace_simulate(1000, 0, 3 * MS / 10, 1000 * MS, 0) == 1000);
    assert_true(pace_simulate(1000, 10 * MS, 3 * MS / 10, 1000 * MS, 0) ==
                1000);
    /* Woken 2.5 ms late at 1 ms intervals: the slack makes up for it;
     * without, it falls to 2 sends per 3.5 ms. */
    assert_true(pace_simulate(1000, 10 * MS, 5 * MS / 2, 1000 * MS, 0) >=
                997);
    assert_true(pace_simulate(1000, 0, 5 * MS / 2, 1000 * MS, 0) <= 600);
}

static void test_pace_no_burst_after_stall(void **state)
{
    uint64_t sends;

    (void)state;
    /* A 100 ms stall loses its 100 slots but the slack's: 900 to 911 sends
     * in 1 s, never the 1,000 a full catch-up burst would make. */
    sends = pace_simulate(1000, 0, 0, 1000 * MS, 100 * MS);
    assert_true(sends >= 900 && sends <= 901);
    sends = pace_simulate(1000, 10 * MS, 0, 1000 * MS, 100 * MS);
    assert_true(sends >= 900 && sends <= 911);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_round_trip),
        cmocka_unit_test(test_body_rejects_foreign),
        cmocka_unit_test(test_seen_add_has),
        cmocka_unit_test(test_seen_merge_diff),
        cmocka_unit_test(test_seen_diff_shorter_other),
        cmocka_unit_test(test_window_single_and_multiple),
        cmocka_unit_test(test_window_tag0_multiple_is_all),
        cmocka_unit_test(test_window_full),
        cmocka_unit_test(test_pace_schedule),
        cmocka_unit_test(test_pace_stagger),
        cmocka_unit_test(test_pace_rate_holds_under_jitter),
        cmocka_unit_test(test_pace_no_burst_after_stall),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
