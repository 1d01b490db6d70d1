/*
 * node_rpc in front of a real single-member meta group, spoken to as a
 * router does over the wire (a plain blocking socket): a router that
 * declares n bindings, each answered by its parked watch and by the
 * bind's own reply, receives O(n) bytes in all, since both answers carry
 * the changes since the router's version, not the whole meta state; the
 * router's copy, built from those answers, equals the group's state.
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
#include "node/config.h"
#include "node/meta_svc.h"
#include "node/node_rpc.h"
#include "proto/mq_pb.h"
#include "proto/rpc_frame.h"
#include "sm/meta_changes.h"
#include "tests/unit/lib/frame_read.h"
#include "tests/unit/lib/meta_cmd.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 10000
#define ROUTER_ID 77

struct fx {
    struct svc_env env;
    struct node_config cfg;
    struct meta_svc *meta;
    struct node_rpc *rpc;
    int fd;
    unsigned closing;
    uint64_t next_id;
    /* the router's end of the wire: answers may come several per read */
    struct rpc_frame_decoder dec;
    char in[65536];
    size_t in_off, in_len;
};

static bool leads(void *arg)
{
    return meta_svc_is_leader(arg);
}

static void closed_cb(void *data)
{
    ((struct fx *)data)->closing--;
}

static bool all_closed(void *arg)
{
    return ((struct fx *)arg)->closing == 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct rgroup_config g;
    char err[256];

    assert_int_equal(svc_env_init(&f->env), 0);
    svc_env_group(&f->env, &g, "meta", 2);
    f->meta = meta_svc_new(&f->env.loop, &g, err, sizeof(err));
    assert_non_null(f->meta);
    assert_true(svc_env_run_until(&f->env, leads, f->meta, WAIT_MS));
    node_config_defaults(&f->cfg);
    f->cfg.id = 1;
    snprintf(f->cfg.rpc, sizeof(f->cfg.rpc), "127.0.0.1:%u",
             f->env.port0 + 1);
    f->rpc = node_rpc_new(&f->env.loop, &f->cfg, NULL, 0, err, sizeof(err));
    if (f->rpc == NULL) {
        print_error("node_rpc_new: %s\n", err);
    }
    assert_non_null(f->rpc);
    node_rpc_set_amqp(f->rpc, NULL, 0, f->meta);
    f->fd = frame_connect(f->env.port0 + 1);
    f->next_id = 1;
    rpc_frame_decoder_init(&f->dec, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    close(f->fd);
    rpc_frame_decoder_close(&f->dec);
    f->closing = 2;
    node_rpc_close(f->rpc, closed_cb, f);
    meta_svc_close(f->meta, closed_cb, f);
    assert_true(svc_env_run_until(&f->env, all_closed, f, WAIT_MS));
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

static void send_req(struct fx *f, Ringmq__RpcRequest *req)
{
    struct buf out;

    buf_init(&out);
    req->id = f->next_id++;
    req->group = "meta";
    assert_int_equal(rpc_frame_encode_request(&out, req, 0, 0), 0);
    assert_int_equal(write(f->fd, out.data, out.len), (ssize_t)out.len);
    buf_free(&out);
}

/* A router's watch: what it knows, parked up to @wait_ms. */
static void send_watch(struct fx *f, uint64_t known, uint32_t wait_ms)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MetaWatch w = RINGMQ__META_WATCH__INIT;

    w.known_version = known;
    w.wait_ms = wait_ms;
    w.router_id = ROUTER_ID;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_META_WATCH;
    req.meta_watch = &w;
    send_req(f, &req);
}

static void send_meta(struct fx *f, const struct meta_sm_cmd *c,
                      uint64_t view_version)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    struct mq_pb_meta_buf b;

    assert_int_equal(mq_pb_meta_cmd_to_pb(c, &b), 0);
    b.pb.view_version = view_version;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_META;
    req.meta = &b.pb;
    send_req(f, &req);
    mq_pb_meta_buf_clear(&b);
}

static bool node_runs_until_readable(void *arg)
{
    struct fx *f = arg;

    return svc_env_run_until(&f->env, frame_fd_readable, &f->fd, WAIT_MS);
}

/* The next answer, its size added to *@bytes. */
static Ringmq__RpcResponse *recv_answer(struct fx *f, size_t *bytes)
{
    Ringmq__RpcResponse *resp = NULL;
    struct rpc_frame frame;
    size_t used;
    ssize_t n;
    int rv = 0;

    while (rv == 0) {
        if (f->in_off == f->in_len) {
            assert_true(node_runs_until_readable(f));
            n = read(f->fd, f->in, sizeof(f->in));
            assert_true(n > 0);
            f->in_off = 0;
            f->in_len = (size_t)n;
        }
        rv = rpc_frame_decoder_feed(&f->dec, f->in + f->in_off,
                                    f->in_len - f->in_off, &used, &frame);
        f->in_off += used;
    }
    assert_int_equal(rv, 1);
    assert_int_equal(rpc_frame_unpack_response(&frame, NULL, &resp), 0);
    assert_int_equal(rpc_outcome(resp->code), OUTCOME_OK);
    *bytes += ringmq__rpc_response__get_packed_size(resp);
    return resp;
}

/* An answer's state or changes into the router's @view. */
static void take(struct meta_sm *view, const Ringmq__MetaSnapshot *s)
{
    assert_non_null(s);
    assert_int_equal(
        meta_changes_take(view, s->version,
                          s->state.len > 0 ? s->state.data : NULL,
                          s->state.len,
                          s->changes.len > 0 ? s->changes.data : NULL,
                          s->changes.len),
        0);
}

/*
 * The router's side of one meta command: its watch stays parked at the
 * view's version (a heartbeat answer or a change is followed by the next
 * watch at once, as router/amqp_remote does) until the command's reply
 * comes, which the leader sends once the router's watch reported the
 * command's version (or its lease ran out).
 */
static void command(struct fx *f, struct meta_sm *view,
                    const struct meta_sm_cmd *c, size_t *bytes)
{
    Ringmq__RpcResponse *resp;
    uint64_t sent_at = meta_sm_version(view);

    send_meta(f, c, sent_at);
    for (;;) {
        resp = recv_answer(f, bytes);
        if (resp->body_case == RINGMQ__RPC_RESPONSE__BODY_META_SNAPSHOT) {
            /* whole only for a view at version 0 (no view) */
            assert_true(meta_sm_version(view) == 0 ||
                        resp->meta_snapshot->state.len == 0);
            take(view, resp->meta_snapshot);
            ringmq__rpc_response__free_unpacked(resp, NULL);
            send_watch(f, meta_sm_version(view), META_VIEW_HEARTBEAT_MS);
            continue;
        }
        assert_int_equal(resp->body_case, RINGMQ__RPC_RESPONSE__BODY_META);
        assert_int_equal(resp->meta->reply_code, 0);
        assert_true(resp->meta->changed);
        if (resp->meta->snapshot != NULL) {
            assert_true(sent_at == 0 ||
                        resp->meta->snapshot->state.len == 0);
            take(view, resp->meta->snapshot);
        }
        /* the router sees its own change before its client does */
        assert_true(meta_sm_version(view) >= resp->meta->version);
        ringmq__rpc_response__free_unpacked(resp, NULL);
        return;
    }
}

/*
 * A router declares N bindings, one after the other. Every change reaches
 * it twice (its watch's answer, and the bind's reply when its watch had
 * not caught up), each time as the change alone. Whole states each time
 * (the node before, in both answers) would cost at least N^2/2 bindings'
 * bytes: about 40 times more here, and the gap grows with N.
 */
static void test_declaring_n_bindings_costs_o_n_bytes(void **state)
{
    enum { N = 300 };
    struct fx *f = *state;
    struct meta_sm *view = meta_sm_new();
    struct meta_sm_cmd c;
    Ringmq__RpcResponse *resp;
    size_t bytes = 0, whole;
    char q[32], key[32];
    void *snap;
    int i;

    /* the first watch loads the view whole */
    send_watch(f, 0, 0);
    resp = recv_answer(f, &bytes);
    assert_int_equal(resp->body_case,
                     RINGMQ__RPC_RESPONSE__BODY_META_SNAPSHOT);
    take(view, resp->meta_snapshot);
    ringmq__rpc_response__free_unpacked(resp, NULL);
    send_watch(f, meta_sm_version(view), META_VIEW_HEARTBEAT_MS);
    c = meta_cmd(META_SM_EXCHANGE_DECLARE, "logs", NULL, NULL);
    command(f, view, &c, &bytes);
    bytes = 0;
    for (i = 0; i < N; i++) {
        snprintf(q, sizeof(q), "queue-%05d", i);
        snprintf(key, sizeof(key), "key-%05d", i);
        c = meta_cmd(META_SM_BIND, "logs", q, key);
        command(f, view, &c, &bytes);
    }
    assert_int_equal(meta_sm_version(view),
                     meta_sm_version(meta_svc_sm(f->meta)));
    assert_true(meta_sm_digest(view) == meta_sm_digest(meta_svc_sm(f->meta)));
    assert_true(bytes < (size_t)N * 256);
    assert_int_equal(meta_sm_snapshot(view, malloc, &snap, &whole), 0);
    free(snap);
    assert_true((size_t)N * whole / 2 > 20 * bytes);
    meta_sm_free(view);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_declaring_n_bindings_costs_o_n_bytes, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
