/*
 * pace: the open-loop schedule of mcload --rate, kept apart so that its
 * rules have a test (test_bench).
 *
 * A connection's requests are due every @interval ns. A pace timer with
 * period PACE_TICK_NS sends what is due; a request counts its latency from
 * the moment it was sent if that was the first tick after it was due, and
 * from one period after it was due if the pipeline held it back longer: a
 * stalled server is charged for every request scheduled during the stall
 * (no "coordinated omission"), the timer's granularity is not.
 */
#ifndef RINGMQ_BENCH_PACE_H
#define RINGMQ_BENCH_PACE_H

#include <stdint.h>

#define PACE_TICK_NS UINT64_C(1000000)

/* Where a request due at @due and sent at @now starts its latency. */
static inline uint64_t pace_latency_start(uint64_t due, uint64_t now)
{
    uint64_t tick = due + PACE_TICK_NS;

    return tick < now ? tick : now;
}

/* Requests of a connection whose next one is due at @next_due that fell
 * due before @now and were never sent. */
static inline uint64_t pace_backlog(uint64_t next_due, uint64_t interval,
                                    uint64_t now)
{
    return next_due < now ? (now - next_due) / interval + 1 : 0;
}

#endif
