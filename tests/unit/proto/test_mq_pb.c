/*
 * Unit tests of proto/mq_pb: every field of the mq and meta commands and
 * results survives to_pb -> pack -> unpack -> from_pb; decoded results are
 * released by mq_sm_result_clear (run under ASan to check the layout);
 * malformed messages are refused, never crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/mq_pb.h"
#include "tests/unit/lib/mq_body_store.h"

#define T0 1700000000000ULL

/* Pack @pb (a MqCommand) and unpack it again: what a peer would see. */
static Ringmq__MqCommand *cmd_wire(const Ringmq__MqCommand *pb)
{
    size_t n = ringmq__mq_command__get_packed_size(pb);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    Ringmq__MqCommand *out;

    assert_int_equal(ringmq__mq_command__pack(pb, buf), n);
    out = ringmq__mq_command__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

static Ringmq__MqResult *result_wire(const Ringmq__MqResult *pb)
{
    size_t n = ringmq__mq_result__get_packed_size(pb);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    Ringmq__MqResult *out;

    assert_int_equal(ringmq__mq_result__pack(pb, buf), n);
    out = ringmq__mq_result__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

static void assert_mem(const void *a, size_t alen, const void *b, size_t blen)
{
    assert_int_equal(alen, blen);
    if (alen > 0) {
        assert_memory_equal(a, b, alen);
    }
}

static void test_cmd_roundtrip(void **state)
{
    static const uint64_t tags[3] = {5, 1, UINT64_MAX};
    struct mq_sm_cmd c;
    struct mq_sm_cmd d;
    struct mq_pb_cmd_buf b;
    Ringmq__MqCommand *pb;
    uint32_t wait = 0;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.type = MQ_SM_DECLARE;
    c.vhost = "/vh";
    c.vhost_len = 3;
    c.queue = "queue-1";
    c.queue_len = 7;
    c.who.router = 11;
    c.who.conn = 12;
    c.who.channel = 13;
    c.who.consumer = 14;
    c.passive = true;
    c.durable = true;
    c.exclusive = true;
    c.auto_delete = true;
    c.args.has_message_ttl = true;
    c.args.has_expires = true;
    c.args.has_max_length = true;
    c.args.has_dlx = true;
    c.args.has_dlrk = true;
    c.args.message_ttl_ms = 1000;
    c.args.expires_ms = 2000;
    c.args.max_length = 3000;
    c.args.overflow_reject = true;
    c.args.dlx = "dlx";
    c.args.dlx_len = 3;
    c.args.dlrk = "rk";
    c.args.dlrk_len = 2;
    c.if_unused = true;
    c.if_empty = true;
    c.client_id = 99;
    c.seq = 100;
    c.has_ttl = true;
    c.ttl_ms = 55;
    c.body = "\0body\xff";
    c.body_len = 6;
    c.max_messages = 7;
    c.prefetch = 8;
    c.scope = MQ_SM_SCOPE_ROUTER;
    c.tag = 1234567890123ULL;
    c.multiple = true;
    c.tags = tags;
    c.n_tags = 3;
    c.place_gen = 0x123456789aULL;

    assert_int_equal(mq_pb_cmd_to_pb(&c, 250, &b), 0);
    pb = cmd_wire(&b.pb);
    mq_pb_cmd_buf_clear(&b);
    assert_int_equal(mq_pb_cmd_from_pb(pb, &d, &wait), 0);
    assert_int_equal(wait, 250);
    assert_int_equal(d.type, c.type);
    assert_mem(d.vhost, d.vhost_len, c.vhost, c.vhost_len);
    assert_mem(d.queue, d.queue_len, c.queue, c.queue_len);
    assert_memory_equal(&d.who, &c.who, sizeof(c.who));
    assert_true(d.passive && d.durable && d.exclusive && d.auto_delete);
    assert_true(d.args.has_message_ttl && d.args.has_expires &&
                d.args.has_max_length && d.args.has_dlx && d.args.has_dlrk);
    assert_int_equal(d.args.message_ttl_ms, 1000);
    assert_int_equal(d.args.expires_ms, 2000);
    assert_int_equal(d.args.max_length, 3000);
    assert_true(d.args.overflow_reject);
    assert_mem(d.args.dlx, d.args.dlx_len, "dlx", 3);
    assert_mem(d.args.dlrk, d.args.dlrk_len, "rk", 2);
    assert_true(d.if_unused && d.if_empty);
    assert_int_equal(d.client_id, 99);
    assert_int_equal(d.seq, 100);
    assert_true(d.has_ttl);
    assert_int_equal(d.ttl_ms, 55);
    assert_mem(d.body, d.body_len, c.body, c.body_len);
    assert_int_equal(d.max_messages, 7);
    assert_int_equal(d.prefetch, 8);
    assert_int_equal(d.scope, MQ_SM_SCOPE_ROUTER);
    assert_int_equal(d.tag, c.tag);
    assert_true(d.multiple);
    assert_int_equal(d.n_tags, 3);
    assert_memory_equal(d.tags, tags, sizeof(tags));
    assert_int_equal(d.place_gen, c.place_gen);
    ringmq__mq_command__free_unpacked(pb, NULL);

    /* the move commands travel like any other: type and body */
    for (c.type = MQ_SM_MOVE_OUT; c.type < MQ_SM_CMD__COUNT; c.type++) {
        assert_int_equal(mq_pb_cmd_to_pb(&c, 0, &b), 0);
        pb = cmd_wire(&b.pb);
        mq_pb_cmd_buf_clear(&b);
        assert_int_equal(mq_pb_cmd_from_pb(pb, &d, NULL), 0);
        assert_int_equal(d.type, c.type);
        assert_int_equal(d.place_gen, c.place_gen);
        assert_mem(d.body, d.body_len, c.body, c.body_len);
        ringmq__mq_command__free_unpacked(pb, NULL);
    }
}

/* Empty fields decode to "" (never NULL with a length) and commands other
 * than DECLARE do not carry args. */
static void test_cmd_empty(void **state)
{
    struct mq_sm_cmd c;
    struct mq_sm_cmd d;
    struct mq_pb_cmd_buf b;
    Ringmq__MqCommand *pb;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.type = MQ_SM_EXPIRE;
    c.args.has_dlx = true;
    assert_int_equal(mq_pb_cmd_to_pb(&c, 0, &b), 0);
    assert_null(b.pb.args);
    pb = cmd_wire(&b.pb);
    assert_int_equal(mq_pb_cmd_from_pb(pb, &d, NULL), 0);
    assert_int_equal(d.type, MQ_SM_EXPIRE);
    assert_non_null(d.vhost);
    assert_non_null(d.queue);
    assert_non_null(d.args.dlx);
    assert_false(d.args.has_dlx);
    assert_int_equal(d.body_len, 0);
    ringmq__mq_command__free_unpacked(pb, NULL);
    mq_pb_cmd_buf_clear(&b);
}

static void test_cmd_bad(void **state)
{
    struct mq_sm_cmd c;
    struct mq_pb_cmd_buf b;
    Ringmq__MqCommand pb;
    Ringmq__MqQueueArgs args;
    static uint8_t big[300];

    (void)state;
    memset(&c, 0, sizeof(c));
    c.type = MQ_SM_CMD__COUNT;
    assert_int_equal(mq_pb_cmd_to_pb(&c, 0, &b), -1);
    mq_pb_cmd_buf_clear(&b);
    c.type = MQ_SM_RETURN;
    c.scope = MQ_SM_SCOPE__COUNT;
    assert_int_equal(mq_pb_cmd_to_pb(&c, 0, &b), -1);
    mq_pb_cmd_buf_clear(&b);

    ringmq__mq_command__init(&pb);
    pb.type = MQ_SM_CMD__COUNT;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), -1);
    pb.type = 0xffffffffu;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), -1);
    pb.type = MQ_SM_RETURN;
    pb.scope = MQ_SM_SCOPE__COUNT;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), -1);
    pb.scope = 0;
    pb.queue.data = big;
    pb.queue.len = 256;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), -1);
    pb.queue.len = 255;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), 0);
    pb.vhost.data = big;
    pb.vhost.len = 256;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), -1);
    pb.vhost.len = 0;
    ringmq__mq_queue_args__init(&args);
    args.dlx.data = big;
    args.dlx.len = 300;
    pb.args = &args;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), -1);
    args.dlx.len = 0;
    args.dlrk.data = big;
    args.dlrk.len = 256;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), -1);
    args.dlrk.len = 3;
    assert_int_equal(mq_pb_cmd_from_pb(&pb, &c, NULL), 0);
}

static void sm_run(struct mq_sm *sm, struct mq_sm_cmd *c,
                   struct mq_sm_result *res)
{
    mq_sm_apply(sm, T0, c, res);
    /* bodies from where the machine put them, as a node fills them */
    mbs_result(mbs_of(sm), res);
    assert_int_equal(res->status, MQ_SM_OK);
}

static void cmd_q(struct mq_sm_cmd *c, enum mq_sm_cmd_type t, const char *q)
{
    memset(c, 0, sizeof(*c));
    c->type = t;
    c->vhost = "/";
    c->vhost_len = 1;
    c->queue = q;
    c->queue_len = strlen(q);
    c->who.router = 1;
    c->who.conn = 2;
    c->who.channel = 3;
    c->who.consumer = 4;
}

/* Decode @r through the wire and compare every field. */
static void result_check_roundtrip(const struct mq_sm_result *r)
{
    struct mq_pb_result_buf b;
    struct mq_sm_result d;
    Ringmq__MqResult *pb;
    size_t i;

    assert_int_equal(mq_pb_result_to_pb(r, &b), 0);
    pb = result_wire(&b.pb);
    mq_pb_result_buf_clear(&b);
    assert_int_equal(mq_pb_result_from_pb(pb, &d), 0);
    ringmq__mq_result__free_unpacked(pb, NULL);

    assert_int_equal(d.status, r->status);
    assert_int_equal(d.reply_code, r->reply_code);
    assert_string_equal(d.reply_text, r->reply_text);
    assert_int_equal(d.msg_id, r->msg_id);
    assert_int_equal(d.count, r->count);
    assert_int_equal(d.consumer_count, r->consumer_count);
    assert_int_equal(d.message_count, r->message_count);
    assert_int_equal(d.incomplete, r->incomplete);
    assert_int_equal(d.moved, r->moved);
    assert_int_equal(d.gen, r->gen);
    assert_int_equal(d.n_deliveries, r->n_deliveries);
    for (i = 0; i < r->n_deliveries; i++) {
        assert_int_equal(d.deliveries[i].tag, r->deliveries[i].tag);
        assert_int_equal(d.deliveries[i].msg_id, r->deliveries[i].msg_id);
        assert_int_equal(d.deliveries[i].delivery_count,
                         r->deliveries[i].delivery_count);
        assert_int_equal(d.deliveries[i].redelivered,
                         r->deliveries[i].redelivered);
        assert_mem(d.deliveries[i].body, d.deliveries[i].body_len,
                   r->deliveries[i].body, r->deliveries[i].body_len);
    }
    assert_int_equal(d.n_dead, r->n_dead);
    for (i = 0; i < r->n_dead; i++) {
        const struct mq_sm_dead_letter *x = &d.dead[i];
        const struct mq_sm_dead_letter *y = &r->dead[i];

        assert_int_equal(x->reason, y->reason);
        assert_int_equal(x->msg_id, y->msg_id);
        assert_int_equal(x->outbox_id, y->outbox_id);
        assert_int_equal(x->gen, y->gen);
        assert_int_equal(x->has_dlrk, y->has_dlrk);
        assert_mem(x->vhost, x->vhost_len, y->vhost, y->vhost_len);
        assert_mem(x->queue, x->queue_len, y->queue, y->queue_len);
        assert_mem(x->dlx, x->dlx_len, y->dlx, y->dlx_len);
        assert_mem(x->dlrk, x->dlrk_len, y->dlrk, y->dlrk_len);
        assert_mem(x->body, x->body_len, y->body, y->body_len);
    }
    assert_int_equal(d.n_deleted, r->n_deleted);
    for (i = 0; i < r->n_deleted; i++) {
        assert_int_equal(d.deleted[i].reason, r->deleted[i].reason);
        assert_int_equal(d.deleted[i].gen, r->deleted[i].gen);
        assert_mem(d.deleted[i].vhost, d.deleted[i].vhost_len,
                   r->deleted[i].vhost, r->deleted[i].vhost_len);
        assert_mem(d.deleted[i].queue, d.deleted[i].queue_len,
                   r->deleted[i].queue, r->deleted[i].queue_len);
    }
    mq_sm_result_clear(&d);
}

/* Real results of mq_sm: deliveries (one with an empty body), dead letters
 * and deleted queues, plus an error result with a static reply text. */
static void test_result_roundtrip(void **state)
{
    struct mq_sm *sm = mq_sm_new(NULL);
    struct mbs *bodies = mbs_fresh(sm);
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    assert_non_null(sm);
    cmd_q(&c, MQ_SM_DECLARE, "q");
    c.durable = true;
    c.args.has_dlx = true;
    c.args.dlx = "dead-x";
    c.args.dlx_len = 6;
    c.args.has_dlrk = true;
    c.args.dlrk = "drk";
    c.args.dlrk_len = 3;
    sm_run(sm, &c, &res);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);

    cmd_q(&c, MQ_SM_ENQUEUE, "q");
    c.body = "hello";
    c.body_len = 5;
    sm_run(sm, &c, &res);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);
    c.body = NULL;
    c.body_len = 0;
    sm_run(sm, &c, &res);
    mq_sm_result_clear(&res);

    cmd_q(&c, MQ_SM_CHECKOUT, "q");
    c.max_messages = 10;
    sm_run(sm, &c, &res);
    assert_int_equal(res.n_deliveries, 2);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);

    cmd_q(&c, MQ_SM_DROP, "q");
    c.tag = 0;
    c.multiple = true;
    sm_run(sm, &c, &res);
    assert_int_equal(res.n_dead, 2);
    assert_int_equal(res.dead[1].outbox_id, 2); /* kept: a non-zero id */
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);

    cmd_q(&c, MQ_SM_DELETE, "q");
    sm_run(sm, &c, &res);
    assert_int_equal(res.n_deleted, 1);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);

    cmd_q(&c, MQ_SM_PURGE, "missing");
    mq_sm_apply(sm, T0, &c, &res);
    mbs_result(bodies, &res);
    assert_int_equal(res.status, MQ_SM_NOT_FOUND);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);

    /* placement gens and a move: gen, moved, the deleted entry's gen and
     * the placement statuses with their texts */
    cmd_q(&c, MQ_SM_DECLARE, "m");
    c.place_gen = 77;
    sm_run(sm, &c, &res);
    assert_int_equal(res.gen, 77);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);
    cmd_q(&c, MQ_SM_MOVE_OUT, "m");
    sm_run(sm, &c, &res);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);
    cmd_q(&c, MQ_SM_PURGE, "m");
    mq_sm_apply(sm, T0, &c, &res);
    mbs_result(bodies, &res);
    assert_int_equal(res.status, MQ_SM_MOVING);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);
    cmd_q(&c, MQ_SM_MOVE_DONE, "m");
    sm_run(sm, &c, &res);
    assert_true(res.moved);
    assert_int_equal(res.deleted[0].gen, 77);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_MOVED);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);
    cmd_q(&c, MQ_SM_PURGE, "m");
    mq_sm_apply(sm, T0, &c, &res);
    mbs_result(bodies, &res);
    assert_int_equal(res.status, MQ_SM_MOVED);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);
    cmd_q(&c, MQ_SM_DECLARE, "n");
    c.place_gen = 5; /* below the floor of 78 */
    mq_sm_apply(sm, T0, &c, &res);
    mbs_result(bodies, &res);
    assert_int_equal(res.status, MQ_SM_PLACE_STALE);
    result_check_roundtrip(&res);
    mq_sm_result_clear(&res);
    mbs_forget(sm);
    mq_sm_free(sm);
}

static void test_result_text_intern(void **state)
{
    char peer_text[] = "NOT_FOUND - no queue";
    Ringmq__MqResult pb;
    struct mq_sm_result r;

    (void)state;
    ringmq__mq_result__init(&pb);
    pb.status = MQ_SM_NOT_FOUND;
    pb.reply_code = 404;
    pb.reply_text = "something a newer peer says";
    pb.message_count = 5;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), 0);
    assert_string_equal(r.reply_text, "NOT_FOUND");
    assert_int_equal(r.message_count, 5);
    mq_sm_result_clear(&r);
    /* A peer's bytes, not a literal the linker may merge with ours. */
    pb.reply_text = peer_text;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), 0);
    assert_ptr_not_equal(r.reply_text, pb.reply_text);
    assert_string_equal(r.reply_text, "NOT_FOUND - no queue");
    mq_sm_result_clear(&r);
}

static void test_result_bad(void **state)
{
    Ringmq__MqResult pb;
    Ringmq__MqDeadLetter dl;
    Ringmq__MqDeadLetter *dlp = &dl;
    Ringmq__MqDeleted del;
    Ringmq__MqDeleted *delp = &del;
    struct mq_sm_result r;
    static uint8_t big[300];

    (void)state;
    ringmq__mq_result__init(&pb);
    pb.status = MQ_SM_STATUS__COUNT;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), -1);
    assert_int_equal(r.n_deliveries, 0);
    pb.status = 0;
    pb.reply_code = 70000;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), -1);
    pb.reply_code = 0;

    ringmq__mq_dead_letter__init(&dl);
    dl.reason = MQ_SM_DL_MAXLEN + 1;
    pb.dead = &dlp;
    pb.n_dead = 1;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), -1);
    dl.reason = MQ_SM_DL_MAXLEN;
    dl.queue.data = big;
    dl.queue.len = 256;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), -1);
    dl.queue.len = 5;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), 0);
    mq_sm_result_clear(&r);
    pb.n_dead = 0;

    ringmq__mq_deleted__init(&del);
    del.reason = MQ_SM_DEL_MOVED + 1;
    pb.deleted = &delp;
    pb.n_deleted = 1;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), -1);
    del.reason = MQ_SM_DEL_MOVED;
    assert_int_equal(mq_pb_result_from_pb(&pb, &r), 0);
    assert_int_equal(r.deleted[0].queue_len, 0);
    mq_sm_result_clear(&r);
}

static Ringmq__MetaCommand *meta_wire(const Ringmq__MetaCommand *pb)
{
    size_t n = ringmq__meta_command__get_packed_size(pb);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    Ringmq__MetaCommand *out;

    assert_int_equal(ringmq__meta_command__pack(pb, buf), n);
    out = ringmq__meta_command__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

static void test_meta_roundtrip(void **state)
{
    struct meta_sm_kv kv[2] = {
        {"x-match", 7, "Sall", 4},
        {"k", 1, "S\0\0\0\1v", 6},
    };
    struct meta_sm_cmd c;
    struct meta_sm_cmd d;
    struct mq_pb_meta_buf b;
    Ringmq__MetaCommand *pb;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.type = META_SM_BIND;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = "hx";
    c.exchange_len = 2;
    c.exchange_type = META_SM_HEADERS;
    c.passive = true;
    c.durable = true;
    c.auto_delete = true;
    c.internal = true;
    c.if_unused = true;
    c.dest = "q1";
    c.dest_len = 2;
    c.dest_is_exchange = true;
    c.routing_key = "a.b";
    c.routing_key_len = 3;
    c.args = kv;
    c.n_args = 2;
    c.shard = "s1";
    c.shard_len = 2;
    c.target = "shard-2";
    c.target_len = 7;
    c.gen = UINT64_MAX;
    assert_int_equal(mq_pb_meta_cmd_to_pb(&c, &b), 0);
    pb = meta_wire(&b.pb);
    mq_pb_meta_buf_clear(&b);
    assert_int_equal(mq_pb_meta_cmd_from_pb(pb, &d), 0);
    assert_int_equal(d.type, META_SM_BIND);
    assert_mem(d.shard, d.shard_len, "s1", 2);
    assert_mem(d.target, d.target_len, "shard-2", 7);
    assert_int_equal(d.gen, UINT64_MAX);
    assert_mem(d.vhost, d.vhost_len, "/", 1);
    assert_mem(d.exchange, d.exchange_len, "hx", 2);
    assert_int_equal(d.exchange_type, META_SM_HEADERS);
    assert_true(d.passive && d.durable && d.auto_delete && d.internal &&
                d.if_unused && d.dest_is_exchange);
    assert_mem(d.dest, d.dest_len, "q1", 2);
    assert_mem(d.routing_key, d.routing_key_len, "a.b", 3);
    assert_int_equal(d.n_args, 2);
    assert_mem(d.args[0].key, d.args[0].key_len, "x-match", 7);
    assert_mem(d.args[0].value, d.args[0].value_len, "Sall", 4);
    assert_mem(d.args[1].value, d.args[1].value_len, "S\0\0\0\1v", 6);
    mq_pb_meta_cmd_release(&d);
    assert_null(d.args);
    ringmq__meta_command__free_unpacked(pb, NULL);

    /* and a decoded command applies like the original */
    {
        struct meta_sm *sm = meta_sm_new();
        struct meta_sm_result r;

        c.type = META_SM_EXCHANGE_DECLARE;
        c.passive = false;
        c.n_args = 0;
        c.args = NULL;
        c.shard = c.target = NULL;
        c.shard_len = c.target_len = 0;
        c.gen = 0;
        assert_int_equal(mq_pb_meta_cmd_to_pb(&c, &b), 0);
        pb = meta_wire(&b.pb);
        mq_pb_meta_buf_clear(&b);
        assert_int_equal(mq_pb_meta_cmd_from_pb(pb, &d), 0);
        assert_null(d.args);
        meta_sm_apply(sm, &d, &r);
        assert_int_equal(r.reply_code, 0);
        assert_true(r.changed);
        mq_pb_meta_cmd_release(&d);
        ringmq__meta_command__free_unpacked(pb, NULL);
        meta_sm_free(sm);
    }
}

static void test_meta_bad(void **state)
{
    Ringmq__MetaCommand pb;
    Ringmq__MetaKv kv;
    Ringmq__MetaKv *kvp = &kv;
    struct meta_sm_cmd c;
    struct mq_pb_meta_buf b;
    static uint8_t big[300];

    (void)state;
    memset(&c, 0, sizeof(c));
    c.type = META_SM_CMD__COUNT;
    assert_int_equal(mq_pb_meta_cmd_to_pb(&c, &b), -1);
    mq_pb_meta_buf_clear(&b);

    ringmq__meta_command__init(&pb);
    pb.type = META_SM_CMD__COUNT;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), -1);
    pb.type = 0;
    pb.exchange_type = META_SM_EXCHANGE_TYPE__COUNT;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), -1);
    pb.exchange_type = 0;
    pb.exchange.data = big;
    pb.exchange.len = 256;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), -1);
    pb.exchange.len = 1;
    ringmq__meta_kv__init(&kv);
    kv.key.data = big;
    kv.key.len = 256;
    pb.args = &kvp;
    pb.n_args = 1;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), -1);
    kv.key.len = 2;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), 0);
    mq_pb_meta_cmd_release(&c);
    pb.shard.data = big;
    pb.shard.len = 256;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), -1);
    pb.shard.len = 64; /* meta_sm's to refuse (502), not the decoder's */
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), 0);
    mq_pb_meta_cmd_release(&c);
    pb.target.len = 256;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), -1);
    pb.target.data = NULL;
    pb.target.len = 1;
    assert_int_equal(mq_pb_meta_cmd_from_pb(&pb, &c), -1);
}

static Ringmq__MetaResult *meta_result_wire(const Ringmq__MetaResult *pb)
{
    size_t n = ringmq__meta_result__get_packed_size(pb);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    Ringmq__MetaResult *out;

    assert_int_equal(ringmq__meta_result__pack(pb, buf), n);
    out = ringmq__meta_result__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

/* A directory command and its result through the wire both ways. */
static void test_meta_directory(void **state)
{
    static const enum meta_sm_cmd_type types[] = {
        META_SM_QUEUE_PLACE,      META_SM_QUEUE_MOVE_BEGIN,
        META_SM_QUEUE_MOVE_BEGIN, META_SM_QUEUE_MOVE_COMMIT,
        META_SM_QUEUE_FORGET,
    };
    struct meta_sm *sm = meta_sm_new();
    struct meta_sm_cmd c;
    struct meta_sm_cmd d;
    struct meta_sm_result r;
    struct meta_sm_result back;
    struct mq_pb_meta_buf b;
    Ringmq__MetaCommand *pb;
    Ringmq__MetaResult res;
    Ringmq__MetaResult *res_in;
    size_t i;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.vhost = "/";
    c.vhost_len = 1;
    c.dest = "q";
    c.dest_len = 1;
    c.shard = "s1";
    c.shard_len = 2;
    c.target = "s2";
    c.target_len = 2;
    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        c.type = types[i];
        c.gen = i == 0 ? 0 : 1; /* BEGIN expects gen 1 */
        if (c.type == META_SM_QUEUE_FORGET) {
            c.shard = "s2"; /* gen 2 after the commit */
            c.gen = 2;
        }
        assert_int_equal(mq_pb_meta_cmd_to_pb(&c, &b), 0);
        pb = meta_wire(&b.pb);
        mq_pb_meta_buf_clear(&b);
        assert_int_equal(mq_pb_meta_cmd_from_pb(pb, &d), 0);
        assert_int_equal(d.type, c.type);
        meta_sm_apply(sm, &d, &r);
        assert_int_equal(r.reply_code, 0);
        mq_pb_meta_cmd_release(&d);
        ringmq__meta_command__free_unpacked(pb, NULL);

        mq_pb_meta_result_to_pb(&r, &res);
        res_in = meta_result_wire(&res);
        assert_int_equal(mq_pb_meta_result_from_pb(res_in, &back), 0);
        ringmq__meta_result__free_unpacked(res_in, NULL);
        assert_int_equal(back.version, r.version);
        assert_int_equal(back.changed, r.changed);
        assert_string_equal(back.placement.shard, r.placement.shard);
        assert_int_equal(back.placement.gen, r.placement.gen);
        assert_int_equal(back.placement.moving, r.placement.moving);
        assert_string_equal(back.placement.target, r.placement.target);
        assert_int_equal(back.placement.move_gen, r.placement.move_gen);
        switch (i) {
            case 1:
            case 2: /* BEGIN and its rerun */
                assert_true(back.placement.moving);
                assert_string_equal(back.placement.target, "s2");
                assert_int_equal(back.placement.move_gen, 2);
                break;
            case 3:
                assert_string_equal(back.placement.shard, "s2");
                assert_int_equal(back.placement.gen, 2);
                break;
            case 4:
                assert_int_equal(back.placement.gen, 0);
                break;
            default:
                assert_string_equal(back.placement.shard, "s1");
                assert_int_equal(back.placement.gen, 1);
        }
    }
    /* the new reply texts survive as themselves, not as a generic one */
    c.type = META_SM_QUEUE_MOVE_COMMIT;
    meta_sm_apply(sm, &c, &r);
    assert_int_equal(r.reply_code, 406);
    mq_pb_meta_result_to_pb(&r, &res);
    assert_int_equal(mq_pb_meta_result_from_pb(&res, &back), 0);
    assert_string_equal(back.reply_text, r.reply_text);
    meta_sm_free(sm);
}

static void test_meta_result(void **state)
{
    struct meta_sm_result r = {
        .reply_code = 404,
        .reply_text = "NOT_FOUND - no exchange",
        .version = 42,
        .changed = true,
    };
    struct meta_sm_result d;
    Ringmq__MetaResult pb;

    (void)state;
    mq_pb_meta_result_to_pb(&r, &pb);
    assert_null(pb.snapshot);
    assert_int_equal(mq_pb_meta_result_from_pb(&pb, &d), 0);
    assert_int_equal(d.reply_code, 404);
    assert_string_equal(d.reply_text, r.reply_text);
    assert_int_equal(d.version, 42);
    assert_true(d.changed);
    assert_int_equal(d.placement.gen, 0);
    assert_string_equal(d.placement.shard, "");
    pb.reply_code = 1u << 20;
    assert_int_equal(mq_pb_meta_result_from_pb(&pb, &d), -1);
    {
        static uint8_t name[64];

        pb.reply_code = 0;
        memset(name, 'x', sizeof(name));
        pb.placement_shard.data = name;
        pb.placement_shard.len = 64;
        assert_int_equal(mq_pb_meta_result_from_pb(&pb, &d), -1);
        pb.placement_shard.len = 63;
        pb.placement_target.data = name;
        pb.placement_target.len = 64;
        assert_int_equal(mq_pb_meta_result_from_pb(&pb, &d), -1);
        pb.placement_target.len = 63;
        assert_int_equal(mq_pb_meta_result_from_pb(&pb, &d), 0);
        assert_int_equal(strlen(d.placement.shard), 63);
        assert_int_equal(strlen(d.placement.target), 63);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_roundtrip),
        cmocka_unit_test(test_cmd_empty),
        cmocka_unit_test(test_cmd_bad),
        cmocka_unit_test(test_result_roundtrip),
        cmocka_unit_test(test_result_text_intern),
        cmocka_unit_test(test_result_bad),
        cmocka_unit_test(test_meta_roundtrip),
        cmocka_unit_test(test_meta_bad),
        cmocka_unit_test(test_meta_result),
        cmocka_unit_test(test_meta_directory),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
