/*
 * mq_sm: the deterministic AMQP queue state machine of one data shard.
 *
 * Pure: no loop, no clock, no sockets. Every replica applies the same
 * committed commands in the same order with the same leader-stamped time and
 * ends in the same state; mq_sm_digest() lets tests (and replicas) check it.
 * It holds the queues of the shard with their ready messages, the messages
 * checked out ("unacked") to consumers, the registered consumers and the
 * publishers' dedup windows. Exchanges and bindings live in the meta group,
 * not here.
 *
 *   - Time: mq_sm_apply() takes now_ms (the leader's stamp of the entry);
 *     the machine keeps clock_ms = max(every now_ms), so time never goes back.
 *     x-message-ttl, per-message TTL and x-expires decide with clock_ms.
 *   - Identities are chosen by the edge and are opaque here: a router id, a
 *     connection id unique within its router, a channel id unique within its
 *     connection, and a consumer id unique within the shard (basic.get
 *     deliveries use a per-channel consumer id that is never registered).
 *   - Message ids and delivery tags come from two per-shard counters, so
 *     they are a pure function of the applied log. Delivery tags here are
 *     shard tags: the edge maps each to its channel's AMQP delivery tag.
 *   - Order: a queue's ready list is always sorted by message id. Enqueue
 *     appends; returned messages go back to where their id puts them, which
 *     is the head for everything delivered earlier, in original order.
 *
 * Errors are results (struct mq_sm_result) carrying the AMQP reply code the
 * edge sends; the only C error returns are restore of a corrupt snapshot
 * and the export read of a queue move.
 *
 * Placement generations. With a queue directory (the meta group records
 * which shard holds each queue under a generation `gen`, a cluster-wide
 * counter > 0) a DECLARE carries place_gen, the gen the router read from
 * the directory; 0 = no directory (standalone node, older routers), which
 * behaves as without generations. Each queue keeps the gen it was created
 * (or moved in) with. The machine keeps create_floor: every queue removed
 * for any reason (DELETE, x-expires, auto-delete, exclusive owner gone,
 * BOOT, MOVE_DONE) raises it to at least the queue's gen + 1 (not an
 * import dropped by MOVE_ABORT: it never served, so no directory entry can
 * name it), and a DECLARE that would create a queue with
 * 0 < place_gen < create_floor answers MQ_SM_PLACE_STALE and changes
 * nothing: the directory entry it came from may be a deleted queue's, and
 * re-creating the queue from it would race the directory's own cleanup.
 * A MOVE_IN chunk 0 that would create the queue is held to the same floor
 * (so a coordinator's blind rerun cannot bring back a moved queue deleted
 * since at its target).
 * The router then asks the directory for a fresh gen, which is above every
 * gen handed out before and so above the floor. The floor is per shard,
 * not per queue, so a DECLARE may occasionally be sent back for a fresh gen
 * it did not strictly need; that costs a round trip, never a wrong answer.
 * A DECLARE of an existing queue ignores place_gen. Removed queues are
 * reported with their gen (struct mq_sm_deleted) so the directory drops an
 * entry only if it is still that incarnation's.
 *
 * Moving a queue Q from shard S to shard T (ringmqctl queue move; every
 * step is idempotent, so a coordinator that died reruns it):
 *
 *   S: MOVE_OUT     Q is frozen: its checked-out messages go back to ready
 *                   as redeliveries (in id order, as RETURN does; later
 *                   SETTLE/RETURN/DROP of their tags act on nothing), and
 *                   from now on every command naming Q answers MQ_SM_MOVING
 *                   and changes nothing; EXPIRE leaves Q alone (no TTL, no
 *                   x-expires). Q's consumers stay registered at S until
 *                   MOVE_DONE; CANCEL and the RETURNs of gone consumers
 *                   still unregister them, but Q is not auto-deleted while
 *                   frozen (nor at BOOT). Exclusive queues do not move
 *                   (they end with their connection): PRECONDITION_FAILED.
 *   S: export read  mq_sm_export() at S's leader, chunk by chunk
 *   T: MOVE_IN      one chunk each (body), place_gen = Q's new gen; chunk
 *                   0 creates Q at T in the moving-in state (commands
 *                   naming it answer MQ_SM_MOVING), registers its
 *                   consumers and merges S's publisher dedup windows into
 *                   T's (per client the union, in T's window size; S's
 *                   clients new to T come in as T's least recently used,
 *                   so T's client limit drops S's least recent first);
 *                   the others append messages with T's own ids in S's
 *                   order
 *   T: MOVE_IN_END  Q is a normal queue at T (x-expires restarts: the move
 *                   was not idleness)
 *   (the directory switches Q to T)
 *   S: MOVE_DONE    Q is deleted at S (nothing dead-lettered, its
 *                   consumers unregistered) and a tombstone (vhost, queue,
 *                   gen) is left: every command naming Q at S then answers
 *                   MQ_SM_MOVED (the router re-reads the directory), except
 *                   a DECLARE creating Q with place_gen > the tombstone's
 *                   gen and a MOVE_IN chunk 0, which clear the tombstone.
 *                   At most MQ_SM_TOMBSTONES_MAX are kept, oldest dropped
 *                   first; past that a stale router gets NOT_FOUND (or
 *                   PLACE_STALE, from the floor) instead of MOVED.
 *   MOVE_ABORT      at S unfreezes Q (the redelivered messages stay ready;
 *                   an auto-delete queue whose consumers left meanwhile
 *                   goes now); at T drops a moving-in Q entirely with the
 *                   consumers it registered (the dedup windows merged stay:
 *                   they only name seqs S applied). OK no-op otherwise.
 *                   After MOVE_IN_END T may serve Q (a router whose view of
 *                   the directory is behind, e.g. one that still has Q at
 *                   T from before an earlier move away, is answered), so
 *                   from there the move can only be finished: an abort at
 *                   T that names the move (place_gen = Q's gen at T) then
 *                   answers moved = true and changes nothing. The
 *                   coordinator aborts at T first, S second.
 *
 * A move leaves Q's bindings alone (they live in the meta group by name):
 * removals of a move are reported with reason MQ_SM_DEL_MOVED, which is
 * not a deletion of the queue. Consumers that S unregisters after the
 * export of chunk 0 was read stay registered at T until their channel's
 * RETURN reaches T (the edge sends channel/connection RETURNs to every
 * shard): as for a lost CANCEL.
 *
 * Message bodies. The state holds no body bytes (once it switched to
 * external bodies, below): each message (and each
 * dead letter kept in the outbox) names its body by a ref (seg, off, len)
 * in a body store the caller keeps (node/mq_store on a replica, a few
 * arrays in the tests). Where a body goes is decided here, from the
 * replicated state, so it is a pure function of the log and every
 * replica's store holds the same bytes at the same place:
 *
 *   - the state has a cursor (cur_seg >= 1, cur_off) and a table of the
 *     segments in use: for each, refs (messages and outbox entries naming
 *     it) and used (bytes reserved in it);
 *   - a body of len L takes a record of MQ_SM_REC_HDR + L bytes rounded up
 *     to MQ_SM_REC_ALIGN at (cur_seg, cur_off); if cur_off > 0 and the
 *     record does not fit in MQ_SM_SEG_BYTES the cursor first moves to
 *     (cur_seg + 1, 0) (a record larger than a segment gets a segment of
 *     its own). So an off is always below MQ_SM_SEG_BYTES (struct
 *     mq_sm_config seg_bytes, if set, instead);
 *   - record layout, written by the store (mq_sm only reserves the room):
 *     u32 body length (LE) | u32 crc32 (zlib, LE) of the length's 4 bytes
 *     and the body | the body | zero padding to the next multiple of
 *     MQ_SM_REC_ALIGN;
 *   - a segment is freed when its last ref goes and the cursor is not in
 *     it, or when the cursor leaves it with no ref: the result names it
 *     (struct mq_sm_result freed) and it is never named again.
 *
 * Memory: a message costs its struct, 64 bytes on LP64 (80 with glibc's
 * malloc header and rounding), plus 48 (+16) while checked out; a body
 * none (while bodies are inline, below: the body's bytes after the
 * struct, one allocation). The segment table is a few entries (64 MiB
 * each).
 *
 * Switching to external bodies. The machine before refs kept bodies in
 * the state, and its logs and snapshots hold them. So that every replica
 * of a group switches at the same log index, whatever snapshot it
 * restored, the switch is replicated state (a flag, in snapshots and
 * the digest):
 *
 *   - a new state, and one restored from a snapshot of version 5 or
 *     older, keeps bodies inline: ENQUEUE and MOVE_IN copy the body into
 *     the state and name no write, deliveries and dead letters come with
 *     their body already filled (a copy, NULL if empty) and seg 0 (no
 *     segment has that number: nothing to read), an export copies it, and
 *     the cursor stays at (1, 0) with no segment;
 *   - the first ERA or BOOT applied with bodies inline switches (after
 *     what BOOT does itself): every body left gets a record, in this
 *     order, a function of the state: each queue's ready messages (queues
 *     in creation order, each in queue order), each consumer record's
 *     checked-out messages (records in creation order, each in tag
 *     order), then the outbox entries (id order). The result names each
 *     as a write whose body the result owns (struct mq_sm_write own), and
 *     from then on the state keeps refs only. A leader writes ERA at the
 *     start of every term and BOOT on a standalone start, before any
 *     client command, so a group switches at its first leader change
 *     after the upgrade, and a group that never ran the old machine at
 *     its first leader's first command, with nothing to move;
 *   - the switch never goes back. A replica still running the machine
 *     before refs applies the same ERA as a no-op and keeps its bodies
 *     inline: its digest differs from the others' from then on, which is
 *     why the nodes of a group are upgraded together (docs/amqp.md).
 *
 * Results carry refs: `writes` (ENQUEUE, MOVE_IN, the switch below) name
 * the bodies the caller must store, in the order given, before it reads
 * anything of that result; deliveries and dead letters name the bodies
 * the caller reads to fill their body fields (NULL until then; with
 * bodies inline they come filled). A dead letter's segment may be freed
 * by the same command (a dead letter the outbox did not keep): the store
 * must keep a freed segment readable until the caller is done with the
 * result (node/mq_store unlinks it only after a snapshot past it).
 *
 * Ownership: every pointer in a struct mq_sm_cmd is borrowed for the call
 * (bytes are copied into the state; an ENQUEUE's or MOVE_IN's body is
 * pointed to by the result's writes, valid as long as the command's
 * buffer). Everything a result points to is owned by the result and
 * released by mq_sm_result_clear(), except reply_text, which is a static
 * string, and the writes' bodies that are the command's (own NULL).
 * Bodies the caller puts in deliveries and dead letters must come from
 * malloc: the result frees them.
 */
#ifndef RINGMQ_MQ_SM_H
#define RINGMQ_MQ_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/mq_segs.h"

/* AMQP shortstr: queue, vhost and exchange names are at most 255 bytes. */
#define MQ_SM_NAME_MAX 255
#define MQ_SM_DEDUP_WINDOW_DEFAULT 1024
#define MQ_SM_DEDUP_CLIENTS_DEFAULT 4096
#define MQ_SM_MAX_TAGS 65536 /* tags in one by-tag command */
/* Tombstones of queues moved away, kept per shard (oldest dropped). Each
 * costs about 64 bytes plus its names. */
#define MQ_SM_TOMBSTONES_MAX 16384
/* Dead letters (see "Dead letters" below): an outbox entry handed to an
 * edge is handed out again by an EXPIRE this long after, unless settled.
 * Longer than the edge's retries of one ENQUEUE (EDGE_ENQUEUE_RETRY_MS),
 * so that a republish still under way is not doubled. */
#define MQ_SM_DL_CLAIM_MS 20000
/* Entries one EXPIRE hands out again, and their body bytes (at least one
 * entry): an answer stays small, the next tick takes the rest. */
#define MQ_SM_DL_HAND_MAX 256
#define MQ_SM_DL_HAND_BYTES (8u * 1024 * 1024)

/* Body records (see "Message bodies" above): header, alignment, and the
 * size of a segment. */
#define MQ_SM_REC_HDR MQ_SEGS_REC_HDR
#define MQ_SM_REC_ALIGN MQ_SEGS_REC_ALIGN
#define MQ_SM_SEG_BYTES MQ_SEGS_SEG_BYTES

/* A body the caller must store at (seg, off): len bytes at body (from
 * the command, or, for the switch to external bodies, inside own); never
 * NULL, also for len 0 (a checksum routine may treat a NULL buffer
 * apart: zlib's crc32 does). */
struct mq_sm_write {
    uint32_t seg;
    uint32_t off;
    uint32_t len;
    const void *body;
    /* NULL: body is borrowed from the command. Else the block body lies
     * in, owned by the result (mq_sm_result_drop_writes()). */
    void *own;
};

struct mq_sm;

struct mq_sm_config {
    /* Sequence numbers remembered per publisher client, rounded up to a
     * multiple of 64; 0 = MQ_SM_DEDUP_WINDOW_DEFAULT. The edge keeps at most
     * this many enqueues per client unconfirmed. */
    uint32_t dedup_window;
    /* Clients remembered; beyond it the least recently used is forgotten.
     * 0 = MQ_SM_DEDUP_CLIENTS_DEFAULT. */
    uint32_t dedup_clients;
    /* Body segment size, a multiple of MQ_SM_REC_ALIGN; 0 =
     * MQ_SM_SEG_BYTES. Decides where bodies go, so it is replicated
     * state: snapshots carry it and restore takes it from them, like the
     * dedup window. Only tests set it (small segments, to see them come
     * and go). */
    uint32_t seg_bytes;
};

enum mq_sm_cmd_type {
    MQ_SM_DECLARE = 0, /* queue.declare */
    MQ_SM_DELETE,      /* queue.delete */
    MQ_SM_PURGE,       /* queue.purge */
    MQ_SM_ENQUEUE,     /* one routed publish to one queue of this shard */
    MQ_SM_CONSUME,     /* basic.consume: register who.consumer */
    MQ_SM_CANCEL,      /* basic.cancel: unregister, unacked stay checked out */
    MQ_SM_CHECKOUT,    /* deliver ready messages (push or basic.get) */
    MQ_SM_SETTLE,      /* basic.ack */
    MQ_SM_RETURN,      /* requeue: nack/reject requeue=1, recover, gone */
    MQ_SM_DROP,        /* reject/nack requeue=0: dead-letter or discard */
    MQ_SM_EXPIRE,      /* periodic tick: TTLs and x-expires of all queues */
    /* Written by leaders before MQ_SM_ERA existed: return every
     * checked-out message (redelivered) and make every CHECKOUT seq new.
     * Still applied as it always was, so an old log replays alike on
     * every replica; no leader writes it any more. */
    MQ_SM_LEADER_CHANGED,
    /* The whole broker restarted (standalone node start): every consumer
     * is gone, so unregister them all and return every checked-out message
     * (redelivered); delete every non-durable queue (RabbitMQ: they do not
     * survive a broker restart) and every exclusive queue (its connection
     * is gone). Surviving auto-delete queues forget they had a consumer.
     * Then bodies still inline switch (see "Switching to external
     * bodies"). */
    MQ_SM_BOOT,
    /* Moving one queue between shards: see the top of this file. */
    MQ_SM_MOVE_OUT,    /* at the source: freeze */
    MQ_SM_MOVE_IN,     /* at the target: one export chunk */
    MQ_SM_MOVE_IN_END, /* at the target: the queue is normal */
    MQ_SM_MOVE_DONE,   /* at the source: delete, leave a tombstone */
    MQ_SM_MOVE_ABORT,  /* at either: undo */
    /* The edge republished these outbox entries (tags: their outbox ids):
     * forget them. See "Dead letters" below. */
    MQ_SM_DL_SETTLE,
    /* A new leader's era begins. Changes nothing (but bodies still
     * inline: see "Switching to external bodies"): checkouts are
     * replicated state, so every delivery stays with its consumer (and
     * what is set aside stays set aside), and a CHECKOUT retried with the
     * same seq still gets its deliveries. Only owners that are really
     * gone give theirs back, by RETURN (the edge's for channels and
     * connections, the leader's router lease for routers: see
     * mq_sm_for_each_router()). A replica that does not know this type
     * skips the entry, which is the same no-op (only its clock_ms waits
     * for the next entry's stamp), but for the switch. */
    MQ_SM_ERA,
    MQ_SM_CMD__COUNT
};

/* Where a queue stands in a move (struct mq_sm_queue_stats). */
enum mq_sm_move_state {
    MQ_SM_MOVE_NONE = 0,
    MQ_SM_MOVE_FROZEN, /* source, after MOVE_OUT */
    MQ_SM_MOVE_IMPORT  /* target, between MOVE_IN chunk 0 and MOVE_IN_END */
};

/* Which checked-out messages SETTLE/RETURN/DROP act on. */
enum mq_sm_scope {
    /* who.{router,conn,channel}'s deliveries with shard tag @tag, or with
     * @multiple every one with tag <= @tag (tag 0: all of the channel's). */
    MQ_SM_SCOPE_TAG = 0,
    /* RETURN only; the owner went away: its deliveries are returned AND its
     * consumers unregistered (auto-delete may follow). CONNECTION and
     * ROUTER also delete the exclusive queues the connection(s) own. */
    MQ_SM_SCOPE_CONSUMER,   /* who.consumer */
    MQ_SM_SCOPE_CHANNEL,    /* who.{router,conn,channel} */
    MQ_SM_SCOPE_CONNECTION, /* who.{router,conn} */
    MQ_SM_SCOPE_ROUTER,     /* who.router */
    MQ_SM_SCOPE__COUNT
};

struct mq_sm_who {
    uint64_t router;
    uint64_t conn;
    uint64_t channel;
    uint64_t consumer;
};

/* Queue arguments, already parsed and validated by the edge (it gives 406
 * for unknown or ill-typed x- arguments). */
struct mq_sm_queue_args {
    bool has_message_ttl;
    bool has_expires;
    bool has_max_length;
    bool has_dlx;
    bool has_dlrk;
    uint64_t message_ttl_ms; /* x-message-ttl */
    uint64_t expires_ms;     /* x-expires, > 0 */
    uint64_t max_length;     /* x-max-length */
    /* x-overflow: false = drop-head (dead-letter the oldest), true =
     * reject-publish (refuse the new one: MQ_SM_REJECTED). */
    bool overflow_reject;
    const char *dlx;         /* x-dead-letter-exchange, "" allowed */
    size_t dlx_len;
    const char *dlrk;        /* x-dead-letter-routing-key */
    size_t dlrk_len;
};

/*
 * One command. Fields not listed for a type are ignored.
 *   DECLARE   vhost, queue, who.{router,conn}, passive, durable, exclusive,
 *             auto_delete, args, place_gen (0 = no directory)
 *   DELETE    vhost, queue, who.{router,conn}, if_unused, if_empty
 *   PURGE     vhost, queue, who.{router,conn}
 *   ENQUEUE   vhost, queue, client_id + seq (seq 0 = no dedup), has_ttl +
 *             ttl_ms (the message's expiration property), body, prev_seq:
 *             the seq of the same client's previous ENQUEUE to this queue
 *             if the edge has not seen it settle (0 = none). While that
 *             one is not applied here (a seq below the client's window
 *             counts as applied) the ENQUEUE answers OUT_OF_ORDER and
 *             changes nothing: a publish whose outcome was unknown and
 *             is retried is not overtaken by a later one of the channel,
 *             which a new leader got first.
 *   CONSUME   vhost, queue, who, exclusive; max_messages and prefetch:
 *             what its first CHECKOUT will carry (0: unknown until then)
 *   CANCEL    who.consumer; what was set aside for it is ready again
 *   CHECKOUT  vhost, queue, who, max_messages, prefetch (0 = unlimited),
 *             seq: the consumer's CHECKOUT number (0 = none). A seq not
 *             above the consumer's last one that delivered is a retry: it
 *             gets that CHECKOUT's deliveries still unacked, never new ones.
 *             Dispatch, for a registered consumer, as RabbitMQ's round
 *             robin: it first gets what was set aside for it, then the
 *             ready messages are dealt one by one, in queue order, over
 *             the queue's registered consumers that can take one more,
 *             least recently served first; the others' share is set aside
 *             for them (checked out to them, counted unacked, not yet
 *             delivered) until their own next CHECKOUT. Another consumer
 *             can take one more while what is set aside for it is below
 *             its last announced max_messages (CONSUME's, then its last
 *             CHECKOUT's) and, with a prefetch, its unacked are below it.
 *             Dealing ends when this consumer can take no more. Messages
 *             set aside go back to ready, not redelivered, when their
 *             consumer cancels or goes (RETURN, BOOT, move); by-tag
 *             SETTLE/RETURN/DROP never touch them (the edge has not seen
 *             their tags). An unregistered consumer (basic.get) takes from
 *             the head
 *   SETTLE    who, tag + multiple, or tags      (scope is always TAG)
 *   RETURN    who, scope, tag + multiple, or tags (scope TAG)
 *   DROP      who, tag + multiple, or tags      (scope is always TAG)
 *   EXPIRE, LEADER_CHANGED, BOOT, ERA: nothing
 *   DL_SETTLE tags (outbox ids; unknown ones ignored); count = removed
 *   MOVE_OUT, MOVE_IN_END, MOVE_DONE: vhost, queue
 *   MOVE_ABORT vhost, queue, place_gen (at the target: the move's gen; 0:
 *             only a moving-in queue is dropped, nothing else answered)
 *   MOVE_IN   vhost, queue, body (one chunk from mq_sm_export() of this
 *             queue), place_gen (> 0: the queue's gen at this shard; the
 *             same for every chunk of one move)
 *
 * Answers of the move commands (status OK unless said otherwise):
 *   MOVE_OUT     count = ready messages of the frozen queue (what the
 *                export carries; the same on a repeat), gen = its gen.
 *                Already moved (tombstone): OK with moved = true, gen =
 *                the tombstone's. No queue: NOT_FOUND; exclusive:
 *                PRECONDITION_FAILED; being imported here: MOVING.
 *   MOVE_IN      chunk 0: creates the queue (count = its messages to come)
 *                or, repeated, changes nothing; PLACE_STALE if creating
 *                with place_gen below the floor. If the queue exists and is
 *                not this move's import (same source freeze and place_gen,
 *                before or after MOVE_IN_END): PRECONDITION_FAILED. A
 *                consumer id already known here: BAD_REQUEST (ids are the
 *                edges' and unique per router: a collision is a bug).
 *                Message chunks: count = messages appended; a chunk whose
 *                messages are all imported already is a no-op OK (resume),
 *                one starting past the imported ones BAD_REQUEST (a gap),
 *                one of another move PRECONDITION_FAILED. Corrupt bytes:
 *                BAD_REQUEST. Nothing changes unless OK.
 *   MOVE_IN_END  PRECONDITION_FAILED while messages are missing, or for a
 *                queue that did not come by a move; OK again once normal.
 *   MOVE_DONE    only on a frozen queue (else PRECONDITION_FAILED, MOVING
 *                while imported); count = messages dropped with it, gen,
 *                moved = true; again OK (count 0) once tombstoned.
 *   MOVE_ABORT   OK always (count 1 if it undid something); moved = true if
 *                a tombstone says the move already finished (without
 *                place_gen: at the source), or, with place_gen (at the
 *                target, where a tombstone is an earlier incarnation's),
 *                if Q finished this move's import here (MOVE_IN_END).
 * Naming a frozen or moving-in queue, every other command answers MOVING;
 * naming a tombstoned one, MOVED (ENQUEUE after its dedup check, so a
 * seq already applied is still DUPLICATE).
 */
struct mq_sm_cmd {
    enum mq_sm_cmd_type type;
    const char *vhost;
    size_t vhost_len;
    const char *queue;
    size_t queue_len;
    struct mq_sm_who who;

    bool passive;
    bool durable;
    bool exclusive;
    bool auto_delete;
    struct mq_sm_queue_args args;

    bool if_unused;
    bool if_empty;

    uint64_t client_id;
    uint64_t seq;
    uint64_t prev_seq; /* ENQUEUE: the seq it must follow (0 = none) */
    bool has_ttl;
    uint64_t ttl_ms;
    /* Opaque to the state machine: whatever the edge needs to deliver or
     * dead-letter the message (exchange, routing key, properties, body). */
    const void *body;
    size_t body_len; /* <= UINT32_MAX */

    uint32_t max_messages;
    uint32_t prefetch;

    enum mq_sm_scope scope;
    uint64_t tag;
    bool multiple;
    /* When n_tags > 0: SETTLE / DROP / RETURN (scope TAG) act on exactly
     * these tags of the channel, and tag and multiple are unused. The edge
     * settles a batch this way, never as "every tag up to": the channel
     * may own deliveries the edge never received (a CHECKOUT whose reply
     * was lost), and a range would settle those unseen. Borrowed. */
    const uint64_t *tags;
    size_t n_tags; /* <= MQ_SM_MAX_TAGS */

    uint64_t place_gen; /* DECLARE, MOVE_IN, MOVE_ABORT: see the top of
                         * this file */
};

enum mq_sm_status {
    MQ_SM_OK = 0,
    MQ_SM_DUPLICATE,           /* ENQUEUE (client_id, seq) already applied */
    MQ_SM_STALE,               /* ENQUEUE seq below the client's window */
    MQ_SM_NOT_FOUND,           /* 404 */
    MQ_SM_RESOURCE_LOCKED,     /* 405: exclusive queue of another connection */
    MQ_SM_PRECONDITION_FAILED, /* 406 */
    MQ_SM_ACCESS_REFUSED,      /* 403: exclusive consumer conflict */
    MQ_SM_BAD_REQUEST,         /* malformed command: an edge bug; no change */
    MQ_SM_NO_MEMORY,           /* a move's buffer could not be had
                                  (mq_sm_export's @alloc) */
    MQ_SM_REJECTED,            /* ENQUEUE to a full x-overflow reject-publish
                                  queue: not stored (the edge nacks) */
    /* Placement answers, for the router to retry or re-resolve; nothing
     * changed. An edge that gets one treats it as "not applied"
     * (mq_sm_status_placement). */
    MQ_SM_MOVING,      /* the queue is frozen or being imported: retry */
    MQ_SM_MOVED,       /* the queue moved away: re-read the directory */
    MQ_SM_PLACE_STALE, /* DECLARE create with place_gen below the floor:
                          get a fresh gen from the directory */
    MQ_SM_OUT_OF_ORDER, /* ENQUEUE whose prev_seq is not applied yet:
                           nothing changed; the edge sends it again */
    /* mq_sm_export() only: a body could not be read (the store of this
     * replica lacks it for now); nothing allocated, ask again later. */
    MQ_SM_UNAVAILABLE,
    MQ_SM_STATUS__COUNT
};

static inline bool mq_sm_status_placement(enum mq_sm_status st)
{
    return st == MQ_SM_MOVING || st == MQ_SM_MOVED ||
           st == MQ_SM_PLACE_STALE;
}

/* AMQP reply codes the edge sends with channel.close. */
#define MQ_SM_REPLY_ACCESS_REFUSED 403
#define MQ_SM_REPLY_NOT_FOUND 404
#define MQ_SM_REPLY_RESOURCE_LOCKED 405
#define MQ_SM_REPLY_PRECONDITION_FAILED 406

struct mq_sm_delivery {
    uint64_t tag;    /* shard delivery tag */
    uint64_t msg_id;
    uint32_t delivery_count; /* 1 on first delivery */
    bool redelivered;        /* returned at least once */
    uint32_t seg;            /* the body's ref, with body_len */
    uint32_t off;
    /* seg > 0: NULL from mq_sm_apply(); the caller fills it (malloc,
     * owned by the result from then on) from the body store. seg 0: the
     * body was inline (see "Switching to external bodies"), its copy is
     * here already (NULL if empty). */
    void *body;
    size_t body_len;
};

enum mq_sm_dl_reason {
    MQ_SM_DL_REJECTED = 0, /* x-death reason "rejected" */
    MQ_SM_DL_EXPIRED,      /* "expired" */
    MQ_SM_DL_MAXLEN        /* "maxlen" */
};

/*
 * Dead letters, at least once. A message that leaves a queue with a
 * dead-letter exchange (DROP, TTL by EXPIRE/CHECKOUT/ENQUEUE, max-length
 * by ENQUEUE) is kept in the shard's outbox (sm/mq_outbox.h), part of the
 * replicated state, under an outbox id from a per-shard counter, and is
 * returned in the result of the command that removed it (the fast path),
 * claimed at the command's time. The edge that gets it republishes it
 * and, once every ENQUEUE of it is confirmed, sends DL_SETTLE with its id
 * to this shard. An entry not settled MQ_SM_DL_CLAIM_MS after its claim
 * (the reply was lost, the edge died, an ENQUEUE failed) is returned by
 * the next EXPIRE (any edge's), claimed again, in id order, at most
 * MQ_SM_DL_HAND_MAX per EXPIRE. So every dead letter is republished until
 * one edge confirms it: at least once. A dead letter that does not fit
 * the outbox (mq_outbox.h bounds) comes with outbox_id 0 and is not kept:
 * at most once, counted in struct mq_sm_stats dead_dropped.
 * The outbox belongs to the shard, not to a queue: deleting, expiring or
 * moving the source queue leaves its entries where they are (a move does
 * not export them; the source shard keeps handing them out).
 */

/* A message that left a queue with a dead-letter exchange. All strings are
 * owned by the result (one allocation) and not NUL-terminated. */
struct mq_sm_dead_letter {
    enum mq_sm_dl_reason reason;
    uint64_t msg_id;
    /* Its outbox id: settle it with DL_SETTLE at this shard (0: not kept,
     * nothing to settle). Ids name one shard's entries: with the source
     * queue's gen (placement gen when it was dead-lettered, see the top of
     * this file) they name one dead letter cluster-wide, which the edge
     * uses as a publisher dedup id. */
    uint64_t outbox_id;
    uint64_t gen;
    bool has_dlrk;
    const char *vhost;
    size_t vhost_len;
    const char *queue;
    size_t queue_len;
    const char *dlx;
    size_t dlx_len;
    const char *dlrk;
    size_t dlrk_len;
    uint32_t seg; /* the body's ref, with body_len */
    uint32_t off;
    /* As a delivery's: filled by the caller, or already (seg 0). */
    const void *body;
    size_t body_len;
};

enum mq_sm_deleted_reason {
    MQ_SM_DEL_COMMAND = 0,  /* DELETE */
    MQ_SM_DEL_EXPIRES,      /* x-expires */
    MQ_SM_DEL_AUTO_DELETE,  /* last consumer went */
    MQ_SM_DEL_EXCLUSIVE,    /* owner connection went */
    MQ_SM_DEL_BOOT,         /* non-durable or exclusive, at BOOT */
    /* Not a deletion: the queue lives on at another shard (MOVE_DONE at
     * the source, MOVE_ABORT of an import at the target). Keep its
     * bindings and directory entry. */
    MQ_SM_DEL_MOVED
};

struct mq_sm_deleted {
    enum mq_sm_deleted_reason reason;
    uint64_t gen; /* the removed queue's placement gen (0: none) */
    const char *vhost; /* owned by the result, one allocation with name */
    size_t vhost_len;
    const char *queue;
    size_t queue_len;
};

struct mq_sm_result {
    enum mq_sm_status status;
    uint16_t reply_code;    /* 0 unless the status maps to an AMQP code */
    const char *reply_text; /* static, "" when OK */
    uint64_t msg_id;        /* ENQUEUE (also on DUPLICATE: 0, unknown) */
    /* DECLARE/DELETE/PURGE: the queue's ready message count (declare-ok,
     * delete-ok, purge-ok); CHECKOUT: delivered; SETTLE/RETURN/DROP:
     * messages acted on; ENQUEUE: 1 if stored (0 if max-length dropped it
     * at once); EXPIRE: messages expired; LEADER_CHANGED/BOOT: messages
     * returned; DL_SETTLE: entries removed. */
    uint64_t count;
    uint32_t consumer_count; /* DECLARE */
    /* CHECKOUT: ready messages left in the queue (basic.get-ok's
     * message-count). */
    uint64_t message_count;
    /* CHECKOUT: messages set aside for the queue's other consumers. */
    uint64_t set_aside;

    struct mq_sm_delivery *deliveries; /* CHECKOUT, in delivery order */
    size_t n_deliveries;
    /* Any command that removes messages; EXPIRE also outbox entries
     * handed out again. */
    struct mq_sm_dead_letter *dead;
    size_t n_dead;
    struct mq_sm_deleted *deleted; /* every queue removed by this command */
    size_t n_deleted;
    /* Never set by mq_sm_apply() (it aborts when it cannot allocate).
     * The caller that fills bodies sets it when it left out a delivery
     * whose body its store could not give (node/mq_svc): the edge then
     * returns the deliveries it did not see. */
    bool incomplete;
    /* MOVE_*: the queue has moved away from this shard (tombstone). */
    bool moved;
    /* Bodies to store (ENQUEUE, MOVE_IN, and the ERA or BOOT that
     * switches to external bodies), in reservation order. */
    struct mq_sm_write *writes;
    size_t n_writes;
    /* Segments freed by this command (see "Message bodies" above),
     * ascending. */
    uint32_t *freed;
    size_t n_freed;
    /* DECLARE (OK): the queue's placement gen; MOVE_OUT, MOVE_DONE: see
     * struct mq_sm_cmd. */
    uint64_t gen;
};

struct mq_sm_queue_stats {
    uint64_t ready;
    uint64_t ready_bytes;
    uint64_t unacked;
    uint32_t consumers; /* registered */
    uint64_t gen;
    enum mq_sm_move_state move;
};

struct mq_sm_stats {
    uint64_t queues;
    uint64_t ready;
    uint64_t unacked;
    uint64_t consumers; /* consumer records, registered or basic.get */
    uint64_t clients;   /* publishers with a dedup window */
    uint64_t next_msg_id;
    uint64_t next_tag;
    uint64_t clock_ms;
    uint64_t create_floor;
    uint64_t tombstones;
    uint64_t dead_kept;       /* outbox entries not settled */
    uint64_t dead_kept_bytes; /* their names and bodies */
    uint64_t dead_dropped;    /* dead letters the full outbox did not keep */
    uint64_t next_dead_id;
    bool bodies_external; /* see "Switching to external bodies" */
    uint64_t applied; /* not replicated: reset by restore */
};

/* Returns NULL only if allocation fails. @cfg is copied (NULL = defaults). */
struct mq_sm *mq_sm_new(const struct mq_sm_config *cfg);
void mq_sm_free(struct mq_sm *sm);

void mq_sm_result_init(struct mq_sm_result *res);
/* Free what @res owns and re-init it. */
void mq_sm_result_clear(struct mq_sm_result *res);
/* Free @res's writes and the bodies it owns for them (n_writes 0): for a
 * caller that stored them and keeps the result for its other parts (a
 * switch to external bodies writes every body of the state at once). */
void mq_sm_result_drop_writes(struct mq_sm_result *res);

/*
 * Apply one committed command at leader time @now_ms. @res is initialized
 * here (the caller clears it after use). The state change is a pure
 * function of (state, now_ms, cmd). When the host cannot allocate, apply
 * aborts the process (as raft and dqlite do, and cache_sm): a replica that
 * alone refused a command the others applied would diverge silently; a
 * restarted node applies its log again.
 */
void mq_sm_apply(struct mq_sm *sm, uint64_t now_ms,
                 const struct mq_sm_cmd *cmd, struct mq_sm_result *res);

/* Walk the whole state and abort on a broken invariant (common/invariant.h):
 * lists, counts and bytes agree, ready messages in id order and checked
 * out nowhere, every consumer's unacked in tag order and in the tag table,
 * set-aside counts derived right, the derived indexes (per queue,
 * channel, connection, router) agree with a walk over everything, every
 * body ref names a segment of the table inside what was reserved there
 * and each segment's refs are exactly the messages and outbox entries
 * naming it (with bodies inline: every body is, and nothing is placed).
 * O(messages): apply runs it only in the
 * sanitizer build (common/invariant.h deep_check_due). */
void mq_sm_check(const struct mq_sm *sm);

/* Records (consumer records, queues, routers) visited since the machine
 * was made or restored by the walks of CANCEL's auto-delete sweep, of a
 * queue's deletion, of a multiple settle, of dispatch over a queue's
 * consumers, of a RETURN of a consumer, channel, connection or router,
 * of a freeze, of an export's definition and of mq_sm_for_each_router,
 * and the ready messages a requeue passes to put given-back ones in
 * place: each walks what it touches, never the whole shard. Not
 * replicated: for tests that prove the cost. */
uint64_t mq_sm_visits(const struct mq_sm *sm);

/*
 * The export read of a queue move, at the source's leader: one chunk of
 * frozen queue @queue into one buffer from @alloc (raft_malloc or malloc).
 * @cursor 0 asks for chunk 0 (the queue's definition, its registered
 * consumers and every publisher dedup window of this shard); each answer
 * gives the @next_cursor to ask next and whether it was the @last.
 * Message chunks hold the frozen messages in queue order, at least one and
 * otherwise at most @max_bytes of encoded messages (25 bytes + body each).
 * A cursor names a position in the frozen queue, which cannot change while
 * frozen; each chunk carries its cursor (its index), and MOVE_IN resumes by
 * position, so a coordinator that restarts from cursor 0, even with
 * another @max_bytes, neither loses nor doubles a message.
 * The bytes are mq_sm's own (versioned, checksummed) and go to the
 * target's MOVE_IN as they are; they carry the bodies, which @read gets
 * from the body store: it copies the @len bytes of the body at (@seg,
 * @off) to @out and returns 0, or -1 if it cannot (missing or corrupt);
 * bodies still inline are copied from the state instead.
 * Pure: reads @sm only.
 * Returns MQ_SM_OK, or: NOT_FOUND (no queue), MOVED (already moved:
 * tombstone), PRECONDITION_FAILED (not frozen), BAD_REQUEST (bad names,
 * cursor beyond the end), NO_MEMORY (@alloc failed), UNAVAILABLE (@read
 * failed for a body of the chunk: the coordinator asks again later, as for
 * any failed read). Nothing is allocated unless OK.
 */
typedef int (*mq_sm_read_fn)(void *arg, uint32_t seg, uint32_t off,
                             uint32_t len, void *out);
enum mq_sm_status mq_sm_export(const struct mq_sm *sm, const char *vhost,
                               size_t vhost_len, const char *queue,
                               size_t queue_len, uint64_t cursor,
                               size_t max_bytes, void *(*alloc)(size_t),
                               mq_sm_read_fn read, void *read_arg,
                               void **out, size_t *out_len,
                               uint64_t *next_cursor, bool *last);

/* Call @fn once for each router that owns something here: a consumer
 * record (registered, or holding checked-out or set-aside messages) or an
 * exclusive queue; what a RETURN scope ROUTER of it would act on. In no
 * particular order. Pure: reads @sm only; @fn must not change it. */
void mq_sm_for_each_router(const struct mq_sm *sm,
                           void (*fn)(void *data, uint64_t router),
                           void *data);

/* The earliest replicated clock (clock_ms) at which an EXPIRE would change
 * more than clock_ms: expire a ready message at a queue's head, delete a
 * queue by x-expires, or hand out an outbox entry again
 * (MQ_SM_DL_CLAIM_MS after its claim); UINT64_MAX if nothing will be due
 * unless other commands change the state. It may lie in the past (a
 * returned message that had expired waits at the head for an EXPIRE).
 * An EXPIRE applied before it acts on nothing, so a leader may answer one
 * without proposing it (node/mq_svc.c). A function of the replicated
 * state, read from an index of the queues by due time and the outbox's
 * claim order (derived, rebuilt by restore): O(1) amortized. Not const:
 * it may correct the index's keys (what apply_expire() reads too), never
 * the replicated state. EXPIRE itself visits only the queues due. */
uint64_t mq_sm_next_due(struct mq_sm *sm);

/* Messages set aside for @consumer by other consumers' CHECKOUTs, which
 * its next CHECKOUT gets (0: none, or no such consumer). */
uint64_t mq_sm_consumer_pending(const struct mq_sm *sm, uint64_t consumer);

/* The seq of @consumer's last CHECKOUT that delivered (0: none, or no
 * such consumer): a CHECKOUT of it with a seq not above is a retry, whose
 * answer the state holds already (CHECKOUT above). */
uint64_t mq_sm_consumer_seq(const struct mq_sm *sm, uint64_t consumer);

/* Counters of one queue (unacked includes what is set aside). Returns 0,
 * or -1 if it does not exist. */
int mq_sm_queue_stats(const struct mq_sm *sm, const char *vhost,
                      size_t vhost_len, const char *queue, size_t queue_len,
                      struct mq_sm_queue_stats *out);
void mq_sm_stats(const struct mq_sm *sm, struct mq_sm_stats *out);

/* A 64-bit digest of the whole replicated state: independent of the order
 * of queues, consumers and clients, dependent on the order of messages
 * within each queue and each consumer's unacked list; it covers placement
 * gens, the create floor, move states, tombstones (in their order), the
 * dead-letter outbox (in id order, with claims) and the body refs, the
 * cursor and the segment table (not the body bytes: they are the
 * store's). */
uint64_t mq_sm_digest(const struct mq_sm *sm);

/* Serialize the whole state into one buffer from @alloc (raft_malloc or
 * malloc), uncompressed. Returns 0, or -1 if @alloc failed. */
int mq_sm_snapshot(const struct mq_sm *sm, void *(*alloc)(size_t),
                   void **out, size_t *out_len);

/* Replace the whole state with a snapshot. @buf is borrowed. On error
 * (-1: truncated, corrupt, inconsistent or out of memory) the previous state
 * is kept. The dedup window size is taken from the snapshot, and so is
 * the segment size but from a snapshot older than version 6, which takes
 * it from @sm's config.
 * A snapshot of the format before body refs (version 5 and older) holds
 * the bodies: the state restored keeps them inline, as one taken with
 * bodies inline does (see "Switching to external bodies"); nothing is
 * placed, nothing is for the store. Version 6 (refs, written before the
 * switch was state) restores with bodies external; version 7 says which.
 * Returns 0 or -1. */
int mq_sm_restore(struct mq_sm *sm, const void *buf, size_t len);

/* Call @fn for each segment the state names (the table of "Message
 * bodies" above: every segment with refs, and the cursor's, even with
 * nothing reserved in it yet), ascending, with the bytes reserved in it:
 * what the body store must hold after a restore. With bodies inline,
 * segment 1 with 0 bytes. */
void mq_sm_for_each_segment(const struct mq_sm *sm,
                            void (*fn)(void *arg, uint32_t seg,
                                       uint64_t used),
                            void *arg);

#endif
