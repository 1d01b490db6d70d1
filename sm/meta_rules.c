/* meta_rules: see meta_rules.h. */
#include "sm/meta_rules.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* A shard of @map named by @name[0..@len) that serves. */
static bool serving(const struct map_sm *map, const char *name, size_t len)
{
    const struct cluster_map *m = map_sm_map(map);
    char buf[CLUSTER_NAME_MAX];
    int i;

    if (name == NULL || len == 0 || len >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    i = cluster_map_find(m, buf);
    return i >= 0 && m->shards[i].state == CLUSTER_SHARD_SERVING;
}

bool meta_rules_directory_ok(const struct meta_sm *sm,
                             const struct map_sm *map,
                             const struct meta_sm_cmd *c,
                             struct meta_sm_result *res)
{
    const char *name;
    size_t len;

    if (c->type == META_SM_QUEUE_PLACE) {
        /* an existing entry is answered as it is, whatever the proposal */
        if (meta_sm_queue_lookup(sm, c->vhost, c->vhost_len, c->dest,
                                 c->dest_len, NULL) == 0) {
            return true;
        }
        name = c->shard;
        len = c->shard_len;
    } else if (c->type == META_SM_QUEUE_MOVE_BEGIN) {
        name = c->target;
        len = c->target_len;
    } else {
        return true;
    }
    if (serving(map, name, len)) {
        return true;
    }
    memset(res, 0, sizeof(*res));
    res->reply_code = 406;
    res->reply_text = META_RULES_NOT_SERVING;
    res->version = meta_sm_version(sm);
    meta_sm_queue_lookup(sm, c->vhost, c->vhost_len, c->dest, c->dest_len,
                         &res->placement);
    return false;
}

struct on_shard {
    const char *shard;
    uint64_t n;
    char first[64];
};

static int count_on(void *data, const char *vhost, size_t vlen,
                    const char *queue, size_t qlen,
                    const struct meta_sm_placement *pl)
{
    struct on_shard *o = data;

    (void)vhost;
    (void)vlen;
    if (strcmp(pl->shard, o->shard) == 0 ||
        (pl->moving && strcmp(pl->target, o->shard) == 0)) {
        if (o->n++ == 0) {
            snprintf(o->first, sizeof(o->first), "%.*s",
                     qlen > 48 ? 48 : (int)qlen, queue);
        }
    }
    return 0;
}

bool meta_rules_map_ok(const struct meta_sm *sm, const struct map_sm *map,
                       const struct map_sm_cmd *c, struct map_sm_result *res)
{
    struct on_shard o = {0};

    if (!(c->type == MAP_SM_SHARD_REMOVE ||
          (c->type == MAP_SM_SHARD_STATE &&
           c->state == CLUSTER_SHARD_DRAINING)) ||
        c->group == NULL) {
        return true;
    }
    /* O(queues), for a command an operator runs once per shard */
    o.shard = c->group;
    meta_sm_queue_each(sm, count_on, &o);
    if (o.n == 0) {
        return true;
    }
    memset(res, 0, sizeof(*res));
    res->code = MAP_SM_INVALID;
    res->epoch = map_sm_epoch(map);
    snprintf(res->why, sizeof(res->why),
             "shard %s holds %" PRIu64 " queue(s) of the directory (%s...): "
             "move them first (ringmqctl queue move)",
             c->group, o.n, o.first);
    return false;
}
