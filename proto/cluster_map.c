/* cluster_map: see cluster_map.h. */
#include "proto/cluster_map.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/parse_num.h"
#include "common/yamlu.h"

#define FAIL(...)                                   \
    do {                                            \
        snprintf(err, errlen, __VA_ARGS__);         \
        return -1;                                  \
    } while (0)

static int copy_str(char *dst, size_t cap, const char *v)
{
    if (v == NULL || strlen(v) >= cap) {
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* "host:port" with a numeric port; the host a literal or a name. Raft
 * addresses may be names too (raft/transport resolves them on connect) but
 * no IPv6 (@raft): canonical/raft 0.15 speaks IPv4 only. */
static int addr_ok(const char *v, int raft)
{
    const char *colon = v ? strrchr(v, ':') : NULL;
    uint64_t port;

    if (colon == NULL || colon == v || (size_t)(colon - v) > CLUSTER_HOST_MAX ||
        (raft && memchr(v, ':', (size_t)(colon - v)) != NULL) ||
        parse_num_u64(colon + 1, &port) != 0 || port == 0 || port > 65535) {
        return 0;
    }
    return 1;
}

static int load_member(yaml_document_t *doc, yaml_node_t *m,
                       struct cluster_shard *s, char *err, size_t errlen)
{
    struct cluster_member *mb = &s->members[s->n_members];
    yaml_node_pair_t *p;

    if (s->n_members == CLUSTER_MAX_MEMBERS) {
        FAIL("shard %s: more than %d members", s->name, CLUSTER_MAX_MEMBERS);
    }
    if (m == NULL || m->type != YAML_MAPPING_NODE) {
        FAIL("shard %s: a member is a mapping {id, raft, rpc}", s->name);
    }
    memset(mb, 0, sizeof(*mb));
    for (p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = yamlu_scalar(yamlu_node(doc, p->key));
        const char *v = yamlu_scalar(yamlu_node(doc, p->value));

        if (k == NULL || v == NULL) {
            FAIL("shard %s: member keys and values are scalars", s->name);
        }
        if (strcmp(k, "id") == 0) {
            if (parse_num_u64(v, &mb->id) != 0 || mb->id == 0) {
                FAIL("shard %s: member id '%s' is not a number > 0", s->name,
                     v);
            }
        } else if (strcmp(k, "raft") == 0) {
            if (!addr_ok(v, 1) || copy_str(mb->raft, sizeof(mb->raft), v)) {
                FAIL("shard %s: raft address '%s' is not host:port (IPv4 or "
                     "a name)",
                     s->name, v);
            }
        } else if (strcmp(k, "rpc") == 0) {
            if (!addr_ok(v, 0) || copy_str(mb->rpc, sizeof(mb->rpc), v)) {
                FAIL("shard %s: rpc address '%s' is not host:port", s->name,
                     v);
            }
        } else if (strcmp(k, "join") == 0) {
            if (strcmp(v, "true") == 0) {
                mb->join = 1;
            } else if (strcmp(v, "false") != 0) {
                FAIL("shard %s: member join '%s' is not true or false",
                     s->name, v);
            }
        } else {
            FAIL("shard %s: unknown member key '%s'", s->name, k);
        }
    }
    if (mb->id == 0 || mb->raft[0] == '\0' || mb->rpc[0] == '\0') {
        FAIL("shard %s: every member needs id, raft and rpc", s->name);
    }
    if (mb->join && s->n_members == 0) {
        FAIL("shard %s: the first member cannot join: a group starts from "
             "members without join",
             s->name);
    }
    s->n_members++;
    return 0;
}

static int load_shard(yaml_document_t *doc, yaml_node_t *n,
                      struct cluster_map *map, char *err, size_t errlen)
{
    struct cluster_shard *s = &map->shards[map->n_shards];
    yaml_node_t *members = NULL;
    yaml_node_pair_t *p;
    yaml_node_item_t *it;
    uint64_t w = 1;

    if (map->n_shards == CLUSTER_MAX_SHARDS) {
        FAIL("more than %d shards", CLUSTER_MAX_SHARDS);
    }
    if (n == NULL || n->type != YAML_MAPPING_NODE) {
        FAIL("shards: each shard is a mapping {name, weight, members}");
    }
    memset(s, 0, sizeof(*s));
    for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = yamlu_scalar(yamlu_node(doc, p->key));
        yaml_node_t *v = yamlu_node(doc, p->value);

        if (k != NULL && strcmp(k, "name") == 0) {
            const char *name = yamlu_scalar(v);
            if (name == NULL || name[0] == '\0' || strchr(name, '/') ||
                name[0] == '.' || copy_str(s->name, sizeof(s->name), name)) {
                FAIL("shards: bad shard name");
            }
        } else if (k != NULL && strcmp(k, "weight") == 0) {
            if (parse_num_u64(yamlu_scalar(v), &w) != 0 || w == 0 || w > 1000) {
                FAIL("shards: weight must be 1..1000");
            }
        } else if (k != NULL && strcmp(k, "members") == 0) {
            members = v;
        } else {
            FAIL("shards: unknown key '%s'", k ? k : "?");
        }
    }
    if (s->name[0] == '\0') {
        FAIL("shards: a shard has no name");
    }
    s->weight = (unsigned)w;
    if (members == NULL || members->type != YAML_SEQUENCE_NODE) {
        FAIL("shard %s: members must be a list", s->name);
    }
    for (it = members->data.sequence.items.start;
         it < members->data.sequence.items.top; it++) {
        if (load_member(doc, yamlu_node(doc, *it), s, err, errlen) != 0) {
            return -1;
        }
    }
    if (s->n_members == 0) {
        FAIL("shard %s: no members", s->name);
    }
    map->n_shards++;
    return 0;
}

static int load_router(yaml_document_t *doc, yaml_node_t *n,
                       struct cluster_map *map, char *err, size_t errlen)
{
    struct cluster_router *r = &map->routers[map->n_routers];
    yaml_node_pair_t *p;

    if (map->n_routers == CLUSTER_MAX_ROUTERS) {
        FAIL("more than %d routers", CLUSTER_MAX_ROUTERS);
    }
    if (n == NULL || n->type != YAML_MAPPING_NODE) {
        FAIL("routers: each router is a mapping");
    }
    memset(r, 0, sizeof(*r));
    for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = yamlu_scalar(yamlu_node(doc, p->key));
        const char *v = yamlu_scalar(yamlu_node(doc, p->value));
        char *dst = NULL;
        size_t cap = CLUSTER_ADDR_MAX;

        if (k == NULL || v == NULL) {
            FAIL("routers: keys and values are scalars");
        }
        if (strcmp(k, "name") == 0) {
            if (copy_str(r->name, sizeof(r->name), v) || v[0] == '\0') {
                FAIL("routers: bad name");
            }
            continue;
        }
        if (strcmp(k, "memcached") == 0) {
            dst = r->memcached;
        } else if (strcmp(k, "amqp") == 0) {
            dst = r->amqp;
        } else if (strcmp(k, "http") == 0) {
            dst = r->http;
        } else {
            FAIL("routers: unknown key '%s'", k);
        }
        if (!addr_ok(v, 0) || copy_str(dst, cap, v)) {
            FAIL("routers: %s address '%s' is not host:port", k, v);
        }
    }
    if (r->name[0] == '\0') {
        FAIL("routers: a router has no name");
    }
    map->n_routers++;
    return 0;
}

static int validate(const struct cluster_map *map, char *err, size_t errlen)
{
    unsigned a, b, i, j;

    if (map->n_shards == 0) {
        FAIL("no shards");
    }
    for (a = 0; a < map->n_shards; a++) {
        const struct cluster_shard *s = &map->shards[a];
        for (b = 0; b < a; b++) {
            if (strcmp(map->shards[b].name, s->name) == 0) {
                FAIL("shard %s defined twice", s->name);
            }
        }
        for (i = 0; i < s->n_members; i++) {
            for (j = 0; j < i; j++) {
                if (s->members[i].id == s->members[j].id) {
                    FAIL("shard %s: member %" PRIu64 " twice", s->name,
                         s->members[i].id);
                }
            }
        }
    }
    /* A node has one RPC listener: every shard must agree on it. Raft
     * addresses are per replica and must all differ. */
    for (a = 0; a < map->n_shards; a++) {
        for (i = 0; i < map->shards[a].n_members; i++) {
            const struct cluster_member *m = &map->shards[a].members[i];
            for (b = 0; b <= a; b++) {
                for (j = 0; j < map->shards[b].n_members; j++) {
                    const struct cluster_member *o = &map->shards[b].members[j];
                    if (b == a && j >= i) {
                        break;
                    }
                    if (o->id == m->id && strcmp(o->rpc, m->rpc) != 0) {
                        FAIL("node %" PRIu64 " has two rpc addresses (%s, %s)",
                             m->id, o->rpc, m->rpc);
                    }
                    if (strcmp(o->raft, m->raft) == 0) {
                        FAIL("raft address %s used twice", m->raft);
                    }
                }
            }
        }
    }
    for (a = 0; a < map->n_routers; a++) {
        for (b = 0; b < a; b++) {
            if (strcmp(map->routers[a].name, map->routers[b].name) == 0) {
                FAIL("router %s defined twice", map->routers[a].name);
            }
        }
    }
    return 0;
}

int cluster_map_load(struct cluster_map *map, const char *path, char *err,
                     size_t errlen)
{
    yaml_document_t doc;
    yaml_node_t *root;
    yaml_node_pair_t *p;
    char sub[256];
    int rv = -1;

    memset(map, 0, sizeof(*map));
    map->epoch = 1;
    if (yamlu_load(path, &doc, err, errlen) != 0) {
        return -1;
    }
    root = yaml_document_get_root_node(&doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        snprintf(err, errlen, "%s: top level must be a mapping", path);
        goto out;
    }
    for (p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *k = yamlu_scalar(yamlu_node(&doc, p->key));
        yaml_node_t *v = yamlu_node(&doc, p->value);
        yaml_node_item_t *it;

        if (k != NULL && strcmp(k, "epoch") == 0) {
            if (parse_num_u64(yamlu_scalar(v), &map->epoch) != 0 ||
                map->epoch == 0) {
                snprintf(err, errlen, "%s: epoch must be a number > 0", path);
                goto out;
            }
        } else if (k != NULL && (strcmp(k, "shards") == 0 ||
                                 strcmp(k, "routers") == 0)) {
            int shards = k[0] == 's';
            if (v == NULL || v->type != YAML_SEQUENCE_NODE) {
                snprintf(err, errlen, "%s: %s must be a list", path, k);
                goto out;
            }
            for (it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                yaml_node_t *item = yamlu_node(&doc, *it);
                if ((shards ? load_shard(&doc, item, map, sub, sizeof(sub))
                            : load_router(&doc, item, map, sub,
                                          sizeof(sub))) != 0) {
                    snprintf(err, errlen, "%s: %s", path, sub);
                    goto out;
                }
            }
        } else {
            snprintf(err, errlen, "%s: unknown key '%s'", path, k ? k : "?");
            goto out;
        }
    }
    if (validate(map, sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "%s: %s", path, sub);
        goto out;
    }
    rv = 0;
out:
    yaml_document_delete(&doc);
    return rv;
}

const struct cluster_shard *cluster_map_shard(const struct cluster_map *map,
                                              const char *name)
{
    unsigned i;

    for (i = 0; i < map->n_shards; i++) {
        if (strcmp(map->shards[i].name, name) == 0) {
            return &map->shards[i];
        }
    }
    return NULL;
}

const struct cluster_member *cluster_shard_member(
    const struct cluster_shard *shard, uint64_t id)
{
    unsigned i;

    for (i = 0; i < shard->n_members; i++) {
        if (shard->members[i].id == id) {
            return &shard->members[i];
        }
    }
    return NULL;
}

const struct cluster_router *cluster_map_router(const struct cluster_map *map,
                                                const char *name)
{
    unsigned i;

    for (i = 0; i < map->n_routers; i++) {
        if (strcmp(map->routers[i].name, name) == 0) {
            return &map->routers[i];
        }
    }
    return NULL;
}

int cluster_raft_port_offset(const char *addr, int delta, char *out,
                             size_t outlen)
{
    const char *colon = addr != NULL ? strrchr(addr, ':') : NULL;
    uint64_t port;

    if (colon == NULL || colon == addr || parse_num_u64(colon + 1, &port) != 0 ||
        port > 65535) {
        return -1;
    }
    if (port != 0) {
        port += (uint64_t)(int64_t)delta;
    }
    if (port > 65535 || snprintf(out, outlen, "%.*s:%d", (int)(colon - addr),
                                 addr, (int)port) >= (int)outlen) {
        return -1;
    }
    return 0;
}
