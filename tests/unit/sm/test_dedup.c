/*
 * Unit tests of sm/dedup: the answers of a client's last seqs, the window,
 * the LRU bound of clients, and the encoding (round trip, refusals).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/le.h"
#include "sm/dedup.h"

static struct dedup_answer ans(uint32_t code, uint64_t number)
{
    struct dedup_answer a = {code, number, number * 10};

    return a;
}

static enum dedup_verdict check(const struct dedup *d, uint64_t client,
                                uint64_t seq, struct dedup_answer *out)
{
    struct dedup_answer tmp;

    return dedup_check(d, client, seq, out != NULL ? out : &tmp);
}

static void test_window(void **state)
{
    struct dedup d;
    struct dedup_answer a;

    (void)state;
    dedup_init(&d, 4, 8);
    assert_int_equal(check(&d, 1, 1, NULL), DEDUP_NEW);
    dedup_record(&d, 1, 1, &(struct dedup_answer){7, 70, 700});
    dedup_record(&d, 1, 3, &(struct dedup_answer){9, 90, 900});
    assert_int_equal(check(&d, 1, 1, &a), DEDUP_DUPLICATE);
    assert_int_equal(a.code, 7);
    assert_int_equal(a.number, 70);
    assert_int_equal(a.cas, 700);
    assert_int_equal(check(&d, 1, 2, NULL), DEDUP_NEW); /* a gap */
    assert_int_equal(check(&d, 2, 1, NULL), DEDUP_NEW); /* another client */
    /* seq 5 shares seq 1's slot: 1 is out of the window [2, 5] */
    dedup_record(&d, 1, 5, &(struct dedup_answer){5, 0, 0});
    assert_int_equal(check(&d, 1, 1, NULL), DEDUP_STALE);
    assert_int_equal(check(&d, 1, 3, &a), DEDUP_DUPLICATE);
    assert_int_equal(a.code, 9);
    assert_int_equal(check(&d, 1, 2, NULL), DEDUP_NEW);
    /* a jump far ahead leaves every earlier seq stale */
    dedup_record(&d, 1, 1000, &(struct dedup_answer){1, 0, 0});
    assert_int_equal(check(&d, 1, 5, NULL), DEDUP_STALE);
    assert_int_equal(check(&d, 1, 997, NULL), DEDUP_NEW);
    assert_int_equal(check(&d, 1, 996, NULL), DEDUP_STALE);
    dedup_check_invariants(&d);
    dedup_close(&d);
}

static void test_clients_lru(void **state)
{
    struct dedup d;
    struct dedup_answer a1 = ans(1, 1);

    (void)state;
    dedup_init(&d, 4, 2);
    dedup_record(&d, 10, 1, &a1);
    dedup_record(&d, 20, 1, &a1);
    dedup_record(&d, 10, 2, &a1); /* 10 most recent again */
    dedup_record(&d, 30, 1, &a1); /* 20 goes */
    assert_int_equal(d.n_clients, 2);
    assert_int_equal(check(&d, 20, 1, NULL), DEDUP_NEW);
    assert_int_equal(check(&d, 10, 1, NULL), DEDUP_DUPLICATE);
    assert_int_equal(check(&d, 30, 1, NULL), DEDUP_DUPLICATE);
    dedup_check_invariants(&d);
    dedup_close(&d);
}

static void test_encoding(void **state)
{
    struct dedup d, e;
    struct buf b, c;
    uint64_t seq;

    (void)state;
    dedup_init(&d, 8, 4);
    dedup_init(&e, 1, 1); /* the encoding's limits replace these */
    for (seq = 1; seq <= 20; seq += 2) {
        struct dedup_answer a = ans((uint32_t)seq, seq);
        dedup_record(&d, 5, seq, &a);
    }
    dedup_record(&d, 6, 3, &(struct dedup_answer){2, 0, 0});
    buf_init(&b);
    dedup_encode(&d, &b);
    assert_int_equal(dedup_decode(b.data, b.len, &e), 0);
    assert_int_equal(e.window, 8);
    assert_int_equal(e.max_clients, 4);
    assert_int_equal(dedup_digest(&e), dedup_digest(&d));
    buf_init(&c);
    dedup_encode(&e, &c);
    assert_int_equal(c.len, b.len);
    assert_memory_equal(c.data, b.data, b.len);
    assert_int_equal(check(&e, 5, 19, NULL), DEDUP_DUPLICATE);
    assert_int_equal(check(&e, 5, 11, NULL), DEDUP_STALE);
    /* the LRU order survives: 5 is least recent, and goes first */
    dedup_record(&e, 7, 1, &(struct dedup_answer){1, 0, 0});
    dedup_record(&e, 8, 1, &(struct dedup_answer){1, 0, 0});
    dedup_record(&e, 9, 1, &(struct dedup_answer){1, 0, 0});
    assert_int_equal(check(&e, 5, 19, NULL), DEDUP_NEW);
    assert_int_equal(check(&e, 6, 3, NULL), DEDUP_DUPLICATE);
    /* any truncation is refused, and leaves the table empty */
    for (size_t len = 0; len < b.len; len++) {
        assert_int_equal(dedup_decode(b.data, len, &e), -1);
        assert_int_equal(e.n_clients, 0);
    }
    buf_free(&b);
    buf_free(&c);
    dedup_close(&d);
    dedup_close(&e);
}

/* Pieces of an encoding (dedup.c has the layout). */
static unsigned char *put_header(unsigned char *p, uint32_t window,
                                 uint32_t max_clients, uint32_t n)
{
    p = le_put_u32(p, window);
    p = le_put_u32(p, max_clients);
    return le_put_u32(p, n);
}

static unsigned char *put_client(unsigned char *p, uint64_t id,
                                 uint64_t max_seq, uint32_t n_answers)
{
    p = le_put_u64(p, id);
    p = le_put_u64(p, max_seq);
    return le_put_u32(p, n_answers);
}

static unsigned char *put_answer(unsigned char *p, uint64_t seq)
{
    p = le_put_u64(p, seq);
    p = le_put_u32(p, 0);
    p = le_put_u64(p, 0);
    return le_put_u64(p, 0);
}

static int decode(unsigned char *buf, unsigned char *end, struct dedup *e)
{
    return dedup_decode(buf, (size_t)(end - buf), e);
}

/* Encodings no table can have: refused. */
static void test_decode_refuses(void **state)
{
    struct dedup e;
    unsigned char buf[256], *p, *seq_at;

    (void)state;
    dedup_init(&e, 4, 4);
    p = put_header(buf, 0, 4, 0); /* window 0 */
    assert_int_equal(decode(buf, p, &e), -1);
    p = put_header(buf, 4, 1, 2); /* more clients than the limit */
    p = put_client(p, 1, 1, 0);
    p = put_client(p, 2, 1, 0);
    assert_int_equal(decode(buf, p, &e), -1);
    p = put_header(buf, 4, 4, 2); /* the same client twice */
    p = put_client(p, 1, 1, 0);
    p = put_client(p, 1, 1, 0);
    assert_int_equal(decode(buf, p, &e), -1);
    /* an answer outside the window (max 10, window 4: seq 6) */
    p = put_header(buf, 4, 4, 1);
    seq_at = put_client(p, 1, 10, 1);
    p = put_answer(seq_at, 6);
    assert_int_equal(decode(buf, p, &e), -1);
    put_answer(seq_at, 7); /* the same, seq 7: accepted */
    assert_int_equal(decode(buf, p, &e), 0);
    assert_int_equal(check(&e, 1, 7, NULL), DEDUP_DUPLICATE);
    p = put_header(buf, 4, 4, 1); /* answers out of order */
    p = put_client(p, 1, 10, 2);
    p = put_answer(p, 9);
    p = put_answer(p, 8);
    assert_int_equal(decode(buf, p, &e), -1);
    dedup_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_clients_lru),
        cmocka_unit_test(test_encoding),
        cmocka_unit_test(test_decode_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
