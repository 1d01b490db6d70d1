/*
 * node_rpc in front of a real single-member cache group: a request whose
 * deadline (RpcRequest.budget_ms) passed before the node started it is
 * answered EXPIRED ("not executed", for certain) and never proposed, also when the time ran out
 * while it waited unread in the node's socket (the node paused or busy,
 * here: its loop blocked in a callback). The test speaks the wire protocol
 * through a plain blocking socket, so that it controls when bytes are sent.
 * A queue group beside it shows queue commands carry their deadline too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "node/cache_svc.h"
#include "node/mq_svc.h"
#include "node/config.h"
#include "node/node_rpc.h"
#include "proto/mq_pb.h"
#include "proto/rpc_frame.h"
#include "tests/unit/lib/frame_read.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 10000
#define PAUSE_MS 300 /* the node's loop is blocked this long */
#define SHORT_BUDGET_MS 50

struct fx {
    struct svc_env env;
    struct node_config cfg;
    struct cache_svc *svc;
    struct mq_svc *mq; /* "s0.mq", for the queue tests */
    struct node_rpc *rpc;
    int fd; /* the test's connection to the node's RPC port */
    unsigned closing;
};

static bool svc_leads(void *arg)
{
    return cache_svc_is_leader(arg);
}

/* A new shard's leader seeds its settings through the log: done, nothing
 * but the test's requests is proposed any more. */
static bool svc_configured(void *arg)
{
    struct cache_svc_status st;

    cache_svc_status(arg, &st, false);
    return st.sm.configured;
}

static bool mq_ready(void *arg)
{
    return mq_svc_ready(arg);
}

static void closed_cb(void *data)
{
    ((struct fx *)data)->closing--;
}

static bool all_closed(void *arg)
{
    return ((struct fx *)arg)->closing == 0;
}

/* The group's own limits for a test (raft/group.h; 0 = defaults). */
struct limits {
    unsigned max_inflight;
    size_t max_entry_bytes;
    unsigned max_queued_cmds;
    bool queues; /* a queue group "s0.mq" too, with the same limits */
};

static int setup_with(void **state, const struct limits *lim)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct rgroup_config g;
    struct cache_sm_config smc = {0};
    char err[256];

    assert_int_equal(svc_env_init(&f->env), 0);
    smc.mem_limit = 8 << 20;
    smc.item_size_max = 1 << 20;
    svc_env_group(&f->env, &g, "s0", 0);
    g.max_inflight = lim->max_inflight;
    g.max_entry_bytes = lim->max_entry_bytes;
    g.max_queued_cmds = lim->max_queued_cmds;
    f->svc = cache_svc_new(&f->env.loop, &g, &smc, false, err, sizeof(err));
    assert_non_null(f->svc);
    assert_true(svc_env_run_until(&f->env, svc_leads, f->svc, WAIT_MS));
    assert_true(svc_env_run_until(&f->env, svc_configured, f->svc, WAIT_MS));
    if (lim->queues) {
        svc_env_group(&f->env, &g, "s0.mq", 2);
        g.max_inflight = lim->max_inflight;
        g.max_entry_bytes = lim->max_entry_bytes;
        g.max_queued_cmds = lim->max_queued_cmds;
        f->mq = mq_svc_new(&f->env.loop, &g, NULL, err, sizeof(err));
        assert_non_null(f->mq);
        assert_true(svc_env_run_until(&f->env, mq_ready, f->mq, WAIT_MS));
    }

    node_config_defaults(&f->cfg);
    f->cfg.id = 1;
    snprintf(f->cfg.rpc, sizeof(f->cfg.rpc), "127.0.0.1:%u",
             f->env.port0 + 1);
    snprintf(f->cfg.groups[0].name, sizeof(f->cfg.groups[0].name), "s0");
    f->cfg.n_groups = 1;
    f->rpc = node_rpc_new(&f->env.loop, &f->cfg, &f->svc, 1, err,
                          sizeof(err));
    if (f->rpc == NULL) {
        print_error("node_rpc_new: %s\n", err);
    }
    assert_non_null(f->rpc);
    if (f->mq != NULL) {
        node_rpc_set_amqp(f->rpc, &f->mq, 1, NULL);
    }

    f->fd = frame_connect(f->env.port0 + 1);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    static const struct limits defaults;

    return setup_with(state, &defaults);
}

/* One batch in flight at a time, and room for one write of VALUE_LEN
 * bytes per entry, not two: a second write waits in the group's queue. */
#define VALUE_LEN 600
static int setup_one_slot(void **state)
{
    static const struct limits one = {.max_inflight = 1,
                                      .max_entry_bytes = 1024};

    return setup_with(state, &one);
}

/* The same for a queue group beside the cache group. */
static int setup_queue_one_slot(void **state)
{
    static const struct limits one = {
        .max_inflight = 1, .max_entry_bytes = 1024, .queues = true};

    return setup_with(state, &one);
}

/* Room for one command waiting to be proposed. */
static int setup_one_queued(void **state)
{
    static const struct limits one = {.max_queued_cmds = 1};

    return setup_with(state, &one);
}

static int teardown(void **state)
{
    struct fx *f = *state;

    close(f->fd);
    f->closing = f->mq != NULL ? 3 : 2;
    node_rpc_close(f->rpc, closed_cb, f);
    cache_svc_close(f->svc, closed_cb, f);
    if (f->mq != NULL) {
        mq_svc_close(f->mq, closed_cb, f);
    }
    assert_true(svc_env_run_until(&f->env, all_closed, f, WAIT_MS));
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

/* Appends the request to @out (initialised by the caller). */
static void encode_op_id(struct buf *out, uint64_t id, enum cache_op_type type,
                         const char *key, size_t value_len, uint32_t budget_ms)
{
    static uint8_t value[VALUE_LEN];
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp op = RINGMQ__CACHE_OP__INIT;

    assert_true(value_len <= sizeof(value));
    memset(value, 'v', sizeof(value));
    op.type = type;
    op.key.data = (uint8_t *)key;
    op.key.len = strlen(key);
    op.value.data = value;
    op.value.len = type == CACHE_OP_SET ? value_len : 0;
    req.id = id;
    req.group = "s0";
    req.budget_ms = budget_ms;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &op;
    assert_int_equal(rpc_frame_encode_request(out, &req, 0, 0), 0);
}

/* A queue command on queue "q" of "s0.mq", appended to @out. */
static void encode_mq_id(struct buf *out, uint64_t id,
                         enum mq_sm_cmd_type type, size_t body_len,
                         uint32_t budget_ms)
{
    static char body[VALUE_LEN];
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    struct mq_pb_cmd_buf b;
    struct mq_sm_cmd c;

    assert_true(body_len <= sizeof(body));
    memset(body, 'm', sizeof(body));
    memset(&c, 0, sizeof(c));
    c.type = type;
    c.vhost = "/";
    c.vhost_len = 1;
    c.queue = "q";
    c.queue_len = 1;
    c.body = body;
    c.body_len = body_len;
    c.durable = true;
    c.who.router = 1;
    c.who.conn = 2;
    c.who.channel = 3;
    assert_int_equal(mq_pb_cmd_to_pb(&c, 0, &b), 0);
    req.id = id;
    req.group = "s0.mq";
    req.budget_ms = budget_ms;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MQ;
    req.mq = &b.pb;
    assert_int_equal(rpc_frame_encode_request(out, &req, 0, 0), 0);
    mq_pb_cmd_buf_clear(&b);
}

static void encode_op(struct buf *out, enum cache_op_type type,
                      const char *key, uint32_t budget_ms)
{
    buf_init(out);
    encode_op_id(out, 7, type, key, 1, budget_ms);
}

static void send_op(struct fx *f, enum cache_op_type type, const char *key,
                    uint32_t budget_ms)
{
    struct buf out;

    encode_op(&out, type, key, budget_ms);
    assert_int_equal(write(f->fd, out.data, out.len), (ssize_t)out.len);
    buf_free(&out);
}

static bool node_runs_until_readable(void *arg)
{
    struct fx *f = arg;

    return svc_env_run_until(&f->env, frame_fd_readable, &f->fd, WAIT_MS);
}

/* Runs the node until its reply is in, and reads it. */
static Ringmq__RpcResponse *recv_reply(struct fx *f)
{
    Ringmq__RpcResponse *resp = (Ringmq__RpcResponse *)frame_read(
        f->fd, &ringmq__rpc_response__descriptor, node_runs_until_readable, f);

    assert_int_equal(resp->id, 7);
    return resp;
}

/* Sends and answers the status of the op's cache result (OUTCOME_OK
 * expected). */
static enum cache_status call_ok(struct fx *f, enum cache_op_type type,
                                 const char *key, uint32_t budget_ms)
{
    Ringmq__RpcResponse *resp;
    enum cache_status st;

    send_op(f, type, key, budget_ms);
    resp = recv_reply(f);
    assert_int_equal(rpc_outcome(resp->code), OUTCOME_OK);
    assert_int_equal(resp->body_case, RINGMQ__RPC_RESPONSE__BODY_CACHE);
    st = (enum cache_status)resp->cache->status;
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return st;
}

static uint64_t cmds_proposed(struct fx *f)
{
    struct cache_svc_status st;

    cache_svc_status(f->svc, &st, false);
    return st.raft.cmds_proposed;
}

struct pause {
    struct fx *f;
    const char *key;
    uv_timer_t timer;
};

/* The request goes out, then the node's loop stands still (as a paused or
 * busy node's does) for longer than the request's budget. */
static void send_then_pause(uv_timer_t *t)
{
    struct pause *p = t->data;

    send_op(p->f, CACHE_OP_SET, p->key, SHORT_BUDGET_MS);
    usleep(PAUSE_MS * 1000);
}

static void pause_with(struct fx *f, const char *key)
{
    struct pause p = {.f = f, .key = key};

    uv_timer_init(&f->env.loop, &p.timer);
    p.timer.data = &p;
    uv_timer_start(&p.timer, send_then_pause, 0, 0);
    /* the callback has run once the reply is readable; closed below */
    assert_true(
        svc_env_run_until(&f->env, frame_fd_readable, &f->fd, WAIT_MS));
    uv_close((uv_handle_t *)&p.timer, NULL);
    svc_env_run_for(&f->env, 1);
}

static void expect_expired(struct fx *f)
{
    Ringmq__RpcResponse *resp = recv_reply(f);

    assert_int_equal(rpc_outcome(resp->code), OUTCOME_EXPIRED);
    assert_non_null(strstr(resp->error, "deadline"));
    ringmq__rpc_response__free_unpacked(resp, NULL);
}

/* Requests without a budget (older senders) and within it run; one whose
 * budget ran out while it waited unread is not proposed. */
static void expired_request_is_not_proposed(void **state)
{
    struct fx *f = *state;
    uint64_t before;

    assert_int_equal(call_ok(f, CACHE_OP_SET, "a", 0), CACHE_STORED);
    assert_int_equal(call_ok(f, CACHE_OP_SET, "b", 10000), CACHE_STORED);
    before = cmds_proposed(f);
    pause_with(f, "c");
    expect_expired(f);
    assert_int_equal(cmds_proposed(f), before);
    assert_int_equal(call_ok(f, CACHE_OP_GET, "c", 0), CACHE_NOT_FOUND);
    assert_int_equal(call_ok(f, CACHE_OP_GET, "b", 10000), CACHE_HIT);
}

/* The same for the first request of a connection the node had not even
 * accepted before the pause: it may have waited in the listen queue. */
static void expired_first_request_is_not_proposed(void **state)
{
    struct fx *f = *state;
    uint64_t before = cmds_proposed(f);

    pause_with(f, "d");
    expect_expired(f);
    assert_int_equal(cmds_proposed(f), before);
    assert_int_equal(call_ok(f, CACHE_OP_GET, "d", 0), CACHE_NOT_FOUND);
}

/* A request whose first bytes came long before its last: its budget
 * counts from the first. */
static void budget_counts_from_the_first_bytes(void **state)
{
    struct fx *f = *state;
    uint64_t before = cmds_proposed(f);
    struct buf out;
    size_t half;

    encode_op(&out, CACHE_OP_SET, "e", SHORT_BUDGET_MS);
    half = out.len / 2;
    assert_int_equal(write(f->fd, out.data, half), (ssize_t)half);
    svc_env_run_for(&f->env, PAUSE_MS); /* the node reads the first half */
    assert_int_equal(write(f->fd, (char *)out.data + half, out.len - half),
                     (ssize_t)(out.len - half));
    buf_free(&out);
    expect_expired(f);
    assert_int_equal(cmds_proposed(f), before);
    assert_int_equal(call_ok(f, CACHE_OP_GET, "e", 0), CACHE_NOT_FOUND);
}

/* Reads @n replies, in whatever order and writes they come, into
 * @resp[id - 1] (ids 1..@n). */
static void recv_replies(struct fx *f, Ringmq__RpcResponse **resp, unsigned n)
{
    struct rpc_frame_decoder dec;
    unsigned got = 0;

    memset(resp, 0, n * sizeof(*resp));
    rpc_frame_decoder_init(&dec, 0);
    while (got < n) {
        char b[4096];
        size_t off = 0;
        ssize_t len;

        assert_true(node_runs_until_readable(f));
        len = read(f->fd, b, sizeof(b));
        assert_true(len > 0);
        while (off < (size_t)len) {
            struct rpc_frame frame;
            Ringmq__RpcResponse *r;
            size_t used;
            int rv = rpc_frame_decoder_feed(&dec, b + off, (size_t)len - off,
                                            &used, &frame);

            assert_true(rv >= 0);
            off += used;
            if (rv == 0) {
                break;
            }
            r = ringmq__rpc_response__unpack(NULL, frame.len, frame.payload);
            assert_non_null(r);
            assert_true(r->id >= 1 && r->id <= n && resp[r->id - 1] == NULL);
            resp[r->id - 1] = r;
            got++;
        }
    }
    rpc_frame_decoder_close(&dec);
}

static void free_replies(Ringmq__RpcResponse **resp, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        ringmq__rpc_response__free_unpacked(resp[i], NULL);
    }
}

/* Two writes in one TCP write: the node reads (and dispatches) both in
 * one read on loopback, before the group proposes anything. */
static void send_two_writes(struct fx *f, uint32_t second_budget_ms)
{
    struct buf out;

    buf_init(&out);
    encode_op_id(&out, 1, CACHE_OP_SET, "x", VALUE_LEN, 0);
    encode_op_id(&out, 2, CACHE_OP_SET, "y", VALUE_LEN, second_budget_ms);
    assert_int_equal(write(f->fd, out.data, out.len), (ssize_t)out.len);
    buf_free(&out);
}

struct stall {
    struct fx *f;
    uv_prepare_t prepare;
    bool done;
};

/* Once a command waits in the group's queue (the other one in flight),
 * the node's loop stands still (a slow disk's write would hold the slot
 * as long) past that command's deadline. */
static void stall_while_queued(uv_prepare_t *h)
{
    struct stall *s = h->data;
    struct cache_svc_status st;

    cache_svc_status(s->f->svc, &st, false);
    if (s->f->mq != NULL) {
        struct mq_svc_status mst;

        mq_svc_status(s->f->mq, &mst, false);
        st.raft.queued_cmds += mst.raft.queued_cmds;
    }
    if (!s->done && st.raft.queued_cmds > 0) {
        s->done = true;
        usleep(PAUSE_MS * 1000);
    }
}

/* A write queued behind a batch in flight whose deadline passes before
 * it is proposed is dropped: answered EXPIRED "not executed", never
 * applied; the write in flight is applied. */
static void queued_write_expires_unproposed(void **state)
{
    struct fx *f = *state;
    struct stall s = {.f = f};
    Ringmq__RpcResponse *resp[2];
    uint64_t before = cmds_proposed(f);

    uv_prepare_init(&f->env.loop, &s.prepare);
    s.prepare.data = &s;
    uv_prepare_start(&s.prepare, stall_while_queued);
    send_two_writes(f, PAUSE_MS / 2);
    recv_replies(f, resp, 2);
    uv_close((uv_handle_t *)&s.prepare, NULL);
    svc_env_run_for(&f->env, 1); /* closed before @s goes */
    assert_true(s.done);
    assert_int_equal(rpc_outcome(resp[0]->code), OUTCOME_OK);
    assert_int_equal(resp[0]->cache->status, CACHE_STORED);
    assert_int_equal(rpc_outcome(resp[1]->code), OUTCOME_EXPIRED);
    assert_non_null(strstr(resp[1]->error, "waited to be proposed"));
    assert_non_null(strstr(resp[1]->error, "not executed"));
    free_replies(resp, 2);
    assert_int_equal(cmds_proposed(f), before + 1);
    assert_int_equal(call_ok(f, CACHE_OP_GET, "y", 0), CACHE_NOT_FOUND);
    assert_int_equal(call_ok(f, CACHE_OP_GET, "x", 0), CACHE_HIT);
}

static uint64_t mq_cmds_proposed(struct fx *f)
{
    struct mq_svc_status st;

    mq_svc_status(f->mq, &st, false);
    return st.raft.cmds_proposed;
}

/* The same for queue commands: an ENQUEUE queued behind one in flight
 * whose deadline passes before it is proposed is never applied. */
static void queued_enqueue_expires_unproposed(void **state)
{
    struct fx *f = *state;
    struct stall s = {.f = f};
    Ringmq__RpcResponse *resp[2];
    struct mq_sm_queue_stats qs;
    uint64_t before;
    struct buf out;

    buf_init(&out);
    encode_mq_id(&out, 7, MQ_SM_DECLARE, 0, 0);
    assert_int_equal(write(f->fd, out.data, out.len), (ssize_t)out.len);
    buf_free(&out);
    resp[0] = recv_reply(f);
    assert_int_equal(rpc_outcome(resp[0]->code), OUTCOME_OK);
    assert_int_equal(resp[0]->mq->status, MQ_SM_OK);
    ringmq__rpc_response__free_unpacked(resp[0], NULL);
    before = mq_cmds_proposed(f);

    uv_prepare_init(&f->env.loop, &s.prepare);
    s.prepare.data = &s;
    uv_prepare_start(&s.prepare, stall_while_queued);
    buf_init(&out);
    encode_mq_id(&out, 1, MQ_SM_ENQUEUE, VALUE_LEN, 0);
    encode_mq_id(&out, 2, MQ_SM_ENQUEUE, VALUE_LEN, PAUSE_MS / 2);
    assert_int_equal(write(f->fd, out.data, out.len), (ssize_t)out.len);
    buf_free(&out);
    recv_replies(f, resp, 2);
    uv_close((uv_handle_t *)&s.prepare, NULL);
    svc_env_run_for(&f->env, 1); /* closed before @s goes */
    assert_true(s.done);
    assert_int_equal(rpc_outcome(resp[0]->code), OUTCOME_OK);
    assert_int_equal(resp[0]->mq->status, MQ_SM_OK);
    assert_int_equal(rpc_outcome(resp[1]->code), OUTCOME_EXPIRED);
    assert_non_null(strstr(resp[1]->error, "waited to be proposed"));
    free_replies(resp, 2);
    assert_int_equal(mq_cmds_proposed(f), before + 1);
    assert_int_equal(mq_sm_queue_stats(mq_svc_sm(f->mq), "/", 1, "q", 1,
                                       &qs),
                     0);
    assert_int_equal(qs.ready, 1);
}

/* A write beyond the group's queue bound is answered BUSY at once and
 * never applied; the one queued is. */
static void write_beyond_queue_bound_is_busy(void **state)
{
    struct fx *f = *state;
    Ringmq__RpcResponse *resp[2];
    uint64_t before = cmds_proposed(f);

    send_two_writes(f, 0);
    recv_replies(f, resp, 2);
    assert_int_equal(rpc_outcome(resp[0]->code), OUTCOME_OK);
    assert_int_equal(resp[0]->cache->status, CACHE_STORED);
    assert_int_equal(rpc_outcome(resp[1]->code), OUTCOME_BUSY);
    assert_non_null(strstr(resp[1]->error, "not executed"));
    free_replies(resp, 2);
    assert_int_equal(cmds_proposed(f), before + 1);
    assert_int_equal(call_ok(f, CACHE_OP_GET, "y", 0), CACHE_NOT_FOUND);
    /* the queue drained: taken again */
    assert_int_equal(call_ok(f, CACHE_OP_SET, "y", 0), CACHE_STORED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(expired_request_is_not_proposed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(expired_first_request_is_not_proposed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(budget_counts_from_the_first_bytes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(queued_enqueue_expires_unproposed,
                                        setup_queue_one_slot, teardown),
        cmocka_unit_test_setup_teardown(queued_write_expires_unproposed,
                                        setup_one_slot, teardown),
        cmocka_unit_test_setup_teardown(write_beyond_queue_bound_is_busy,
                                        setup_one_queued, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
