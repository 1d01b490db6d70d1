/*
 * cache_op: the vocabulary shared by the memcached edge, the internal RPC and
 * the cache state machine.
 *
 * A struct cache_op is one memcached operation on one key (a multi-key get is
 * split by the edge into one GET per key). A struct cache_result is its
 * outcome. The same structs travel through the standalone node (edge ->
 * cache service -> state machine) and, encoded as protobuf, through the
 * router -> node RPC.
 *
 * Ownership: op->key and op->value are borrowed; whoever submits the op keeps
 * them alive until the op completes. result->value is owned by the result and
 * released by cache_result_clear().
 */
#ifndef RINGMQ_CACHE_OP_H
#define RINGMQ_CACHE_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/outcome.h"

#define CACHE_KEY_MAX 250
#define CACHE_ITEM_SIZE_MAX_DEFAULT (1024 * 1024)
/* memcached's REALTIME_MAXDELTA: exptimes above it are absolute unix times. */
#define CACHE_REALTIME_MAXDELTA (60 * 60 * 24 * 30)

enum cache_op_type {
    CACHE_OP_GET = 0,  /* read: get and gets */
    CACHE_OP_SET,
    CACHE_OP_ADD,
    CACHE_OP_REPLACE,
    CACHE_OP_APPEND,   /* flags and exptime of the op are ignored */
    CACHE_OP_PREPEND,
    CACHE_OP_CAS,      /* op->cas is the unique the client read */
    CACHE_OP_INCR,     /* op->delta */
    CACHE_OP_DECR,
    CACHE_OP_DELETE,
    CACHE_OP_TOUCH,    /* op->exptime */
    CACHE_OP_GAT,      /* get-and-touch: a write that returns the item */
    CACHE_OP_FLUSH_ALL, /* op->exptime is the delay (0 = now) */
    CACHE_OP_CONFIG,   /* the shard's settings: op->config (no key) */
    CACHE_OP_RING,     /* which keys the shard owns: op->value is a
                        * sm/shard_ring spec, op->config.seed (no key) */
    CACHE_OP_MOVE,     /* a step of a move of keys (sm/cache_move.h):
                        * op->value is the command; the result's value the
                        * reply (no key) */
    CACHE_OP_EXPORT,   /* a read at the leader for a move (not in the log):
                        * op->value is the request, the result's value the
                        * reply (no key) */
    CACHE_OP__COUNT
};

/* The settings of a cache shard that change what apply does. They live in
 * the shard's log and snapshots, never in a node's flags: replicas that
 * evicted or refused by their own flags would diverge. A field left 0 keeps
 * its value. With @seed the op applies only to a shard never configured: a
 * leader proposes its node's flags that way, so they seed a new shard and
 * are ignored by an existing one. */
struct cache_op_config {
    uint64_t mem_limit;     /* bytes */
    uint32_t item_size_max; /* bytes */
    bool seed;
};

/* What the node and ringmqctl accept (memcached's own bounds for -m, -I). */
#define CACHE_MEM_LIMIT_MIN (1024ULL * 1024)
#define CACHE_MEM_LIMIT_MAX (1ULL << 40)
#define CACHE_ITEM_SIZE_MIN 1024U
#define CACHE_ITEM_SIZE_MAX (128U * 1024 * 1024)

struct cache_op {
    enum cache_op_type type;
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    uint32_t flags;
    int64_t exptime; /* as the client sent it: relative s, absolute, <0 */
    uint64_t cas;
    uint64_t delta;
    struct cache_op_config config; /* CACHE_OP_CONFIG */
    /* Request id of a write that may be sent again when its outcome is
     * unknown (router/backend): the state machine applies a (client_id,
     * seq) once and answers a repeat with the first result (cache_sm.h).
     * seq 0: no id, applied every time. */
    uint64_t client_id;
    uint64_t seq;
};

enum cache_status {
    CACHE_STORED = 0,
    CACHE_NOT_STORED,
    CACHE_EXISTS,
    CACHE_NOT_FOUND,   /* also a miss for GET/GAT */
    CACHE_DELETED,
    CACHE_TOUCHED,
    CACHE_HIT,         /* GET/GAT: value, flags, cas are set */
    CACHE_NUMBER,      /* INCR/DECR: number is set */
    CACHE_OK,          /* FLUSH_ALL */
    CACHE_TOO_LARGE,   /* SERVER_ERROR object too large for cache */
    CACHE_NO_MEMORY,   /* SERVER_ERROR out of memory storing object */
    CACHE_NON_NUMERIC, /* CLIENT_ERROR cannot increment or decrement ... */
    CACHE_BAD_REQUEST, /* invalid key or arguments (CLIENT_ERROR) */
    CACHE_WRONG_OWNER, /* another shard owns the key: value is its name */
    CACHE_MOVING,      /* the key's arc is moving: not now, ask again soon */
    CACHE_STALE_RETRY, /* a repeat of a request too old to be answered:
                        * not applied now; whether the first was applied
                        * is forgotten (cache_sm.h) */
    CACHE_STATUS__COUNT
};

struct cache_result {
    enum cache_status status;
    char *value; /* HIT: owned copy of the data (NULL when value_len 0) */
    size_t value_len;
    uint32_t flags;
    uint64_t cas;
    uint64_t number;
};

/* An op in flight with its completion. The submitter fills op, cb and data;
 * the executor fills outcome and result and calls cb exactly once (possibly
 * before the submitting function returns). @outcome says what became of the
 * op on its way (sm/outcome.h); only with OUTCOME_OK does @result hold the
 * cache's answer (which may be a refusal of its own: TOO_LARGE, NO_MEMORY,
 * BAD_REQUEST...), otherwise it is empty. */
struct cache_call;
typedef void (*cache_call_cb)(struct cache_call *call);
struct cache_call {
    struct cache_op op;
    enum outcome outcome;
    struct cache_result result;
    cache_call_cb cb;
    void *data;
};

/* true for ops that change state (go through Raft). */
bool cache_op_is_write(enum cache_op_type type);
/* memcached's key rules: 1..250 bytes, no control characters or spaces. */
bool cache_key_valid(const char *key, size_t len);
/* Ops about the whole shard rather than one key (flush_all, config). */
bool cache_op_has_key(enum cache_op_type type);
/* Settings within the bounds above (0 fields are "unchanged"). */
bool cache_op_config_valid(const struct cache_op_config *c);
const char *cache_op_name(enum cache_op_type type);
const char *cache_status_name(enum cache_status status);

void cache_result_init(struct cache_result *r);
/* Frees r->value and resets r. */
void cache_result_clear(struct cache_result *r);

#endif
