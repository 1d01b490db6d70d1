/*
 * amqpacct: the bookkeeping of amqpload that needs no broker, kept apart so
 * it is unit-tested (bench/test_amqpload.c):
 *
 *   - the message body header: who published a message and when, so a
 *     consumer can tell its publisher, sequence and end-to-end latency;
 *   - a seen-set: one growable bitmap of sequences per publisher, to count
 *     duplicates and missing messages;
 *   - a confirm window: the outstanding delivery tags of one publisher
 *     channel with their send times, resolved by basic.ack / basic.nack
 *     (multiple or not), for confirm latency and the --confirm-window limit;
 *   - a pace: when a publisher may send its next message under --rate.
 *
 * Plain memory, no locks: each thread owns its own sets and windows, and
 * they are merged after the threads have joined.
 */
#ifndef RINGMQ_BENCH_AMQPACCT_H
#define RINGMQ_BENCH_AMQPACCT_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------ message body ----------------------------- */

/* Every body starts with this header, little-endian, then filler bytes up to
 * --size. */
#define AMQPACCT_MAGIC UINT32_C(0x4c514d52) /* "RMQL" */
#define AMQPACCT_HDR_SIZE 32

struct amqpacct_body {
    uint64_t run_id;    /* random per amqpload run: tells old messages apart */
    uint32_t publisher; /* 0..P-1 */
    uint64_t seq;       /* 0, 1, 2... per publisher */
    uint64_t sent_ns;   /* CLOCK_MONOTONIC at publish */
};

/* Write @b's header into @buf, which has room for AMQPACCT_HDR_SIZE bytes. */
void amqpacct_body_encode(const struct amqpacct_body *b, uint8_t *buf);

/* Read a header from @buf (@len bytes). 0 if it is one of ours, -1 if the
 * body is too short or has no magic. */
int amqpacct_body_decode(const uint8_t *buf,
                         size_t len,
                         struct amqpacct_body *b);

/* ------------------------------- seen-set -------------------------------- */

struct amqpacct_bits {
    uint64_t *words;
    uint64_t n_words; /* allocated */
    uint64_t count;   /* bits set */
};

struct amqpacct_seen {
    unsigned n_pubs;
    struct amqpacct_bits *pubs;
};

/* An empty set for publishers 0..@n_pubs-1. 0, or -1 out of memory. */
int amqpacct_seen_init(struct amqpacct_seen *s, unsigned n_pubs);

void amqpacct_seen_free(struct amqpacct_seen *s);

/* Add (@pub, @seq). 1 if it was new, 0 if already there, -1 if @pub is out
 * of range or memory ran out. */
int amqpacct_seen_add(struct amqpacct_seen *s, unsigned pub, uint64_t seq);

/* 1 if (@pub, @seq) is in @s, else 0. */
int amqpacct_seen_has(const struct amqpacct_seen *s,
                      unsigned pub,
                      uint64_t seq);

/* Number of entries of @s. */
uint64_t amqpacct_seen_count(const struct amqpacct_seen *s);

/* Add every entry of @src to @dst (same n_pubs). Returns how many were in
 * both (duplicates across the two sets), or -1 out of memory (@dst then
 * holds part of @src). */
int64_t amqpacct_seen_merge(struct amqpacct_seen *dst,
                            const struct amqpacct_seen *src);

/* Number of entries of @a that are not in @b (same n_pubs): with @a the
 * confirmed messages and @b the consumed ones, the missing messages. */
uint64_t amqpacct_seen_diff(const struct amqpacct_seen *a,
                            const struct amqpacct_seen *b);

/* ----------------------------- confirm window ---------------------------- */

/* Delivery tags 1, 2, 3... in publish order on one channel in confirm mode.
 * Slots form a ring indexed by tag, so at most `cap` tags may lie between
 * the oldest unresolved one and the next one to be sent. */
struct amqpacct_window {
    uint64_t next_tag;    /* tag of the next publish (first is 1) */
    uint64_t base;        /* every tag below is resolved */
    uint64_t outstanding; /* sent, neither acked nor nacked */
    uint64_t cap;         /* ring slots, a power of two */
    uint64_t *sent_ns;    /* per slot; 0 = resolved */
};

/* Called once per tag resolved, with its send time and 1 for ack, 0 for
 * nack. */
typedef void (*amqpacct_window_cb)(void *arg,
                                   uint64_t tag,
                                   uint64_t sent_ns,
                                   int acked);

/* A window with room for at least @limit outstanding tags. 0 or -1. */
int amqpacct_window_init(struct amqpacct_window *w, uint64_t limit);

void amqpacct_window_free(struct amqpacct_window *w);

/* 1 if another publish would exceed @limit outstanding tags or the ring. */
int amqpacct_window_full(const struct amqpacct_window *w, uint64_t limit);

/* Record a publish sent at @now_ns (must be non-zero; the window must not
 * be full) and return its tag. */
uint64_t amqpacct_window_push(struct amqpacct_window *w, uint64_t now_ns);

/* Resolve @tag (and with @multiple every unresolved tag below it; tag 0 with
 * @multiple means every outstanding tag), calling @cb for each. Returns the
 * number resolved (0 for a tag resolved before: a repeated confirm), or -1 if
 * @tag was never sent. */
int64_t amqpacct_window_resolve(struct amqpacct_window *w,
                                uint64_t tag,
                                int multiple,
                                int acked,
                                amqpacct_window_cb cb,
                                void *arg);

/* --------------------------------- pacing -------------------------------- */

/* --rate: one publisher's share of the total rate, as a schedule of send
 * times one interval apart. A publisher a little late (a timer wake-up, a
 * busy CPU, a confirm read first) keeps to the schedule and catches up, so
 * the rate does not drift down with the jitter; one late by more than its
 * slack (a full confirm window, a slow broker) drops the slots beyond it
 * instead of sending them in a burst: the load offered never runs ahead of
 * the rate by more than one message plus the slack's worth. The publishers'
 * schedules are staggered by interval / n so their sends interleave evenly
 * instead of coinciding. */
struct amqpacct_pace {
    uint64_t interval_ns; /* between two sends of this publisher */
    uint64_t slack_ns;    /* how far behind its schedule it may fall */
    uint64_t next_ns;     /* earliest time of its next send */
};

/* Publisher @i (0..@n-1) of @n sharing @rate msgs/s (> 0) in all, starting at
 * @start_ns, with @slack_ns of catch-up. */
void amqpacct_pace_init(struct amqpacct_pace *p,
                        double rate,
                        unsigned n,
                        unsigned i,
                        uint64_t start_ns,
                        uint64_t slack_ns);

/* Nanoseconds until the next send may go, at @now_ns (0: it may go now). */
uint64_t amqpacct_pace_wait(const struct amqpacct_pace *p, uint64_t now_ns);

/* A send at @now_ns, when amqpacct_pace_wait() said 0: books the next
 * slot. */
void amqpacct_pace_take(struct amqpacct_pace *p, uint64_t now_ns);

#endif
