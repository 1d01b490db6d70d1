/*
 * cache_move: the vocabulary of moving cache keys between two shards
 * (docs/resharding.md, "Moving keys"): the commands each shard applies in
 * its own log, the reads a coordinator makes at a shard's leader, and
 * their byte encodings.
 *
 * A move takes a set of hash ranges (struct arc: closed intervals of the
 * ketama hash, common/ring.h) from a source shard S to a target shard T,
 * under a move id chosen by the coordinator. It goes:
 *
 *   T: IN_BEGIN     T drops anything it holds in the ranges and refuses
 *                   client ops there with CACHE_MOVING (retry later)
 *   S: OUT_BEGIN    S keeps serving the ranges and records every key that
 *                   changes there (written, deleted, evicted, expired) in
 *                   a replicated dirty set
 *   S: EXPORT read  the leader lists the ranges' keys once, then hands
 *                   out their items in batches (a read, not in the log)
 *   T: IMPORT       items (value, flags, absolute expiry, cas) or
 *                   tombstones stored in T's ranges
 *   S: CUT          takes keys from the dirty set (replicated: every
 *                   replica at the same point) and answers their items as
 *                   they are at that point (missing = tombstone), which
 *                   the coordinator imports at T; repeated while the set
 *                   shrinks. CUT carries a sequence number: repeated with
 *                   the number of the last CUT (its answer was lost) it
 *                   takes nothing new and answers the same keys again, as
 *                   they are now; a lower number is refused
 *   S: FENCE        writes in the ranges are refused CACHE_MOVING; reads
 *                   are still served; a last CUT follows. A fence lifts
 *                   itself after CACHE_MOVES_FENCE_MAX_MS of the log's
 *                   clock: the move is aborted at S
 *   T: DIGEST read  the digest of T's ranges
 *   S: HANDOFF      refused unless S's own digest of the ranges equals
 *                   T's; then S no longer owns them: CACHE_WRONG_OWNER
 *                   naming T
 *   T: ACTIVATE     T owns the ranges
 *   S: PURGE        S deletes what it still holds in the ranges
 *
 * Before HANDOFF, ABORT (at both) undoes the move: S lifts the fence and
 * forgets the dirty set, T drops what it imported. After HANDOFF a move
 * only goes forward. Every command is idempotent: repeated with the same
 * move id it answers as the first time did (or OK), so a coordinator that
 * died can run the same step again.
 *
 * A flush_all at S while a move is out breaks it (T's copy would outlive
 * the flush): HANDOFF is then refused and the move must be aborted and
 * started again. A pending delayed flush_all refuses OUT_BEGIN.
 *
 * Encodings are little-endian; decoders check everything (the bytes come
 * from the network). Pure: no I/O; memory from xmalloc.
 */
#ifndef RINGMQ_CACHE_MOVE_H
#define RINGMQ_CACHE_MOVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/cluster_map.h"
#include "sm/shard_ring.h"

#define CACHE_MOVE_MAX_ARCS SHARD_RING_MAX_ARCS
/* Items per IMPORT and keys per CUT answer are bounded by bytes instead:
 * the coordinator keeps entries under an RPC frame. */
#define CACHE_MOVE_BATCH_BYTES (1024 * 1024)

enum cache_move_kind {
    CACHE_MOVE_IN_BEGIN = 1, /* at T: arcs, peer = S */
    CACHE_MOVE_OUT_BEGIN,    /* at S: arcs, peer = T */
    CACHE_MOVE_IMPORT,       /* at T: items */
    CACHE_MOVE_CUT,          /* at S: answers the dirty keys */
    CACHE_MOVE_FENCE,        /* at S */
    CACHE_MOVE_HANDOFF,      /* at S: digest (T's) */
    CACHE_MOVE_ACTIVATE,     /* at T */
    CACHE_MOVE_PURGE,        /* at S */
    CACHE_MOVE_ABORT,        /* at S or T */
    CACHE_MOVE_KIND__COUNT
};

/* One item as it moves: @tombstone = the key is gone at S. */
struct cache_move_item {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    uint32_t flags;
    uint64_t exp_ms; /* absolute, 0 = never */
    uint64_t cas;
    bool tombstone;
};

/* A move command (the value of a CACHE_OP_MOVE op). Decoded commands point
 * into the bytes they were decoded from. */
struct cache_move_cmd {
    enum cache_move_kind kind;
    uint64_t move_id;
    char peer[CLUSTER_NAME_MAX]; /* IN/OUT_BEGIN */
    struct arc *arcs;            /* IN/OUT_BEGIN */
    size_t n_arcs;
    uint64_t digest;             /* HANDOFF */
    uint64_t seq;                /* CUT: see below */
    struct cache_move_item *items; /* IMPORT */
    size_t n_items;
};

void *cache_move_cmd_encode(const struct cache_move_cmd *c, size_t *len);
/* @out is overwritten; its arrays are xmalloc'ed (cache_move_cmd_clear);
 * its strings point into @buf. 0 or -1. */
int cache_move_cmd_decode(const void *buf, size_t len,
                          struct cache_move_cmd *out);
void cache_move_cmd_clear(struct cache_move_cmd *c);

/* Reads at a shard's leader (the value of a CACHE_OP_EXPORT op). */
enum cache_export_kind {
    CACHE_EXPORT_RANGES = 1, /* the items of the move's ranges, in batches */
    CACHE_EXPORT_KEYS,       /* the items of these keys (tombstone: none) */
    CACHE_EXPORT_DIGEST,     /* the digest of the move's ranges */
    CACHE_EXPORT_STATE,      /* where the move stands at this shard */
    CACHE_EXPORT_KIND__COUNT
};

struct cache_export_req {
    enum cache_export_kind kind;
    uint64_t move_id;
    uint64_t generation; /* RANGES: the listing asked about (0: new) */
    uint64_t offset;     /* RANGES: the next key of the listing */
    uint32_t max_bytes;  /* RANGES, KEYS: answer size bound */
    const char **keys;   /* KEYS */
    size_t *key_lens;
    size_t n_keys;
};

void *cache_export_req_encode(const struct cache_export_req *r, size_t *len);
int cache_export_req_decode(const void *buf, size_t len,
                            struct cache_export_req *out);
void cache_export_req_clear(struct cache_export_req *r);

/* Where a move stands at one shard (CACHE_EXPORT_STATE). */
enum cache_move_state {
    CACHE_MOVE_NONE = 0,    /* no such move here (or purged/forgotten) */
    CACHE_MOVE_IMPORTING,   /* T after IN_BEGIN */
    CACHE_MOVE_ACTIVE,      /* T after ACTIVATE */
    CACHE_MOVE_TRACKING,    /* S after OUT_BEGIN */
    CACHE_MOVE_FENCED,      /* S after FENCE */
    CACHE_MOVE_BROKEN,      /* S: a flush_all hit the move: abort it */
    CACHE_MOVE_HANDED_OFF,  /* S after HANDOFF, before PURGE */
    CACHE_MOVE_PURGED,      /* S after PURGE */
    CACHE_MOVE_STATE__COUNT
};

const char *cache_move_state_name(enum cache_move_state s);

/* An answer to a move command or an export read (the result's value). */
struct cache_move_reply {
    enum cache_move_state state;
    uint64_t generation;        /* RANGES: the listing's */
    uint64_t next_offset;       /* RANGES */
    bool done;                  /* RANGES: no key after these */
    uint64_t digest;            /* DIGEST; HANDOFF: S's own */
    uint64_t count;             /* DIGEST: items; CUT: dirty keys left */
    struct cache_move_item *items; /* RANGES, KEYS, CUT */
    size_t n_items;
};

void *cache_move_reply_encode(const struct cache_move_reply *r, size_t *len);
int cache_move_reply_decode(const void *buf, size_t len,
                            struct cache_move_reply *out);
void cache_move_reply_clear(struct cache_move_reply *r);

#endif
