/* map_yaml: see map_yaml.h. */
#include "proto/map_yaml.h"

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
            if (!cluster_addr_ok(v, 1) || copy_str(mb->raft, sizeof(mb->raft), v)) {
                FAIL("shard %s: raft address '%s' is not host:port (IPv4 or "
                     "a name)",
                     s->name, v);
            }
        } else if (strcmp(k, "rpc") == 0) {
            if (!cluster_addr_ok(v, 0) || copy_str(mb->rpc, sizeof(mb->rpc), v)) {
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
    struct cluster_shard *s;
    yaml_node_t *members = NULL;
    yaml_node_pair_t *p;
    yaml_node_item_t *it;
    uint64_t w = 1;

    if (n == NULL || n->type != YAML_MAPPING_NODE) {
        FAIL("shards: each shard is a mapping {name, weight, members}");
    }
    s = cluster_map_append(map);
    if (s == NULL) {
        FAIL("more than %d shards", CLUSTER_MAX_SHARDS);
    }
    for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = yamlu_scalar(yamlu_node(doc, p->key));
        yaml_node_t *v = yamlu_node(doc, p->value);

        if (k != NULL && strcmp(k, "name") == 0) {
            const char *name = yamlu_scalar(v);
            if (!cluster_shard_name_ok(name) ||
                copy_str(s->name, sizeof(s->name), name)) {
                FAIL("shards: bad shard name '%s' (not empty, no '/', no "
                     "leading '.', not 'meta', not ending in '.mq')",
                     name ? name : "");
            }
        } else if (k != NULL && strcmp(k, "weight") == 0) {
            if (parse_num_u64(yamlu_scalar(v), &w) != 0 || w == 0 ||
                w > CLUSTER_WEIGHT_MAX) {
                FAIL("shards: weight must be 1..%d", CLUSTER_WEIGHT_MAX);
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
        if (!cluster_addr_ok(v, 0) || copy_str(dst, cap, v)) {
            FAIL("routers: %s address '%s' is not host:port", k, v);
        }
    }
    if (r->name[0] == '\0') {
        FAIL("routers: a router has no name");
    }
    map->n_routers++;
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

    cluster_map_init(map);
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
    if (map->n_shards > 0) {
        cluster_map_set_queue_ring(map);
    }
    if ((map->n_shards > 0 &&
         cluster_map_default_meta(map, sub, sizeof(sub)) != 0) ||
        cluster_map_validate(map, sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "%s: %s", path, sub);
        goto out;
    }
    rv = 0;
out:
    yaml_document_delete(&doc);
    if (rv != 0) {
        cluster_map_clear(map);
    }
    return rv;
}

