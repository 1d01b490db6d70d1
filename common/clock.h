/*
 * clock: wall and monotonic time in milliseconds.
 *
 * Only the Raft leader reads the wall clock for state machine decisions: it
 * stamps each entry, and apply uses that stamp (docs/internals.md,
 * "Determinism"). Everything
 * else that measures durations uses the monotonic clock.
 */
#ifndef RINGMQ_CLOCK_H
#define RINGMQ_CLOCK_H

#include <stdint.h>

uint64_t clock_wall_ms(void);
uint64_t clock_mono_ms(void);
uint64_t clock_mono_ns(void);

#endif
