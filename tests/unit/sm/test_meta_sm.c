/*
 * Tests for sm/meta_sm: exchanges, bindings, RabbitMQ's routing rules,
 * the queue directory, versions and snapshots.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sm/meta_sm.h"

/* test_replay_unchanged: computed on commit 427a018 */
#define REPLAY_DIGEST 0xd7702ac512b07755ULL
#define REPLAY_ROUTES 0xa50b3a39b3589b49ULL

static void cmd_fill(struct meta_sm_cmd *c, enum meta_sm_cmd_type t,
                     const char *ex, const char *type, const char *dest,
                     const char *key)
{
    memset(c, 0, sizeof(*c));
    c->type = t;
    c->vhost = "/";
    c->vhost_len = 1;
    c->exchange = ex;
    c->exchange_len = ex ? strlen(ex) : 0;
    c->exchange_type =
        type ? (enum meta_sm_exchange_type)meta_sm_exchange_type_parse(
                   type, strlen(type))
             : META_SM_DIRECT;
    c->durable = true;
    c->dest = dest;
    c->dest_len = dest ? strlen(dest) : 0;
    c->routing_key = key;
    c->routing_key_len = key ? strlen(key) : 0;
}

static struct meta_sm_result run(struct meta_sm *sm, enum meta_sm_cmd_type t,
                                 const char *ex, const char *type,
                                 const char *dest, const char *key)
{
    struct meta_sm_cmd c;
    struct meta_sm_result res;

    cmd_fill(&c, t, ex, type, dest, key);
    meta_sm_apply(sm, &c, &res);
    return res;
}

static uint16_t declare(struct meta_sm *sm, const char *ex, const char *type)
{
    return run(sm, META_SM_EXCHANGE_DECLARE, ex, type, NULL, NULL).reply_code;
}

/* A fanout exchange deleted after its last binding from it goes. */
static void declare_auto_delete(struct meta_sm *sm, const char *ex)
{
    struct meta_sm_cmd c;
    struct meta_sm_result res;

    cmd_fill(&c, META_SM_EXCHANGE_DECLARE, ex, "fanout", NULL, NULL);
    c.auto_delete = true;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
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
    (void)state;

    declare_auto_delete(sm, "ad");
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

/* A command of the exchange/binding kinds, at random over few names so
 * that they meet: declares (some auto-delete, some e2e destinations),
 * binds and unbinds to queues and exchanges with keys and arguments,
 * deletes, QUEUE_GONE. */
static void random_meta_cmd(uint64_t *rng, struct meta_sm_cmd *c, char *buf)
{
    static const char *const keys[] = {"", "a", "a.b", "a.*", "#", "b.#"};
    static struct meta_sm_kv args[2] = {
        {"x-match", 7, "S\0\0\0\3any", 8},
        {"h", 1, "V", 1},
    };
    uint64_t r;
    int kind;

    *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
    r = *rng >> 11;
    kind = (int)(r % 100);
    memset(c, 0, sizeof(*c));
    c->vhost = r % 7 == 0 ? "v2" : "/";
    c->vhost_len = strlen(c->vhost);
    snprintf(buf, 16, "e%d", (int)((r >> 8) % 6));
    c->exchange = buf;
    c->exchange_len = strlen(buf);
    snprintf(buf + 16, 16, "%c%d", (r >> 12) % 3 == 0 ? 'e' : 'q',
             (int)((r >> 14) % 8));
    c->dest = buf + 16;
    c->dest_len = strlen(buf + 16);
    c->dest_is_exchange = buf[16] == 'e';
    c->routing_key = keys[(r >> 18) % 6];
    c->routing_key_len = strlen(c->routing_key);
    c->n_args = (r >> 21) % 5 == 0 ? 2 : 0;
    c->args = c->n_args ? args : NULL;
    c->durable = true;
    if (kind < 15) {
        c->type = META_SM_EXCHANGE_DECLARE;
        /* a name keeps its type: few inequivalent redeclares */
        c->exchange_type = (enum meta_sm_exchange_type)((r >> 8) % 4);
        c->auto_delete = (r >> 26) % 2 == 0;
    } else if (kind < 60) {
        c->type = META_SM_BIND;
    } else if (kind < 85) {
        c->type = META_SM_UNBIND;
    } else if (kind < 92) {
        c->type = META_SM_QUEUE_GONE;
    } else {
        c->type = META_SM_EXCHANGE_DELETE;
        c->if_unused = (r >> 26) % 2 == 0;
    }
}

/* Old logs replay to the same state: the final snapshot digest of a fixed
 * stream and the routes (queues, in their order) of fixed publishes after
 * every 50 commands, as the machine computed them before bindings were
 * indexed (commit 427a018). */
static void test_replay_unchanged(void **state)
{
    static const char *const keys[] = {"", "a", "a.b", "b.c"};
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_kv hdr = {"h", 1, "Sx", 2};
    uint64_t rng = 5;
    uint64_t routes = 0xcbf29ce484222325ULL;
    uint64_t reached = 0;
    char buf[32];
    int i;
    int k;

    (void)state;
    for (i = 0; i < 20000; i++) {
        struct meta_sm_cmd c;
        struct meta_sm_result res;

        random_meta_cmd(&rng, &c, buf);
        meta_sm_apply(sm, &c, &res);
        routes = (routes ^ res.reply_code ^ (res.changed ? 0x100 : 0)) *
                 0x100000001b3ULL;
        if (i % 50 != 0) {
            continue;
        }
        for (k = 0; k < 6 * 4; k++) {
            struct meta_sm_route_result rr;
            size_t q;

            snprintf(buf, sizeof(buf), "e%d", k / 4);
            meta_sm_route(sm, "/", 1, buf, strlen(buf), keys[k % 4],
                          strlen(keys[k % 4]), &hdr, 1, &rr);
            for (q = 0; q < rr.n_queues; q++) {
                size_t j;

                for (j = 0; j < rr.queues[q].len; j++) {
                    routes = (routes ^ (unsigned char)rr.queues[q].name[j]) *
                             0x100000001b3ULL;
                }
                routes = (routes ^ ',') * 0x100000001b3ULL;
            }
            reached += rr.n_queues;
            meta_sm_route_result_clear(&rr);
        }
    }
    print_message("digest 0x%016llxULL routes 0x%016llxULL reached %llu\n",
                  (unsigned long long)meta_sm_digest(sm),
                  (unsigned long long)routes, (unsigned long long)reached);
    assert_true(reached > 1000); /* the stream did route */
    assert_true(meta_sm_digest(sm) == REPLAY_DIGEST);
    assert_true(routes == REPLAY_ROUTES);
    meta_sm_free(sm);
}

/* Each bind, unbind, QUEUE_GONE, auto-delete, exchange deletion and route
 * walks what it touches (meta_sm_visits): with N bindings from one
 * exchange, declaring them costs O(N) visits in all, where scanning every
 * binding per command costs O(N^2); on the machine and its snapshot's
 * copy. */
static void test_cost_proportional_to_what_is_touched(void **state)
{
    enum { N = 2000 };
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm *copy = meta_sm_new();
    struct meta_sm_result res;
    struct meta_sm_route_result rr;
    char q[32];
    char key[32];
    uint64_t v;
    void *snap;
    size_t len;
    int i;

    (void)state;
    assert_int_equal(declare(sm, "big", "topic"), 0);
    assert_int_equal(declare(sm, "small", "direct"), 0);
    v = meta_sm_visits(sm);
    for (i = 0; i < N; i++) {
        snprintf(q, sizeof(q), "q%d", i);
        snprintf(key, sizeof(key), "k.%d", i);
        res = run(sm, META_SM_BIND, "big", NULL, q, key);
        assert_int_equal(res.reply_code, 0);
        assert_true(res.changed);
    }
    assert_true(meta_sm_visits(sm) - v <= 2 * N);
    /* a publish reaching N queues (one bound twice): each found once, at
     * O(1) each, where checking each against those found costs O(N^2) */
    bindq(sm, "big", "q5", "#");
    assert_int_equal(meta_sm_route(sm, "/", 1, "big", 3, "k.5", 3, NULL, 0,
                                   &rr),
                     0);
    assert_int_equal(rr.n_queues, 1);
    meta_sm_route_result_clear(&rr);
    assert_int_equal(declare(sm, "fan", "fanout"), 0);
    for (i = 0; i < N; i++) {
        snprintf(q, sizeof(q), "q%d", i);
        bindq(sm, "fan", q, i == 0 ? "again" : "");
    }
    bindq(sm, "fan", "q0", "");
    v = meta_sm_visits(sm);
    assert_int_equal(meta_sm_route(sm, "/", 1, "fan", 3, "", 0, NULL, 0, &rr),
                     0);
    assert_int_equal(rr.n_queues, N);
    assert_memory_equal(rr.queues[0].name, "q0", 2);
    assert_memory_equal(rr.queues[N - 1].name, "q1999", 5);
    meta_sm_route_result_clear(&rr);
    assert_true(meta_sm_visits(sm) - v <= 3 * N);
    assert_int_equal(run(sm, META_SM_EXCHANGE_DELETE, "fan", NULL, NULL, NULL)
                         .reply_code,
                     0);
    bindq(sm, "small", "s1", "a");
    bindq(sm, "small", "s2", "a");
    declare_auto_delete(sm, "ad");
    bindq(sm, "ad", "qa", "");
    assert_int_equal(meta_sm_snapshot(sm, malloc, &snap, &len), 0);
    assert_int_equal(meta_sm_restore(copy, snap, len), 0);
    free(snap);
    for (i = 0; i < 2; i++) {
        struct meta_sm *s = i == 0 ? sm : copy;
        uint64_t ex, binds;

        /* a repeated bind finds its twin */
        v = meta_sm_visits(s);
        res = run(s, META_SM_BIND, "big", NULL, "q1990", "k.1990");
        assert_false(res.changed);
        assert_true(meta_sm_visits(s) - v <= 2);

        v = meta_sm_visits(s);
        res = run(s, META_SM_UNBIND, "big", NULL, "q8", "k.8");
        assert_true(res.changed);
        assert_true(meta_sm_visits(s) - v <= 3);

        v = meta_sm_visits(s);
        assert_true(run(s, META_SM_QUEUE_GONE, NULL, NULL, "q9", NULL)
                        .changed);
        assert_true(meta_sm_visits(s) - v <= 2);

        /* routed over the small exchange's two bindings only */
        v = meta_sm_visits(s);
        assert_string_equal(route(s, "small", "a"), "s1,s2");
        assert_true(meta_sm_visits(s) - v <= 2);

        /* the auto-delete exchange's last binding goes: it goes too */
        v = meta_sm_visits(s);
        res = run(s, META_SM_UNBIND, "ad", NULL, "qa", "");
        assert_true(res.changed);
        assert_string_equal(route(s, "ad", ""), "!");
        assert_true(meta_sm_visits(s) - v <= 4);

        v = meta_sm_visits(s);
        assert_int_equal(run(s, META_SM_EXCHANGE_DELETE, "small", NULL,
                             NULL, NULL)
                             .reply_code,
                         0);
        assert_true(meta_sm_visits(s) - v <= 3);
        meta_sm_counts(s, &ex, &binds);
        assert_int_equal(ex, 1);
        assert_int_equal(binds, N - 1); /* 2 gone, q5 bound twice */
        meta_sm_check(s);
    }
    assert_int_equal(meta_sm_digest(copy), meta_sm_digest(sm));
    meta_sm_free(sm);
    meta_sm_free(copy);
}

/* ---- the queue directory ---------------------------------------------- */

static void assert_placement_equal(const struct meta_sm_placement *a,
                                   const struct meta_sm_placement *b)
{
    assert_string_equal(a->shard, b->shard);
    assert_int_equal(a->gen, b->gen);
    assert_int_equal(a->moving, b->moving);
    assert_string_equal(a->target, b->target);
    assert_int_equal(a->move_gen, b->move_gen);
}

/* One directory command (or QUEUE_GONE); also checks that the result's
 * placement is what a lookup sees afterwards, and that the version moved
 * exactly when the result says it changed. */
static struct meta_sm_result dcmd(struct meta_sm *sm, enum meta_sm_cmd_type t,
                                  const char *vhost, const char *q,
                                  const char *shard, const char *target,
                                  uint64_t gen)
{
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;
    struct meta_sm_placement p;
    uint64_t before = meta_sm_version(sm);

    c.type = t;
    c.vhost = vhost;
    c.vhost_len = strlen(vhost);
    c.dest = q;
    c.dest_len = strlen(q);
    c.shard = shard;
    c.shard_len = shard ? strlen(shard) : 0;
    c.target = target;
    c.target_len = target ? strlen(target) : 0;
    c.gen = gen;
    meta_sm_apply(sm, &c, &res);
    meta_sm_queue_lookup(sm, vhost, strlen(vhost), q, strlen(q), &p);
    assert_placement_equal(&res.placement, &p);
    assert_int_equal(res.version, meta_sm_version(sm));
    assert_int_equal(res.version, before + (res.changed ? 1 : 0));
    assert_true(res.reply_code == 0 || !res.changed);
    return res;
}

static struct meta_sm_result place(struct meta_sm *sm, const char *q,
                                   const char *shard, uint64_t replace_gen)
{
    return dcmd(sm, META_SM_QUEUE_PLACE, "/", q, shard, NULL, replace_gen);
}

static struct meta_sm_result begin(struct meta_sm *sm, const char *q,
                                   const char *shard, uint64_t gen,
                                   const char *target)
{
    return dcmd(sm, META_SM_QUEUE_MOVE_BEGIN, "/", q, shard, target, gen);
}

static struct meta_sm_result commit(struct meta_sm *sm, const char *q,
                                    const char *target)
{
    return dcmd(sm, META_SM_QUEUE_MOVE_COMMIT, "/", q, NULL, target, 0);
}

static struct meta_sm_result abort_move(struct meta_sm *sm, const char *q,
                                        const char *target)
{
    return dcmd(sm, META_SM_QUEUE_MOVE_ABORT, "/", q, NULL, target, 0);
}

static struct meta_sm_result forget(struct meta_sm *sm, const char *q,
                                    const char *shard, uint64_t gen)
{
    return dcmd(sm, META_SM_QUEUE_FORGET, "/", q, shard, NULL, gen);
}

static struct meta_sm_result gone(struct meta_sm *sm, const char *q,
                                  uint64_t gen)
{
    return dcmd(sm, META_SM_QUEUE_GONE, "/", q, NULL, NULL, gen);
}

static void test_place_rules(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_placement p;
    struct meta_sm_result r;
    char long_name[65];
    (void)state;

    assert_int_equal(meta_sm_queue_count(sm), 0);
    assert_int_equal(meta_sm_queue_next_gen(sm), 1);
    assert_int_equal(meta_sm_queue_lookup(sm, "/", 1, "q", 1, &p), -1);
    assert_int_equal(p.gen, 0);
    assert_string_equal(p.shard, "");

    r = place(sm, "q", "s1", 0);
    assert_int_equal(r.reply_code, 0);
    assert_true(r.changed);
    assert_string_equal(r.placement.shard, "s1");
    assert_int_equal(r.placement.gen, 1);
    assert_false(r.placement.moving);
    assert_int_equal(meta_sm_version(sm), 1);

    /* exists: another proposal, no replace_gen, or a stale one change
     * nothing and answer where it is */
    r = place(sm, "q", "s2", 0);
    assert_false(r.changed);
    assert_string_equal(r.placement.shard, "s1");
    assert_int_equal(r.placement.gen, 1);
    assert_false(place(sm, "q", "s2", 7).changed);
    assert_int_equal(meta_sm_version(sm), 1);

    /* the shard refused gen 1: same shard, a new gen */
    r = place(sm, "q", "s2", 1);
    assert_true(r.changed);
    assert_string_equal(r.placement.shard, "s1");
    assert_int_equal(r.placement.gen, 2);
    /* a rerun with the old gen finds gen 2 and changes nothing */
    assert_false(place(sm, "q", "s2", 1).changed);

    /* gens are meta-global; another vhost is another entry */
    assert_int_equal(place(sm, "q2", "s2", 0).placement.gen, 3);
    r = dcmd(sm, META_SM_QUEUE_PLACE, "v2", "q", "s3", NULL, 0);
    assert_int_equal(r.placement.gen, 4);
    assert_string_equal(r.placement.shard, "s3");
    assert_int_equal(meta_sm_queue_count(sm), 3);
    assert_int_equal(meta_sm_queue_next_gen(sm), 5);
    assert_int_equal(meta_sm_version(sm), 4);

    /* shard names: 1..63 bytes, no NUL */
    assert_int_equal(place(sm, "new", "", 0).reply_code, 502);
    assert_int_equal(place(sm, "new", NULL, 0).reply_code, 502);
    memset(long_name, 'x', 64);
    long_name[64] = '\0';
    assert_int_equal(place(sm, "new", long_name, 0).reply_code, 502);
    long_name[63] = '\0';
    r = place(sm, "new", long_name, 0);
    assert_int_equal(r.reply_code, 0);
    assert_string_equal(r.placement.shard, long_name);
    {
        struct meta_sm_cmd c = {0};
        c.type = META_SM_QUEUE_PLACE;
        c.vhost = "/";
        c.vhost_len = 1;
        c.dest = "nul";
        c.dest_len = 3;
        c.shard = "s\0x";
        c.shard_len = 3;
        meta_sm_apply(sm, &c, &r);
        assert_int_equal(r.reply_code, 502);
        assert_string_equal(r.reply_text, "SYNTAX_ERROR - bad shard name");
        assert_false(r.changed);
    }
    assert_int_equal(meta_sm_queue_lookup(sm, "/", 1, "nul", 3, NULL), -1);
    assert_int_equal(meta_sm_queue_count(sm), 4);
    meta_sm_free(sm);
}

static void test_move_sequence(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_result r;
    (void)state;

    place(sm, "q", "s1", 0); /* gen 1 */
    r = begin(sm, "q", "s1", 1, "s2");
    assert_int_equal(r.reply_code, 0);
    assert_true(r.changed);
    assert_true(r.placement.moving);
    assert_string_equal(r.placement.shard, "s1");
    assert_int_equal(r.placement.gen, 1); /* the queue is still at s1 */
    assert_string_equal(r.placement.target, "s2");
    assert_int_equal(r.placement.move_gen, 2); /* allocated now */
    assert_int_equal(meta_sm_queue_next_gen(sm), 3);

    /* a rerun answers the same move gen */
    r = begin(sm, "q", "s1", 1, "s2");
    assert_int_equal(r.reply_code, 0);
    assert_false(r.changed);
    assert_int_equal(r.placement.move_gen, 2);
    assert_int_equal(meta_sm_queue_next_gen(sm), 3);

    /* while moving: another target, re-placing, forgetting, committing
     * elsewhere all fail or change nothing */
    r = begin(sm, "q", "s1", 1, "s3");
    assert_int_equal(r.reply_code, 406);
    assert_string_equal(r.reply_text,
                        "PRECONDITION_FAILED - queue moving to another shard");
    assert_false(place(sm, "q", "s1", 1).changed);
    assert_false(forget(sm, "q", "s1", 1).changed);
    assert_int_equal(commit(sm, "q", "s3").reply_code, 406);
    assert_int_equal(commit(sm, "q", "s1").reply_code, 406);
    assert_true(meta_sm_queue_lookup(sm, "/", 1, "q", 1, NULL) == 0);

    r = commit(sm, "q", "s2");
    assert_int_equal(r.reply_code, 0);
    assert_true(r.changed);
    assert_string_equal(r.placement.shard, "s2");
    assert_int_equal(r.placement.gen, 2); /* the one BEGIN allocated */
    assert_false(r.placement.moving);
    assert_string_equal(r.placement.target, "");
    assert_int_equal(r.placement.move_gen, 0);
    assert_int_equal(meta_sm_queue_next_gen(sm), 3);

    /* a rerun of COMMIT is OK; a rerun of BEGIN sees the placement moved */
    r = commit(sm, "q", "s2");
    assert_int_equal(r.reply_code, 0);
    assert_false(r.changed);
    r = begin(sm, "q", "s1", 1, "s2");
    assert_int_equal(r.reply_code, 406);
    assert_string_equal(r.reply_text,
                        "PRECONDITION_FAILED - placement changed");
    assert_int_equal(begin(sm, "q", "s2", 1, "s3").reply_code, 406);
    r = begin(sm, "q", "s2", 2, "s2");
    assert_int_equal(r.reply_code, 406);
    assert_string_equal(r.reply_text,
                        "PRECONDITION_FAILED - queue already on that shard");
    r = begin(sm, "nope", "s2", 2, "s3");
    assert_int_equal(r.reply_code, 406);
    assert_string_equal(r.reply_text,
                        "PRECONDITION_FAILED - queue not in the directory");
    assert_int_equal(commit(sm, "nope", "s3").reply_code, 406);
    assert_int_equal(begin(sm, "q", "s2", 2, "").reply_code, 502);
    assert_int_equal(commit(sm, "q", NULL).reply_code, 502);

    /* and back again */
    assert_int_equal(begin(sm, "q", "s2", 2, "s1").placement.move_gen, 3);
    r = commit(sm, "q", "s1");
    assert_string_equal(r.placement.shard, "s1");
    assert_int_equal(r.placement.gen, 3);
    assert_int_equal(meta_sm_version(sm), 5);
    meta_sm_free(sm);
}

static void test_move_abort(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_result r;
    uint64_t v;
    (void)state;

    place(sm, "q", "s1", 0);
    assert_int_equal(begin(sm, "q", "s1", 1, "s2").placement.move_gen, 2);
    v = meta_sm_version(sm);
    r = abort_move(sm, "q", "s3"); /* not that move */
    assert_int_equal(r.reply_code, 0);
    assert_false(r.changed);
    assert_true(r.placement.moving);
    r = abort_move(sm, "q", "s2");
    assert_int_equal(r.reply_code, 0);
    assert_true(r.changed);
    assert_false(r.placement.moving);
    assert_string_equal(r.placement.shard, "s1");
    assert_int_equal(r.placement.gen, 1);
    assert_int_equal(r.placement.move_gen, 0);
    assert_int_equal(meta_sm_version(sm), v + 1);
    assert_false(abort_move(sm, "q", "s2").changed); /* rerun */
    assert_false(abort_move(sm, "none", "s2").changed);
    assert_int_equal(abort_move(sm, "q", "").reply_code, 502);
    assert_int_equal(commit(sm, "q", "s2").reply_code, 406);
    /* the aborted move's gen is never handed out again */
    assert_int_equal(begin(sm, "q", "s1", 1, "s2").placement.move_gen, 3);
    meta_sm_free(sm);
}

static void test_forget(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_result r;
    (void)state;

    place(sm, "q", "s1", 0);
    assert_false(forget(sm, "q", "s2", 1).changed);
    assert_false(forget(sm, "q", "s1", 2).changed);
    assert_false(forget(sm, "q", "s1", 0).changed);
    assert_false(forget(sm, "other", "s1", 1).changed);
    assert_int_equal(forget(sm, "q", "", 1).reply_code, 502);
    r = forget(sm, "q", "s1", 1);
    assert_int_equal(r.reply_code, 0);
    assert_true(r.changed);
    assert_int_equal(r.placement.gen, 0); /* no entry after */
    assert_int_equal(meta_sm_queue_count(sm), 0);
    r = forget(sm, "q", "s1", 1);
    assert_int_equal(r.reply_code, 0);
    assert_false(r.changed);
    /* placed again: a gen the forgotten entry never had */
    assert_int_equal(place(sm, "q", "s2", 0).placement.gen, 2);
    meta_sm_free(sm);
}

static void test_queue_gone_gen(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_result r;
    uint64_t v;
    (void)state;

    declare(sm, "f", "fanout");
    place(sm, "q", "s1", 0); /* gen 1 */

    /* gen 0: today's behaviour, the entry stays */
    bindq(sm, "f", "q", "");
    r = gone(sm, "q", 0);
    assert_true(r.changed);
    assert_string_equal(route(sm, "f", ""), "");
    assert_int_equal(r.placement.gen, 1);
    assert_false(gone(sm, "q", 0).changed);

    /* the queue was created again (gen 2): a late GONE for gen 1 drops
     * nothing */
    place(sm, "q", "s1", 1);
    bindq(sm, "f", "q", "");
    v = meta_sm_version(sm);
    r = gone(sm, "q", 1);
    assert_int_equal(r.reply_code, 0);
    assert_false(r.changed);
    assert_int_equal(meta_sm_version(sm), v);
    assert_string_equal(route(sm, "f", ""), "q");

    /* the current gen: bindings and entry go */
    r = gone(sm, "q", 2);
    assert_true(r.changed);
    assert_int_equal(meta_sm_version(sm), v + 1); /* one bump */
    assert_string_equal(route(sm, "f", ""), "");
    assert_int_equal(r.placement.gen, 0);
    assert_int_equal(meta_sm_queue_count(sm), 0);

    /* no bindings, the entry alone still goes (and bumps) */
    place(sm, "q", "s1", 0); /* gen 3 */
    assert_true(gone(sm, "q", 3).changed);
    assert_int_equal(meta_sm_queue_count(sm), 0);

    /* no entry: the bindings go */
    bindq(sm, "f", "q", "");
    assert_true(gone(sm, "q", 9).changed);
    assert_string_equal(route(sm, "f", ""), "");

    /* moving: the bindings go, the entry stays for the coordinator */
    place(sm, "q", "s1", 0); /* gen 4 */
    begin(sm, "q", "s1", 4, "s2");
    bindq(sm, "f", "q", "");
    r = gone(sm, "q", 4);
    assert_true(r.changed);
    assert_string_equal(route(sm, "f", ""), "");
    assert_true(r.placement.moving);
    assert_int_equal(meta_sm_queue_count(sm), 1);
    meta_sm_free(sm);
}

/* Every entry as one line, in meta_sm_queue_each order. */
struct dump {
    char *text;
    size_t len, cap;
    size_t n;
};

static int dump_one(void *data, const char *vhost, size_t vhost_len,
                    const char *queue, size_t queue_len,
                    const struct meta_sm_placement *p)
{
    struct dump *d = data;
    char line[1024];
    int n = snprintf(line, sizeof(line), "%.*s|%.*s|%s|%llu|%d|%s|%llu\n",
                     (int)vhost_len, vhost, (int)queue_len, queue, p->shard,
                     (unsigned long long)p->gen, p->moving, p->target,
                     (unsigned long long)p->move_gen);

    if (d->len + (size_t)n + 1 > d->cap) {
        d->cap = 2 * (d->len + (size_t)n + 1);
        d->text = realloc(d->text, d->cap);
        assert_non_null(d->text);
    }
    memcpy(d->text + d->len, line, (size_t)n + 1);
    d->len += (size_t)n;
    d->n++;
    return 0;
}

static char *dump_dir(const struct meta_sm *sm, size_t *n)
{
    struct dump d = {0};

    assert_int_equal(meta_sm_queue_each(sm, dump_one, &d), 0);
    *n = d.n;
    return d.text != NULL ? d.text : strdup("");
}

static int stop_at_two(void *data, const char *vhost, size_t vhost_len,
                       const char *queue, size_t queue_len,
                       const struct meta_sm_placement *p)
{
    int *seen = data;
    (void)vhost, (void)vhost_len, (void)queue, (void)queue_len, (void)p;
    return ++*seen == 2 ? 42 : 0;
}

/* A copy through snapshot bytes; checks snapshot -> restore -> snapshot
 * gives the same bytes, the same digest and the same entries in order. */
static struct meta_sm *copy_of(const struct meta_sm *sm)
{
    struct meta_sm *copy = meta_sm_new();
    void *a, *b;
    size_t alen, blen, na, nb;
    char *da, *db;

    assert_int_equal(meta_sm_snapshot(sm, malloc, &a, &alen), 0);
    assert_int_equal(meta_sm_restore(copy, a, alen), 0);
    assert_int_equal(meta_sm_snapshot(copy, malloc, &b, &blen), 0);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    assert_int_equal(meta_sm_digest(copy), meta_sm_digest(sm));
    assert_int_equal(meta_sm_version(copy), meta_sm_version(sm));
    assert_int_equal(meta_sm_queue_count(copy), meta_sm_queue_count(sm));
    assert_int_equal(meta_sm_queue_next_gen(copy),
                     meta_sm_queue_next_gen(sm));
    da = dump_dir(sm, &na);
    db = dump_dir(copy, &nb);
    assert_int_equal(na, meta_sm_queue_count(sm));
    assert_int_equal(na, nb);
    assert_string_equal(da, db);
    free(da);
    free(db);
    free(a);
    free(b);
    return copy;
}

static void test_dir_snapshot_10k(void **state)
{
    struct meta_sm *sm = sample();
    struct meta_sm *copy;
    struct meta_sm_placement p1, p2;
    char q[32], s[16], t[16];
    int seen = 0;
    int i;
    (void)state;

    for (i = 0; i < 10000; i++) {
        snprintf(q, sizeof(q), "queue-%d", i);
        snprintf(s, sizeof(s), "s%d", i % 7);
        assert_int_equal(dcmd(sm, META_SM_QUEUE_PLACE, i % 3 ? "/" : "v2", q,
                              s, NULL, 0)
                             .placement.gen,
                         (uint64_t)i + 1);
    }
    /* some re-placed, moving, moved, forgotten */
    for (i = 0; i < 10000; i += 5) {
        const char *vh = i % 3 ? "/" : "v2";
        snprintf(q, sizeof(q), "queue-%d", i);
        snprintf(s, sizeof(s), "s%d", i % 7);
        snprintf(t, sizeof(t), "s%d", (i + 1) % 7);
        switch (i % 4) {
            case 0:
                assert_true(dcmd(sm, META_SM_QUEUE_PLACE, vh, q, s, NULL,
                                 (uint64_t)i + 1)
                                .changed);
                break;
            case 1:
                assert_true(dcmd(sm, META_SM_QUEUE_MOVE_BEGIN, vh, q, s, t,
                                 (uint64_t)i + 1)
                                .changed);
                break;
            case 2:
                dcmd(sm, META_SM_QUEUE_MOVE_BEGIN, vh, q, s, t,
                     (uint64_t)i + 1);
                assert_true(
                    dcmd(sm, META_SM_QUEUE_MOVE_COMMIT, vh, q, NULL, t, 0)
                        .changed);
                break;
            default:
                assert_true(dcmd(sm, META_SM_QUEUE_FORGET, vh, q, s, NULL,
                                 (uint64_t)i + 1)
                                .changed);
                break;
        }
    }
    assert_int_equal(meta_sm_queue_count(sm), 10000 - 500);
    copy = copy_of(sm);
    for (i = 0; i < 10000; i++) {
        const char *vh = i % 3 ? "/" : "v2";
        snprintf(q, sizeof(q), "queue-%d", i);
        assert_int_equal(
            meta_sm_queue_lookup(sm, vh, strlen(vh), q, strlen(q), &p1),
            meta_sm_queue_lookup(copy, vh, strlen(vh), q, strlen(q), &p2));
        assert_placement_equal(&p1, &p2);
        /* the other vhost has no such queue */
        vh = i % 3 ? "v2" : "/";
        assert_int_equal(
            meta_sm_queue_lookup(copy, vh, strlen(vh), q, strlen(q), NULL),
            -1);
    }
    assert_string_equal(route(copy, "topic_logs", "kern.critical"), "b,c");
    assert_int_equal(meta_sm_queue_each(copy, stop_at_two, &seen), 42);
    assert_int_equal(seen, 2);
    /* a copy applies the next command as the original does */
    assert_int_equal(place(sm, "late", "s1", 0).placement.gen,
                     place(copy, "late", "s1", 0).placement.gen);
    assert_int_equal(meta_sm_digest(copy), meta_sm_digest(sm));
    meta_sm_free(sm);
    meta_sm_free(copy);
}

/* Made by the format-1 encoder (before the directory) from: exchanges logs
 * (fanout), topic_logs (topic), h (headers); bindings logs->a "",
 * topic_logs->b "kern.*", topic_logs->c "#.critical", logs->topic_logs ""
 * (exchange to exchange), h->hq with x-match=any; version 8. */
static const unsigned char format1[] = {
    0x41, 0x54, 0x45, 0x4d, 0x01, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x2f, 0x04, 0x00, 0x00, 0x00, 0x6c, 0x6f, 0x67, 0x73, 0x01, 0x09, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x0a, 0x00, 0x00, 0x00,
    0x74, 0x6f, 0x70, 0x69, 0x63, 0x5f, 0x6c, 0x6f, 0x67, 0x73, 0x02, 0x09,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x01, 0x00, 0x00,
    0x00, 0x68, 0x03, 0x09, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x2f, 0x04, 0x00, 0x00, 0x00, 0x6c, 0x6f, 0x67,
    0x73, 0x01, 0x00, 0x00, 0x00, 0x61, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x0a, 0x00, 0x00, 0x00,
    0x74, 0x6f, 0x70, 0x69, 0x63, 0x5f, 0x6c, 0x6f, 0x67, 0x73, 0x01, 0x00,
    0x00, 0x00, 0x62, 0x06, 0x00, 0x00, 0x00, 0x6b, 0x65, 0x72, 0x6e, 0x2e,
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x0a,
    0x00, 0x00, 0x00, 0x74, 0x6f, 0x70, 0x69, 0x63, 0x5f, 0x6c, 0x6f, 0x67,
    0x73, 0x01, 0x00, 0x00, 0x00, 0x63, 0x0a, 0x00, 0x00, 0x00, 0x23, 0x2e,
    0x63, 0x72, 0x69, 0x74, 0x69, 0x63, 0x61, 0x6c, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x04, 0x00, 0x00, 0x00, 0x6c, 0x6f,
    0x67, 0x73, 0x0a, 0x00, 0x00, 0x00, 0x74, 0x6f, 0x70, 0x69, 0x63, 0x5f,
    0x6c, 0x6f, 0x67, 0x73, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x00, 0x68, 0x02,
    0x00, 0x00, 0x00, 0x68, 0x71, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x78, 0x2d, 0x6d, 0x61, 0x74, 0x63,
    0x68, 0x08, 0x00, 0x00, 0x00, 0x53, 0x00, 0x00, 0x00, 0x03, 0x61, 0x6e,
    0x79,
};

/* The same state built by today's code. */
static struct meta_sm *format1_state(void)
{
    static const char any[] = {'S', 0, 0, 0, 3, 'a', 'n', 'y'};
    struct meta_sm_kv kv = {"x-match", 7, any, sizeof(any)};
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_cmd c = {0};
    struct meta_sm_result res;

    declare(sm, "logs", "fanout");
    declare(sm, "topic_logs", "topic");
    declare(sm, "h", "headers");
    bindq(sm, "logs", "a", "");
    bindq(sm, "topic_logs", "b", "kern.*");
    bindq(sm, "topic_logs", "c", "#.critical");
    c.type = META_SM_BIND;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = "logs";
    c.exchange_len = 4;
    c.dest = "topic_logs";
    c.dest_len = 10;
    c.dest_is_exchange = true;
    c.routing_key = "";
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    c.exchange = "h";
    c.exchange_len = 1;
    c.dest = "hq";
    c.dest_len = 2;
    c.dest_is_exchange = false;
    c.args = &kv;
    c.n_args = 1;
    meta_sm_apply(sm, &c, &res);
    assert_int_equal(res.reply_code, 0);
    return sm;
}

static void test_restore_format1(void **state)
{
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm *built = format1_state();
    struct meta_sm *copy;
    uint64_t ex, b;
    size_t cut;
    (void)state;

    place(sm, "stale", "s9", 0); /* replaced by the restore */
    for (cut = 0; cut < sizeof(format1); cut++) {
        assert_int_equal(meta_sm_restore(sm, format1, cut), -1);
    }
    assert_int_equal(meta_sm_restore(sm, format1, sizeof(format1)), 0);
    assert_int_equal(meta_sm_version(sm), 8);
    meta_sm_counts(sm, &ex, &b);
    assert_int_equal(ex, 3);
    assert_int_equal(b, 5);
    assert_string_equal(route(sm, "logs", "kern.critical"), "a,b,c");
    assert_int_equal(meta_sm_queue_count(sm), 0);
    assert_int_equal(meta_sm_queue_next_gen(sm), 1);
    assert_int_equal(meta_sm_queue_lookup(sm, "/", 1, "stale", 5, NULL), -1);
    /* the same state as today's code builds it, and it goes on alike */
    assert_int_equal(meta_sm_digest(sm), meta_sm_digest(built));
    copy = copy_of(sm);
    assert_int_equal(place(sm, "q", "s1", 0).placement.gen, 1);
    assert_int_equal(place(built, "q", "s1", 0).placement.gen, 1);
    assert_int_equal(meta_sm_digest(sm), meta_sm_digest(built));
    meta_sm_free(sm);
    meta_sm_free(built);
    meta_sm_free(copy);
}

/* A state with directory entries, to damage. The last entry ends the
 * snapshot: queue (4 + "q2"), shard (4 + "s1"), gen 2 (8), target (4, ""),
 * move_gen 0 (8). */
static void test_dir_restore_rejects(void **state)
{
    struct meta_sm *sm = sample();
    struct meta_sm *other = meta_sm_new();
    unsigned char *buf;
    void *raw;
    size_t len;
    size_t cut;
    uint64_t before;
    (void)state;

    place(sm, "q1", "s1", 0);
    place(sm, "q2", "s1", 0);
    place(other, "kept", "s1", 0);
    before = meta_sm_digest(other);
    assert_int_equal(meta_sm_snapshot(sm, malloc, &raw, &len), 0);
    buf = raw;
    for (cut = 0; cut < len; cut++) {
        assert_int_equal(meta_sm_restore(other, buf, cut), -1);
    }
    buf[len - 8] = 2; /* a move gen while not moving */
    assert_int_equal(meta_sm_restore(other, buf, len), -1);
    buf[len - 8] = 0;
    buf[len - 20] = 0; /* gen 0 */
    assert_int_equal(meta_sm_restore(other, buf, len), -1);
    buf[len - 20] = 3; /* gen >= next_gen (3) */
    assert_int_equal(meta_sm_restore(other, buf, len), -1);
    buf[len - 20] = 2;
    buf[len - 21] = 0; /* shard "s\0" */
    assert_int_equal(meta_sm_restore(other, buf, len), -1);
    buf[len - 21] = '1';
    buf[len - 27] = '1'; /* queue "q1" twice */
    assert_int_equal(meta_sm_restore(other, buf, len), -1);
    buf[len - 27] = '2';
    assert_int_equal(meta_sm_digest(other), before);
    assert_int_equal(meta_sm_restore(other, buf, len), 0);
    assert_int_equal(meta_sm_digest(other), meta_sm_digest(sm));
    free(raw);
    meta_sm_free(sm);
    meta_sm_free(other);
}

/* ---- model-based random test of the directory ------------------------ */

#define M_VHOSTS 2
#define M_QUEUES 12
#define M_SHARDS 4
#define M_STEPS 20000

static const char *const m_vhosts[M_VHOSTS] = {"/", "v"};
static const char *const m_shards[M_SHARDS] = {"s0", "s1", "s2", "s3"};

struct m_entry {
    bool exists;
    int shard;
    uint64_t gen;
    int target; /* -1: not moving */
    uint64_t move_gen;
    uint64_t created; /* creation order */
    bool bound;       /* a binding f -> the queue */
};

struct model {
    struct m_entry e[M_VHOSTS][M_QUEUES];
    uint64_t next_gen;
    uint64_t created;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(uint64_t n)
{
    rng_state ^= rng_state << 13; /* xorshift64: reproducible */
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state % n;
}

/* What the model expects; returns the reply code, sets *changed. */
static uint16_t model_apply(struct model *m, enum meta_sm_cmd_type t, int v,
                            int q, int shard, int target, uint64_t gen,
                            bool *changed)
{
    struct m_entry *e = &m->e[v][q];

    *changed = false;
    switch (t) {
        case META_SM_QUEUE_PLACE:
            if (!e->exists) {
                e->exists = true;
                e->shard = shard;
                e->gen = m->next_gen++;
                e->target = -1;
                e->move_gen = 0;
                e->created = ++m->created;
                *changed = true;
            } else if (gen != 0 && gen == e->gen && e->target < 0) {
                e->gen = m->next_gen++;
                *changed = true;
            }
            return 0;
        case META_SM_QUEUE_MOVE_BEGIN:
            if (!e->exists || e->shard != shard || e->gen != gen ||
                target == e->shard ||
                (e->target >= 0 && e->target != target)) {
                return 406;
            }
            if (e->target < 0) {
                e->target = target;
                e->move_gen = m->next_gen++;
                *changed = true;
            }
            return 0;
        case META_SM_QUEUE_MOVE_COMMIT:
            if (e->exists && e->target == target) {
                e->shard = target;
                e->gen = e->move_gen;
                e->target = -1;
                e->move_gen = 0;
                *changed = true;
                return 0;
            }
            return e->exists && e->target < 0 && e->shard == target ? 0 : 406;
        case META_SM_QUEUE_MOVE_ABORT:
            if (e->exists && e->target >= 0 && e->target == target) {
                e->target = -1;
                e->move_gen = 0;
                *changed = true;
            }
            return 0;
        case META_SM_QUEUE_FORGET:
            if (e->exists && e->target < 0 && e->shard == shard &&
                e->gen == gen) {
                e->exists = false;
                *changed = true;
            }
            return 0;
        case META_SM_QUEUE_GONE:
            if (gen != 0 && e->exists && e->gen != gen) {
                return 0;
            }
            *changed = e->bound;
            e->bound = false;
            if (gen != 0 && e->exists && e->target < 0) {
                e->exists = false;
                *changed = true;
            }
            return 0;
        case META_SM_BIND:
            *changed = !e->bound;
            e->bound = true;
            return 0;
        default:
            fail();
            return 0;
    }
}

/* A gen worth trying: the entry's own (or its move's), 0, or any. */
static uint64_t pick_gen(const struct m_entry *e, uint64_t next_gen)
{
    switch (rnd(4)) {
        case 0:
            return e->gen;
        case 1:
            return e->move_gen;
        case 2:
            return 0;
        default:
            return rnd(next_gen + 1);
    }
}

static void model_compare(const struct model *m, const struct meta_sm *sm)
{
    struct meta_sm_placement p;
    uint64_t n = 0;
    int v, q;

    for (v = 0; v < M_VHOSTS; v++) {
        for (q = 0; q < M_QUEUES; q++) {
            const struct m_entry *e = &m->e[v][q];
            char name[8];
            int rv;

            snprintf(name, sizeof(name), "q%d", q);
            rv = meta_sm_queue_lookup(sm, m_vhosts[v], strlen(m_vhosts[v]),
                                      name, strlen(name), &p);
            assert_int_equal(rv, e->exists ? 0 : -1);
            if (!e->exists) {
                assert_int_equal(p.gen, 0);
                continue;
            }
            n++;
            assert_string_equal(p.shard, m_shards[e->shard]);
            assert_int_equal(p.gen, e->gen);
            assert_int_equal(p.moving, e->target >= 0);
            assert_string_equal(p.target,
                                e->target >= 0 ? m_shards[e->target] : "");
            assert_int_equal(p.move_gen, e->move_gen);
        }
    }
    assert_int_equal(meta_sm_queue_count(sm), n);
    assert_int_equal(meta_sm_queue_next_gen(sm), m->next_gen);
}

/* meta_sm_queue_each must list entries in creation order. */
struct order_check {
    const struct model *m;
    uint64_t last;
    uint64_t n;
};

static int check_order(void *data, const char *vhost, size_t vhost_len,
                       const char *queue, size_t queue_len,
                       const struct meta_sm_placement *p)
{
    struct order_check *oc = data;
    int v = vhost_len == 1 && vhost[0] == '/' ? 0 : 1;
    int q = atoi(queue + 1);
    (void)queue_len;
    (void)p;

    assert_true(oc->m->e[v][q].exists);
    assert_true(oc->m->e[v][q].created > oc->last);
    oc->last = oc->m->e[v][q].created;
    oc->n++;
    return 0;
}

static void test_dir_model_random(void **state)
{
    static const enum meta_sm_cmd_type types[] = {
        META_SM_QUEUE_PLACE,       META_SM_QUEUE_PLACE,
        META_SM_QUEUE_MOVE_BEGIN,  META_SM_QUEUE_MOVE_BEGIN,
        META_SM_QUEUE_MOVE_COMMIT, META_SM_QUEUE_MOVE_ABORT,
        META_SM_QUEUE_FORGET,      META_SM_QUEUE_GONE,
        META_SM_BIND,
    };
    struct meta_sm *sm = meta_sm_new();
    struct model *m = calloc(1, sizeof(*m));
    int step;
    (void)state;

    m->next_gen = 1;
    declare(sm, "f", "fanout");
    for (step = 0; step < M_STEPS; step++) {
        enum meta_sm_cmd_type t = types[rnd(sizeof(types) / sizeof(types[0]))];
        int v = (int)rnd(M_VHOSTS);
        int q = (int)rnd(M_QUEUES);
        const struct m_entry *e = &m->e[v][q];
        int shard = rnd(3) ? e->shard : (int)rnd(M_SHARDS);
        int target = e->target >= 0 && rnd(2) ? e->target : (int)rnd(M_SHARDS);
        uint64_t gen = pick_gen(e, m->next_gen);
        struct meta_sm_result r;
        char name[8];
        uint16_t code;
        bool changed;

        snprintf(name, sizeof(name), "q%d", q);
        if (t == META_SM_BIND) {
            struct meta_sm_cmd c = {0};
            c.type = META_SM_BIND;
            c.vhost = m_vhosts[v];
            c.vhost_len = strlen(m_vhosts[v]);
            c.exchange = "f";
            c.exchange_len = 1;
            c.dest = name;
            c.dest_len = strlen(name);
            if (v == 0) { /* "f" is declared in "/" only */
                meta_sm_apply(sm, &c, &r);
                code = model_apply(m, t, v, q, shard, target, gen, &changed);
                assert_int_equal(r.reply_code, code);
                assert_int_equal(r.changed, changed);
            }
        } else {
            r = dcmd(sm, t, m_vhosts[v], name, m_shards[shard],
                     m_shards[target], gen);
            code = model_apply(m, t, v, q, shard, target, gen, &changed);
            if (r.reply_code != code || r.changed != changed) {
                print_error("step %d: type %d %s/%s shard %d target %d "
                            "gen %llu: got %u/%d want %u/%d\n",
                            step, t, m_vhosts[v], name, shard, target,
                            (unsigned long long)gen, r.reply_code, r.changed,
                            code, changed);
                fail();
            }
        }
        model_compare(m, sm);
        if (step % 2000 == 1999) {
            struct meta_sm *copy = copy_of(sm);
            struct order_check oc = {m, 0, 0};

            model_compare(m, copy);
            assert_int_equal(meta_sm_queue_each(copy, check_order, &oc), 0);
            assert_int_equal(oc.n, meta_sm_queue_count(sm));
            /* go on with the copy: it must behave as the original */
            meta_sm_free(sm);
            sm = copy;
        }
    }
    meta_sm_free(sm);
    free(m);
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
        cmocka_unit_test(test_replay_unchanged),
        cmocka_unit_test(test_cost_proportional_to_what_is_touched),
        cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_restore_rejects_corruption),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_place_rules),
        cmocka_unit_test(test_move_sequence),
        cmocka_unit_test(test_move_abort),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_queue_gone_gen),
        cmocka_unit_test(test_dir_snapshot_10k),
        cmocka_unit_test(test_restore_format1),
        cmocka_unit_test(test_dir_restore_rejects),
        cmocka_unit_test(test_dir_model_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
