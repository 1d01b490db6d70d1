/*
 * random_id: unpredictable bytes and ids from the kernel (getrandom), for
 * names and identities that must not collide across processes and restarts:
 * generated queue and consumer names, router ids, proposer ids.
 *
 * Never fails: if getrandom is unavailable the bytes come from a generator
 * seeded with the monotonic and wall clocks and the pid, which still differs
 * between processes.
 */
#ifndef RINGMQ_RANDOM_ID_H
#define RINGMQ_RANDOM_ID_H

#include <stddef.h>
#include <stdint.h>

void random_bytes(void *out, size_t n);
/* A random 64-bit id other than 0 (0 means "none" to its users). */
uint64_t random_id_nonzero(void);

#endif
