/* ctl_map: see ctl_map.h. Calls no other module of tools/. */
#include "tools/ctl_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

struct ctl_map *ctl_map_load(const char *path)
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

void ctl_map_free(struct ctl_map *m)
{
    if (m != NULL) {
        ring_free(m->ring);
        free(m);
    }
}

const struct cluster_shard *ctl_map_owner(const struct ctl_map *m,
                                          const char *key)
{
    return &m->map.shards[ring_lookup(m->ring, key, strlen(key))];
}
