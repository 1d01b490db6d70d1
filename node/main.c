/*
 * ringmq-node: a storage node; with --standalone, a complete single-process
 * memcached server whose data lives in a one-member Raft group on disk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/log.h"
#include "common/stop_signals.h"
#include "node/config.h"
#include "node/node.h"

static struct {
    uv_loop_t loop;
    struct stop_signals signals;
    uv_timer_t ready_poll;
    struct node_config cfg;
    struct node *node;
} m;

#define NODE_THREADPOOL_SIZE "16"

static void node_stopped(void *data)
{
    (void)data;
    m.node = NULL;
    stop_signals_close(&m.signals);
    uv_close((uv_handle_t *)&m.ready_poll, NULL);
}

static void stop(void *data)
{
    (void)data;
    uv_timer_stop(&m.ready_poll);
    node_stop(m.node, node_stopped, NULL);
}

static void poll_ready(uv_timer_t *t)
{
    if (!node_ready(m.node)) {
        return;
    }
    uv_timer_stop(t);
    log_info("ready: node %llu, %u group(s), memcached %s, amqp %s, rpc %s, "
             "data %s",
             (unsigned long long)m.cfg.id, m.cfg.n_groups,
             m.cfg.memcached[0] ? m.cfg.memcached : "off",
             m.cfg.standalone && m.cfg.amqp[0] ? m.cfg.amqp : "off",
             m.cfg.rpc[0] ? m.cfg.rpc : "off", m.cfg.data_dir);
}

int main(int argc, char **argv)
{
    char err[512] = "";
    int rv;

    node_config_defaults(&m.cfg);
    /* Standalone turns the memcached and AMQP edges on unless a flag says
     * otherwise: look for it before parsing so later flags still win. */
    for (rv = 1; rv < argc; rv++) {
        if (strcmp(argv[rv], "--standalone") == 0) {
            snprintf(m.cfg.memcached, sizeof(m.cfg.memcached),
                     "127.0.0.1:11211");
            snprintf(m.cfg.amqp, sizeof(m.cfg.amqp), "127.0.0.1:5672");
        }
    }
    rv = node_config_parse_args(&m.cfg, argc, argv, err, sizeof(err));
    if (rv == 1) {
        return 0;
    }
    if (rv != 0 || node_config_finish(&m.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "ringmq-node: %s\n", err);
        return 2;
    }
    log_init("ringmq-node", m.cfg.log_level);

    /* Before libuv's threadpool starts (its size is read once): every
     * group's Raft appends run there (raft/kaio.h), beside snapshot work
     * that holds a thread while it waits; libuv's default is 4. An
     * operator's own setting wins. */
    setenv("UV_THREADPOOL_SIZE", NODE_THREADPOOL_SIZE, 0);
    uv_loop_init(&m.loop);
    m.node = node_new(&m.loop, &m.cfg, err, sizeof(err));
    if (m.node == NULL) {
        log_error("%s", err);
        uv_run(&m.loop, UV_RUN_DEFAULT); /* let started parts close */
        uv_loop_close(&m.loop);
        return 1;
    }
    stop_signals_start(&m.signals, &m.loop, stop, NULL);
    uv_timer_init(&m.loop, &m.ready_poll);
    uv_timer_start(&m.ready_poll, poll_ready, 10, 10);

    uv_run(&m.loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&m.loop);
    if (rv != 0) {
        log_warn("loop closed with handles still open: %s", uv_strerror(rv));
    }
    log_info("stopped");
    return 0;
}
