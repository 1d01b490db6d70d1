/*
 * amqp_kv: an AMQP field table as meta_sm's (key, encoded field value)
 * pairs, for headers-exchange matching and binding arguments.
 */
#ifndef RINGMQ_AMQP_KV_H
#define RINGMQ_AMQP_KV_H

#include <stddef.h>

#include "common/buf.h"
#include "proto/amqp_table.h"
#include "sm/meta_sm.h"

/* Encoded (key, field value) pairs of @t for meta_sm, copied into @store
 * (which must outlive them); free() the array. NULL when @t is empty. */
struct meta_sm_kv *edge_table_kv(const struct amqp_table *t,
                                 struct buf *store, size_t *n);

#endif
