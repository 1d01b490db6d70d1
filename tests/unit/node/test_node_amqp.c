/*
 * Unit test of the AMQP wiring of node/node: a standalone node with AMQP on
 * (memcached off) creates "cache.mq" and "meta" beside "cache" at raft
 * ports +1/+2, becomes ready (BOOT applied), serves AMQP, and stops in
 * order; with --amqp off it runs no AMQP group.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "node/node.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 8000

struct fx {
    struct svc_env env;
    struct node *node;
    bool stopped;
};

static bool ready(void *arg)
{
    return node_ready(((struct fx *)arg)->node);
}

static void stopped_cb(void *data)
{
    ((struct fx *)data)->stopped = true;
}

static bool is_stopped(void *arg)
{
    return ((struct fx *)arg)->stopped;
}

static bool exists(const char *root, const char *name)
{
    char path[256];
    struct stat st;

    snprintf(path, sizeof(path), "%s/data/%s", root, name);
    return stat(path, &st) == 0;
}

/* Start a standalone node, wait until ready, stop it. */
static void run_node(struct fx *f, const char *amqp)
{
    struct node_config cfg;
    char err[256];

    node_config_defaults(&cfg);
    cfg.standalone = true;
    snprintf(cfg.data_dir, sizeof(cfg.data_dir), "%s/data", f->env.root);
    snprintf(cfg.raft, sizeof(cfg.raft), "127.0.0.1:%u", f->env.port0);
    snprintf(cfg.amqp, sizeof(cfg.amqp), "%s", amqp);
    cfg.election_ms = 300;
    cfg.heartbeat_ms = 30;
    assert_int_equal(node_config_finish(&cfg, err, sizeof(err)), 0);
    f->node = node_new(&f->env.loop, &cfg, err, sizeof(err));
    if (f->node == NULL) {
        print_error("node_new: %s\n", err);
    }
    assert_non_null(f->node);
    assert_true(svc_env_run_until(&f->env, ready, f, WAIT_MS));
    f->stopped = false;
    node_stop(f->node, stopped_cb, f);
    assert_true(svc_env_run_until(&f->env, is_stopped, f, WAIT_MS));
    f->node = NULL;
}

static void test_standalone_amqp(void **state)
{
    struct fx f;
    char port[32];

    (void)state;
    assert_int_equal(svc_env_init(&f.env), 0);
    run_node(&f, ""); /* what --amqp off leaves */
    assert_true(exists(f.env.root, "cache"));
    assert_false(exists(f.env.root, "cache.mq"));
    assert_false(exists(f.env.root, "meta"));

    snprintf(port, sizeof(port), "127.0.0.1:%u", f.env.port0 + 5);
    run_node(&f, port);
    assert_true(exists(f.env.root, "cache.mq"));
    assert_true(exists(f.env.root, "meta"));
    /* and again: restart from the existing logs (BOOT again) */
    run_node(&f, port);
    assert_int_equal(svc_env_close(&f.env), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standalone_amqp),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
