/*
 * Unit tests of node/meta_svc over a real single-member rgroup: results
 * from the leader's apply, the local view, NOT_LEADER before leadership,
 * watches (immediate, on change, timeout, closing, handed back by a
 * replica that does not lead), restart replay; the cluster map: bootstrap,
 * commands, map watches, snapshots holding both state machines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/meta_svc.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 8000

struct fx {
    struct svc_env env;
    struct meta_svc *svc;
    bool closed;
};

struct op {
    struct meta_svc_call call;
    int done;
};

struct wop {
    struct meta_svc_watch w;
    int done;
};

static void op_cb(struct meta_svc_call *call)
{
    ((struct op *)call->data)->done++;
}

static void watch_cb(struct meta_svc_watch *w)
{
    ((struct wop *)w->data)->done++;
}

static bool op_done(void *arg)
{
    return ((struct op *)arg)->done > 0;
}

static bool wop_done(void *arg)
{
    return ((struct wop *)arg)->done > 0;
}

static bool leads(void *arg)
{
    return meta_svc_is_leader(arg);
}

static void closed_cb(void *data)
{
    ((struct fx *)data)->closed = true;
}

static bool is_closed(void *arg)
{
    return ((struct fx *)arg)->closed;
}

static unsigned snapshot_threshold; /* 0: the default */

static void start(struct fx *f, bool wait)
{
    struct rgroup_config g;
    char err[256];

    svc_env_group(&f->env, &g, "meta", 2);
    g.snapshot_threshold = snapshot_threshold;
    g.snapshot_trailing = snapshot_threshold;
    f->svc = meta_svc_new(&f->env.loop, &g, err, sizeof(err));
    assert_non_null(f->svc);
    if (wait) {
        assert_true(svc_env_run_until(&f->env, leads, f->svc, WAIT_MS));
    }
}

static void stop(struct fx *f)
{
    f->closed = false;
    meta_svc_close(f->svc, closed_cb, f);
    assert_true(svc_env_run_until(&f->env, is_closed, f, WAIT_MS));
    f->svc = NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_int_equal(svc_env_init(&f->env), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    if (f->svc != NULL) {
        stop(f);
    }
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

static void xdeclare(struct op *o, const char *name)
{
    memset(o, 0, sizeof(*o));
    o->call.cmd.type = META_SM_EXCHANGE_DECLARE;
    o->call.cmd.vhost = "/";
    o->call.cmd.vhost_len = 1;
    o->call.cmd.exchange = name;
    o->call.cmd.exchange_len = strlen(name);
    o->call.cmd.exchange_type = META_SM_FANOUT;
    o->call.cmd.durable = true;
    o->call.cb = op_cb;
    o->call.data = o;
}

static void run(struct fx *f, struct op *o)
{
    meta_svc_submit(f->svc, &o->call);
    assert_true(svc_env_run_until(&f->env, op_done, o, WAIT_MS));
    assert_int_equal(o->done, 1);
}

static void test_submit_and_view(void **state)
{
    struct fx *f = *state;
    struct meta_svc_status st;
    enum meta_sm_exchange_type type;
    struct op o;

    start(f, false);
    xdeclare(&o, "early");
    meta_svc_submit(f->svc, &o.call);
    assert_int_equal(o.done, 1);
    assert_int_equal(o.call.status, OUTCOME_NOT_LEADER);
    assert_true(svc_env_run_until(&f->env, leads, f->svc, WAIT_MS));

    xdeclare(&o, "x1");
    run(f, &o);
    assert_int_equal(o.call.status, OUTCOME_OK);
    assert_int_equal(o.call.result.reply_code, 0);
    assert_true(o.call.result.changed);
    assert_int_equal(o.call.result.version, 1);
    /* the local view includes it once the call completed */
    assert_int_equal(meta_sm_exchange_info(meta_svc_sm(f->svc), "/", 1, "x1",
                                           2, &type, NULL, NULL),
                     0);
    assert_int_equal(type, META_SM_FANOUT);

    /* errors are results, with the static text */
    xdeclare(&o, "amq.bad");
    run(f, &o);
    assert_int_equal(o.call.status, OUTCOME_OK);
    assert_int_equal(o.call.result.reply_code, 403);
    assert_false(o.call.result.changed);

    /* out of range: answered without proposing */
    xdeclare(&o, "x2");
    o.call.cmd.exchange_type = META_SM_EXCHANGE_TYPE__COUNT;
    run(f, &o);
    assert_int_equal(o.call.result.reply_code, 503);

    meta_svc_status(f->svc, &st);
    assert_int_equal(st.version, 1);
    assert_int_equal(st.exchanges, 1);
    assert_true(st.raft.ready);
    assert_int_equal(meta_svc_leader_id(f->svc), 1);

    /* restart: the log replays into the view */
    stop(f);
    start(f, true);
    meta_svc_status(f->svc, &st);
    assert_int_equal(st.version, 1);
}

static void test_watch(void **state)
{
    struct fx *f = *state;
    struct wop now;
    struct wop w;
    struct wop t;
    struct op o;

    start(f, true);

    /* already newer: at once; wait 0: at once */
    memset(&now, 0, sizeof(now));
    now.w.known_version = 0;
    now.w.wait_ms = 0;
    now.w.cb = watch_cb;
    now.w.data = &now;
    meta_svc_watch(f->svc, &now.w);
    assert_int_equal(now.done, 1);
    assert_int_equal(now.w.version, 0);

    memset(&w, 0, sizeof(w));
    w.w.known_version = 0;
    w.w.wait_ms = 5000;
    w.w.cb = watch_cb;
    w.w.data = &w;
    meta_svc_watch(f->svc, &w.w);
    svc_env_run_for(&f->env, 50);
    assert_int_equal(w.done, 0);
    xdeclare(&o, "x1");
    run(f, &o);
    assert_true(svc_env_run_until(&f->env, wop_done, &w, WAIT_MS));
    assert_int_equal(w.w.status, OUTCOME_OK);
    assert_int_equal(w.w.version, 1);

    /* an unchanged version times out OK */
    memset(&t, 0, sizeof(t));
    t.w.known_version = 1;
    t.w.wait_ms = 150;
    t.w.cb = watch_cb;
    t.w.data = &t;
    meta_svc_watch(f->svc, &t.w);
    /* a failing command does not change the version */
    xdeclare(&o, "amq.no");
    run(f, &o);
    assert_int_equal(t.done, 0);
    assert_true(svc_env_run_until(&f->env, wop_done, &t, WAIT_MS));
    assert_int_equal(t.w.status, OUTCOME_OK);
    assert_int_equal(t.w.version, 1);

    /* closing ends pending watches */
    memset(&t, 0, sizeof(t));
    t.w.known_version = 1;
    t.w.wait_ms = 5000;
    t.w.cb = watch_cb;
    t.w.data = &t;
    meta_svc_watch(f->svc, &t.w);
    stop(f);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.w.status, OUTCOME_CLOSING);
}

/* A replica that does not lead hands parked watches back (OK, its version)
 * within a tick instead of holding them for their whole wait: routers must
 * park at the leader, whose fanout waits for them. Here the replica never
 * leads: its one peer never runs. */
static void test_watch_not_leader(void **state)
{
    struct fx *f = *state;
    struct rgroup_config g;
    struct wop w;
    char err[256];
    uint64_t t0;

    svc_env_group(&f->env, &g, "meta", 2);
    g.n_members = 2;
    g.members[1].id = 2;
    snprintf(g.members[1].raft_address, sizeof(g.members[1].raft_address),
             "127.0.0.1:%u", f->env.port0 + 3);
    f->svc = meta_svc_new(&f->env.loop, &g, err, sizeof(err));
    assert_non_null(f->svc);
    svc_env_run_for(&f->env, 100);
    assert_false(meta_svc_is_leader(f->svc));

    memset(&w, 0, sizeof(w));
    w.w.known_version = 0;
    w.w.wait_ms = 5000;
    w.w.cb = watch_cb;
    w.w.data = &w;
    t0 = uv_now(&f->env.loop);
    meta_svc_watch(f->svc, &w.w);
    assert_int_equal(w.done, 0);
    assert_true(svc_env_run_until(&f->env, wop_done, &w, WAIT_MS));
    assert_true(uv_now(&f->env.loop) - t0 < 1000);
    assert_int_equal(w.done, 1);
    assert_int_equal(w.w.status, OUTCOME_OK);
    assert_int_equal(w.w.version, 0);
}

/* ---- the cluster map ---------------------------------------------------- */

struct mop {
    struct meta_svc_map_call call;
    struct map_sm_cmd cmd;
    int done;
};

static void mop_cb(struct meta_svc_map_call *call)
{
    ((struct mop *)call->data)->done++;
}

static bool mop_done(void *arg)
{
    return ((struct mop *)arg)->done > 0;
}

static bool map_epoch_at_least_5(void *arg)
{
    return map_sm_epoch(meta_svc_map(arg)) >= 5;
}

static void one_shard(struct cluster_map *map)
{
    struct cluster_shard *s;

    cluster_map_init(map);
    map->epoch = 5;
    s = cluster_map_append(map);
    snprintf(s->name, sizeof(s->name), "s1");
    s->members[0].id = 1;
    snprintf(s->members[0].raft, CLUSTER_ADDR_MAX, "127.0.0.1:7210");
    snprintf(s->members[0].rpc, CLUSTER_ADDR_MAX, "127.0.0.1:7101");
    s->n_members = 1;
    assert_int_equal(cluster_map_default_meta(map, NULL, 0), 0);
}

static void map_add_member(struct fx *f, struct mop *o, uint64_t id)
{
    memset(o, 0, sizeof(*o));
    o->cmd.type = MAP_SM_MEMBER_ADD;
    o->cmd.group = "s1";
    o->cmd.member.id = id;
    snprintf(o->cmd.member.raft, CLUSTER_ADDR_MAX, "127.0.0.1:%u",
             (unsigned)(8000 + 4 * id));
    snprintf(o->cmd.member.rpc, CLUSTER_ADDR_MAX, "127.0.0.1:%u",
             (unsigned)(9000 + id));
    o->call.cmd = &o->cmd;
    o->call.cb = mop_cb;
    o->call.data = o;
    meta_svc_map_submit(f->svc, &o->call);
    assert_true(svc_env_run_until(&f->env, mop_done, o, WAIT_MS));
}

/* The leader proposes the bootstrap map once; map commands apply; a map
 * watch wakes on the map's epoch, not the exchanges' version; a snapshot
 * carries both, and a restart restores both. */
static bool snapshot_taken(void *arg)
{
    struct meta_svc_status st;

    meta_svc_status(arg, &st);
    return st.raft.snapshots_taken > 0;
}

static void test_map(void **state)
{
    struct fx *f = *state;
    struct cluster_map boot;
    struct meta_svc_status st;
    struct wop w;
    struct op o;
    struct mop m;
    uint64_t id;

    snapshot_threshold = 8;
    one_shard(&boot);
    start(f, false);
    meta_svc_set_bootstrap(f->svc, &boot);
    assert_true(svc_env_run_until(&f->env, map_epoch_at_least_5, f->svc,
                                  WAIT_MS));
    assert_int_equal(map_sm_epoch(meta_svc_map(f->svc)), 5);

    memset(&w, 0, sizeof(w));
    w.w.map = true;
    w.w.known_version = 5;
    w.w.wait_ms = 5000;
    w.w.cb = watch_cb;
    w.w.data = &w;
    meta_svc_watch(f->svc, &w.w);
    /* an exchange does not wake a map watch */
    xdeclare(&o, "x1");
    run(f, &o);
    svc_env_run_for(&f->env, 100);
    assert_int_equal(w.done, 0);
    map_add_member(f, &m, 2);
    assert_int_equal(m.call.status, OUTCOME_OK);
    assert_int_equal(m.call.result.code, MAP_SM_OK);
    assert_int_equal(m.call.result.epoch, 6);
    assert_true(svc_env_run_until(&f->env, wop_done, &w, WAIT_MS));
    assert_int_equal(w.w.version, 6);

    /* enough entries for snapshots, then a restart from one */
    for (id = 3; id <= 9; id++) {
        map_add_member(f, &m, id);
        assert_int_equal(m.call.result.code, MAP_SM_OK);
    }
    map_add_member(f, &m, 9); /* again: nothing changes */
    assert_false(m.call.result.changed);
    /* a child serializes the snapshot: it counts once stored */
    assert_true(svc_env_run_until(&f->env, snapshot_taken, f->svc, WAIT_MS));
    meta_svc_status(f->svc, &st);
    assert_int_equal(st.map_epoch, 13);
    /* the apply recorded the exchange's change (map commands are not
     * meta changes) */
    assert_int_equal(meta_changes_count(meta_svc_changes(f->svc)), 1);
    stop(f);
    start(f, true);
    meta_svc_status(f->svc, &st);
    assert_int_equal(st.map_epoch, 13);
    assert_int_equal(st.version, 1); /* the exchange came back too */
    /* from the snapshot: no change to tell a watcher at version 0 */
    assert_int_equal(meta_changes_count(meta_svc_changes(f->svc)), 0);
    assert_int_equal(cluster_map_shard(map_sm_map(meta_svc_map(f->svc)), "s1")
                         ->n_members,
                     9);
    /* a restarted replica with a map does not propose its bootstrap map
     * again (INIT applies once) */
    meta_svc_set_bootstrap(f->svc, &boot);
    svc_env_run_for(&f->env, 200);
    assert_int_equal(map_sm_epoch(meta_svc_map(f->svc)), 13);
    cluster_map_clear(&boot);
    snapshot_threshold = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_submit_and_view, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_not_leader, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
