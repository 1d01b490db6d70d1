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

#include <stdbool.h>
#include <stdint.h>

uint64_t clock_wall_ms(void);
uint64_t clock_mono_ms(void);
uint64_t clock_mono_ns(void);

/*
 * The time a Raft leader stamps on entries: its wall clock while that moves
 * at about the rate of real time, and never a jump. Each stamp stays within
 * CLOCK_STAMP_SLEW (1/8) of the monotonic time elapsed since a base taken
 * at least every CLOCK_STAMP_REBASE_MS: a wall clock set an hour ahead is
 * followed at 9/8 of real time (reached in 8 hours), one set back is
 * followed at 7/8 (time never stands still), and stamps never decrease.
 * Replicas keep the largest stamp they applied, so before this a leader's
 * jump ahead froze TTLs and expiries for the size of the jump on every
 * replica.
 *
 * clock_stamp_seen() tells it of a stamp applied from the log (another
 * leader's): the next stamps continue from the newest one seen. Pure
 * arithmetic on the times given; not thread-safe.
 */
#define CLOCK_STAMP_SLEW 8
#define CLOCK_STAMP_REBASE_MS 1000

struct clock_stamp {
    bool started;
    uint64_t last_ms;    /* the newest stamp made or seen */
    uint64_t base_ms;    /* a stamp ... */
    uint64_t base_mono;  /* ... and the monotonic time it was taken at */
};

/* The stamp for an entry made now (@wall_ms, @mono_ms); >= every earlier
 * stamp made or seen. */
uint64_t clock_stamp_next(struct clock_stamp *s, uint64_t wall_ms,
                          uint64_t mono_ms);
/* @stamp_ms was applied at @mono_ms. */
void clock_stamp_seen(struct clock_stamp *s, uint64_t stamp_ms,
                      uint64_t mono_ms);

#endif
