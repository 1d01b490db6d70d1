/*
 * hist: a fixed-size latency histogram with HdrHistogram's log-linear
 * bucket layout (Debian 12 packages no C HdrHistogram, only Java and Go).
 *
 * Values are unsigned 64-bit integers (mcload records nanoseconds). Values
 * below 2^HIST_SUB_BITS are counted exactly; above that every power-of-two
 * range is split into 2^(HIST_SUB_BITS-1) equal sub-buckets, so any recorded
 * value is known to within 1 / 2^(HIST_SUB_BITS-1) (0.8% with 8 bits).
 * Values above HIST_MAX_VALUE are clamped into the last bucket (min/max/sum
 * stay exact).
 *
 * A struct hist is plain memory: no allocation, no handles, safe to copy.
 * Not thread-safe: each thread records into its own and they are merged
 * with hist_add() afterwards.
 */
#ifndef RINGMQ_BENCH_HIST_H
#define RINGMQ_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 8
#define HIST_MAX_BITS 37 /* 2^37 ns is about 137 s: far beyond any run */
#define HIST_MAX_VALUE ((UINT64_C(1) << HIST_MAX_BITS) - 1)
/* Exponents 0 (the exact linear range, two half-ranges wide) up to the one
 * holding HIST_MAX_VALUE, each 2^(HIST_SUB_BITS-1) buckets. */
#define HIST_N_BUCKETS \
    ((HIST_MAX_BITS - HIST_SUB_BITS + 2) * (1u << (HIST_SUB_BITS - 1)))

struct hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    uint64_t sum;
    uint64_t buckets[HIST_N_BUCKETS];
};

/* Empty @h. */
void hist_init(struct hist *h);

/* Count one occurrence of @value. */
void hist_record(struct hist *h, uint64_t value);

/* Add every count of @src into @dst (@src is only read). */
void hist_add(struct hist *dst, const struct hist *src);

/* The value at percentile @p (0..100): the highest value equivalent to the
 * bucket holding the ceil(p% * count)-th smallest sample, never above the
 * exact max. 0 if @h is empty. */
uint64_t hist_percentile(const struct hist *h, double p);

/* Arithmetic mean, 0 if empty. */
double hist_mean(const struct hist *h);

#endif
