/* ctl_map: see ctl_map.h. Calls no other module of tools/. */
#include "tools/ctl_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

struct ctl_map *ctl_map_load(const char *path)
{
    struct ctl_map *m = xcalloc(1, sizeof(*m));
    char err[512];

    if (cluster_map_load(&m->map, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "ringmqctl: %s\n", err);
        goto err;
    }
    m->ring = cluster_map_ring(&m->map, err, sizeof(err));
    if (m->ring == NULL) {
        fprintf(stderr, "ringmqctl: %s: %s\n", path, err);
        goto err;
    }
    return m;
err:
    cluster_map_clear(&m->map);
    free(m);
    return NULL;
}

void ctl_map_free(struct ctl_map *m)
{
    if (m != NULL) {
        ring_free(m->ring);
        cluster_map_clear(&m->map);
        free(m);
    }
}

const struct cluster_shard *ctl_map_owner(const struct ctl_map *m,
                                          const char *key)
{
    return &m->map.shards[ring_lookup(m->ring, key, strlen(key))];
}
