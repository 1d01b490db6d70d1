/*
 * mq_body_store: an in-memory body store for tests of sm/mq_sm, so that
 * every body a result names is read back from where mq_sm put it
 * (mq_sm.h, "Message bodies"). Records as mq_sm.h lays them out (u32 len,
 * u32 check, body, padding), except that the check is a plain hash, not
 * zlib's crc32 (the tests do not link zlib).
 *
 * Stricter than a node's store: a freed segment's bytes are dropped as
 * soon as the result that freed it is filled, so a ref into a freed
 * segment fails its next read, and a write into one fails the test.
 * Failures are cmocka assertions.
 */
#ifndef RINGMQ_TEST_MQ_BODY_STORE_H
#define RINGMQ_TEST_MQ_BODY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sm/mq_sm.h"

struct mbs;

struct mbs *mbs_new(void);
struct mbs *mbs_clone(const struct mbs *s);
void mbs_free(struct mbs *s);

/* After mq_sm_apply(): store @res's writes, fill the bodies of its
 * deliveries and dead letters (each read must succeed; those with seg 0
 * came filled: bodies inline), then drop the segments it freed. */
void mbs_result(struct mbs *s, struct mq_sm_result *res);

/* mq_sm_read_fn (export) on a store. */
int mbs_read(void *s, uint32_t seg, uint32_t off, uint32_t len, void *out);

/* Segments holding bytes (written and not freed). */
size_t mbs_segments(const struct mbs *s);

/* A store per machine, for tests with many: the one of @sm (made empty
 * on first use), one made fresh for @sm (a new machine may reuse a freed
 * one's address), and @s made @sm's (owned by the registry; a machine
 * restored from another's snapshot names the other's bodies). */
struct mbs *mbs_of(const struct mq_sm *sm);
struct mbs *mbs_fresh(const struct mq_sm *sm);
void mbs_set(const struct mq_sm *sm, struct mbs *s);
/* Drop @sm's store (before the machine is freed). */
void mbs_forget(const struct mq_sm *sm);

#endif
