/*
 * cache_pb: conversions between the C cache vocabulary (sm/cache_op.h)
 * and its protobuf form (cache.proto), for Raft commands and RPC.
 *
 * Ownership: *_to_pb fills a caller-owned message whose byte fields BORROW
 * from the source struct (nothing is copied; keep the source alive while the
 * message is packed). cache_op_from_pb borrows from the message as well.
 * cache_result_from_pb copies the value (owned by the result).
 */
#ifndef RINGMQ_CACHE_PB_H
#define RINGMQ_CACHE_PB_H

#include "cache.pb-c.h"
#include "sm/cache_op.h"

void cache_op_to_pb(const struct cache_op *op, Ringmq__CacheOp *pb);
/* -1 if the message holds an unknown op type. */
int cache_op_from_pb(const Ringmq__CacheOp *pb, struct cache_op *op);

void cache_result_to_pb(const struct cache_result *r, Ringmq__CacheResult *pb);
/* -1 if the message holds an unknown status. */
int cache_result_from_pb(const Ringmq__CacheResult *pb, struct cache_result *r);

#endif
