/* config: see config.h. */
#include "node/config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/parse_num.h"
#include "common/yamlu.h"

#include "common/buf.h"
#include "sm/cache_op.h"

#define DEFAULT_MEMORY_MB 64

void node_config_defaults(struct node_config *c)
{
    memset(c, 0, sizeof(*c));
    c->id = 1;
    snprintf(c->data_dir, sizeof(c->data_dir), "./ringmq-data");
    c->memory_limit = (uint64_t)DEFAULT_MEMORY_MB * 1024 * 1024;
    c->item_size_max = CACHE_ITEM_SIZE_MAX_DEFAULT;
    c->election_ms = 1000;
    c->heartbeat_ms = 100;
    c->snapshot_threshold = 8192;
    c->snapshot_trailing = 2048;
    c->incremental_snapshots = true;
    c->log_memory_mb = 256;
    c->log_level = LOG_INFO;
}

void node_config_usage(FILE *f)
{
    fputs(
        "Usage: ringmq-node [options]\n"
        "\n"
        "Runs a ringmq storage node: replicas of one or more Raft groups,\n"
        "each a memcached cache shard, served over internal RPC and, if\n"
        "asked, over the memcached text protocol.\n"
        "\n"
        "  --standalone           one node, one single-member group named\n"
        "                         'cache', memcached edge on by default\n"
        "  --config FILE          YAML file (docs/configuration.md); flags\n"
        "                         after it override it\n"
        "  --cluster FILE         cluster map (docs/cluster.md): this node\n"
        "                         runs every shard that lists its --id\n"
        "  --id N                 this node's Raft id, > 0 (default 1)\n"
        "  --data-dir DIR         data directory (default ./ringmq-data);\n"
        "                         each group lives in DIR/<group>\n"
        "  --memcached HOST:PORT  serve memcached here (standalone default\n"
        "                         127.0.0.1:11211; 'off' disables)\n"
        "  --rpc HOST:PORT        serve internal RPC here (default: off in\n"
        "                         standalone, required in a cluster)\n"
        "  --http HOST:PORT       serve /healthz and /metrics here (default\n"
        "                         off)\n"
        "  --amqp HOST:PORT       standalone: serve AMQP 0-9-1 here (default\n"
        "                         127.0.0.1:5672; 'off' disables)\n"
        "  --amqp-memory-limit N  block AMQP publishers while the process\n"
        "                         uses more memory; k/m/g suffix (default\n"
        "                         40% of RAM)\n"
        "  --amqp-disk-free-limit N  block AMQP publishers while the data\n"
        "                         disk has less free; k/m/g (default 50m)\n"
        "  --raft HOST:PORT       standalone: the Raft address of the single\n"
        "                         member (IPv4; default 127.0.0.1:0)\n"
        "  --group NAME           start a group definition (cluster mode)\n"
        "  --member ID@RAFT[@RPC] add a member to the last --group; RAFT is\n"
        "                         a.b.c.d:port or name:port, RPC its node's\n"
        "                         RPC\n"
        "  -m, --memory-limit MB  cache memory per group (default 64)\n"
        "  -I, --max-item-size N  largest value, bytes; k/m suffix (default\n"
        "                         1m)\n"
        "  --read-mode MODE       get/gets: leader (from the leader's state,\n"
        "                         default) or linearizable (through the\n"
        "                         log); docs/consistency.md\n"
        "  --rejoin               a group whose data was lost, this node\n"
        "                         having been removed from it (ringmqctl\n"
        "                         member remove), starts empty and waits to\n"
        "                         be added back; docs/raft.md\n"
        "  --election-ms MS       Raft election timeout (default 1000)\n"
        "  --heartbeat-ms MS      Raft heartbeat (default 100)\n"
        "  --snapshot-threshold N entries between snapshots (default 8192)\n"
        "  --snapshot-trailing N  entries kept after a snapshot (default "
        "2048)\n"
        "  --log-memory-mb MB     Raft log kept in memory per group, about\n"
        "                         (snapshots come sooner; default 256)\n"
        "  --snapshot-mode MODE   incremental (the default: cache shards\n"
        "                         write snapshots on the event loop in\n"
        "                         slices, other groups fork), fork\n"
        "                         (serialize in a child process) or inline\n"
        "                         (on the event loop, in one go)\n"
        "  --log-level LEVEL      debug, info, warn or error (default info)\n"
        "  -v, --verbose          same as --log-level debug\n"
        "  --version              print the version and exit\n"
        "  -h, --help             print this help and exit\n",
        f);
}

int node_config_split_addr(const char *addr, char *host, size_t hostlen,
                           int *port)
{
    const char *colon = strrchr(addr, ':');
    char *end;
    long p;
    size_t n;

    if (colon == NULL || colon == addr) {
        return -1;
    }
    n = (size_t)(colon - addr);
    if (addr[0] == '[' && colon[-1] == ']') { /* [v6]:port */
        addr++;
        n -= 2;
    }
    if (n + 1 > hostlen) {
        return -1;
    }
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || p < 0 ||
        p > 65535) {
        return -1;
    }
    memcpy(host, addr, n);
    host[n] = '\0';
    *port = (int)p;
    return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
    uint64_t v;
    if (parse_num_u64(s, &v) != 0 || v > 0xffffffffu) {
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int set_addr(char *dst, const char *v, char *err, size_t errlen,
                    const char *what)
{
    char host[NODE_ADDR_MAX];
    int port;

    if (strcmp(v, "off") == 0 || *v == '\0') {
        dst[0] = '\0';
        return 0;
    }
    if (strlen(v) >= NODE_ADDR_MAX ||
        node_config_split_addr(v, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "%s: '%s' is not HOST:PORT", what, v);
        return -1;
    }
    snprintf(dst, NODE_ADDR_MAX, "%s", v);
    return 0;
}

static int add_group(struct node_config *c, const char *name, char *err,
                     size_t errlen)
{
    struct node_group_config *g;

    if (c->n_groups == NODE_MAX_GROUPS) {
        snprintf(err, errlen, "too many groups (max %d)", NODE_MAX_GROUPS);
        return -1;
    }
    if (*name == '\0' || strlen(name) >= sizeof(g->name) ||
        strchr(name, '/') != NULL || name[0] == '.') {
        snprintf(err, errlen, "bad group name '%s'", name);
        return -1;
    }
    g = &c->groups[c->n_groups++];
    memset(g, 0, sizeof(*g));
    snprintf(g->name, sizeof(g->name), "%s", name);
    return 0;
}

static int add_member(struct node_config *c, uint64_t id, const char *raft,
                      const char *rpc, char *err, size_t errlen)
{
    struct node_group_config *g;
    struct node_member *m;

    if (c->n_groups == 0) {
        snprintf(err, errlen, "a member needs a group first");
        return -1;
    }
    g = &c->groups[c->n_groups - 1];
    if (g->n_members == RGROUP_MAX_MEMBERS) {
        snprintf(err, errlen, "group %s: too many members", g->name);
        return -1;
    }
    if (id == 0) {
        snprintf(err, errlen, "group %s: member ids must be > 0", g->name);
        return -1;
    }
    m = &g->members[g->n_members];
    m->id = id;
    if (set_addr(m->raft, raft, err, errlen, "member raft address") != 0 ||
        (rpc != NULL &&
         set_addr(m->rpc, rpc, err, errlen, "member rpc address") != 0)) {
        return -1;
    }
    g->n_members++;
    return 0;
}

/* ID@RAFT[@RPC] */
static int parse_member_arg(struct node_config *c, const char *arg, char *err,
                            size_t errlen)
{
    char tmp[3 * NODE_ADDR_MAX];
    char *raft;
    char *rpc;
    uint64_t id;

    snprintf(tmp, sizeof(tmp), "%s", arg);
    raft = strchr(tmp, '@');
    if (raft == NULL) {
        goto bad;
    }
    *raft++ = '\0';
    rpc = strchr(raft, '@');
    if (rpc != NULL) {
        *rpc++ = '\0';
    }
    if (parse_num_u64(tmp, &id) != 0) {
        goto bad;
    }
    return add_member(c, id, raft, rpc, err, errlen);
bad:
    snprintf(err, errlen, "--member '%s': expected ID@RAFT_ADDR[@RPC_ADDR]",
             arg);
    return -1;
}

static int set_log_level(struct node_config *c, const char *v, char *err,
                         size_t errlen)
{
    if (log_level_parse(v, &c->log_level) == 0) {
        return 0;
    }
    snprintf(err, errlen, "unknown log level '%s'", v);
    return -1;
}

/* One scalar setting by name, shared by YAML keys and flags. */
static int set_option(struct node_config *c, const char *key, const char *v,
                      char *err, size_t errlen)
{
    uint64_t n;

    if (strcmp(key, "id") == 0) {
        if (parse_num_u64(v, &c->id) != 0 || c->id == 0) {
            goto bad;
        }
    } else if (strcmp(key, "data_dir") == 0) {
        if (*v == '\0' || strlen(v) >= sizeof(c->data_dir)) {
            goto bad;
        }
        snprintf(c->data_dir, sizeof(c->data_dir), "%s", v);
    } else if (strcmp(key, "memcached") == 0) {
        return set_addr(c->memcached, v, err, errlen, key);
    } else if (strcmp(key, "rpc") == 0) {
        return set_addr(c->rpc, v, err, errlen, key);
    } else if (strcmp(key, "http") == 0) {
        return set_addr(c->http, v, err, errlen, key);
    } else if (strcmp(key, "amqp") == 0) {
        return set_addr(c->amqp, v, err, errlen, key);
    } else if (strcmp(key, "amqp_memory_limit") == 0) {
        if (parse_num_size(v, &c->amqp_memory_limit) != 0) {
            goto bad;
        }
    } else if (strcmp(key, "amqp_disk_free_limit") == 0) {
        if (parse_num_size(v, &c->amqp_disk_free_limit) != 0) {
            goto bad;
        }
    } else if (strcmp(key, "raft") == 0) {
        return set_addr(c->raft, v, err, errlen, key);
    } else if (strcmp(key, "cluster") == 0) {
        if (*v == '\0' || strlen(v) >= sizeof(c->cluster_path)) {
            goto bad;
        }
        snprintf(c->cluster_path, sizeof(c->cluster_path), "%s", v);
    } else if (strcmp(key, "standalone") == 0) {
        c->standalone = strcmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
                        strcmp(v, "yes") == 0;
    } else if (strcmp(key, "memory_limit_mb") == 0) {
        if (parse_num_u64(v, &n) != 0 || n == 0 || n > (1ull << 40)) {
            goto bad;
        }
        c->memory_limit = n * 1024 * 1024;
    } else if (strcmp(key, "item_size_max") == 0) {
        if (parse_num_size(v, &n) != 0 || n < 1024 || n > 128 * 1024 * 1024) {
            goto bad;
        }
        c->item_size_max = (uint32_t)n;
    } else if (strcmp(key, "log_memory_mb") == 0) {
        if (parse_uint(v, &c->log_memory_mb) != 0 || c->log_memory_mb < 1 ||
            c->log_memory_mb > 1024 * 1024) {
            goto bad;
        }
    } else if (strcmp(key, "snapshot_mode") == 0) {
        if (strcmp(v, "inline") == 0) {
            c->inline_snapshots = true;
            c->incremental_snapshots = false;
        } else if (strcmp(v, "fork") == 0) {
            c->inline_snapshots = false;
            c->incremental_snapshots = false;
        } else if (strcmp(v, "incremental") == 0) {
            c->inline_snapshots = false;
            c->incremental_snapshots = true;
        } else {
            snprintf(err, errlen,
                     "snapshot_mode '%s': expected incremental, fork or "
                     "inline",
                     v);
            return -1;
        }
    } else if (strcmp(key, "read_mode") == 0) {
        if (strcmp(v, "linearizable") == 0) {
            c->linearizable_reads = true;
        } else if (strcmp(v, "leader") == 0) {
            c->linearizable_reads = false;
        } else {
            snprintf(err, errlen,
                     "read_mode '%s': expected leader or linearizable", v);
            return -1;
        }
    } else if (strcmp(key, "election_ms") == 0) {
        if (parse_uint(v, &c->election_ms) != 0 || c->election_ms < 10) {
            goto bad;
        }
    } else if (strcmp(key, "heartbeat_ms") == 0) {
        if (parse_uint(v, &c->heartbeat_ms) != 0 || c->heartbeat_ms < 1) {
            goto bad;
        }
    } else if (strcmp(key, "snapshot_threshold") == 0) {
        if (parse_uint(v, &c->snapshot_threshold) != 0 ||
            c->snapshot_threshold < 1) {
            goto bad;
        }
    } else if (strcmp(key, "snapshot_trailing") == 0) {
        if (parse_uint(v, &c->snapshot_trailing) != 0) {
            goto bad;
        }
    } else if (strcmp(key, "log_level") == 0) {
        return set_log_level(c, v, err, errlen);
    } else {
        snprintf(err, errlen, "unknown setting '%s'", key);
        return -1;
    }
    return 0;
bad:
    snprintf(err, errlen, "bad value '%s' for %s", v, key);
    return -1;
}

/* ------------------------------ YAML file ------------------------------ */

static int load_members(struct node_config *c, yaml_document_t *doc,
                        yaml_node_t *seq, char *err, size_t errlen)
{
    yaml_node_item_t *it;

    if (seq->type != YAML_SEQUENCE_NODE) {
        snprintf(err, errlen, "members: expected a list");
        return -1;
    }
    for (it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top; it++) {
        yaml_node_t *m = yamlu_node(doc, *it);
        yaml_node_pair_t *p;
        const char *raft = NULL;
        const char *rpc = NULL;
        uint64_t id = 0;

        if (m == NULL || m->type != YAML_MAPPING_NODE) {
            snprintf(err, errlen, "members: each member is a mapping");
            return -1;
        }
        for (p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
             p++) {
            const char *k = yamlu_scalar(yamlu_node(doc, p->key));
            const char *v = yamlu_scalar(yamlu_node(doc, p->value));
            if (k == NULL || v == NULL) {
                snprintf(err, errlen, "members: keys and values are scalars");
                return -1;
            }
            if (strcmp(k, "id") == 0) {
                if (parse_num_u64(v, &id) != 0) {
                    snprintf(err, errlen, "members: bad id '%s'", v);
                    return -1;
                }
            } else if (strcmp(k, "raft") == 0) {
                raft = v;
            } else if (strcmp(k, "rpc") == 0) {
                rpc = v;
            } else {
                snprintf(err, errlen, "members: unknown key '%s'", k);
                return -1;
            }
        }
        if (raft == NULL) {
            snprintf(err, errlen, "members: member %" PRIu64 " has no raft",
                     id);
            return -1;
        }
        if (add_member(c, id, raft, rpc, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

static int load_groups(struct node_config *c, yaml_document_t *doc,
                       yaml_node_t *seq, char *err, size_t errlen)
{
    yaml_node_item_t *it;

    if (seq->type != YAML_SEQUENCE_NODE) {
        snprintf(err, errlen, "groups: expected a list");
        return -1;
    }
    c->n_groups = 0; /* the file's list replaces earlier ones */
    for (it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top; it++) {
        yaml_node_t *g = yamlu_node(doc, *it);
        yaml_node_t *members = NULL;
        const char *name = NULL;
        yaml_node_pair_t *p;

        if (g == NULL || g->type != YAML_MAPPING_NODE) {
            snprintf(err, errlen, "groups: each group is a mapping");
            return -1;
        }
        for (p = g->data.mapping.pairs.start; p < g->data.mapping.pairs.top;
             p++) {
            const char *k = yamlu_scalar(yamlu_node(doc, p->key));
            yaml_node_t *v = yamlu_node(doc, p->value);
            if (k != NULL && strcmp(k, "name") == 0 && yamlu_scalar(v)) {
                name = yamlu_scalar(v);
            } else if (k != NULL && strcmp(k, "members") == 0) {
                members = v;
            } else {
                snprintf(err, errlen, "groups: unknown key '%s'",
                         k ? k : "?");
                return -1;
            }
        }
        if (name == NULL || add_group(c, name, err, errlen) != 0) {
            if (name == NULL) {
                snprintf(err, errlen, "groups: a group has no name");
            }
            return -1;
        }
        if (members != NULL &&
            load_members(c, doc, members, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

int node_config_load(struct node_config *c, const char *path, char *err,
                     size_t errlen)
{
    yaml_document_t doc;
    yaml_node_t *root;
    yaml_node_pair_t *p;
    int rv = -1;
    char sub[256];

    if (yamlu_load(path, &doc, err, errlen) != 0) {
        return -1;
    }
    root = yaml_document_get_root_node(&doc);
    if (root == NULL) { /* empty file: nothing to change */
        rv = 0;
        goto out;
    }
    if (root->type != YAML_MAPPING_NODE) {
        snprintf(err, errlen, "config %s: top level must be a mapping", path);
        goto out;
    }
    for (p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *k = yamlu_scalar(yamlu_node(&doc, p->key));
        yaml_node_t *v = yamlu_node(&doc, p->value);

        if (k == NULL) {
            snprintf(err, errlen, "config %s: keys must be scalars", path);
            goto out;
        }
        if (strcmp(k, "groups") == 0) {
            if (load_groups(c, &doc, v, sub, sizeof(sub)) != 0) {
                snprintf(err, errlen, "config %s: %s", path, sub);
                goto out;
            }
        } else if (yamlu_scalar(v) == NULL) {
            snprintf(err, errlen, "config %s: %s must be a scalar", path, k);
            goto out;
        } else if (set_option(c, k, yamlu_scalar(v), sub, sizeof(sub)) != 0) {
            snprintf(err, errlen, "config %s: %s", path, sub);
            goto out;
        }
    }
    rv = 0;
out:
    yaml_document_delete(&doc);
    return rv;
}

/* ------------------------------- flags --------------------------------- */

enum {
    OPT_STANDALONE = 256,
    OPT_CONFIG,
    OPT_ID,
    OPT_DATA_DIR,
    OPT_MEMCACHED,
    OPT_RPC,
    OPT_RAFT,
    OPT_GROUP,
    OPT_MEMBER,
    OPT_ELECTION,
    OPT_HEARTBEAT,
    OPT_SNAP_THRESHOLD,
    OPT_SNAP_TRAILING,
    OPT_LOG_LEVEL,
    OPT_CLUSTER,
    OPT_HTTP,
    OPT_AMQP,
    OPT_AMQP_MEMORY,
    OPT_AMQP_DISK,
    OPT_SNAP_MODE,
    OPT_LOG_MEMORY,
    OPT_READ_MODE,
    OPT_REJOIN,
    OPT_VERSION
};

int node_config_parse_args(struct node_config *c, int argc, char **argv,
                           char *err, size_t errlen)
{
    static const struct option opts[] = {
        {"standalone", no_argument, NULL, OPT_STANDALONE},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"id", required_argument, NULL, OPT_ID},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"memcached", required_argument, NULL, OPT_MEMCACHED},
        {"rpc", required_argument, NULL, OPT_RPC},
        {"raft", required_argument, NULL, OPT_RAFT},
        {"group", required_argument, NULL, OPT_GROUP},
        {"member", required_argument, NULL, OPT_MEMBER},
        {"memory-limit", required_argument, NULL, 'm'},
        {"max-item-size", required_argument, NULL, 'I'},
        {"election-ms", required_argument, NULL, OPT_ELECTION},
        {"heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT},
        {"snapshot-threshold", required_argument, NULL, OPT_SNAP_THRESHOLD},
        {"snapshot-trailing", required_argument, NULL, OPT_SNAP_TRAILING},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"cluster", required_argument, NULL, OPT_CLUSTER},
        {"http", required_argument, NULL, OPT_HTTP},
        {"amqp", required_argument, NULL, OPT_AMQP},
        {"amqp-memory-limit", required_argument, NULL, OPT_AMQP_MEMORY},
        {"amqp-disk-free-limit", required_argument, NULL, OPT_AMQP_DISK},
        {"snapshot-mode", required_argument, NULL, OPT_SNAP_MODE},
        {"log-memory-mb", required_argument, NULL, OPT_LOG_MEMORY},
        {"read-mode", required_argument, NULL, OPT_READ_MODE},
        {"rejoin", no_argument, NULL, OPT_REJOIN},
        {"verbose", no_argument, NULL, 'v'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *keys[] = {
        [OPT_ID - OPT_STANDALONE] = "id",
        [OPT_DATA_DIR - OPT_STANDALONE] = "data_dir",
        [OPT_MEMCACHED - OPT_STANDALONE] = "memcached",
        [OPT_RPC - OPT_STANDALONE] = "rpc",
        [OPT_RAFT - OPT_STANDALONE] = "raft",
        [OPT_ELECTION - OPT_STANDALONE] = "election_ms",
        [OPT_HEARTBEAT - OPT_STANDALONE] = "heartbeat_ms",
        [OPT_SNAP_THRESHOLD - OPT_STANDALONE] = "snapshot_threshold",
        [OPT_SNAP_TRAILING - OPT_STANDALONE] = "snapshot_trailing",
        [OPT_LOG_LEVEL - OPT_STANDALONE] = "log_level",
        [OPT_CLUSTER - OPT_STANDALONE] = "cluster",
        [OPT_HTTP - OPT_STANDALONE] = "http",
        [OPT_AMQP - OPT_STANDALONE] = "amqp",
        [OPT_AMQP_MEMORY - OPT_STANDALONE] = "amqp_memory_limit",
        [OPT_AMQP_DISK - OPT_STANDALONE] = "amqp_disk_free_limit",
        [OPT_SNAP_MODE - OPT_STANDALONE] = "snapshot_mode",
        [OPT_LOG_MEMORY - OPT_STANDALONE] = "log_memory_mb",
        [OPT_READ_MODE - OPT_STANDALONE] = "read_mode",
    };
    int o;

    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:I:vh", opts, NULL)) != -1) {
        switch (o) {
        case OPT_STANDALONE:
            c->standalone = true;
            break;
        case OPT_REJOIN:
            c->rejoin = true;
            break;
        case OPT_CONFIG:
            if (node_config_load(c, optarg, err, errlen) != 0) {
                return -1;
            }
            break;
        case OPT_GROUP:
            if (add_group(c, optarg, err, errlen) != 0) {
                return -1;
            }
            break;
        case OPT_MEMBER:
            if (parse_member_arg(c, optarg, err, errlen) != 0) {
                return -1;
            }
            break;
        case 'm':
            if (set_option(c, "memory_limit_mb", optarg, err, errlen) != 0) {
                return -1;
            }
            break;
        case 'I':
            if (set_option(c, "item_size_max", optarg, err, errlen) != 0) {
                return -1;
            }
            break;
        case 'v':
            c->log_level = LOG_DEBUG;
            break;
        case 'h':
            node_config_usage(stdout);
            return 1;
        case OPT_VERSION:
            printf("ringmq-node %s\n", RINGMQ_VERSION);
            return 1;
        case ':':
            snprintf(err, errlen, "option %s needs a value", argv[optind - 1]);
            return -1;
        case '?':
            snprintf(err, errlen, "unknown option %s (see --help)",
                     argv[optind - 1]);
            return -1;
        default:
            if (o >= OPT_STANDALONE && o <= OPT_READ_MODE &&
                keys[o - OPT_STANDALONE] != NULL) {
                if (set_option(c, keys[o - OPT_STANDALONE], optarg, err,
                               errlen) != 0) {
                    return -1;
                }
                break;
            }
            snprintf(err, errlen, "unhandled option");
            return -1;
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s' (see --help)",
                 argv[optind]);
        return -1;
    }
    return 0;
}

/* Groups from the cluster map: every shard that lists this node. */
static int groups_from_cluster(struct node_config *c, char *err,
                               size_t errlen)
{
    struct cluster_map *map;
    unsigned s;
    unsigned i;

    if (c->n_groups > 0) {
        snprintf(err, errlen, "use either a cluster map or --group/groups");
        return -1;
    }
    map = xmalloc(sizeof(*map));
    if (cluster_map_load(map, c->cluster_path, err, errlen) != 0) {
        free(map);
        return -1;
    }
    c->cluster = map;
    for (s = 0; s < map->n_shards; s++) {
        const struct cluster_shard *sh = &map->shards[s];
        const struct cluster_member *me = cluster_shard_member(sh, c->id);

        if (me == NULL) {
            continue;
        }
        if (c->rpc[0] == '\0') {
            snprintf(c->rpc, sizeof(c->rpc), "%s", me->rpc);
        }
        if (add_group(c, sh->name, err, errlen) != 0) {
            return -1;
        }
        c->groups[c->n_groups - 1].join = me->join;
        for (i = 0; i < sh->n_members; i++) {
            if (add_member(c, sh->members[i].id, sh->members[i].raft,
                           sh->members[i].rpc, err, errlen) != 0) {
                return -1;
            }
            c->groups[c->n_groups - 1].members[i].join = sh->members[i].join;
        }
    }
    if (c->n_groups == 0) {
        snprintf(err, errlen, "cluster map %s: node %" PRIu64
                 " is not a member of any shard", c->cluster_path, c->id);
        return -1;
    }
    return 0;
}

int node_config_finish(struct node_config *c, char *err, size_t errlen)
{
    unsigned g;
    unsigned i;
    unsigned j;

    if (c->cluster_path[0] != '\0' &&
        groups_from_cluster(c, err, errlen) != 0) {
        return -1;
    }

    if (c->standalone && c->n_groups == 0) {
        if (add_group(c, "cache", err, errlen) != 0 ||
            add_member(c, c->id, c->raft[0] ? c->raft : "127.0.0.1:0",
                       c->rpc, err, errlen) != 0) {
            return -1;
        }
    }
    if (c->n_groups == 0) {
        snprintf(err, errlen,
                 "no groups: use --standalone, --group/--member or a "
                 "config file with groups (see --help)");
        return -1;
    }
    for (g = 0; g < c->n_groups; g++) {
        const struct node_group_config *gc = &c->groups[g];
        bool me = false;

        for (j = 0; j < g; j++) {
            if (strcmp(c->groups[j].name, gc->name) == 0) {
                snprintf(err, errlen, "group %s defined twice", gc->name);
                return -1;
            }
        }
        for (i = 0; i < gc->n_members; i++) {
            me = me || gc->members[i].id == c->id;
            for (j = 0; j < i; j++) {
                if (gc->members[j].id == gc->members[i].id) {
                    snprintf(err, errlen, "group %s: member id %" PRIu64
                             " twice", gc->name, gc->members[i].id);
                    return -1;
                }
            }
        }
        if (!me) {
            snprintf(err, errlen,
                     "group %s: this node (id %" PRIu64 ") is not a member",
                     gc->name, c->id);
            return -1;
        }
    }
    if (c->heartbeat_ms * 2 > c->election_ms) {
        snprintf(err, errlen, "heartbeat_ms must be at most half of "
                 "election_ms");
        return -1;
    }
    return 0;
}

void node_config_group(const struct node_config *c, unsigned g,
                       struct rgroup_config *out, char *dir, size_t dirlen)
{
    const struct node_group_config *gc = &c->groups[g];
    unsigned i;

    memset(out, 0, sizeof(*out));
    snprintf(dir, dirlen, "%s/%s", c->data_dir, gc->name);
    out->name = gc->name;
    out->id = c->id;
    out->dir = dir;
    /* A replica that joins is never bootstrapped: its members only give
     * its own address. The others bootstrap (on a pristine directory)
     * with the members that were not added later: the group's first
     * configuration, the same on every one of them. */
    out->join = gc->join;
    /* the node's directory outlives a group's (raft/ident.h) */
    out->marker_dir = c->data_dir;
    out->rejoin = c->rejoin;
    for (i = 0; i < gc->n_members; i++) {
        struct rgroup_member *m = &out->members[out->n_members];

        if (gc->members[i].join && !gc->join) {
            continue;
        }
        m->id = gc->members[i].id;
        snprintf(m->raft_address, sizeof(m->raft_address), "%s",
                 gc->members[i].raft);
        out->n_members++;
    }
    out->election_ms = c->election_ms;
    out->heartbeat_ms = c->heartbeat_ms;
    out->snapshot_threshold = c->snapshot_threshold;
    out->snapshot_trailing = c->snapshot_trailing;
    out->inline_snapshots = c->inline_snapshots;
    out->incremental_snapshots = c->incremental_snapshots;
    out->log_memory_bytes = (size_t)c->log_memory_mb << 20;
}

_Static_assert(NODE_ADDR_MAX <= RGROUP_ADDR_MAX,
               "a member address must fit a raft group member");

const char *node_config_member_rpc(const struct node_config *c, unsigned g,
                                   uint64_t id)
{
    const struct node_group_config *gc = &c->groups[g];
    unsigned i;

    for (i = 0; i < gc->n_members; i++) {
        if (gc->members[i].id == id && gc->members[i].rpc[0] != '\0') {
            return gc->members[i].rpc;
        }
    }
    return NULL;
}

void node_config_release(struct node_config *c)
{
    struct cluster_map *map = (struct cluster_map *)c->cluster;

    if (map != NULL) {
        cluster_map_clear(map);
        free(map);
        c->cluster = NULL;
    }
}
