/*
 * cache_sm: the deterministic memcached state machine of one cache shard.
 *
 * Pure: no loop, no clock, no sockets. Every replica applies the same
 * committed writes in the same order with the same leader-stamped time and
 * ends in the same state, byte for byte; cache_sm_digest() lets tests check
 * that.
 *
 *   - Time: apply and reads take now_ms from the caller (the leader's stamp
 *     for writes; the leader's clock for reads). Expiry and flush_all decide
 *     with it. Exptime rules are memcached's: 0 never, < 0 already expired,
 *     <= 30 days relative seconds, larger an absolute unix time.
 *   - CAS uniques: a counter in the state machine, advanced by every
 *     successful store, so they are a pure function of the applied log.
 *   - Memory limit: items are charged a fixed formula of key and value size;
 *     when a store would exceed mem_limit, items are evicted oldest-written
 *     first (reads never reorder, so eviction is the same on every replica).
 *     An item larger than the whole limit gets CACHE_NO_MEMORY.
 *   - Settings (memory limit, largest item) are state: changed by
 *     CACHE_OP_CONFIG in the log, kept in snapshots and the digest. A
 *     smaller limit evicts down to it when applied.
 *   - Ownership is state too (sm/shard_ring, set by CACHE_OP_RING): an op
 *     or a read for a key the shard does not own gets CACHE_WRONG_OWNER
 *     with the owner's name in the result's value, and changes nothing.
 *     Without a ring spec (a standalone node) every key is owned.
 *   - Request ids: a write with op->seq != 0 (a memcached op or flush_all;
 *     CONFIG, RING and MOVE ignore ids) is applied once per (client_id,
 *     seq). A repeat answers the first result again (status, incr/decr's
 *     number, the cas taken) and changes nothing, even if the key has since
 *     moved away. A repeated GAT that first hit answers the item as it
 *     is now (a read at the repeat's place in the log) without touching it
 *     again; any other repeated GAT answers its first answer. The answers
 *     of the last dedup_window seqs of the last dedup_clients clients are
 *     kept (sm/dedup.h); a repeat older than its client's window answers
 *     CACHE_STALE_RETRY and is not applied. Refusals that apply nothing
 *     (WRONG_OWNER, MOVING) are not recorded: the request may be sent
 *     again to the owner. The table is state: in snapshots and the digest.
 *
 * Errors are results (struct cache_result), never return codes, except for
 * restore of a corrupt snapshot.
 */
#ifndef RINGMQ_CACHE_SM_H
#define RINGMQ_CACHE_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/cache_move.h"
#include "sm/cache_op.h"

struct cache_sm;

/* The settings a state machine starts with. Every replica of a shard must
 * start alike: node/cache_svc passes none (the defaults) and lets the log
 * set them (CACHE_OP_CONFIG); tests may start small. */
struct cache_sm_config {
    uint64_t mem_limit;     /* bytes; 0 = default 64 MiB (memcached -m 64) */
    uint32_t item_size_max; /* bytes; 0 = CACHE_ITEM_SIZE_MAX_DEFAULT */
    /* request ids (sm/dedup.h): 0 = the defaults below; a snapshot's
     * own limits replace these on restore */
    uint32_t dedup_window;
    uint32_t dedup_clients;
};

#define CACHE_DEDUP_WINDOW_DEFAULT 1024
#define CACHE_DEDUP_CLIENTS_DEFAULT 1024

struct cache_sm_stats {
    uint64_t curr_items;
    uint64_t total_items;  /* successful stores since start/restore */
    uint64_t bytes;        /* charged bytes of live items */
    uint64_t evictions;
    uint64_t expired_unfetched; /* items removed because they expired */
    uint64_t limit_maxbytes;
    uint64_t item_size_max;
    bool configured;       /* the log set the settings (CACHE_OP_CONFIG) */
    uint64_t next_cas;
    uint64_t applied;      /* writes applied */
    uint64_t clock_ms;     /* max leader stamp applied so far (never goes back) */
    uint64_t dedup_clients; /* clients with request ids remembered */
};

/* Returns NULL only if allocation fails. @cfg is copied; NULL gives the
 * defaults. The new machine is not "configured" (a seed CONFIG applies). */
struct cache_sm *cache_sm_new(const struct cache_sm_config *cfg);
void cache_sm_free(struct cache_sm *sm);

/* Apply one committed write (any op but CACHE_OP_GET) at leader time
 * @now_ms. Fills @res; for GAT hits res->value is a fresh copy owned by @res.
 * Invalid keys give CACHE_BAD_REQUEST. */
void cache_sm_apply(struct cache_sm *sm, uint64_t now_ms,
                    const struct cache_op *op, struct cache_result *res);

/* Read one key at time @now_ms without changing any state (no LRU bump, no
 * removal of expired items). HIT fills value (a fresh copy owned by @res),
 * flags and cas; otherwise CACHE_NOT_FOUND or CACHE_BAD_REQUEST. */
void cache_sm_get(const struct cache_sm *sm, uint64_t now_ms,
                  const char *key, size_t key_len, struct cache_result *res);

/* A repeat of an applied request, answered from the table without the log
 * (the node answers it before refusing the key as not its own): true with
 * @res filled (the first result, or CACHE_STALE_RETRY) when @op carries an
 * id (client_id, seq) already applied or too old; false for any other op
 * (@res untouched). A repeated GAT is never answered here (it reads). */
bool cache_sm_answered(const struct cache_sm *sm, const struct cache_op *op,
                       struct cache_result *res);

/* A 64-bit digest of the whole logical state (items with their data, flags,
 * exptime and cas; the cas counter; the flush_all deadline; the request id
 * table). Equal states give
 * equal digests, independent of hash-table layout. */
uint64_t cache_sm_digest(const struct cache_sm *sm);

void cache_sm_stats(const struct cache_sm *sm, struct cache_sm_stats *out);
/* Walk the whole state and abort on a broken invariant (common/invariant.h):
 * the write-order list and the table hold the same items, the charged
 * bytes add up and fit the limit, every cas is below next_cas. O(items):
 * apply runs it only in the sanitizer build (common/invariant.h
 * deep_check_due: every command while small, amortized beyond). */
void cache_sm_check(const struct cache_sm *sm);
/* A CONFIG was applied (the shard's settings came from its log). */
bool cache_sm_configured(const struct cache_sm *sm);
/* What apply would say about @key at @now_ms before doing anything:
 * CACHE_OK (and *@tracked: a move out records it), CACHE_MOVING (its arc
 * is moving in, or fenced for a @write, the fence younger than
 * CACHE_MOVES_FENCE_MAX_MS), or CACHE_WRONG_OWNER (@owner named, valid
 * until the next apply). The node refuses with it before the log, at its
 * own clock; apply decides again at the log's. */
enum cache_status cache_sm_admit(const struct cache_sm *sm, uint64_t now_ms,
                                 const char *key, size_t key_len, bool write,
                                 const char **owner, bool *tracked);
/* The epoch of the ring spec applied (0: none). */
uint64_t cache_sm_ring_epoch(const struct cache_sm *sm);

/*
 * Moves of keys (sm/cache_move.h). CACHE_OP_MOVE commands apply through
 * cache_sm_apply: the result is CACHE_OK when the step is done (or was
 * already), CACHE_NOT_STORED when the move's state refuses it, and its
 * value is a cache_move_reply. While a move is under way, keys of an arc
 * moving in, and writes to an arc moving out under a fence, are refused
 * CACHE_MOVING; every key written, deleted, evicted or expired in an arc
 * moving out joins the move's dirty set. The functions below are the
 * leader's reads for the coordinator (CACHE_OP_EXPORT, node/cache_svc).
 */
enum cache_move_state cache_sm_move_state(const struct cache_sm *sm,
                                          uint64_t move_id);
/* The digest and item count of the move's arcs here. -1: no such move. */
int cache_sm_move_digest(const struct cache_sm *sm, uint64_t move_id,
                         uint64_t *digest, uint64_t *count);
/* Every key present in the move's arcs, to @cb. -1: no such move. */
int cache_sm_move_keys(const struct cache_sm *sm, uint64_t move_id,
                       void (*cb)(void *data, const char *key, size_t len),
                       void *data);
/* @key's item as it would move (pointers valid until the next apply); a
 * key not present is a tombstone (false). */
bool cache_sm_export_item(const struct cache_sm *sm, const char *key,
                          size_t len, struct cache_move_item *out);

/* Serialize the whole state into one buffer from @alloc (the caller passes
 * raft_malloc or malloc). Uncompressed: the raft/ layer compresses. Returns 0,
 * or -1 if @alloc failed. O(state). */
int cache_sm_snapshot(const struct cache_sm *sm, void *(*alloc)(size_t),
                      void **out, size_t *out_len);

/*
 * The same bytes, written a slice at a time while writes keep being
 * applied: an incremental snapshot (sm/cache_snap.h). begin fixes the
 * state the snapshot holds, the state as it is then, and says the size
 * of its bytes (*@len); every step writes the next bytes (at most @room)
 * and returns how many, until all @len are written. Apply meanwhile keeps
 * for the snapshot the items it changes or removes before the snapshot
 * wrote them (removed ones are handed over, changed ones copied), so the
 * bytes are the state at begin whatever is applied, restored and flushed
 * meanwhile. The last CACHE_SM_SEAL_LEN bytes (a checksum of all before
 * them) stay zero until sealed: by cache_sm_snapshot_seal on the whole
 * bytes, or by the cache_sm_seal stream as they go past in pieces. Either
 * reads only the bytes given and may run on any thread. end frees the
 * snapshot, finished or not; it must come before cache_sm_free.
 *
 * Costs: begin O(ring + moves + request ids), never O(items); a step
 * O(@room + saved items written * log saved); apply O(log saved) more per
 * item it changes that the snapshot still needs, plus a copy for a change
 * in place (incr, touch). One snapshot per machine at a time: begin
 * returns NULL while one is in progress.
 */
struct cache_sm_snap;
struct cache_sm_snap *cache_sm_snapshot_begin(struct cache_sm *sm,
                                              size_t *len);
size_t cache_sm_snapshot_step(struct cache_sm_snap *s, void *out,
                              size_t room);
void cache_sm_snapshot_seal(void *buf, size_t len);
void cache_sm_snapshot_end(struct cache_sm_snap *s);

/*
 * The seal of a snapshot of @len bytes computed as its bytes stream past
 * (raft/fsm writes a snapshot through a few reused chunks and never holds
 * it whole): begin(st, len), then update(st, bytes, n) over the first
 * len - CACHE_SM_SEAL_LEN bytes in order, in pieces that are multiples of
 * 8 bytes long but for the last, then end(st, trailer) writes the
 * CACHE_SM_SEAL_LEN bytes of the trailer at @trailer. The trailer is the
 * one cache_sm_snapshot_seal writes. @st is the caller's (a plain struct
 * of numbers, copyable); nothing else is touched.
 */
#define CACHE_SM_SEAL_LEN 8
struct cache_sm_seal {
    uint64_t h;   /* the hash so far */
    uint64_t len; /* bytes it covers */
    uint64_t fed; /* bytes given so far */
};
void cache_sm_seal_begin(struct cache_sm_seal *st, size_t len);
void cache_sm_seal_update(struct cache_sm_seal *st, const void *bytes,
                          size_t n);
void cache_sm_seal_end(struct cache_sm_seal *st, void *trailer);

/* Replace the whole state with a snapshot. @buf is borrowed. On error
 * (-1: truncated or corrupt) the previous state is kept. */
int cache_sm_restore(struct cache_sm *sm, const void *buf, size_t len);

#endif
