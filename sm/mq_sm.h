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
 * edge sends; the only C error return is restore of a corrupt snapshot.
 *
 * Ownership: every pointer in a struct mq_sm_cmd is borrowed for the call
 * (bytes are copied into the state). Everything a result points to is owned
 * by the result and released by mq_sm_result_clear(), except reply_text,
 * which is a static string.
 */
#ifndef RINGMQ_MQ_SM_H
#define RINGMQ_MQ_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* AMQP shortstr: queue, vhost and exchange names are at most 255 bytes. */
#define MQ_SM_NAME_MAX 255
#define MQ_SM_DEDUP_WINDOW_DEFAULT 1024
#define MQ_SM_DEDUP_CLIENTS_DEFAULT 4096
#define MQ_SM_MAX_TAGS 65536 /* tags in one by-tag command */

struct mq_sm;

struct mq_sm_config {
    /* Sequence numbers remembered per publisher client, rounded up to a
     * multiple of 64; 0 = MQ_SM_DEDUP_WINDOW_DEFAULT. The edge keeps at most
     * this many enqueues per client unconfirmed. */
    uint32_t dedup_window;
    /* Clients remembered; beyond it the least recently used is forgotten.
     * 0 = MQ_SM_DEDUP_CLIENTS_DEFAULT. */
    uint32_t dedup_clients;
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
    MQ_SM_LEADER_CHANGED, /* return every checked-out message */
    /* The whole broker restarted (standalone node start): every consumer
     * is gone, so unregister them all and return every checked-out message
     * (redelivered); delete every non-durable queue (RabbitMQ: they do not
     * survive a broker restart) and every exclusive queue (its connection
     * is gone). Surviving auto-delete queues forget they had a consumer. */
    MQ_SM_BOOT,
    MQ_SM_CMD__COUNT
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
 *             auto_delete, args
 *   DELETE    vhost, queue, who.{router,conn}, if_unused, if_empty
 *   PURGE     vhost, queue, who.{router,conn}
 *   ENQUEUE   vhost, queue, client_id + seq (seq 0 = no dedup), has_ttl +
 *             ttl_ms (the message's expiration property), body
 *   CONSUME   vhost, queue, who, exclusive
 *   CANCEL    who.consumer
 *   CHECKOUT  vhost, queue, who, max_messages, prefetch (0 = unlimited),
 *             seq: the consumer's CHECKOUT number (0 = none). A seq not
 *             above the consumer's last one that delivered is a retry: it
 *             gets that CHECKOUT's deliveries still unacked, never new ones
 *   SETTLE    who, tag + multiple, or tags      (scope is always TAG)
 *   RETURN    who, scope, tag + multiple, or tags (scope TAG)
 *   DROP      who, tag + multiple, or tags      (scope is always TAG)
 *   EXPIRE, LEADER_CHANGED, BOOT: nothing
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
    MQ_SM_NO_MEMORY,           /* host malloc failed; see mq_sm_apply() */
    MQ_SM_REJECTED             /* ENQUEUE to a full x-overflow reject-publish
                                  queue: not stored (the edge nacks) */
};

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
    void *body;              /* copy owned by the result; NULL if len 0 */
    size_t body_len;
};

enum mq_sm_dl_reason {
    MQ_SM_DL_REJECTED = 0, /* x-death reason "rejected" */
    MQ_SM_DL_EXPIRED,      /* "expired" */
    MQ_SM_DL_MAXLEN        /* "maxlen" */
};

/* A message that left a queue with a dead-letter exchange. All strings are
 * owned by the result (one allocation) and not NUL-terminated. */
struct mq_sm_dead_letter {
    enum mq_sm_dl_reason reason;
    uint64_t msg_id;
    bool has_dlrk;
    const char *vhost;
    size_t vhost_len;
    const char *queue;
    size_t queue_len;
    const char *dlx;
    size_t dlx_len;
    const char *dlrk;
    size_t dlrk_len;
    const void *body;
    size_t body_len;
};

enum mq_sm_deleted_reason {
    MQ_SM_DEL_COMMAND = 0,  /* DELETE */
    MQ_SM_DEL_EXPIRES,      /* x-expires */
    MQ_SM_DEL_AUTO_DELETE,  /* last consumer went */
    MQ_SM_DEL_EXCLUSIVE,    /* owner connection went */
    MQ_SM_DEL_BOOT          /* non-durable or exclusive, at BOOT */
};

struct mq_sm_deleted {
    enum mq_sm_deleted_reason reason;
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
     * returned. */
    uint64_t count;
    uint32_t consumer_count; /* DECLARE */
    /* CHECKOUT: ready messages left in the queue (basic.get-ok's
     * message-count). */
    uint64_t message_count;

    struct mq_sm_delivery *deliveries; /* CHECKOUT, in delivery order */
    size_t n_deliveries;
    struct mq_sm_dead_letter *dead; /* any command that removes messages */
    size_t n_dead;
    struct mq_sm_deleted *deleted; /* every queue removed by this command */
    size_t n_deleted;
    /* A host malloc failed while copying into this result; the state
     * changed as if it had not (see mq_sm_apply()). */
    bool incomplete;
};

struct mq_sm_queue_stats {
    uint64_t ready;
    uint64_t ready_bytes;
    uint64_t unacked;
    uint32_t consumers; /* registered */
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
    uint64_t applied; /* not replicated: reset by restore */
};

/* Returns NULL only if allocation fails. @cfg is copied (NULL = defaults). */
struct mq_sm *mq_sm_new(const struct mq_sm_config *cfg);
void mq_sm_free(struct mq_sm *sm);

void mq_sm_result_init(struct mq_sm_result *res);
/* Free what @res owns and re-init it. */
void mq_sm_result_clear(struct mq_sm_result *res);

/*
 * Apply one committed command at leader time @now_ms. @res is initialized
 * here (the caller clears it after use). The state change is a pure
 * function of (state, now_ms, cmd) with one exception: if the host cannot
 * allocate a new message or queue, the command answers MQ_SM_NO_MEMORY and
 * changes nothing (as cache_sm). Copies into the result (bodies of
 * deliveries and dead letters) never decide the state: when they fail the
 * state changes anyway and res->incomplete is set; the edge must then
 * RETURN the consumer's deliveries (scope CONSUMER) it could not see.
 */
void mq_sm_apply(struct mq_sm *sm, uint64_t now_ms,
                 const struct mq_sm_cmd *cmd, struct mq_sm_result *res);

/* Counters of one queue. Returns 0, or -1 if it does not exist. */
int mq_sm_queue_stats(const struct mq_sm *sm, const char *vhost,
                      size_t vhost_len, const char *queue, size_t queue_len,
                      struct mq_sm_queue_stats *out);
void mq_sm_stats(const struct mq_sm *sm, struct mq_sm_stats *out);

/* A 64-bit digest of the whole replicated state: independent of the order
 * of queues, consumers and clients, dependent on the order of messages
 * within each queue and each consumer's unacked list. */
uint64_t mq_sm_digest(const struct mq_sm *sm);

/* Serialize the whole state into one buffer from @alloc (raft_malloc or
 * malloc), uncompressed. Returns 0, or -1 if @alloc failed. */
int mq_sm_snapshot(const struct mq_sm *sm, void *(*alloc)(size_t),
                   void **out, size_t *out_len);

/* Replace the whole state with a snapshot. @buf is borrowed. On error
 * (-1: truncated, corrupt, inconsistent or out of memory) the previous state
 * is kept. The dedup window size is taken from the snapshot. */
int mq_sm_restore(struct mq_sm *sm, const void *buf, size_t len);

#endif
