/*
 * cache_moves: the moves a cache shard takes part in (sm/cache_move.h has
 * the protocol), as replicated state: for each move out (this shard is
 * the source) its arcs, state and dirty set; for each move in (the
 * target) its arcs and state. cache_sm consults it for every key and
 * drives it from CACHE_OP_MOVE commands; this module never touches items.
 *
 * Deterministic: the dirty set iterates in insertion order and snapshots
 * list everything in order, so replicas that applied the same log encode
 * the same bytes (the digest hashes them).
 *
 * Finished moves (purged, activated) are remembered, the last
 * CACHE_MOVES_DONE_KEPT of them, so that a repeated command answers as
 * the first did.
 *
 * Pure; memory from xmalloc. Not thread-safe.
 */
#ifndef RINGMQ_CACHE_MOVES_H
#define RINGMQ_CACHE_MOVES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/cache_move.h"

#define CACHE_MOVES_DONE_KEPT 64

/* Keys in insertion order, each once. */
struct keyset {
    char **keys;
    uint8_t *lens;
    size_t n, cap;
    size_t head; /* keys before it were taken (CUT) */
    uint32_t *index; /* open addressing over keys[], UINT32_MAX = empty */
    size_t index_cap;
};

struct cache_move_rec {
    uint64_t id;
    bool out; /* this shard is the source */
    char peer[CLUSTER_NAME_MAX];
    struct arc *arcs;
    size_t n_arcs;
    enum cache_move_state state;
    uint64_t fenced_at; /* out, FENCED: the log's clock at the fence */
    struct keyset dirty; /* out, TRACKING or FENCED */
    uint64_t cut_seq;    /* out: the last CUT's sequence number */
    struct keyset cut;   /* out: the keys it took, answered again if
                          * it is repeated */
};

struct cache_moves {
    struct cache_move_rec *v; /* in creation order */
    size_t n;
    size_t cap;
};

/* What a shard does with a key of hash @hash (cache_moves_check). */
enum cache_moves_verdict {
    MOVES_NONE = 0, /* no move covers it: the ring decides */
    MOVES_TRACK,    /* moving out, tracking: serve, record writes */
    MOVES_FENCED,   /* moving out, fenced: serve reads, refuse writes */
    MOVES_IMPORTING /* moving in, not active: refuse everything */
};

void cache_moves_init(struct cache_moves *m);
void cache_moves_clear(struct cache_moves *m);

/* The record of move @id, or NULL. */
struct cache_move_rec *cache_moves_find(struct cache_moves *m, uint64_t id);
/* A new record (state set by the caller); arcs copied. */
struct cache_move_rec *cache_moves_add(struct cache_moves *m, uint64_t id,
                                       bool out, const char *peer,
                                       const struct arc *arcs, size_t n);
/* Forget @rec (an aborted move). */
void cache_moves_remove(struct cache_moves *m, struct cache_move_rec *rec);
/* @rec finished: drop its dirty set, forget old finished records. */
void cache_moves_finished(struct cache_moves *m, struct cache_move_rec *rec);

/* A fence older than this (by the log's clock) lifts itself: the move is
 * aborted at the source, so a coordinator that died after fencing cannot
 * refuse writes for longer (docs/resharding.md). */
#define CACHE_MOVES_FENCE_MAX_MS 2000

/* @now_ms: a fence older than CACHE_MOVES_FENCE_MAX_MS at @now_ms counts
 * as lifted (the next apply aborts its move: cache_moves_expire). */
enum cache_moves_verdict cache_moves_check(const struct cache_moves *m,
                                           uint32_t hash, uint64_t now_ms);
/* Abort the moves out whose fence is older than the limit at @now_ms (the
 * log's clock: every replica at the same point). */
void cache_moves_expire(struct cache_moves *m, uint64_t now_ms);
/* Whether any move out is tracking or fenced (keys must be hashed). */
bool cache_moves_tracking(const struct cache_moves *m);
/* Whether any move is under way here (finished ones are only remembered):
 * only then does a key's arc matter. */
bool cache_moves_live(const struct cache_moves *m);
/* Record @key (of hash @hash) in the dirty set of every tracking or
 * fenced move out whose arcs hold it. */
void cache_moves_dirty(struct cache_moves *m, uint32_t hash, const char *key,
                       size_t len);
/* A flush_all: every move out not yet handed off is broken. */
void cache_moves_flushed(struct cache_moves *m);

/* Move keys from @from (in insertion order) to @to while their @cost
 * adds up to at most @max_bytes (one key at least, if any). */
void keyset_take(struct keyset *from, struct keyset *to, size_t max_bytes,
                 size_t (*cost)(void *data, const char *key, size_t len),
                 void *data);
size_t keyset_size(const struct keyset *s);
/* The @i-th key of @s (i < keyset_size), borrowed. */
const char *keyset_key(const struct keyset *s, size_t i, size_t *len);
void keyset_clear(struct keyset *s);

/* Whole state, appended to @out (common/buf). Restore: 0 or -1. */
struct buf;
void cache_moves_encode(const struct cache_moves *m, struct buf *out);
int cache_moves_decode(const void *buf, size_t len, struct cache_moves *out);

#endif
