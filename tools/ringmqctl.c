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
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "sm/cache_op.h"
#include "proto/cluster_map.h"
#include "common/log.h"
#include "common/ring.h"
#include "proto/cache_pb.h"
#include "proto/rpc_frame.h"
#include "rpc/rpc_client.h"
#include "tools/ctl.h"

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
        "  member add SHARD ID | member remove SHARD ID\n"
        "                     (--cluster) make map member ID (which has\n"
        "                     join: true and runs) a voter of every group\n"
        "                     of SHARD, or remove it; asks each group's\n"
        "                     leader until done or --seconds S (300)\n"
        "  member list SHARD  (--cluster) the members each group of SHARD\n"
        "                     has: id, role, leader, raft address\n"
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

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;

    if (s == NULL || *s == '\0' || *s == '-') {
        return -1;
    }
    errno = 0;
    *out = strtoull(s, &end, 10);
    return (errno != 0 || *end != '\0') ? -1 : 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;

    if (s == NULL || *s == '\0') {
        return -1;
    }
    errno = 0;
    *out = strtoll(s, &end, 10);
    return (errno != 0 || *end != '\0') ? -1 : 0;
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
            if (parse_u64(v, &o->epoch) != 0) {
                goto bad_value;
            }
            o->epoch_set = true;
        } else if (strcmp(a, "--timeout") == 0) {
            if (parse_u64(v, &u) != 0 || u == 0 || u > 3600000) {
                goto bad_value;
            }
            o->timeout_ms = (unsigned)u;
        } else if (strcmp(a, "--group") == 0) {
            o->group = v;
            o->group_set = true;
        } else if (strcmp(a, "--flags") == 0) {
            if (parse_u64(v, &u) != 0 || u > UINT32_MAX) {
                goto bad_value;
            }
            o->flags = (uint32_t)u;
        } else if (strcmp(a, "--exptime") == 0) {
            if (parse_i64(v, &o->exptime) != 0) {
                goto bad_value;
            }
        } else if (strcmp(a, "--cas") == 0) {
            if (parse_u64(v, &o->cas) != 0) {
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
            if (parse_u64(v, &o->count) != 0) {
                goto bad_value;
            }
        } else if (strcmp(a, "--prefix") == 0) {
            o->prefix = v;
        } else if (strcmp(a, "--value-size") == 0) {
            if (parse_u64(v, &o->value_size) != 0 ||
                o->value_size > CACHE_ITEM_SIZE_MAX_DEFAULT) {
                goto bad_value;
            }
        } else if (strcmp(a, "--concurrency") == 0) {
            if (parse_u64(v, &u) != 0 || u == 0 || u > 4096) {
                goto bad_value;
            }
            o->concurrency = (unsigned)u;
        } else if (strcmp(a, "--acked") == 0) {
            o->acked = v;
        } else if (strcmp(a, "--seconds") == 0) {
            if (parse_u64(v, &u) != 0 || u > 86400) {
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

/* ---- transport --------------------------------------------------------- */

int ctl_connect(struct ctl *ctl, const char *address)
{
    struct rpc_client_config cfg = {0};
    char err[256];

    if (ctl->client) {
        rpc_client_close(ctl->client, NULL, NULL);
        ctl->client = NULL;
    }
    cfg.address = address;
    cfg.call_timeout_ms = ctl->o->timeout_ms;
    cfg.connect_timeout_ms = ctl->o->timeout_ms;
    ctl->client = rpc_client_new(&ctl->loop, &cfg, err, sizeof(err));
    if (ctl->client == NULL) {
        fprintf(stderr, "ringmqctl: %s\n", err);
        return -1;
    }
    return 0;
}

static bool is_not_leader(const Ringmq__RpcResponse *r)
{
    return r->code == RINGMQ__RPC_CODE__RPC_NOT_LEADER ||
           (r->code == RINGMQ__RPC_CODE__RPC_OK &&
            r->body_case == RINGMQ__RPC_RESPONSE__BODY_CACHE &&
            r->cache->status == CACHE_NOT_LEADER);
}

/*
 * Sends @req, following NOT_LEADER hints up to MAX_REDIRECTS times.
 * Returns 0 with *resp (owned) or -1 after printing the failure.
 */
static int ctl_call(struct ctl *ctl,
                    const Ringmq__RpcRequest *req,
                    bool try_others,
                    Ringmq__RpcResponse **resp)
{
    int redirects = 0;
    char next[300];
    int rv;

    for (;;) {
        rv = rpc_client_call_sync(ctl->client, req, 0, resp);
        if (rv != 0) {
            fprintf(stderr, "ringmqctl: %s: %s\n",
                    rpc_client_address(ctl->client), uv_strerror(rv));
            if (!try_others || ctl->addr_index >= ctl->o->n_addrs ||
                ctl_connect(ctl, ctl->o->addrs[ctl->addr_index++]) != 0) {
                return -1;
            }
            continue;
        }
        if (!is_not_leader(*resp) || redirects == MAX_REDIRECTS ||
            (*resp)->leader_rpc == NULL || (*resp)->leader_rpc[0] == '\0' ||
            strcmp((*resp)->leader_rpc, rpc_client_address(ctl->client)) == 0) {
            return 0;
        }
        snprintf(next, sizeof(next), "%s", (*resp)->leader_rpc);
        fprintf(stderr, "ringmqctl: %s is not the leader, trying %s\n",
                rpc_client_address(ctl->client), next);
        ringmq__rpc_response__free_unpacked(*resp, NULL);
        *resp = NULL;
        redirects++;
        if (ctl_connect(ctl, next) != 0) {
            return -1;
        }
    }
}

static const char *code_name(Ringmq__RpcCode code)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &ringmq__rpc_code__descriptor, (int)code);

    return v ? v->name : "?";
}

/* Non-OK RPC code: report and return EXIT_ERROR; 0 if OK. */
int check_code(const Ringmq__RpcResponse *r)
{
    if (r->code == RINGMQ__RPC_CODE__RPC_OK) {
        return 0;
    }
    fprintf(stderr, "ringmqctl: %s%s%s", code_name(r->code),
            r->error && r->error[0] ? ": " : "", r->error ? r->error : "");
    if (r->code == RINGMQ__RPC_CODE__RPC_NOT_LEADER) {
        fprintf(stderr, " (leader %" PRIu64 " %s)", r->leader_id,
                r->leader_rpc && r->leader_rpc[0] ? r->leader_rpc : "unknown");
    }
    fprintf(stderr, "\n");
    return EXIT_ERROR;
}

/* ---- commands ---------------------------------------------------------- */

static int cmd_status(struct ctl *ctl, bool digest_only)
{
    const struct opts *o = ctl->o;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__StatusRequest sreq = RINGMQ__STATUS_REQUEST__INIT;
    Ringmq__RpcResponse *resp;
    const Ringmq__StatusReply *st;
    size_t i;
    int rv;
    bool found = false;

    if (o->n_args != 1) {
        fprintf(stderr, "ringmqctl: %s takes no arguments\n", o->args[0]);
        return EXIT_USAGE;
    }
    sreq.digest = true;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
    req.status = &sreq;
    if (ctl_call(ctl, &req, false, &resp) != 0) {
        return EXIT_ERROR;
    }
    rv = check_code(resp);
    if (rv != 0) {
        goto out;
    }
    if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_STATUS) {
        fprintf(stderr, "ringmqctl: reply without status\n");
        rv = EXIT_ERROR;
        goto out;
    }
    st = resp->status;
    if (!digest_only && !o->kv) {
        printf("node %" PRIu64 "\n", st->node_id);
        printf(
            "%-10s %4s %-9s %-5s %6s %-21s %6s %10s %10s %10s %10s %9s "
            "%-16s\n",
            "GROUP", "ID", "STATE", "READY", "LEADER", "LEADER_RPC", "TERM",
            "COMMIT", "APPLIED", "LAST", "SNAPSHOT", "ITEMS", "DIGEST");
    }
    for (i = 0; i < st->n_groups; i++) {
        const Ringmq__GroupStatus *g = st->groups[i];
        const char *state = g->state[0] ? g->state : "-";
        const char *lrpc = g->leader_rpc[0] ? g->leader_rpc : "-";

        if (o->group_set && strcmp(g->name, o->group) != 0) {
            continue;
        }
        found = true;
        if (digest_only) {
            printf("%s %" PRIu64 " %016" PRIx64 "\n", g->name, g->last_applied,
                   g->digest);
        } else if (o->kv) {
            /* keys are the GroupStatus field names (scripts parse this) */
            printf("node_id=%" PRIu64 " name=%s id=%" PRIu64
                   " state=%s ready=%s leader_id=%" PRIu64
                   " leader_rpc=%s term=%" PRIu64 " commit_index=%" PRIu64
                   " last_applied=%" PRIu64 " last_index=%" PRIu64
                   " snapshot_index=%" PRIu64 " items=%" PRIu64
                   " bytes=%" PRIu64 " digest=%016" PRIx64
                   " snapshots_taken=%" PRIu64 " snapshots_restored=%" PRIu64
                   " batches_proposed=%" PRIu64 " cmds_proposed=%" PRIu64 "\n",
                   st->node_id, g->name, g->id, state,
                   g->ready ? "true" : "false", g->leader_id, lrpc, g->term,
                   g->commit_index, g->last_applied, g->last_index,
                   g->snapshot_index, g->items, g->bytes, g->digest,
                   g->snapshots_taken, g->snapshots_restored,
                   g->batches_proposed, g->cmds_proposed);
        } else {
            printf("%-10s %4" PRIu64 " %-9s %-5s %6" PRIu64 " %-21s %6" PRIu64
                   " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64
                   " %9" PRIu64 " %016" PRIx64 "\n",
                   g->name, g->id, state, g->ready ? "yes" : "no", g->leader_id,
                   lrpc, g->term, g->commit_index, g->last_applied,
                   g->last_index, g->snapshot_index, g->items, g->digest);
        }
    }
    if (o->group_set && !found) {
        fprintf(stderr, "ringmqctl: no group '%s' on this node\n", o->group);
        rv = EXIT_ERROR;
    }
out:
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;
}

static const struct {
    const char *name;
    enum cache_op_type type;
    int nargs;  /* after the op name */
    bool value; /* args[1] is a value */
} op_table[] = {
    {"get", CACHE_OP_GET, 1, false},
    {"gets", CACHE_OP_GET, 1, false},
    {"set", CACHE_OP_SET, 2, true},
    {"add", CACHE_OP_ADD, 2, true},
    {"replace", CACHE_OP_REPLACE, 2, true},
    {"append", CACHE_OP_APPEND, 2, true},
    {"prepend", CACHE_OP_PREPEND, 2, true},
    {"cas", CACHE_OP_CAS, 3, true},
    {"incr", CACHE_OP_INCR, 2, false},
    {"decr", CACHE_OP_DECR, 2, false},
    {"delete", CACHE_OP_DELETE, 1, false},
    {"touch", CACHE_OP_TOUCH, 2, false},
    {"gat", CACHE_OP_GAT, 2, false},
    {"flush_all", CACHE_OP_FLUSH_ALL, -1, false}, /* 0 or 1 */
};

static int find_op(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(op_table) / sizeof(op_table[0]); i++) {
        if (strcmp(op_table[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void read_stdin(struct buf *b)
{
    char chunk[65536];
    size_t n;

    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
        buf_append(b, chunk, n);
    }
}

static int print_result(const Ringmq__CacheResult *pb)
{
    struct cache_result r;
    int rv = 0;

    if (cache_result_from_pb(pb, &r) != 0) {
        fprintf(stderr, "ringmqctl: unknown cache status %u\n", pb->status);
        return EXIT_ERROR;
    }
    switch (r.status) {
        case CACHE_HIT:
            printf("HIT flags=%" PRIu32 " cas=%" PRIu64 " bytes=%zu\n", r.flags,
                   r.cas, r.value_len);
            if (r.value_len) {
                fwrite(r.value, 1, r.value_len, stdout);
            }
            printf("\n");
            break;
        case CACHE_NUMBER:
            printf("NUMBER %" PRIu64 "\n", r.number);
            break;
        case CACHE_STORED:
        case CACHE_DELETED:
        case CACHE_TOUCHED:
        case CACHE_OK:
            printf("%s\n", cache_status_name(r.status));
            break;
        case CACHE_NOT_STORED:
        case CACHE_EXISTS:
        case CACHE_NOT_FOUND:
            printf("%s\n", cache_status_name(r.status));
            rv = EXIT_NEGATIVE;
            break;
        default:
            fprintf(stderr, "ringmqctl: %s\n", cache_status_name(r.status));
            rv = EXIT_ERROR;
            break;
    }
    cache_result_clear(&r);
    return rv;
}

/* args: OP ARGS... (the leading "cache" already stripped). */
static int cmd_cache(struct ctl *ctl, const char *const *args, int n)
{
    const struct opts *o = ctl->o;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp pb;
    Ringmq__RpcResponse *resp;
    struct cache_op op;
    struct buf value;
    uint64_t u;
    int i = find_op(args[0]);
    int rv;

    if (i < 0) {
        fprintf(stderr, "ringmqctl: unknown command '%s' (try --help)\n",
                args[0]);
        return EXIT_USAGE;
    }
    if (op_table[i].nargs >= 0 ? n - 1 != op_table[i].nargs : n - 1 > 1) {
        fprintf(stderr,
                "ringmqctl: wrong number of arguments for %s "
                "(try --help)\n",
                args[0]);
        return EXIT_USAGE;
    }
    memset(&op, 0, sizeof(op));
    buf_init(&value);
    op.type = op_table[i].type;
    if (op.type != CACHE_OP_FLUSH_ALL) {
        op.key = args[1];
        op.key_len = strlen(args[1]);
        if (!cache_key_valid(op.key, op.key_len)) {
            fprintf(stderr, "ringmqctl: invalid key\n");
            return EXIT_USAGE;
        }
    }
    op.flags = o->flags;
    op.exptime = o->exptime;
    op.cas = o->cas;
    if (op_table[i].value) {
        if (strcmp(args[2], "-") == 0) {
            read_stdin(&value);
            op.value = value.data;
            op.value_len = value.len;
        } else {
            op.value = args[2];
            op.value_len = strlen(args[2]);
        }
    }
    switch (op.type) {
        case CACHE_OP_CAS:
            if (parse_u64(args[3], &op.cas) != 0) {
                goto bad_number;
            }
            break;
        case CACHE_OP_INCR:
        case CACHE_OP_DECR:
            if (parse_u64(args[2], &op.delta) != 0) {
                goto bad_number;
            }
            break;
        case CACHE_OP_TOUCH:
        case CACHE_OP_GAT:
            if (parse_i64(args[2], &op.exptime) != 0) {
                goto bad_number;
            }
            break;
        case CACHE_OP_FLUSH_ALL:
            if (n == 2) {
                if (parse_u64(args[1], &u) != 0 || u > INT64_MAX) {
                    goto bad_number;
                }
                op.exptime = (int64_t)u;
            }
            break;
        default:
            break;
    }
    cache_op_to_pb(&op, &pb);
    req.group = (char *)o->group;
    req.epoch = o->epoch;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    if (ctl_call(ctl, &req, true, &resp) != 0) {
        buf_free(&value);
        return EXIT_ERROR;
    }
    buf_free(&value);
    rv = check_code(resp);
    if (rv == 0) {
        if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE) {
            fprintf(stderr, "ringmqctl: reply without cache result\n");
            rv = EXIT_ERROR;
        } else {
            rv = print_result(resp->cache);
        }
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;

bad_number:
    buf_free(&value);
    fprintf(stderr, "ringmqctl: bad number for %s\n", args[0]);
    return EXIT_USAGE;
}

/* ---- load / verify ----------------------------------------------------- */

/*
 * Pipelined writes (load) or reads (verify) of many keys, keeping
 * --concurrency calls in flight and following the leader across the --node
 * list: NOT_LEADER hints switch the target; connection failures, timeouts
 * and UNAVAILABLE (no leader yet, outcome unknown) move on to the next node
 * and retry the key after a short pause. A set of the same key and value is
 * idempotent, so retrying a write whose outcome is unknown is safe. Only
 * writes answered STORED go to the --acked file, one "<key> <size>" line
 * each, flushed at once (tests read it while the load runs).
 */

#define RETRY_MS 50

struct job {
    struct engine *e;
    uint64_t index;
    char key[CACHE_KEY_MAX + 1];
    size_t size;
    struct job *next; /* retry list */
};

struct engine {
    uv_loop_t *loop;
    const struct opts *o;
    bool verify;
    struct rpc_client *clients[MAX_NODES];
    char addrs[MAX_NODES][300];
    int n_clients;
    int target;
    uv_timer_t retry_timer;
    struct job *retry; /* jobs waiting for the retry timer */
    uint64_t next;     /* next key index to start */
    uint64_t total;
    unsigned inflight; /* jobs started and not finished */
    uint64_t deadline; /* uv_now() ms */
    bool stop;         /* fatal error or deadline: start nothing more */
    FILE *acked;
    char **vkeys; /* verify: keys and sizes from the acked file */
    size_t *vsizes;
    struct buf value; /* scratch for the expected value */
    /* counters */
    uint64_t ok, missing, wrong, failed, retries, redirects;
};

static void make_value(const char *key, size_t size, struct buf *out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; key[i]; i++) {
        h = (h ^ (uint8_t)key[i]) * 16777619u;
    }
    buf_reset(out);
    buf_reserve(out, size);
    for (i = 0; i < size; i++) {
        out->data[i] = alphabet[(h + i) % 36];
    }
    out->len = size;
}

static int engine_add_client(struct engine *e, const char *address)
{
    struct rpc_client_config cfg = {0};
    char err[256];
    int i;

    for (i = 0; i < e->n_clients; i++) {
        if (strcmp(e->addrs[i], address) == 0 ||
            strcmp(rpc_client_address(e->clients[i]), address) == 0) {
            return i;
        }
    }
    if (e->n_clients == MAX_NODES) {
        return -1;
    }
    cfg.address = address;
    cfg.call_timeout_ms = e->o->timeout_ms;
    cfg.connect_timeout_ms = e->o->timeout_ms;
    cfg.backoff_max_ms = 500;
    e->clients[i] = rpc_client_new(e->loop, &cfg, err, sizeof(err));
    if (e->clients[i] == NULL) {
        fprintf(stderr, "ringmqctl: %s\n", err);
        return -1;
    }
    snprintf(e->addrs[i], sizeof(e->addrs[i]), "%s", address);
    e->n_clients++;
    return i;
}

static void job_send(struct job *j);
static void engine_pump(struct engine *e);

static void on_retry_timer(uv_timer_t *t)
{
    struct engine *e = t->data;
    struct job *list = e->retry;
    struct job *next;

    e->retry = NULL;
    for (; list; list = next) {
        next = list->next;
        job_send(list);
    }
}

static void job_finish(struct job *j)
{
    struct engine *e = j->e;

    e->inflight--;
    free(j);
    engine_pump(e);
}

static void job_retry(struct job *j, bool rotate, int target_used)
{
    struct engine *e = j->e;

    e->retries++;
    if (rotate && target_used == e->target) {
        e->target = (e->target + 1) % e->n_clients;
    }
    j->next = e->retry;
    e->retry = j;
    if (!uv_is_active((uv_handle_t *)&e->retry_timer)) {
        uv_timer_start(&e->retry_timer, on_retry_timer, RETRY_MS, 0);
    }
}

struct job_call {
    struct job *j;
    int target;
};

static void on_job_done(void *data, int status, const Ringmq__RpcResponse *r)
{
    struct job_call *jc = data;
    struct job *j = jc->j;
    struct engine *e = j->e;
    int target = jc->target;
    int t;

    free(jc);
    if (status < 0 || r->code == RINGMQ__RPC_CODE__RPC_UNAVAILABLE) {
        if (e->o->verbose) {
            fprintf(stderr, "ringmqctl: %s: %s: %s\n", j->key, e->addrs[target],
                    status < 0 ? uv_strerror(status) : r->error);
        }
        job_retry(j, true, target);
        return;
    }
    if (is_not_leader(r)) {
        t = r->leader_rpc && r->leader_rpc[0]
                ? engine_add_client(e, r->leader_rpc)
                : -1;
        e->redirects++;
        if (t >= 0 && t != target) {
            e->target = t;
            e->retries++;
            job_send(j); /* straight to the hinted leader */
        } else {
            job_retry(j, true, target); /* no usable hint: wait, rotate */
        }
        return;
    }
    if (r->code != RINGMQ__RPC_CODE__RPC_OK ||
        r->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE) {
        fprintf(stderr, "ringmqctl: %s: %s: %s\n", j->key, code_name(r->code),
                r->error ? r->error : "");
        e->failed++;
        e->stop = true;
        job_finish(j);
        return;
    }
    if (!e->verify) {
        if (r->cache->status == CACHE_STORED) {
            e->ok++;
            fprintf(e->acked, "%s %zu\n", j->key, j->size);
            fflush(e->acked);
        } else {
            fprintf(stderr, "ringmqctl: %s: %s\n", j->key,
                    cache_status_name((enum cache_status)r->cache->status));
            e->failed++;
        }
    } else if (r->cache->status == CACHE_HIT) {
        make_value(j->key, j->size, &e->value);
        if (r->cache->value.len == j->size &&
            memcmp(r->cache->value.data, e->value.data, j->size) == 0) {
            e->ok++;
        } else {
            printf("WRONG %s (%zu bytes, expected %zu)\n", j->key,
                   r->cache->value.len, j->size);
            e->wrong++;
        }
    } else if (r->cache->status == CACHE_NOT_FOUND) {
        printf("MISSING %s\n", j->key);
        e->missing++;
    } else {
        fprintf(stderr, "ringmqctl: %s: %s\n", j->key,
                cache_status_name((enum cache_status)r->cache->status));
        e->failed++;
    }
    job_finish(j);
}

static void job_send(struct job *j)
{
    struct engine *e = j->e;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp pb;
    struct cache_op op;
    struct job_call *jc;
    int rv;

    if (e->stop || uv_now(e->loop) >= e->deadline) {
        e->stop = true;
        e->failed++;
        job_finish(j);
        return;
    }
    memset(&op, 0, sizeof(op));
    op.type = e->verify ? CACHE_OP_GET : CACHE_OP_SET;
    op.key = j->key;
    op.key_len = strlen(j->key);
    if (!e->verify) {
        make_value(j->key, j->size, &e->value);
        op.value = e->value.data;
        op.value_len = j->size;
    }
    cache_op_to_pb(&op, &pb);
    req.group = (char *)e->o->group;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    jc = xmalloc(sizeof(*jc));
    jc->j = j;
    jc->target = e->target;
    rv = rpc_client_call(e->clients[e->target], &req, 0, on_job_done, jc, NULL);
    if (rv != 0) {
        free(jc);
        fprintf(stderr, "ringmqctl: %s: %s\n", j->key, uv_strerror(rv));
        e->failed++;
        e->stop = true;
        job_finish(j);
    }
}

static void engine_pump(struct engine *e)
{
    struct job *j;

    while (!e->stop && e->next < e->total && e->inflight < e->o->concurrency) {
        j = xcalloc(1, sizeof(*j));
        j->e = e;
        j->index = e->next++;
        if (e->verify) {
            snprintf(j->key, sizeof(j->key), "%s", e->vkeys[j->index]);
            j->size = e->vsizes[j->index];
        } else {
            snprintf(j->key, sizeof(j->key), "%s%" PRIu64, e->o->prefix,
                     j->index);
            j->size = (size_t)e->o->value_size;
        }
        e->inflight++;
        job_send(j);
    }
}

static int read_acked(struct engine *e, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    size_t cap = 0;
    char key[CACHE_KEY_MAX + 1];
    unsigned long long size;
    int n;

    if (f == NULL) {
        fprintf(stderr, "ringmqctl: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        n = sscanf(line, "%250s %llu", key, &size);
        if (n < 1) {
            continue;
        }
        if (e->total == cap) {
            cap = cap ? cap * 2 : 1024;
            e->vkeys = xrealloc(e->vkeys, cap * sizeof(*e->vkeys));
            e->vsizes = xrealloc(e->vsizes, cap * sizeof(*e->vsizes));
        }
        e->vkeys[e->total] = xstrdup(key);
        e->vsizes[e->total] = n == 2 ? (size_t)size : e->o->value_size;
        e->total++;
    }
    fclose(f);
    return 0;
}

static int cmd_load(struct ctl *ctl, bool verify)
{
    const struct opts *o = ctl->o;
    struct engine e;
    uint64_t t0;
    double secs;
    size_t i;
    int rv = 0;

    memset(&e, 0, sizeof(e));
    e.loop = &ctl->loop;
    e.o = o;
    e.verify = verify;
    buf_init(&e.value);
    if (o->acked == NULL) {
        fprintf(stderr, "ringmqctl: %s needs --acked FILE\n", o->args[0]);
        return EXIT_USAGE;
    }
    if (verify) {
        if (read_acked(&e, o->acked) != 0) {
            return EXIT_ERROR;
        }
    } else {
        if (o->count == 0) {
            fprintf(stderr, "ringmqctl: load needs --count N\n");
            return EXIT_USAGE;
        }
        if (strlen(o->prefix) + 20 > CACHE_KEY_MAX) {
            fprintf(stderr, "ringmqctl: --prefix too long\n");
            return EXIT_USAGE;
        }
        e.total = o->count;
        e.acked = fopen(o->acked, "w");
        if (e.acked == NULL) {
            fprintf(stderr, "ringmqctl: %s: %s\n", o->acked, strerror(errno));
            return EXIT_ERROR;
        }
    }
    for (i = 0; i < (size_t)o->n_addrs; i++) {
        if (engine_add_client(&e, o->addrs[i]) < 0) {
            rv = EXIT_USAGE;
            goto out;
        }
    }
    uv_timer_init(e.loop, &e.retry_timer);
    e.retry_timer.data = &e;
    uv_update_time(e.loop);
    t0 = uv_now(e.loop);
    e.deadline = o->seconds ? t0 + (uint64_t)o->seconds * 1000 : UINT64_MAX;
    engine_pump(&e);
    while (e.inflight > 0) {
        uv_run(e.loop, UV_RUN_ONCE);
    }
    secs = (double)(uv_now(e.loop) - t0) / 1000.0;
    if (verify) {
        printf("verify: %" PRIu64 " keys, %" PRIu64 " ok, %" PRIu64
               " missing, %" PRIu64 " wrong, %" PRIu64 " errors, %" PRIu64
               " retries, %" PRIu64 " redirects, %.2fs\n",
               e.total, e.ok, e.missing, e.wrong, e.failed, e.retries,
               e.redirects, secs);
        rv = e.failed ? EXIT_ERROR : (e.missing || e.wrong) ? EXIT_NEGATIVE : 0;
    } else {
        printf("load: %" PRIu64 " writes, %" PRIu64 " acked, %" PRIu64
               " failed, %" PRIu64 " retries, %" PRIu64
               " redirects, %.2fs, %.0f ops/s\n",
               e.total, e.ok, e.total - e.ok, e.retries, e.redirects, secs,
               secs > 0 ? (double)e.ok / secs : 0.0);
        rv = e.ok == e.total ? 0 : EXIT_ERROR;
    }
    uv_close((uv_handle_t *)&e.retry_timer, NULL);
out:
    for (i = 0; i < (size_t)e.n_clients; i++) {
        rpc_client_close(e.clients[i], NULL, NULL);
    }
    uv_run(e.loop, UV_RUN_DEFAULT);
    if (e.acked) {
        fclose(e.acked);
    }
    for (i = 0; i < e.total && e.vkeys; i++) {
        free(e.vkeys[i]);
    }
    free(e.vkeys);
    free(e.vsizes);
    buf_free(&e.value);
    return rv;
}

/* ---- cluster map commands ---------------------------------------------- */

static struct ctl_map *map_load(const char *path)
{
    struct ctl_map *m = xcalloc(1, sizeof(*m));
    struct ring_node nodes[CLUSTER_MAX_SHARDS];
    char err[512];
    unsigned i;

    if (cluster_map_load(&m->map, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "ringmqctl: %s\n", err);
        goto err;
    }
    for (i = 0; i < m->map.n_shards; i++) {
        nodes[i].name = m->map.shards[i].name;
        nodes[i].weight = m->map.shards[i].weight;
    }
    m->ring = ring_new(nodes, m->map.n_shards, err, sizeof(err));
    if (m->ring == NULL) {
        fprintf(stderr, "ringmqctl: %s: %s\n", path, err);
        goto err;
    }
    return m;
err:
    free(m);
    return NULL;
}

static void map_free(struct ctl_map *m)
{
    if (m != NULL) {
        ring_free(m->ring);
        free(m);
    }
}

static const struct cluster_shard *map_owner(const struct ctl_map *m,
                                             const char *key)
{
    return &m->map.shards[ring_lookup(m->ring, key, strlen(key))];
}

static void print_owner(const struct ctl_map *m, const char *key)
{
    const struct cluster_shard *s = map_owner(m, key);
    unsigned i;

    printf("key=%s hash=%08x shard=%s weight=%u epoch=%" PRIu64 " members=",
           key, ring_hash(key, strlen(key)), s->name, s->weight, m->map.epoch);
    for (i = 0; i < s->n_members; i++) {
        printf("%s%" PRIu64 "@%s", i ? "," : "", s->members[i].id,
               s->members[i].rpc);
    }
    printf("\n");
}

/* owner KEY...; "owner -" reads one key a line from standard input and
 * prints "<key> <shard>" lines (for scripts checking many keys). */
static int cmd_owner(const struct ctl_map *m, const struct opts *o)
{
    int i;

    if (o->n_args < 2) {
        fprintf(stderr, "ringmqctl: owner needs a KEY (or - for stdin)\n");
        return EXIT_USAGE;
    }
    if (o->n_args == 2 && strcmp(o->args[1], "-") == 0) {
        char line[CACHE_KEY_MAX + 8];

        while (fgets(line, sizeof(line), stdin) != NULL) {
            line[strcspn(line, "\r\n")] = '\0';
            printf("%s %s\n", line, map_owner(m, line)->name);
        }
        return 0;
    }
    for (i = 1; i < o->n_args; i++) {
        print_owner(m, o->args[i]);
    }
    return 0;
}

/* One row per shard replica, from a status call to every node. */
static int cmd_cluster(struct ctl *ctl, const struct ctl_map *m)
{
    const struct cluster_map *map = &m->map;
    Ringmq__RpcResponse *replies[CLUSTER_MAX_SHARDS * CLUSTER_MAX_MEMBERS];
    const char *addrs[CLUSTER_MAX_SHARDS * CLUSTER_MAX_MEMBERS];
    unsigned n_addrs = 0;
    unsigned s, i, j, k;
    int rv = 0;

    /* distinct node addresses */
    for (s = 0; s < map->n_shards; s++) {
        for (i = 0; i < map->shards[s].n_members; i++) {
            const char *a = map->shards[s].members[i].rpc;
            for (j = 0; j < n_addrs && strcmp(addrs[j], a) != 0; j++) {
            }
            if (j == n_addrs) {
                addrs[n_addrs++] = a;
            }
        }
    }
    for (j = 0; j < n_addrs; j++) {
        Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
        Ringmq__StatusRequest sreq = RINGMQ__STATUS_REQUEST__INIT;

        sreq.digest = true; /* the table compares replicas */
        replies[j] = NULL;
        req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
        req.status = &sreq;
        if (ctl_connect(ctl, addrs[j]) != 0 ||
            rpc_client_call_sync(ctl->client, &req, 0, &replies[j]) != 0 ||
            replies[j]->body_case != RINGMQ__RPC_RESPONSE__BODY_STATUS) {
            if (replies[j] != NULL) {
                ringmq__rpc_response__free_unpacked(replies[j], NULL);
                replies[j] = NULL;
            }
            rv = EXIT_ERROR; /* a node down is worth an exit status */
        }
    }
    printf("epoch %" PRIu64 "\n", map->epoch);
    printf("%-10s %6s %4s %-21s %-9s %6s %6s %10s %8s %-16s\n", "SHARD",
           "WEIGHT", "NODE", "RPC", "STATE", "LEADER", "TERM", "APPLIED", "LAG",
           "DIGEST");
    for (s = 0; s < map->n_shards; s++) {
        const struct cluster_shard *sh = &map->shards[s];
        const Ringmq__GroupStatus *gs[CLUSTER_MAX_MEMBERS] = {0};
        uint64_t newest = 0;

        for (i = 0; i < sh->n_members; i++) {
            for (j = 0; j < n_addrs; j++) {
                if (strcmp(addrs[j], sh->members[i].rpc) != 0 ||
                    replies[j] == NULL) {
                    continue;
                }
                for (k = 0; k < replies[j]->status->n_groups; k++) {
                    if (strcmp(replies[j]->status->groups[k]->name, sh->name) ==
                        0) {
                        gs[i] = replies[j]->status->groups[k];
                    }
                }
            }
            if (gs[i] != NULL && gs[i]->last_index > newest) {
                newest = gs[i]->last_index;
            }
        }
        for (i = 0; i < sh->n_members; i++) {
            if (gs[i] == NULL) {
                printf("%-10s %6u %4" PRIu64 " %-21s %-9s\n", sh->name,
                       sh->weight, sh->members[i].id, sh->members[i].rpc,
                       "down");
                continue;
            }
            printf("%-10s %6u %4" PRIu64 " %-21s %-9s %6" PRIu64 " %6" PRIu64
                   " %10" PRIu64 " %8" PRIu64 " %016" PRIx64 "\n",
                   sh->name, sh->weight, sh->members[i].id, sh->members[i].rpc,
                   gs[i]->state, gs[i]->leader_id, gs[i]->term,
                   gs[i]->last_applied, newest - gs[i]->last_applied,
                   gs[i]->digest);
        }
    }
    for (j = 0; j < n_addrs; j++) {
        if (replies[j] != NULL) {
            ringmq__rpc_response__free_unpacked(replies[j], NULL);
        }
    }
    return rv;
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
    s = map_owner(m, key);
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
        map = map_load(o.cluster);
        if (map == NULL) {
            free(o.node_list);
            return EXIT_USAGE;
        }
    } else if (strcmp(cmd, "owner") == 0 || strcmp(cmd, "cluster") == 0 ||
               strcmp(cmd, "member") == 0) {
        fprintf(stderr, "ringmqctl: %s needs --cluster FILE\n", cmd);
        free(o.node_list);
        return EXIT_USAGE;
    }
    if (map != NULL && strcmp(cmd, "owner") == 0) {
        rv = cmd_owner(map, &o);
        map_free(map);
        free(o.node_list);
        return rv;
    }
    if (map != NULL && strcmp(cmd, "status") != 0 &&
        strcmp(cmd, "digest") != 0 && strcmp(cmd, "cluster") != 0 &&
        strcmp(cmd, "member") != 0 && strcmp(cmd, "load") != 0 &&
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
    } else if (strcmp(cmd, "member") == 0) {
        rv = cmd_member(&ctl, map);
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
    map_free(map);
    free(o.node_list);
    fflush(stdout);
    return rv;
}
