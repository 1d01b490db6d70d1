/*
 * ctl_map: the cluster map of --cluster FILE and its ring: which shard owns
 * a key.
 *
 * Direction: a bottom module of tools/ like ctl (ctl.h has the picture):
 * used by ringmqctl.c and the map commands, calls none of them. Errors are
 * printed to stderr ("ringmqctl: ..."). Single-threaded.
 */
#ifndef RINGMQ_TOOLS_CTL_MAP_H
#define RINGMQ_TOOLS_CTL_MAP_H

#include "common/ring.h"
#include "proto/map_yaml.h"

struct ctl_map {
    struct cluster_map map;
    struct ring *ring;
};

/* Load the map at @path and build its ring. The map (free it with
 * ctl_map_free), or NULL after printing why. */
struct ctl_map *ctl_map_load(const char *path);

/* Release @m; NULL is fine. */
void ctl_map_free(struct ctl_map *m);

/* The shard of @m that owns @key (a C string). */
const struct cluster_shard *ctl_map_owner(const struct ctl_map *m,
                                          const char *key);

#endif
