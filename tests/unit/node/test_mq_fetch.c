/*
 * mq_fetch over real node RPC listeners on 127.0.0.1: a replica whose
 * installed snapshot left body ranges missing fills them from its peers,
 * in chunks (and a record larger than a chunk whole), skipping a peer
 * that lacks them and one whose bytes do not check; with no peer that
 * has them it keeps trying (rounds with a pause) and closes cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <cmocka.h>

#include "node/config.h"
#include "node/mq_fetch.h"
#include "node/mq_store.h"
#include "node/node_rpc.h"
#include "tests/unit/lib/store_fixture.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 60000
#define GROUP "s0.mq"
#define N_PEERS 3
#define BIG_LEN (200u << 10)

struct peer {
    struct node_config cfg;
    struct node_rpc *rpc;
    struct mq_store *st;
    char dir[128];
};

struct fx {
    struct svc_env env;
    struct peer peers[N_PEERS];
    char addrs[N_PEERS][NODE_ADDR_MAX];
    const char *order[N_PEERS]; /* what the peers function answers */
    unsigned n_order;
    unsigned peer_calls;
    struct mq_store *st; /* the replica that fetches */
    struct mq_fetch *fetch;
    unsigned done_calls;
    unsigned closing;
    uint32_t used[2]; /* segments 1 and 2 */
};

static unsigned peers_fn(void *data, const char **out, unsigned max)
{
    struct fx *f = data;
    unsigned i;

    f->peer_calls++;
    for (i = 0; i < f->n_order && i < max; i++) {
        out[i] = f->order[i];
    }
    return i;
}

static void on_done(void *data)
{
    ((struct fx *)data)->done_calls++;
}

/* What the group wrote: segment 1, 300 bodies of 1000 bytes; segment 2,
 * one body larger than a chunk between two small ones. */
static void write_group(struct mq_store *st, uint32_t used[2])
{
    static unsigned char body[BIG_LEN];
    uint32_t off = 0, i;

    for (i = 0; i < 300; i++) {
        store_fixture_body(1, i, body, 1000);
        assert_int_equal(mq_store_write(st, 1, off, body, 1000), 0);
        off += (uint32_t)MQ_STORE_REC_BYTES(1000);
    }
    used[0] = off;
    off = 0;
    for (i = 0; i < 3; i++) {
        uint32_t len = i == 1 ? BIG_LEN : 100;

        store_fixture_body(2, i, body, len);
        assert_int_equal(mq_store_write(st, 2, off, body, len), 0);
        off += (uint32_t)MQ_STORE_REC_BYTES(len);
    }
    used[1] = off;
}

static void assert_group(struct mq_store *st)
{
    static unsigned char want[BIG_LEN], got[BIG_LEN];
    uint32_t off = 0, i;

    for (i = 0; i < 300; i++) {
        store_fixture_body(1, i, want, 1000);
        assert_int_equal(mq_store_read(st, 1, off, 1000, got), 0);
        assert_memory_equal(got, want, 1000);
        off += (uint32_t)MQ_STORE_REC_BYTES(1000);
    }
    off = 0;
    for (i = 0; i < 3; i++) {
        uint32_t len = i == 1 ? BIG_LEN : 100;

        store_fixture_body(2, i, want, len);
        assert_int_equal(mq_store_read(st, 2, off, len, got), 0);
        assert_memory_equal(got, want, len);
        off += (uint32_t)MQ_STORE_REC_BYTES(len);
    }
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    char err[256], dir[128];
    unsigned i;

    assert_int_equal(svc_env_init(&f->env), 0);
    for (i = 0; i < N_PEERS; i++) {
        struct peer *p = &f->peers[i];

        snprintf(p->dir, sizeof(p->dir), "%s/peer%u", f->env.root, i);
        p->st = store_fixture_open(p->dir);
        node_config_defaults(&p->cfg);
        p->cfg.id = i + 2;
        snprintf(f->addrs[i], sizeof(f->addrs[i]), "127.0.0.1:%u",
                 f->env.port0 + i);
        snprintf(p->cfg.rpc, sizeof(p->cfg.rpc), "%s", f->addrs[i]);
        p->rpc = node_rpc_new(&f->env.loop, &p->cfg, NULL, 0, err,
                              sizeof(err));
        if (p->rpc == NULL) {
            fail_msg("node_rpc_new: %s", err);
        }
        node_rpc_set_mq_store(p->rpc, GROUP, p->st);
    }
    snprintf(dir, sizeof(dir), "%s/self", f->env.root);
    f->st = store_fixture_open(dir);
    *state = f;
    return 0;
}

static void closed_cb(void *data)
{
    ((struct fx *)data)->closing--;
}

static bool all_closed(void *arg)
{
    return ((struct fx *)arg)->closing == 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    unsigned i;

    f->closing = N_PEERS + (f->fetch != NULL ? 1 : 0);
    if (f->fetch != NULL) {
        mq_fetch_close(f->fetch, closed_cb, f);
    }
    for (i = 0; i < N_PEERS; i++) {
        node_rpc_close(f->peers[i].rpc, closed_cb, f);
    }
    assert_true(svc_env_run_until(&f->env, all_closed, f, WAIT_MS));
    for (i = 0; i < N_PEERS; i++) {
        mq_store_close(f->peers[i].st);
    }
    mq_store_close(f->st);
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

/* This replica installed a snapshot naming both segments. */
static void install(struct fx *f)
{
    assert_int_equal(mq_store_begin_restore(f->st, 1), 0);
    assert_int_equal(mq_store_expect(f->st, 1, f->used[0]), 0);
    assert_int_equal(mq_store_expect(f->st, 2, f->used[1]), 0);
    assert_int_equal(mq_store_end_restore(f->st), 0);
}

static void start(struct fx *f, uint32_t chunk)
{
    struct mq_fetch_config cfg = {0};
    char err[256];

    cfg.group = GROUP;
    cfg.peers = peers_fn;
    cfg.peers_data = f;
    cfg.chunk_bytes = chunk;
    /* no call times out under load: the counts below are exact */
    cfg.call_timeout_ms = WAIT_MS / 2;
    cfg.retry_min_ms = 10;
    cfg.retry_max_ms = 50;
    cfg.on_done = on_done;
    cfg.on_done_data = f;
    f->fetch = mq_fetch_start(&f->env.loop, f->st, &cfg, err, sizeof(err));
    if (f->fetch == NULL) {
        fail_msg("mq_fetch_start: %s", err);
    }
}

static bool fetched(void *arg)
{
    struct fx *f = arg;
    uint32_t seg, off, len;

    return f->done_calls > 0 &&
           mq_store_next_missing(f->st, &seg, &off, &len) != 0;
}

static bool rounds_at_least_3(void *arg)
{
    struct mq_fetch_stats s;

    mq_fetch_stats(((struct fx *)arg)->fetch, &s);
    return s.rounds >= 3;
}

static void test_fills_from_the_peer_that_has_it(void **state)
{
    struct fx *f = *state;
    struct mq_fetch_stats s;
    struct mq_store_stats ss;

    /* peer 0 ("the leader") lacks the bodies; peer 1 has them */
    write_group(f->peers[1].st, f->used);
    install(f);
    f->order[0] = f->addrs[0];
    f->order[1] = f->addrs[1];
    f->n_order = 2;
    start(f, 64 << 10);
    assert_true(svc_env_run_until(&f->env, fetched, f, WAIT_MS));
    assert_group(f->st);
    mq_fetch_stats(f->fetch, &s);
    assert_true(s.idle);
    assert_int_equal(s.bytes, f->used[0] + f->used[1]);
    /* 64 KiB chunks of whole records: several for segment 1 */
    assert_true(s.chunks >= 6);
    /* peer 0 said absent once, then peer 1 served the rest */
    assert_int_equal(s.failures, 1);
    assert_int_equal(s.rounds, 0);
    assert_int_equal(f->done_calls, 1);
    mq_store_stats(f->st, &ss);
    assert_int_equal(ss.missing_bytes, 0);
}

static void test_skips_bytes_that_do_not_check(void **state)
{
    struct fx *f = *state;
    struct mq_fetch_stats s;

    /* peer 0 has the bytes, one of them flipped in the first record;
     * peer 2 has them right */
    write_group(f->peers[0].st, f->used);
    write_group(f->peers[2].st, f->used);
    assert_int_equal(mq_store_sync(f->peers[0].st), 0);
    store_fixture_flip(f->peers[0].dir, 1, MQ_STORE_REC_HDR + 10);
    install(f);
    f->order[0] = f->addrs[0];
    f->order[1] = f->addrs[2];
    f->n_order = 2;
    start(f, 0);
    assert_true(svc_env_run_until(&f->env, fetched, f, WAIT_MS));
    assert_group(f->st);
    mq_fetch_stats(f->fetch, &s);
    assert_true(s.failures >= 1);
}

static void test_nobody_has_it(void **state)
{
    struct fx *f = *state;
    uint32_t seg, off, len;
    unsigned char got[1000];

    f->used[0] = 4096;
    f->used[1] = 4096;
    /* peer 0 lacks them; peer 1 has no store for the group at all */
    node_rpc_set_mq_store(f->peers[1].rpc, GROUP, NULL);
    install(f);
    f->order[0] = f->addrs[0];
    f->order[1] = f->addrs[1];
    f->n_order = 2;
    start(f, 0);
    assert_true(svc_env_run_until(&f->env, rounds_at_least_3, f, WAIT_MS));
    /* the list is asked again every round: a new leader is seen */
    assert_true(f->peer_calls >= 3);
    assert_int_equal(mq_store_next_missing(f->st, &seg, &off, &len), 0);
    assert_int_equal(mq_store_read(f->st, 1, 0, 1000, got), -1);
    assert_int_equal(f->done_calls, 0);
    /* teardown closes it while it waits or asks */
}

static void test_kick_after_a_new_restore(void **state)
{
    struct fx *f = *state;

    write_group(f->peers[1].st, f->used);
    f->order[0] = f->addrs[1];
    f->n_order = 1;
    start(f, 0);
    /* nothing missing: idle, no done */
    svc_env_run_for(&f->env, 50);
    assert_int_equal(f->done_calls, 0);
    install(f);
    mq_fetch_kick(f->fetch);
    assert_true(svc_env_run_until(&f->env, fetched, f, WAIT_MS));
    assert_group(f->st);
}

static void test_close_at_once(void **state)
{
    struct fx *f = *state;

    write_group(f->peers[1].st, f->used);
    install(f);
    f->order[0] = f->addrs[1];
    f->n_order = 1;
    start(f, 0); /* a call in flight: teardown closes it */
}

static bool done(void *arg)
{
    return ((struct fx *)arg)->done_calls > 0;
}

/* The segment is freed and reclaimed while its chunk is on the way: the
 * answer is dropped, no file comes back. */
static void test_range_gone_meanwhile(void **state)
{
    struct fx *f = *state;
    struct mq_fetch_stats s;
    struct mq_store_stats ss;
    char self[128], path[192];

    write_group(f->peers[1].st, f->used);
    install(f);
    f->order[0] = f->addrs[1];
    f->n_order = 1;
    start(f, 0); /* asks for segment 1 at once */
    mq_store_freed(f->st, 1, 7);
    mq_store_freed(f->st, 2, 7);
    mq_store_reclaim(f->st, 7);
    assert_true(svc_env_run_until(&f->env, done, f, WAIT_MS));
    mq_fetch_stats(f->fetch, &s);
    assert_int_equal(s.bytes, 0);
    mq_store_stats(f->st, &ss);
    assert_int_equal(ss.segments, 0);
    snprintf(self, sizeof(self), "%s/self", f->env.root);
    store_fixture_seg_path(self, 1, path, sizeof(path));
    assert_int_equal(access(path, F_OK), -1);
}

static void test_config_peers(void **state)
{
    struct node_config cfg;
    const char *out[MQ_FETCH_PEERS_MAX];
    struct node_group_config *g;
    unsigned i;

    (void)state;
    node_config_defaults(&cfg);
    cfg.n_groups = 1;
    g = &cfg.groups[0];
    g->n_members = 3;
    for (i = 0; i < 3; i++) {
        g->members[i].id = i + 1;
        snprintf(g->members[i].rpc, sizeof(g->members[i].rpc),
                 "10.0.0.%u:7101", i + 1);
    }
    /* self 1, leader 3: 3 then 2 */
    assert_int_equal(mq_fetch_config_peers(&cfg, 0, 1, 3, out, 8), 2);
    assert_string_equal(out[0], "10.0.0.3:7101");
    assert_string_equal(out[1], "10.0.0.2:7101");
    /* leader unknown: in order, without self */
    assert_int_equal(mq_fetch_config_peers(&cfg, 0, 2, 0, out, 8), 2);
    assert_string_equal(out[0], "10.0.0.1:7101");
    assert_string_equal(out[1], "10.0.0.3:7101");
    /* this node leads: the others */
    assert_int_equal(mq_fetch_config_peers(&cfg, 0, 3, 3, out, 8), 2);
    /* a member without an RPC address is skipped; room for one */
    g->members[0].rpc[0] = '\0';
    assert_int_equal(mq_fetch_config_peers(&cfg, 0, 3, 1, out, 1), 1);
    assert_string_equal(out[0], "10.0.0.2:7101");
    assert_int_equal(mq_fetch_config_peers(&cfg, 5, 3, 1, out, 8), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fills_from_the_peer_that_has_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_skips_bytes_that_do_not_check,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_nobody_has_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kick_after_a_new_restore, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_gone_meanwhile, setup,
                                        teardown),
        cmocka_unit_test(test_config_peers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
