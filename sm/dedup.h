/*
 * dedup: the answers of a state machine's last applied requests, per
 * client, so that a request sent again with the same (client id, seq) after
 * its outcome was lost gets its first answer instead of being applied twice.
 *
 * A client numbers its requests from 1 (seq 0 means "no dedup" to the users
 * of this module and is never recorded). Per client the table keeps the
 * answers of the last @window seqs, counted back from the highest seq
 * recorded: a seq in that window was applied exactly when it has an answer
 * here. A seq older than the window is STALE: whether it was applied is
 * forgotten, so the caller must refuse it, never apply it.
 *
 * At most @max_clients clients are kept, least recently recorded first;
 * recording for one more forgets the least recent (a retry of that client
 * would then apply again: a client silent for that many others' writes has
 * long given up waiting).
 *
 * Everything here is part of the replicated state: deterministic (no
 * dependence on addresses or malloc: allocation failure aborts), in the
 * snapshot (dedup_encode) and the digest (dedup_digest).
 */
#ifndef RINGMQ_DEDUP_H
#define RINGMQ_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* What a request answered: a status code and two numbers, the caller's to
 * interpret (cache_sm: status, incr/decr's value, the cas taken). */
struct dedup_answer {
    uint32_t code;
    uint64_t number;
    uint64_t cas;
};

enum dedup_verdict {
    DEDUP_NEW,       /* not applied: apply it, then dedup_record */
    DEDUP_DUPLICATE, /* applied: *out is its answer */
    DEDUP_STALE,     /* older than the client's window: refuse it */
};

struct dedup_client;

struct dedup {
    uint32_t window;      /* seqs remembered per client */
    uint32_t max_clients;
    uint32_t n_clients;
    uint32_t mask;        /* buckets - 1 */
    struct dedup_client **buckets;
    struct dedup_client *lru_first; /* least recently recorded */
    struct dedup_client *lru_last;
};

/* @window and @max_clients must be >= 1 and <= DEDUP_LIMIT. */
#define DEDUP_LIMIT (1U << 16)
void dedup_init(struct dedup *d, uint32_t window, uint32_t max_clients);
/* Frees every client; @d is then empty with the same limits. */
void dedup_clear(struct dedup *d);
/* Frees everything @d holds; dedup_init may then start it again. */
void dedup_close(struct dedup *d);

enum dedup_verdict dedup_check(const struct dedup *d, uint64_t client,
                               uint64_t seq, struct dedup_answer *out);
/* Record @a as the answer of (client, seq), which dedup_check found NEW
 * (seq >= 1); makes @client the most recently recorded. */
void dedup_record(struct dedup *d, uint64_t client, uint64_t seq,
                  const struct dedup_answer *a);

/* The whole table (limits, clients in LRU order, their answers in the
 * window) appended to @out, little-endian; the same table always gives the
 * same bytes. */
void dedup_encode(const struct dedup *d, struct buf *out);
/* Replace @d (initialised, maybe holding clients) by a table dedup_encode
 * wrote. -1 if truncated or inconsistent: @d is then left empty. */
int dedup_decode(const void *data, size_t len, struct dedup *d);
/* A 64-bit digest of the encoding. */
uint64_t dedup_digest(const struct dedup *d);
/* Abort on a broken invariant (common/invariant.h). */
void dedup_check_invariants(const struct dedup *d);

#endif
