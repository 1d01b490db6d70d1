/*
 * svc_env: fixture for tests of services behind real single-member rgroups
 * (mq_svc, meta_svc, amqp_local): one uv loop, a mkdtemp data root removed
 * at the end, 127.0.0.1 ports derived from the pid (2000..9199: below the
 * ephemeral range, apart from test_group's), and bounded waits.
 */
#ifndef RINGMQ_TEST_SVC_ENV_H
#define RINGMQ_TEST_SVC_ENV_H

#include <stdbool.h>

#include <uv.h>

#include "raft/group.h"

struct svc_env {
    uv_loop_t loop;
    char root[64];
    unsigned port0; /* this process's first port; 8 are reserved */
};

/* 0 or -1. */
int svc_env_init(struct svc_env *e);
/* Closes the loop (every handle must be closed) and removes the root. */
int svc_env_close(struct svc_env *e);

/* Single-member group @name with data dir root/@name at port0 + @slot. */
void svc_env_group(struct svc_env *e, struct rgroup_config *cfg,
                   const char *name, unsigned slot);

/* Run the loop until @pred(@arg) or @ms pass. Returns the predicate. */
bool svc_env_run_until(struct svc_env *e, bool (*pred)(void *), void *arg,
                       unsigned ms);
/* Run the loop for @ms. */
void svc_env_run_for(struct svc_env *e, unsigned ms);

#endif
