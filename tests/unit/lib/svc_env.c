/* svc_env: see svc_env.h. */
#include "tests/unit/lib/svc_env.h"
#include "tests/unit/lib/port_block.h"
#include "tests/unit/lib/rm_tree.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int svc_env_init(struct svc_env *e)
{
    memset(e, 0, sizeof(*e));
    signal(SIGPIPE, SIG_IGN); /* rgroup requirement */
    if (uv_loop_init(&e->loop) != 0) {
        return -1;
    }
    strcpy(e->root, "/tmp/ringmq-test-svc-XXXXXX");
    if (mkdtemp(e->root) == NULL) {
        return -1;
    }
    /* 2000..9199: apart from test_group (10000..32463) and below the
     * ephemeral range */
    e->port0 = port_block(2000u, 900u, 8u);
    return e->port0 != 0 ? 0 : -1;
}

int svc_env_close(struct svc_env *e)
{
    int rv = uv_loop_close(&e->loop);

    rm_tree(e->root);
    return rv;
}

void svc_env_group(struct svc_env *e, struct rgroup_config *cfg,
                   const char *name, unsigned slot)
{
    static char dirs[8][128];

    memset(cfg, 0, sizeof(*cfg));
    snprintf(dirs[slot % 8], sizeof(dirs[0]), "%s/%s", e->root, name);
    cfg->name = name;
    cfg->id = 1;
    cfg->dir = dirs[slot % 8];
    cfg->n_members = 1;
    cfg->members[0].id = 1;
    snprintf(cfg->members[0].raft_address,
             sizeof(cfg->members[0].raft_address), "127.0.0.1:%u",
             e->port0 + slot);
    cfg->election_ms = 300;
    cfg->heartbeat_ms = 30;
}

static bool timed_out;

static void timeout_cb(uv_timer_t *t)
{
    (void)t;
    timed_out = true;
}

bool svc_env_run_until(struct svc_env *e, bool (*pred)(void *), void *arg,
                       unsigned ms)
{
    uv_timer_t t;
    bool ok;

    uv_timer_init(&e->loop, &t);
    timed_out = false;
    uv_timer_start(&t, timeout_cb, ms, 0);
    while (!(ok = pred != NULL && pred(arg)) && !timed_out) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    return ok;
}

void svc_env_run_for(struct svc_env *e, unsigned ms)
{
    (void)svc_env_run_until(e, NULL, NULL, ms);
}
