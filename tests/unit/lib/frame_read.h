/*
 * frame_read: the test's end of the RPC wire on a plain socket, for tests
 * that must control when bytes are written or see exactly what arrives.
 */
#ifndef RINGMQ_TEST_FRAME_READ_H
#define RINGMQ_TEST_FRAME_READ_H

#include <stdbool.h>

#include <protobuf-c/protobuf-c.h>

/* Reads socket @fd until a frame completes and returns its message, of
 * type @desc (free it with protobuf_c_message_free_unpacked(m, NULL)).
 * Before each read @wait(@arg) returns once @fd is readable (false: it did
 * not become readable, the test fails). Bytes after that frame in the same
 * read are dropped. */
ProtobufCMessage *frame_read(int fd, const ProtobufCMessageDescriptor *desc,
                             bool (*wait)(void *arg), void *arg);

/* A blocking TCP connection to 127.0.0.1:@port (the test fails if there
 * is none). */
int frame_connect(unsigned port);

/* Whether socket *(int *)@fd has something to read now: a predicate for
 * svc_env_run_until. */
bool frame_fd_readable(void *fd);

#endif
