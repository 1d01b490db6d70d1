/*
 * meta_sm: the deterministic state machine of the meta group: exchanges and
 * bindings of every vhost, and the routing function over them.
 *
 * Pure: no loop, no clock, no sockets, no AMQP codec. The meta group applies
 * it through Raft; every edge (router, standalone node) keeps a read-only
 * copy restored from meta_sm_snapshot() bytes, kept current by applying
 * the commands that changed the original (sm/meta_changes.h), and routes
 * publishes with meta_sm_route() on that copy. Queues are NOT declared here: a queue lives
 * in its data shard (mq_sm); a binding names its destination queue and the
 * edge checks the queue exists before it binds.
 *
 *   - Version: every command that changes the state increments a counter,
 *     replicated (part of snapshots), so a copy can tell it is behind.
 *   - Pre-declared: every vhost that is mentioned exists implicitly with the
 *     default exchange "" (direct, every queue bound by its own name, never
 *     listed as bindings) and amq.direct, amq.fanout, amq.topic,
 *     amq.headers, amq.match (headers) — all durable. They cannot be
 *     declared with another type, deleted, or bound to/from ("" only).
 *   - Headers exchange arguments and message headers are given as lists of
 *     (key, encoded AMQP field value) pairs: the value is the field's type
 *     octet followed by its encoding, exactly as in a field table. Matching
 *     compares those bytes (x-match all / any / all-with-x / any-with-x;
 *     keys beginning with "x-" are ignored except in the -with-x modes).
 *   - Topic: routing keys and binding keys are '.'-separated words; '*'
 *     matches exactly one word, '#' zero or more; an empty key has no
 *     words (RabbitMQ's rules: "#" matches everything including "", "*"
 *     matches "a" but not "" (no words) or "a.b", "a.#" matches "a").
 *
 * Errors are results carrying the AMQP reply code and RabbitMQ's reply text
 * without the names (the edge adds them: "... for exchange 'x' in vhost
 * '/'"); the only C error return is a corrupt snapshot. Memory comes from
 * xmalloc (common/buf.h): out of memory aborts, as for the cache tables.
 *
 * Queue directory: (vhost, queue) -> where the queue lives, so queues can
 * be placed on any shard and moved (replacing the frozen queue ring):
 *   - shard: the data shard holding the queue, an opaque name (1..63 bytes,
 *     no NUL; meta_sm does not know the cluster map: the node checks names
 *     against it before proposing);
 *   - gen: a placement generation, a fresh value of a replicated counter
 *     (next_gen, starting at 1) each time the entry is created or
 *     re-placed, never reused; the shard refuses to create a queue with a
 *     gen below its floor, so an old entry cannot resurrect a deleted
 *     queue;
 *   - moving: a move to `target` is under way; its gen (move_gen) was
 *     allocated when the move began, so the coordinator imports the queue
 *     at the target with it and COMMIT installs it unchanged.
 * Directory commands that find nothing to do answer OK with changed false,
 * so a coordinator may rerun any of them after a lost answer; the ones
 * that can fail answer 406. Entries are kept in creation order (re-placing
 * or moving does not reorder them), which snapshots, the digest and
 * meta_sm_queue_each follow.
 *
 * Scale: each command costs what it touches, not the whole state:
 * exchanges are found by name and bindings by their identity in hash
 * tables, and the bindings from an exchange, to a queue and to an
 * exchange are indexed, so a bind, an unbind or a QUEUE_GONE costs O(1)
 * plus the bindings it removes, an exchange's deletion (or auto-delete)
 * the bindings from and to it, and routing a publish the bindings of the
 * exchanges it visits (each a few hundred bytes plus its names). The
 * directory has one entry per queue (100k+): a hash table, O(1) commands
 * and lookups, about 150 bytes per entry plus the names. Snapshots and
 * the digest are O(state).
 *
 * Ownership: pointers in a struct meta_sm_cmd are borrowed for the call.
 * Route results are owned by the struct meta_sm_route_result (clear it).
 */
#ifndef RINGMQ_META_SM_H
#define RINGMQ_META_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define META_SM_NAME_MAX 255
#define META_SM_SHARD_MAX 63 /* a directory's shard names */

/* A router's lease on its copy of the state (its view): it routes
 * publishes on the view only until META_VIEW_LEASE_MS after sending the
 * watch whose answer it holds, and the meta leader answers an unchanged
 * watch after META_VIEW_HEARTBEAT_MS, so a router in touch always holds a
 * lease. The meta leader's side of the contract is node/meta_fanout.h. */
#define META_VIEW_LEASE_MS 1500
#define META_VIEW_HEARTBEAT_MS (META_VIEW_LEASE_MS / 4)

enum meta_sm_exchange_type {
    META_SM_DIRECT = 0,
    META_SM_FANOUT,
    META_SM_TOPIC,
    META_SM_HEADERS,
    META_SM_EXCHANGE_TYPE__COUNT
};

/* Parse "direct", "fanout", "topic", "headers". -1 if unknown. */
int meta_sm_exchange_type_parse(const char *s, size_t len);
const char *meta_sm_exchange_type_name(enum meta_sm_exchange_type t);

/* One (key, encoded field value) pair; see the header comment. */
struct meta_sm_kv {
    const char *key;
    size_t key_len;
    const void *value;
    size_t value_len;
};

enum meta_sm_cmd_type {
    META_SM_EXCHANGE_DECLARE = 0,
    META_SM_EXCHANGE_DELETE,
    META_SM_BIND,        /* queue.bind, or exchange.bind when dest_is_exchange */
    META_SM_UNBIND,      /* queue.unbind / exchange.unbind */
    META_SM_QUEUE_GONE,  /* a queue was deleted: drop every binding to it */
    /* the queue directory (see the header comment) */
    META_SM_QUEUE_PLACE,       /* place a queue, or re-place it */
    META_SM_QUEUE_MOVE_BEGIN,  /* start moving it to another shard */
    META_SM_QUEUE_MOVE_COMMIT, /* the target has it: point the entry there */
    META_SM_QUEUE_MOVE_ABORT,  /* give the move up */
    META_SM_QUEUE_FORGET,      /* drop an entry whose queue is gone */
    META_SM_CMD__COUNT
};

/*
 * One command. Fields not listed for a type are ignored.
 *   EXCHANGE_DECLARE  vhost, exchange, type, passive, durable, auto_delete,
 *                     internal, args (kept as given; compared byte-wise on
 *                     redeclare is NOT done: RabbitMQ compares only a few)
 *   EXCHANGE_DELETE   vhost, exchange, if_unused
 *   BIND / UNBIND     vhost, exchange (source), dest, dest_is_exchange,
 *                     routing_key, args (the binding's arguments; for a
 *                     headers exchange also its match spec)
 *   QUEUE_GONE        vhost, dest (the queue), gen: 0 drops every binding
 *                     to the queue and leaves its directory entry alone;
 *                     otherwise the gen of the queue that was deleted: an
 *                     entry with another gen means the queue was created
 *                     again since, and nothing is dropped; an entry with
 *                     this gen goes with the bindings unless it is moving
 *                     (the move's coordinator settles it); no entry: the
 *                     bindings go.
 * Directory commands: vhost, dest (the queue) and the fields below; every
 * shard name they take must be 1..63 bytes without NUL, else 502. The
 * result's placement is the entry after the command (also on an error).
 *   QUEUE_PLACE       shard (proposed), gen (replace_gen, 0 = none). No
 *                     entry: created on shard with a new gen. An entry
 *                     whose gen is replace_gen and which is not moving:
 *                     same shard, new gen (the shard refused the old one).
 *                     Otherwise nothing changes: the caller reads where the
 *                     queue is from the placement.
 *   QUEUE_MOVE_BEGIN  shard and gen (what the caller saw), target. 406
 *                     unless the entry exists with that shard and gen,
 *                     target differs from shard and no move to another
 *                     target is under way. Allocates the gen the queue gets
 *                     at the target (placement.move_gen); a rerun while
 *                     moving to the same target answers the same one.
 *   QUEUE_MOVE_COMMIT target: the entry moving to target now lives there
 *                     with move_gen as its gen. Already there and not
 *                     moving: OK, no change (a rerun). Otherwise 406.
 *   QUEUE_MOVE_ABORT  target: a move to target is dropped (its gen stays
 *                     unused); anything else: OK, no change.
 *   QUEUE_FORGET      shard, gen: the entry goes if it is on shard with gen
 *                     and not moving; anything else: OK, no change.
 */
struct meta_sm_cmd {
    enum meta_sm_cmd_type type;
    const char *vhost;
    size_t vhost_len;
    const char *exchange;
    size_t exchange_len;
    enum meta_sm_exchange_type exchange_type;
    bool passive;
    bool durable;
    bool auto_delete;
    bool internal;
    bool if_unused;
    const char *dest;
    size_t dest_len;
    bool dest_is_exchange;
    const char *routing_key;
    size_t routing_key_len;
    const struct meta_sm_kv *args;
    size_t n_args;
    const char *shard; /* directory commands */
    size_t shard_len;
    const char *target;
    size_t target_len;
    uint64_t gen;
};

/* A directory entry; gen 0: no entry. Names are NUL-terminated. */
struct meta_sm_placement {
    char shard[META_SM_SHARD_MAX + 1];
    uint64_t gen;
    bool moving;
    char target[META_SM_SHARD_MAX + 1]; /* "" unless moving */
    uint64_t move_gen;                  /* 0 unless moving */
};

struct meta_sm_result {
    uint16_t reply_code;    /* 0 = ok; else 403/404/406/530... */
    const char *reply_text; /* static; "" when ok */
    /* 503 (an exchange type out of range) is a connection error for the
     * edge; every other code is a channel error. */
    uint64_t version; /* state version after the command */
    bool changed;
    /* directory commands and QUEUE_GONE: the entry after the command;
     * zero for the others */
    struct meta_sm_placement placement;
};

struct meta_sm;

struct meta_sm *meta_sm_new(void); /* NULL if allocation fails */
void meta_sm_free(struct meta_sm *sm);

/* Apply one committed command. Errors are in @res; a command that fails
 * changes nothing. */
void meta_sm_apply(struct meta_sm *sm, const struct meta_sm_cmd *cmd,
                   struct meta_sm_result *res);

/* Walk the state and abort on a broken invariant (common/invariant.h): the
 * indexes of exchanges and bindings agree with a walk over all of them,
 * the queue directory's list and hash chains hold the same entries, gens
 * are below next_gen and a move's above its entry's. O(entries): apply runs it
 * only in the sanitizer build (common/invariant.h deep_check_due). */
void meta_sm_check(const struct meta_sm *sm);

uint64_t meta_sm_version(const struct meta_sm *sm);

/* Entries (bindings, exchanges) visited since the machine was made or
 * restored by the walks of commands (lookups by identity, the bindings a
 * command removes, an auto-delete sweep's candidates) and of routing:
 * each walks what it touches, never every binding. Not replicated: for
 * tests that prove the cost. */
uint64_t meta_sm_visits(const struct meta_sm *sm);

/* Exchange lookup for the edge (exists? type? internal?). Returns 0 and fills
 * what is non-NULL, or -1 if the exchange does not exist. The default
 * exchange "" exists in every vhost. */
int meta_sm_exchange_info(const struct meta_sm *sm, const char *vhost,
                          size_t vhost_len, const char *exchange,
                          size_t exchange_len,
                          enum meta_sm_exchange_type *type, bool *durable,
                          bool *internal);

/* Queue names a publish reaches, each once, in a deterministic order. */
struct meta_sm_route_result {
    struct meta_sm_route_queue {
        const char *name; /* owned by the result, not NUL-terminated */
        size_t len;
    } *queues;
    size_t n_queues;
    bool exchange_missing; /* the exchange does not exist (404) */
};

void meta_sm_route_result_init(struct meta_sm_route_result *r);
void meta_sm_route_result_clear(struct meta_sm_route_result *r);

/* Route a message published to @exchange with @routing_key and @headers
 * (message headers, only for headers exchanges; may be NULL/0). The default
 * exchange "" yields the queue named @routing_key whether or not it exists
 * (the edge finds out). Exchange-to-exchange bindings are followed, each
 * exchange visited once. Returns 0. */
int meta_sm_route(const struct meta_sm *sm, const char *vhost,
                  size_t vhost_len, const char *exchange, size_t exchange_len,
                  const char *routing_key, size_t routing_key_len,
                  const struct meta_sm_kv *headers, size_t n_headers,
                  struct meta_sm_route_result *out);

/* Declared exchanges (pre-declared ones not counted) and bindings. */
void meta_sm_counts(const struct meta_sm *sm, uint64_t *exchanges,
                    uint64_t *bindings);

/* Where a queue lives. 0 and *out filled, or -1 (no entry; *out zeroed).
 * @out may be NULL. */
int meta_sm_queue_lookup(const struct meta_sm *sm, const char *vhost,
                         size_t vhost_len, const char *queue, size_t queue_len,
                         struct meta_sm_placement *out);
/* Directory entries, and the gen the next placement gets. */
uint64_t meta_sm_queue_count(const struct meta_sm *sm);
uint64_t meta_sm_queue_next_gen(const struct meta_sm *sm);
/* Every entry to @fn in creation order (the same on every replica); names
 * are borrowed for the call, not NUL-terminated; @fn must not change @sm.
 * Stops at the first nonzero return of @fn and returns it; else 0. */
int meta_sm_queue_each(const struct meta_sm *sm,
                       int (*fn)(void *data, const char *vhost,
                                 size_t vhost_len, const char *queue,
                                 size_t queue_len,
                                 const struct meta_sm_placement *p),
                       void *data);

/* A 64-bit hash of the snapshot bytes: equal on replicas that applied the
 * same commands (creation order is part of the state). */
uint64_t meta_sm_digest(const struct meta_sm *sm);

/* Whole state (including version) into one buffer from @alloc. 0 or -1.
 * Format 2 (with the directory); restore also reads format 1 (before the
 * directory: empty directory, next gen 1). */
int meta_sm_snapshot(const struct meta_sm *sm, void *(*alloc)(size_t),
                     void **out, size_t *out_len);
/* Replace the whole state; @buf borrowed; on error (-1) the state is kept. */
int meta_sm_restore(struct meta_sm *sm, const void *buf, size_t len);

#endif
