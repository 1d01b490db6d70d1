/* cache_pb: see cache_pb.h. */
#include "proto/cache_pb.h"

#include <string.h>

#include "common/buf.h"

void cache_op_to_pb(const struct cache_op *op, Ringmq__CacheOp *pb)
{
    ringmq__cache_op__init(pb);
    pb->type = (uint32_t)op->type;
    pb->key.data = (uint8_t *)op->key;
    pb->key.len = op->key_len;
    pb->value.data = (uint8_t *)op->value;
    pb->value.len = op->value_len;
    pb->flags = op->flags;
    pb->exptime = op->exptime;
    pb->cas = op->cas;
    pb->delta = op->delta;
    pb->mem_limit = op->config.mem_limit;
    pb->item_size_max = op->config.item_size_max;
    pb->seed = op->config.seed;
    pb->client_id = op->client_id;
    pb->seq = op->seq;
}

int cache_op_from_pb(const Ringmq__CacheOp *pb, struct cache_op *op)
{
    if (pb->type >= CACHE_OP__COUNT) {
        return -1;
    }
    memset(op, 0, sizeof(*op));
    op->type = (enum cache_op_type)pb->type;
    op->key = (const char *)pb->key.data;
    op->key_len = pb->key.len;
    op->value = (const char *)pb->value.data;
    op->value_len = pb->value.len;
    op->flags = pb->flags;
    op->exptime = pb->exptime;
    op->cas = pb->cas;
    op->delta = pb->delta;
    op->config.mem_limit = pb->mem_limit;
    op->config.item_size_max = pb->item_size_max;
    op->config.seed = pb->seed;
    op->client_id = pb->client_id;
    op->seq = pb->seq;
    return 0;
}

void cache_result_to_pb(const struct cache_result *r, Ringmq__CacheResult *pb)
{
    ringmq__cache_result__init(pb);
    pb->status = (uint32_t)r->status;
    pb->value.data = (uint8_t *)r->value;
    pb->value.len = r->value_len;
    pb->flags = r->flags;
    pb->cas = r->cas;
    pb->number = r->number;
}

int cache_result_from_pb(const Ringmq__CacheResult *pb, struct cache_result *r)
{
    if (pb->status >= CACHE_STATUS__COUNT) {
        return -1;
    }
    cache_result_init(r);
    r->status = (enum cache_status)pb->status;
    if (pb->value.len > 0) {
        r->value = xmemdup(pb->value.data, pb->value.len);
        r->value_len = pb->value.len;
    }
    r->flags = pb->flags;
    r->cas = pb->cas;
    r->number = pb->number;
    return 0;
}
