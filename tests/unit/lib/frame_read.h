/*
 * frame_read: the test's end of the RPC wire on a plain socket, for tests
 * that must control when bytes are written or see exactly what arrives.
 */
#ifndef RINGMQ_TEST_FRAME_READ_H
#define RINGMQ_TEST_FRAME_READ_H

#include <stdbool.h>

#include "proto/rpc_frame.h"

/* Reads socket @fd into @dec until a frame completes: *frame, valid until
 * the next use of @dec. Before each read @wait(@arg) returns once @fd is
 * readable (false: it did not become readable, the test fails). Bytes
 * after that frame in the same read are dropped. */
void frame_read(int fd, struct rpc_frame_decoder *dec,
                struct rpc_frame *frame, bool (*wait)(void *arg), void *arg);

#endif
