/*
 * ringmqctl: command-line client of a node's internal RPC.
 *
 * Shows group status and digests (tests compare replicas with `digest`), and
 * runs single cache operations against a group, following NOT_LEADER hints.
 * One request per invocation, through rpc_client_call_sync().
 *
 * Exit codes: 0 success; 1 the operation ran but had a negative outcome
 * (NOT_STORED, EXISTS, NOT_FOUND / miss); 2 error (connection, timeout,
 * non-OK RPC code, error status); 64 usage.
 *
 * This file is the top of tools/: the command line (usage, options) and the
 * command table in main(). Each command group is a module of its own that
 * this file calls and that never calls back: ctl_status (status, digest),
 * ctl_cache (single cache ops), ctl_load (load, verify), ctl_cluster (owner,
 * cluster), ctl_member (member), ctl_shard (shard set), ctl_plan (shard
 * add|remove|weight, plan), ctl_queue (queue where|find|move|abort). They and
 * this file share ctl (connection, RPC calls, exit codes) and ctl_map (the
 * --cluster map).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "sm/cache_op.h"
#include "tools/ctl.h"
#include "tools/ctl_cache.h"
#include "tools/ctl_cluster.h"
#include "tools/ctl_live.h"
#include "tools/ctl_load.h"
#include "tools/ctl_map.h"
#include "tools/ctl_member.h"
#include "tools/ctl_plan.h"
#include "tools/ctl_queue.h"
#include "tools/ctl_shard.h"
#include "tools/ctl_status.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: ringmqctl [options] COMMAND [ARGS]\n"
        "\n"
        "options (anywhere on the line):\n"
        "  --node HOST:PORT[,HOST:PORT...]\n"
        "                     node RPC address(es) (default $RINGMQ_NODE or\n"
        "                     127.0.0.1:%d); status/digest ask the first;\n"
        "                     cache ops try the next on connection failure\n"
        "  --timeout MS       per request, also the connect timeout\n"
        "                     (default 5000)\n"
        "  --group NAME       group for cache ops (default \"cache\"); filter\n"
        "                     for status/digest (default all)\n"
        "  --epoch N          cluster map epoch sent with cache ops (default:\n"
        "                     the --cluster map's, else 0 = unchecked)\n"
        "  --cluster FILE     cluster map: cache ops go to the shard that\n"
        "                     owns the key (its members unless --node);\n"
        "                     enables the owner and cluster commands\n"
        "  --flags N          client flags for set/add/replace/cas\n"
        "  --exptime N        expiry for set/add/replace/cas (memcached "
        "rules)\n"
        "  --weight W         shard add: the new shard's weight (default 1)\n"
        "  --members LIST     shard add: ID@RAFT@RPC[,ID@RAFT@RPC...]\n"
        "  --rate BYTES       shard add|remove|weight, plan resume, queue\n"
        "                     move: bytes per second copied between shards\n"
        "                     (64m, 1g; 0 = no limit; default 32m)\n"
        "  -v, --verbose      log RPC details to stderr\n"
        "  -h, --help         this text\n"
        "\n"
        "commands:\n"
        "  status [--format table|kv]\n"
        "                     every group on the node: name, id, state,\n"
        "                     leader and its RPC address, term, commit/\n"
        "                     applied/last index, snapshot index, items,\n"
        "                     digest. kv: one line per group of\n"
        "                     field=value (GroupStatus field names)\n"
        "  digest             \"<group> <last_applied> <digest hex>\" lines\n"
        "  get KEY | gets KEY prints \"HIT flags=F cas=C bytes=N\" and the\n"
        "                     value on the next line, or NOT_FOUND\n"
        "  set|add|replace|append|prepend KEY VALUE\n"
        "  cas KEY VALUE CAS\n"
        "  incr|decr KEY N    prints \"NUMBER <value>\"\n"
        "  delete KEY\n"
        "  touch KEY EXPTIME | gat KEY EXPTIME\n"
        "  flush_all [DELAY]\n"
        "  cache OP ARGS...   same as the per-op commands\n"
        "                     A VALUE of \"-\" is read from standard input.\n"
        "  load --count N --acked FILE [--prefix P] [--value-size B]\n"
        "       [--concurrency C] [--seconds S]\n"
        "                     set keys P0..P<N-1> (default prefix \"key\", "
        "32-\n"
        "                     byte values derived from the key, 16 in flight,\n"
        "                     300 s limit), following the leader across the\n"
        "                     --node list and retrying unknown outcomes;\n"
        "                     each STORED key is appended to FILE as\n"
        "                     \"<key> <size>\"\n"
        "  owner KEY...       (--cluster) the shard owning KEY: name, weight,\n"
        "                     key hash, members; \"owner -\" reads keys from\n"
        "                     stdin and prints \"<key> <shard>\" lines\n"
        "  cluster            (--cluster) every shard replica of the map:\n"
        "                     state, leader, term, applied index, lag behind\n"
        "                     the shard's newest log index, digest\n"
        "  map                (--cluster) the cluster map the meta group\n"
        "                     holds: epoch, shards (weight, state,\n"
        "                     members), meta's members, routers\n"
        "  member add SHARD ID | member remove SHARD ID\n"
        "                     (--cluster) make map member ID (which has\n"
        "                     join: true and runs) a voter of every group\n"
        "                     of SHARD, or remove it, and record it in the\n"
        "                     cluster map (routers follow it); asks each\n"
        "                     group's leader until done or --seconds S\n"
        "                     (300)\n"
        "  member list SHARD  (--cluster) the members each group of SHARD\n"
        "                     has: id, role, leader, raft address\n"
        "  shard set SHARD memory-limit SIZE | item-size-max SIZE\n"
        "                     (--cluster) change SHARD's settings in its log\n"
        "                     (SIZE: 1048576, 64k, 512m, 1g); asks the\n"
        "                     leader until done or --seconds S (300)\n"
        "  shard add NAME [--weight W] --members ID@RAFT@RPC[,...]\n"
        "                     (--cluster) add shard NAME (joining) to the\n"
        "                     cluster map, wait for its nodes' leader, and\n"
        "                     move its share of the keys to it; returns when\n"
        "                     the new ring is in effect (run it again after\n"
        "                     an interruption: it resumes)\n"
        "  shard remove NAME  (--cluster) move every key of NAME to the other\n"
        "                     shards, then drop it from the map\n"
        "  shard weight NAME W\n"
        "                     (--cluster) reweight NAME, moving the keys that\n"
        "                     change owner\n"
        "                     shard add|remove|weight pace key copies with\n"
        "                     --rate BYTES_PER_S (default 32 MiB/s)\n"
        "  queue where QUEUE  (--cluster) the shard that holds QUEUE (vhost\n"
        "                     /): its queue directory entry, or the queue\n"
        "                     ring's shard for a queue without one\n"
        "  queue find QUEUE   (--cluster) ask every shard whether it holds\n"
        "                     QUEUE: \"SHARD holds gen G ready N consumers\n"
        "                     C\", \"SHARD moving\", \"SHARD moved-away\" or\n"
        "                     \"SHARD none\" (a passive declare at each\n"
        "                     shard's queue group)\n"
        "  queue move QUEUE SHARD\n"
        "                     (--cluster) move QUEUE with its messages,\n"
        "                     consumers and publishers' dedup state to\n"
        "                     SHARD under a short fence (unacked messages\n"
        "                     are redelivered there); run it again after an\n"
        "                     interruption: it resumes\n"
        "  queue abort QUEUE  (--cluster) take back a move whose copy is\n"
        "                     not complete yet: QUEUE stays where it was\n"
        "  plan status        (--cluster) the plan that runs: target ring,\n"
        "                     each move's state at both shards\n"
        "  plan pause | plan resume\n"
        "                     (--cluster) pause the plan (a running shard\n"
        "                     command stops, exit 1), or resume and run it\n"
        "  plan abort         (--cluster) abort the moves not handed off and\n"
        "                     drop the plan; handed-off moves stay\n"
        "  verify --acked FILE [--concurrency C] [--seconds S]\n"
        "                     read back every key of FILE and check its\n"
        "                     value; prints MISSING/WRONG lines and a summary\n"
        "\n"
        "NOT_LEADER replies are followed to the hinted leader (cache ops: at\n"
        "most %d times). Exit status: 0 ok, 1 negative outcome (NOT_STORED,\n"
        "EXISTS, NOT_FOUND; verify: missing or wrong values), 2 error,\n"
        "64 usage.\n",
        RPC_PORT_DEFAULT, MAX_REDIRECTS);
}

/* Returns 0, 1 for --help, -1 on a usage error (reported). */
static int parse_args(int argc, char **argv, struct opts *o)
{
    uint64_t u;
    int i;

    o->node = getenv("RINGMQ_NODE");
    o->node_set = o->node != NULL && *o->node != '\0';
    o->timeout_ms = 5000;
    o->group = "cache";
    o->prefix = "key";
    o->value_size = 32;
    o->concurrency = 16;
    o->seconds = 300;
    o->rate = CTL_PLAN_RATE_DEFAULT;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            return 1;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o->verbose = true;
            continue;
        } else if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (o->n_args == MAX_ARGS) {
                    goto too_many;
                }
                o->args[o->n_args++] = argv[i];
            }
            break;
        } else if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (o->n_args == MAX_ARGS) {
                goto too_many;
            }
            o->args[o->n_args++] = a;
            continue;
        }
        /* options with a value */
        if (v == NULL) {
            fprintf(stderr, "ringmqctl: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--node") == 0) {
            o->node = v;
            o->node_set = true;
        } else if (strcmp(a, "--cluster") == 0) {
            o->cluster = v;
        } else if (strcmp(a, "--epoch") == 0) {
            if (parse_num_u64(v, &o->epoch) != 0) {
                goto bad_value;
            }
            o->epoch_set = true;
        } else if (strcmp(a, "--timeout") == 0) {
            if (parse_num_u64(v, &u) != 0 || u == 0 || u > 3600000) {
                goto bad_value;
            }
            o->timeout_ms = (unsigned)u;
        } else if (strcmp(a, "--group") == 0) {
            o->group = v;
            o->group_set = true;
        } else if (strcmp(a, "--flags") == 0) {
            if (parse_num_u64(v, &u) != 0 || u > UINT32_MAX) {
                goto bad_value;
            }
            o->flags = (uint32_t)u;
        } else if (strcmp(a, "--exptime") == 0) {
            if (ctl_parse_i64(v, &o->exptime) != 0) {
                goto bad_value;
            }
        } else if (strcmp(a, "--cas") == 0) {
            if (parse_num_u64(v, &o->cas) != 0) {
                goto bad_value;
            }
        } else if (strcmp(a, "--format") == 0) {
            if (strcmp(v, "kv") == 0) {
                o->kv = true;
            } else if (strcmp(v, "table") == 0) {
                o->kv = false;
            } else {
                goto bad_value;
            }
        } else if (strcmp(a, "--count") == 0) {
            if (parse_num_u64(v, &o->count) != 0) {
                goto bad_value;
            }
        } else if (strcmp(a, "--prefix") == 0) {
            o->prefix = v;
        } else if (strcmp(a, "--value-size") == 0) {
            if (parse_num_u64(v, &o->value_size) != 0 ||
                o->value_size > CACHE_ITEM_SIZE_MAX_DEFAULT) {
                goto bad_value;
            }
        } else if (strcmp(a, "--concurrency") == 0) {
            if (parse_num_u64(v, &u) != 0 || u == 0 || u > 4096) {
                goto bad_value;
            }
            o->concurrency = (unsigned)u;
        } else if (strcmp(a, "--acked") == 0) {
            o->acked = v;
        } else if (strcmp(a, "--weight") == 0) {
            if (parse_num_u64(v, &u) != 0 || u == 0 ||
                u > CLUSTER_WEIGHT_MAX) {
                goto bad_value;
            }
            o->weight = (unsigned)u;
        } else if (strcmp(a, "--members") == 0) {
            o->members = v;
        } else if (strcmp(a, "--rate") == 0) {
            if (parse_num_size(v, &o->rate) != 0) {
                goto bad_value;
            }
        } else if (strcmp(a, "--seconds") == 0) {
            if (parse_num_u64(v, &u) != 0 || u > 86400) {
                goto bad_value;
            }
            o->seconds = (unsigned)u;
        } else {
            fprintf(stderr, "ringmqctl: unknown option %s\n", a);
            return -1;
        }
        continue;
    bad_value:
        fprintf(stderr, "ringmqctl: bad value for %s: '%s'\n", a, v);
        return -1;
    }
    if (o->node == NULL || *o->node == '\0') {
        static char def[32];
        snprintf(def, sizeof(def), "127.0.0.1:%d", RPC_PORT_DEFAULT);
        o->node = def;
    }
    o->node_list = xstrdup(o->node);
    for (char *save = NULL, *t = strtok_r(o->node_list, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (o->n_addrs == MAX_NODES) {
            fprintf(stderr, "ringmqctl: at most %d nodes\n", MAX_NODES);
            return -1;
        }
        o->addrs[o->n_addrs++] = t;
    }
    if (o->n_addrs == 0) {
        fprintf(stderr, "ringmqctl: empty --node\n");
        return -1;
    }
    return 0;

too_many:
    fprintf(stderr, "ringmqctl: too many arguments\n");
    return -1;
}

/* With a map, a cache op on KEY goes to KEY's shard, and to its members
 * unless --node named nodes. */
static void route_by_map(const struct ctl_map *m, struct opts *o)
{
    const struct cluster_shard *s;
    const char *key;
    unsigned i;

    if (o->n_args < 2) {
        return;
    }
    key = o->args[strcmp(o->args[0], "cache") == 0 ? 2 : 1];
    if (strcmp(o->args[0], "cache") == 0 && o->n_args < 3) {
        return;
    }
    s = ctl_map_owner(m, key);
    if (!o->group_set) {
        o->group = s->name;
    }
    if (!o->epoch_set) {
        o->epoch = m->map.epoch;
    }
    if (!o->node_set) {
        o->n_addrs = 0;
        for (i = 0; i < s->n_members && i < MAX_NODES; i++) {
            o->addrs[o->n_addrs++] = s->members[i].rpc;
        }
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    struct ctl ctl;
    struct ctl_map *map = NULL;
    const char *cmd;
    int rv;

    memset(&o, 0, sizeof(o));
    rv = parse_args(argc, argv, &o);
    if (rv != 0) {
        usage(rv > 0 ? stdout : stderr);
        return rv > 0 ? 0 : EXIT_USAGE;
    }
    if (o.n_args == 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    log_init("ringmqctl", o.verbose ? LOG_DEBUG : LOG_ERROR);
    cmd = o.args[0];
    if (o.cluster != NULL) {
        map = ctl_map_load(o.cluster);
        if (map == NULL) {
            free(o.node_list);
            return EXIT_USAGE;
        }
    } else if (strcmp(cmd, "owner") == 0 || strcmp(cmd, "cluster") == 0 ||
               strcmp(cmd, "member") == 0 || strcmp(cmd, "shard") == 0 ||
               strcmp(cmd, "map") == 0 || strcmp(cmd, "plan") == 0 ||
               strcmp(cmd, "queue") == 0) {
        fprintf(stderr, "ringmqctl: %s needs --cluster FILE\n", cmd);
        free(o.node_list);
        return EXIT_USAGE;
    }
    if (map != NULL && strcmp(cmd, "owner") == 0) {
        rv = cmd_owner(map, &o);
        ctl_map_free(map);
        free(o.node_list);
        return rv;
    }
    if (map != NULL && strcmp(cmd, "status") != 0 &&
        strcmp(cmd, "digest") != 0 && strcmp(cmd, "cluster") != 0 &&
        strcmp(cmd, "member") != 0 && strcmp(cmd, "shard") != 0 &&
        strcmp(cmd, "map") != 0 && strcmp(cmd, "plan") != 0 &&
        strcmp(cmd, "queue") != 0 && strcmp(cmd, "load") != 0 &&
        strcmp(cmd, "verify") != 0) {
        route_by_map(map, &o);
    }
    memset(&ctl, 0, sizeof(ctl));
    ctl.o = &o;
    uv_loop_init(&ctl.loop);
    ctl.addr_index = 1;
    if (ctl_connect(&ctl, o.addrs[0]) != 0) {
        rv = EXIT_USAGE;
        goto out;
    }
    if (strcmp(cmd, "cluster") == 0) {
        rv = cmd_cluster(&ctl, map);
    } else if (strcmp(cmd, "map") == 0) {
        rv = o.n_args == 1 ? cmd_map(&ctl, &map->map) : EXIT_USAGE;
    } else if (strcmp(cmd, "member") == 0) {
        rv = cmd_member(&ctl, map);
    } else if (strcmp(cmd, "shard") == 0 && o.n_args > 1 &&
               (strcmp(o.args[1], "add") == 0 ||
                strcmp(o.args[1], "remove") == 0 ||
                strcmp(o.args[1], "weight") == 0)) {
        rv = cmd_shard_plan(&ctl, map);
    } else if (strcmp(cmd, "shard") == 0) {
        rv = cmd_shard(&ctl, map);
    } else if (strcmp(cmd, "plan") == 0) {
        rv = cmd_plan(&ctl, map);
    } else if (strcmp(cmd, "queue") == 0) {
        rv = cmd_queue(&ctl, map);
    } else if (strcmp(cmd, "status") == 0) {
        rv = cmd_status(&ctl, false);
    } else if (strcmp(cmd, "digest") == 0) {
        rv = cmd_status(&ctl, true);
    } else if (strcmp(cmd, "load") == 0 || strcmp(cmd, "verify") == 0) {
        rv = o.n_args == 1 ? cmd_load(&ctl, cmd[0] == 'v') : EXIT_USAGE;
    } else if (strcmp(cmd, "cache") == 0) {
        if (o.n_args < 2) {
            fprintf(stderr, "ringmqctl: cache needs an op (try --help)\n");
            rv = EXIT_USAGE;
        } else {
            rv = cmd_cache(&ctl, o.args + 1, o.n_args - 1);
        }
    } else {
        rv = cmd_cache(&ctl, o.args, o.n_args);
    }
out:
    if (ctl.client) {
        rpc_client_close(ctl.client, NULL, NULL);
    }
    uv_run(&ctl.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctl.loop);
    ctl_map_free(map);
    free(o.node_list);
    fflush(stdout);
    return rv;
}
