/*
 * container_of: the struct that embeds @p as its member @member, for
 * callbacks that get a pointer to an embedded handle or list link (libuv
 * handles, raft requests, intrusive lists).
 */
#ifndef RINGMQ_CONTAINER_OF_H
#define RINGMQ_CONTAINER_OF_H

#include <stddef.h>

#define container_of(p, type, member) \
    ((type *)(void *)((char *)(p)-offsetof(type, member)))

#endif
