/*
 * Tests for sm/meta_sm: exchanges, bindings, RabbitMQ's routing rules,
 * versions and snapshots.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sm/meta_sm.h"

static struct meta_sm_result run(struct meta_sm *sm, enum meta_sm_cmd_type t,
                                 const char *ex, const char *type,
                                 const char *dest, const char *key)
{
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;

    c.type = t;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = ex;
    c.exchange_len = ex ? strlen(ex) : 0;
    c.exchange_type =
        type ? (enum meta_sm_exchange_type)meta_sm_exchange_type_parse(
                   type, strlen(type))
             : META_SM_DIRECT;
    c.durable = true;
    c.dest = dest;
    c.dest_len = dest ? strlen(dest) : 0;
    c.routing_key = key;
    c.routing_key_len = key ? strlen(key) : 0;
    meta_sm_apply(sm, &c, &res);
    return res;
}

static uint16_t declare(struct meta_sm *sm, const char *ex, const char *type)
{
    return run(sm, META_SM_EXCHANGE_DECLARE, ex, type, NULL, NULL).reply_code;
}

static uint16_t bindq(struct meta_sm *sm, const char *ex, const char *q,
                      const char *key)
{
    return run(sm, META_SM_BIND, ex, NULL, q, key).reply_code;
}

/* The queues a publish reaches, sorted and joined by ',' ("!" if the
 * exchange is missing). */
static char *route(const struct meta_sm *sm, const char *ex, const char *key)
{
    static char out[1024];
    struct meta_sm_route_result r;
    size_t i;

    assert_int_equal(meta_sm_route(sm, "/", 1, ex, strlen(ex), key,
                                   strlen(key), NULL, 0, &r),
                     0);
    out[0] = '\0';
    if (r.exchange_missing) {
        strcpy(out, "!");
    }
    for (i = 0; i < r.n_queues; i++) {
        if (i > 0) {
            strcat(out, ",");
        }
        strncat(out, r.queues[i].name, r.queues[i].len);
    }
    meta_sm_route_result_clear(&r);
    return out;
}

static void test_predeclared(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    enum meta_sm_exchange_type t;
    (void)state;

    assert_int_equal(meta_sm_exchange_info(sm, "/", 1, "amq.topic", 9, &t,
                                           NULL, NULL),
                     0);
    assert_int_equal(t, META_SM_TOPIC);
    assert_int_equal(declare(sm, "amq.topic", "topic"), 0);
    assert_int_equal(declare(sm, "amq.topic", "direct"), 406);
    assert_int_equal(declare(sm, "amq.mine", "direct"), 403);
    assert_int_equal(run(sm, META_SM_EXCHANGE_DELETE, "amq.fanout", NULL,
                         NULL, NULL)
                         .reply_code,
                     403);
    assert_int_equal(bindq(sm, "", "q", "q"), 403);
    assert_string_equal(route(sm, "", "hello"), "hello");
    assert_int_equal(meta_sm_version(sm), 0);
    meta_sm_free(sm);
}

static void test_declare_rules(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;
    (void)state;

    assert_int_equal(declare(sm, "logs", "fanout"), 0);
    assert_int_equal(meta_sm_version(sm), 1);
    assert_int_equal(declare(sm, "logs", "fanout"), 0); /* no change */
    assert_int_equal(meta_sm_version(sm), 1);
    assert_int_equal(declare(sm, "logs", "direct"), 406);
    c.type = META_SM_EXCHANGE_DECLARE;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = "nope";
    c.exchange_len = 4;
    c.passive = true;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 404);
    c.exchange = "logs";
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    c.passive = false;
    c.durable = false; /* declared durable by declare() */
    c.exchange_type = META_SM_FANOUT;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 406);
    assert_int_equal(meta_sm_exchange_type_parse("x-custom", 8), -1);
    meta_sm_free(sm);
}

static void test_delete_rules(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;
    (void)state;

    assert_int_equal(declare(sm, "d", "direct"), 0);
    assert_int_equal(bindq(sm, "d", "q1", "k"), 0);
    c.type = META_SM_EXCHANGE_DELETE;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = "d";
    c.exchange_len = 1;
    c.if_unused = true;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 406);
    c.if_unused = false;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    assert_string_equal(route(sm, "d", "k"), "!");
    /* deleting a missing exchange is fine (RabbitMQ 3.x) */
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    assert_false(res.changed);
    meta_sm_free(sm);
}

static void test_bind_rules(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    uint64_t ex, b;
    (void)state;

    assert_int_equal(bindq(sm, "missing", "q", "k"), 404);
    assert_int_equal(declare(sm, "d", "direct"), 0);
    assert_int_equal(bindq(sm, "d", "q", "k"), 0);
    assert_int_equal(bindq(sm, "d", "q", "k"), 0); /* duplicate */
    meta_sm_counts(sm, &ex, &b);
    assert_int_equal(ex, 1);
    assert_int_equal(b, 1);
    assert_int_equal(run(sm, META_SM_UNBIND, "d", NULL, "q", "other")
                         .reply_code,
                     0); /* missing binding: ok */
    assert_int_equal(run(sm, META_SM_UNBIND, "d", NULL, "q", "k").reply_code,
                     0);
    meta_sm_counts(sm, &ex, &b);
    assert_int_equal(b, 0);
    meta_sm_free(sm);
}

static void test_direct_and_fanout(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    (void)state;

    declare(sm, "direct_logs", "direct");
    bindq(sm, "direct_logs", "q1", "error");
    bindq(sm, "direct_logs", "q2", "info");
    bindq(sm, "direct_logs", "q2", "warning");
    bindq(sm, "direct_logs", "q2", "error");
    assert_string_equal(route(sm, "direct_logs", "error"), "q1,q2");
    assert_string_equal(route(sm, "direct_logs", "info"), "q2");
    assert_string_equal(route(sm, "direct_logs", "debug"), "");
    declare(sm, "logs", "fanout");
    bindq(sm, "logs", "a", "");
    bindq(sm, "logs", "b", "ignored");
    assert_string_equal(route(sm, "logs", "anything"), "a,b");
    assert_string_equal(route(sm, "nope", "x"), "!");
    meta_sm_free(sm);
}

static bool topic(const char *binding, const char *key)
{
    struct meta_sm *sm = meta_sm_new();
    bool hit;

    declare(sm, "t", "topic");
    bindq(sm, "t", "q", binding);
    hit = strcmp(route(sm, "t", key), "q") == 0;
    meta_sm_free(sm);
    return hit;
}

static void test_topic_edge_cases(void **state)
{
    (void)state;
    assert_true(topic("#", ""));
    assert_true(topic("#", "a.b.c"));
    assert_false(topic("*", "")); /* "" has no words */
    assert_true(topic("", ""));
    assert_false(topic("", "a"));
    assert_true(topic("*", "a"));
    assert_true(topic("*.*", "."));
    assert_false(topic("*", "a.b"));
    assert_true(topic("a.#", "a"));
    assert_true(topic("a.#", "a.b.c"));
    assert_false(topic("a.#", "b.a"));
    assert_true(topic("#.a", "a"));
    assert_true(topic("#.a", "x.y.a"));
    assert_false(topic("a.*.c", "a.c"));
    assert_true(topic("a.*.c", "a.b.c"));
    assert_true(topic("a.#.#.b", "a.b"));
    assert_true(topic("a.#.#.b", "a.x.y.b"));
    assert_true(topic("#.#", ""));
    assert_true(topic("kern.*", "kern.a"));
    assert_false(topic("kern.*", "kern.a.b"));
    assert_true(topic("*.critical", "kern.critical"));
    assert_false(topic("*.critical", "critical"));
    assert_true(topic("*.*.rabbit", "quick.orange.rabbit"));
    assert_true(topic("lazy.#", "lazy.orange.male.rabbit"));
    assert_false(topic("*.orange.*", "quick.orange.male.rabbit"));
    assert_true(topic("a..b", "a..b"));
    assert_false(topic("a", "a.b"));
}

/* An encoded longstr field value: 'S', 4-byte big-endian length, text. */
static size_t longstr(char *out, const char *s)
{
    size_t n = strlen(s);

    out[0] = 'S';
    out[1] = 0;
    out[2] = 0;
    out[3] = (char)(n >> 8);
    out[4] = (char)n;
    memcpy(out + 5, s, n);
    return n + 5;
}

static void test_headers(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;
    struct meta_sm_route_result r;
    char vall[16], vany[16], vpdf[16], vrep[16], vxls[16];
    struct meta_sm_kv all[3], any[3], msg[2];
    (void)state;

    declare(sm, "h", "headers");
    all[0] = (struct meta_sm_kv){"x-match", 7, vall, longstr(vall, "all")};
    all[1] = (struct meta_sm_kv){"format", 6, vpdf, longstr(vpdf, "pdf")};
    all[2] = (struct meta_sm_kv){"type", 4, vrep, longstr(vrep, "report")};
    any[0] = (struct meta_sm_kv){"x-match", 7, vany, longstr(vany, "any")};
    any[1] = all[1];
    any[2] = (struct meta_sm_kv){"format2", 7, vxls, longstr(vxls, "xls")};
    c.type = META_SM_BIND;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = "h";
    c.exchange_len = 1;
    c.dest = "qall";
    c.dest_len = 4;
    c.args = all;
    c.n_args = 3;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    c.dest = "qany";
    c.args = any;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);

    msg[0] = all[1]; /* format=pdf only */
    meta_sm_route(sm, "/", 1, "h", 1, "", 0, msg, 1, &r);
    assert_int_equal(r.n_queues, 1);
    assert_memory_equal(r.queues[0].name, "qany", 4);
    meta_sm_route_result_clear(&r);
    msg[1] = all[2]; /* and type=report */
    meta_sm_route(sm, "/", 1, "h", 1, "", 0, msg, 2, &r);
    assert_int_equal(r.n_queues, 2);
    meta_sm_route_result_clear(&r);
    meta_sm_route(sm, "/", 1, "h", 1, "", 0, NULL, 0, &r);
    assert_int_equal(r.n_queues, 0);
    meta_sm_route_result_clear(&r);
    meta_sm_free(sm);
}

static void test_exchange_to_exchange_cycle(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;
    (void)state;

    declare(sm, "a", "fanout");
    declare(sm, "b", "fanout");
    c.type = META_SM_BIND;
    c.vhost = "/";
    c.vhost_len = 1;
    c.dest_is_exchange = true;
    c.exchange = "a";
    c.exchange_len = 1;
    c.dest = "b";
    c.dest_len = 1;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    c.exchange = "b";
    c.dest = "a";
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    c.dest = "zz";
    c.dest_len = 2;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 404);
    bindq(sm, "b", "qb", "");
    bindq(sm, "a", "qa", "");
    assert_string_equal(route(sm, "a", "k"), "qa,qb");
    assert_string_equal(route(sm, "b", "k"), "qb,qa");
    meta_sm_free(sm);
}

static void test_auto_delete_and_queue_gone(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;
    (void)state;

    c.type = META_SM_EXCHANGE_DECLARE;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = "ad";
    c.exchange_len = 2;
    c.exchange_type = META_SM_FANOUT;
    c.auto_delete = true;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    declare(sm, "keep", "fanout");
    /* never bound: stays */
    assert_int_equal(run(sm, META_SM_QUEUE_GONE, NULL, NULL, "x", NULL)
                         .reply_code,
                     0);
    assert_string_equal(route(sm, "ad", ""), "");
    bindq(sm, "ad", "q", "");
    bindq(sm, "keep", "q", "");
    bindq(sm, "keep", "q2", "");
    assert_true(run(sm, META_SM_QUEUE_GONE, NULL, NULL, "q", NULL).changed);
    assert_string_equal(route(sm, "ad", ""), "!"); /* last binding went */
    assert_string_equal(route(sm, "keep", ""), "q2");
    meta_sm_free(sm);
}

static struct meta_sm *sample(void)
{
    struct meta_sm *sm = meta_sm_new();

    declare(sm, "logs", "fanout");
    declare(sm, "topic_logs", "topic");
    bindq(sm, "logs", "a", "");
    bindq(sm, "topic_logs", "b", "kern.*");
    bindq(sm, "topic_logs", "c", "#.critical");
    return sm;
}

static void test_snapshot_round_trip(void **state)
{
    struct meta_sm *sm = sample();
    struct meta_sm *copy = meta_sm_new();
    void *buf;
    size_t len;
    (void)state;

    assert_int_equal(meta_sm_snapshot(sm, malloc, &buf, &len), 0);
    assert_int_equal(meta_sm_restore(copy, buf, len), 0);
    assert_int_equal(meta_sm_digest(copy), meta_sm_digest(sm));
    assert_int_equal(meta_sm_version(copy), meta_sm_version(sm));
    assert_string_equal(route(copy, "topic_logs", "kern.critical"), "b,c");
    free(buf);
    meta_sm_free(sm);
    meta_sm_free(copy);
}

static void test_restore_rejects_corruption(void **state)
{
    struct meta_sm *sm = sample();
    struct meta_sm *other = meta_sm_new();
    uint64_t before;
    unsigned char *buf;
    void *raw;
    size_t len;
    size_t cut;
    (void)state;

    declare(other, "kept", "direct");
    before = meta_sm_digest(other);
    assert_int_equal(meta_sm_snapshot(sm, malloc, &raw, &len), 0);
    buf = raw;
    for (cut = 0; cut < len; cut++) {
        assert_int_equal(meta_sm_restore(other, buf, cut), -1);
    }
    buf[0] ^= 0xff; /* magic */
    assert_int_equal(meta_sm_restore(other, buf, len), -1);
    buf[0] ^= 0xff;
    buf[19] = 0xff; /* exchange count (bytes 16..19) far beyond the input */
    assert_int_equal(meta_sm_restore(other, buf, len), -1);
    assert_int_equal(meta_sm_digest(other), before);
    free(raw);
    meta_sm_free(sm);
    meta_sm_free(other);
}

static void test_determinism(void **state)
{
    struct meta_sm *a = sample();
    struct meta_sm *b = sample();
    (void)state;

    assert_int_equal(meta_sm_digest(a), meta_sm_digest(b));
    bindq(b, "logs", "z", "");
    assert_int_not_equal(meta_sm_digest(a), meta_sm_digest(b));
    meta_sm_free(a);
    meta_sm_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_predeclared),
        cmocka_unit_test(test_declare_rules),
        cmocka_unit_test(test_delete_rules),
        cmocka_unit_test(test_bind_rules),
        cmocka_unit_test(test_direct_and_fanout),
        cmocka_unit_test(test_topic_edge_cases),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_exchange_to_exchange_cycle),
        cmocka_unit_test(test_auto_delete_and_queue_gone),
        cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_restore_rejects_corruption),
        cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
