/*
 * ringmq-router: the stateless memcached router in front of the cluster's
 * shards (see router/router.h). Exit codes: 0 after a clean stop, 1 when it
 * cannot start serving (a port in use, ...), 2 for bad flags, a bad cluster
 * map or a router name the map does not list.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proto/map_yaml.h"
#include "common/log.h"
#include "common/stop_signals.h"
#include "edge/amqp_users.h"
#include "router/backend.h"
#include "router/router.h"

static const char usage[] =
    "usage: ringmq-router --cluster FILE --name NAME [options]\n"
    "\n"
    "  --cluster FILE         cluster map (docs/cluster.md)\n"
    "  --name NAME            this router's entry in the map's routers:\n"
    "  --memcached HOST:PORT  memcached listener (default: the entry's\n"
    "                         memcached address)\n"
    "  --amqp HOST:PORT       AMQP 0-9-1 listener (default: the entry's\n"
    "                         amqp address; 'off' = off)\n"
    "  --http HOST:PORT       /healthz and /metrics (default: the entry's\n"
    "                         http address; none = off)\n"
    "  --amqp-users FILE      AMQP accounts, one name:password per line\n"
    "                         (default: guest/guest from loopback only)\n"
    "  --request-timeout MS   budget of one cache op, retries included;\n"
    "                         past it clients get SERVER_ERROR (default 5000)\n"
    "  --attempt-timeout MS   longest single try of a cache op before it is\n"
    "                         tried again (default 1000)\n"
    "  --log-level LEVEL      debug, info, warn or error (default info)\n"
    "  -v, --verbose          same as --log-level debug\n"
    "  --version              print the version and exit\n"
    "  -h, --help             print this help and exit\n";

static struct {
    uv_loop_t loop;
    struct stop_signals signals;
    struct router *router;
} m;

static void router_stopped(void *data)
{
    (void)data;
    m.router = NULL;
    stop_signals_close(&m.signals);
}

static void stop(void *data)
{
    (void)data;
    router_close(m.router, router_stopped, NULL);
}

/* A duration flag: 1 ms to an hour. */
static bool parse_ms(const char *arg, unsigned long *out)
{
    char *end;
    unsigned long v = strtoul(arg, &end, 10);

    if (*end != '\0' || end == arg || v == 0 || v > 3600000) {
        return false;
    }
    *out = v;
    return true;
}

static int fail_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "ringmq-router: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return 2;
}

enum {
    OPT_CLUSTER = 256,
    OPT_NAME,
    OPT_MEMCACHED,
    OPT_AMQP,
    OPT_HTTP,
    OPT_AMQP_USERS,
    OPT_TIMEOUT,
    OPT_ATTEMPT_TIMEOUT,
    OPT_LOG_LEVEL,
    OPT_VERSION,
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cluster", required_argument, NULL, OPT_CLUSTER},
        {"name", required_argument, NULL, OPT_NAME},
        {"memcached", required_argument, NULL, OPT_MEMCACHED},
        {"amqp", required_argument, NULL, OPT_AMQP},
        {"http", required_argument, NULL, OPT_HTTP},
        {"amqp-users", required_argument, NULL, OPT_AMQP_USERS},
        {"request-timeout", required_argument, NULL, OPT_TIMEOUT},
        {"attempt-timeout", required_argument, NULL, OPT_ATTEMPT_TIMEOUT},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"verbose", no_argument, NULL, 'v'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cluster_path = NULL;
    const char *name = NULL;
    const char *mc_flag = NULL;
    const char *http_flag = NULL;
    const char *amqp_flag = NULL;
    const char *users_path = NULL;
    static struct amqp_server_config users; /* only its users are used */
    enum log_level level = LOG_INFO;
    unsigned long timeout_ms = BACKEND_REQUEST_TIMEOUT_MS_DEFAULT;
    unsigned long attempt_ms = BACKEND_ATTEMPT_TIMEOUT_MS_DEFAULT;
    static struct cluster_map map; /* large: keep it off the stack */
    const struct cluster_router *entry;
    struct router_config rc = {0};
    char err[512] = "";
    int c;
    int rv;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
        switch (c) {
            case OPT_CLUSTER:
                cluster_path = optarg;
                break;
            case OPT_NAME:
                name = optarg;
                break;
            case OPT_AMQP:
                amqp_flag = optarg;
                break;
            case OPT_MEMCACHED:
                mc_flag = optarg;
                break;
            case OPT_HTTP:
                http_flag = optarg;
                break;
            case OPT_AMQP_USERS:
                users_path = optarg;
                break;
            case OPT_TIMEOUT:
                if (!parse_ms(optarg, &timeout_ms)) {
                    return fail_usage(
                        "--request-timeout '%s': expected 1..3600000 ms",
                        optarg);
                }
                break;
            case OPT_ATTEMPT_TIMEOUT:
                if (!parse_ms(optarg, &attempt_ms)) {
                    return fail_usage(
                        "--attempt-timeout '%s': expected 1..3600000 ms",
                        optarg);
                }
                break;
            case OPT_LOG_LEVEL:
                if (log_level_parse(optarg, &level) != 0) {
                    return fail_usage(
                        "--log-level '%s': expected debug, info, "
                        "warn or error",
                        optarg);
                }
                break;
            case 'v':
                level = LOG_DEBUG;
                break;
            case OPT_VERSION:
                printf("ringmq-router %s\n", RINGMQ_VERSION);
                return 0;
            case 'h':
                fputs(usage, stdout);
                return 0;
            default:
                return fail_usage(
                    "unknown option or missing value: %s "
                    "(see --help)",
                    argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return fail_usage("unexpected argument '%s' (see --help)",
                          argv[optind]);
    }
    if (cluster_path == NULL || name == NULL) {
        return fail_usage("%s",
                          "--cluster FILE and --name NAME are required "
                          "(see --help)");
    }
    if (cluster_map_load(&map, cluster_path, err, sizeof(err)) != 0) {
        /* err names the file already */
        fprintf(stderr, "ringmq-router: cluster map: %s\n", err);
        return 2;
    }
    entry = cluster_map_router(&map, name);
    if (entry == NULL) {
        fprintf(stderr,
                "ringmq-router: cluster map %s lists no router named '%s'\n",
                cluster_path, name);
        return 2;
    }
    if (map.n_shards == 0) {
        fprintf(stderr, "ringmq-router: cluster map %s has no shards\n",
                cluster_path);
        return 2;
    }
    rc.map = &map;
    rc.name = name;
    rc.memcached = mc_flag ? mc_flag : entry->memcached;
    rc.http = http_flag ? http_flag : entry->http;
    rc.amqp = amqp_flag ? amqp_flag : entry->amqp;
    if (strcmp(rc.amqp, "off") == 0) {
        rc.amqp = "";
    }
    rc.request_timeout_ms = (unsigned)timeout_ms;
    rc.attempt_timeout_ms = (unsigned)attempt_ms;
    if (users_path != NULL) {
        if (amqp_users_load(users_path, &users, err, sizeof(err)) != 0) {
            fprintf(stderr, "ringmq-router: --amqp-users %s\n", err);
            return 2;
        }
        rc.amqp_users = users.users;
        rc.n_amqp_users = users.n_users;
    }
    if (rc.memcached[0] == '\0') {
        fprintf(stderr,
                "ringmq-router: router '%s' has no memcached address in %s; "
                "give --memcached HOST:PORT\n",
                name, cluster_path);
        return 2;
    }

    log_init("ringmq-router", level);

    uv_loop_init(&m.loop);
    m.router = router_new(&m.loop, &rc, err, sizeof(err));
    if (m.router == NULL) {
        log_error("%s", err);
        uv_run(&m.loop, UV_RUN_DEFAULT); /* let started parts close */
        uv_loop_close(&m.loop);
        return 1;
    }
    stop_signals_start(&m.signals, &m.loop, stop, NULL);

    uv_run(&m.loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&m.loop);
    if (rv != 0) {
        log_warn("loop closed with handles still open: %s", uv_strerror(rv));
        return 1;
    }
    log_info("stopped");
    return 0;
}
