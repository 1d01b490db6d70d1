/*
 * mq_sm: the deterministic AMQP queue state machine; contract in mq_sm.h.
 * Semantics follow RabbitMQ 3.10 classic/quorum queues, with these
 * decisions where a replicated machine must choose:
 *
 *   - Ready list sorted by message id (quorum-queue style): a returned
 *     message goes back to its original position, so requeued messages are
 *     at the head, in original order, ahead of never-delivered ones.
 *   - Expiry (x-message-ttl and per-message TTL, the smaller wins) is
 *     decided at enqueue as exp_ms = clock + ttl and enforced at the head
 *     only (as RabbitMQ does): by CHECKOUT and ENQUEUE on that queue and by
 *     EXPIRE on all queues. Checked-out messages never expire; a returned
 *     one keeps its exp_ms. x-expires: a queue with no registered consumer
 *     whose last use (declare, consume, checkout) is x-expires ago is
 *     deleted by EXPIRE.
 *   - x-max-length counts ready messages and is enforced on ENQUEUE only,
 *     dropping from the head (dead-lettered as "maxlen" if there is a DLX).
 *   - Settle/return/drop are idempotent: an unknown or already settled tag
 *     is not an error (count 0). A retry after leadership loss must not
 *     close the client's channel; the edge does the 406 unknown-tag checks
 *     against its own channel map.
 *   - Dedup: per client a window of the last W sequence numbers below the
 *     highest seen (bitmap). A seq below the window gives STALE. Clients
 *     are kept in LRU order of their last enqueue; the oldest beyond the
 *     limit is forgotten. The window is recorded only when the enqueue
 *     stored a message (or found no queue), so a failed allocation can be
 *     retried.
 *   - Consumer records: registered by CONSUME, or created unregistered by a
 *     CHECKOUT for basic.get; a record lives while registered or holding
 *     unacked messages. Deleting a queue discards its unacked messages and
 *     consumer records (RabbitMQ: acks after that are no-ops).
 *   - Auto-delete: an auto-delete queue that has had a consumer is deleted
 *     when its registered consumer count falls to 0 (CANCEL or gone).
 *   - The tag table rehashes in one go when it doubles; fine for the
 *     first step, an incremental rehash (cache_table style) would bound it.
 *   - Moves (mq_sm.h): nothing can change a frozen queue's ready list
 *     (ENQUEUE/CHECKOUT/PURGE/DELETE answer MOVING, EXPIRE and auto-delete
 *     skip it, it has nothing checked out), so the freeze keeps it as an
 *     array too and an export chunk starts at its cursor in O(1). The
 *     array is derived: not in snapshots or the digest, rebuilt by restore.
 *     A freeze is named by a per-shard counter (move_seq); the target keeps
 *     the name and its gen with the imported queue, after MOVE_IN_END too,
 *     so a rerun of any MOVE_IN of that move is recognised as one.
 *   - Derived indexes, so that commands cost what they touch: each
 *     queue's consumer records (dispatch, deletion, freeze, export), each
 *     channel's, connection's and router's records and each connection's
 *     and router's exclusive queues (struct mq_owner: multiple settle,
 *     RETURN of an owner gone, mq_sm_for_each_router), all in creation
 *     order, so every walk meets records and queues in the order a walk
 *     over the whole shard did and old logs replay to the same state; and
 *     the list of auto-delete queues left without consumers (idle_note:
 *     every queue that qualifies is on it; the sweep deletes those not in
 *     a move in creation order, by a rank each queue gets when linked, as
 *     the old sweep over every queue did). Not in snapshots nor the
 *     digest: restore rebuilds them; mq_sm_check checks them against the
 *     whole state. What one command gives back is requeued once per
 *     queue (struct returns). BOOT and LEADER_CHANGED act on every record
 *     and queue, and walk them all.
 */
#include "sm/mq_sm.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/container_of.h"
#include "common/invariant.h"
#include "common/le.h"
#include "sm/dlist.h"
#include "sm/htable.h"
#include "sm/mq_outbox.h"
#include "sm/mq_segs.h"

#define DIGEST_SEED 0x6d712d6469676573ULL /* "mq-diges" */
#define SNAP_SEED 0x6d712d736e617073ULL   /* "mq-snaps" */
#define SNAP_MAGIC 0x51514d52U            /* "RMQQ" little-endian */
#define SNAP_VERSION 7U
#define EXPORT_SEED 0x6d712d6d6f766573ULL /* "mq-moves" */
#define EXPORT_MAGIC 0x58514d52U          /* "RMQX" little-endian */
#define EXPORT_VERSION 1U
#define NEVER UINT64_MAX

/* ------------------------------------------------------------------ hash */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Bytes read little-endian, so digests and checksums are the same on every
 * architecture. */
static uint64_t hash_bytes(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *s = data;
    uint64_t h = mix64(seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ULL));
    uint64_t w;
    size_t i;

    while (len >= 8) {
        w = 0;
        for (i = 0; i < 8; i++) {
            w |= (uint64_t)s[i] << (8 * i);
        }
        h = mix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
        s += 8;
        len -= 8;
    }
    w = 0;
    for (i = 0; i < len; i++) {
        w |= (uint64_t)s[i] << (8 * i);
    }
    return mix64(h ^ w ^ ((uint64_t)len << 56));
}

static uint64_t hash_name(const char *vhost, size_t vlen, const char *name,
                          size_t nlen)
{
    return hash_bytes(name, nlen, hash_bytes(vhost, vlen, DIGEST_SEED));
}

/* ------------------------------------------------------------------ state */

struct mq_queue;
struct mq_consumer;
struct mq_owner;

/* Who owns consumer records and exclusive queues, from the narrowest:
 * what a RETURN of a channel, connection or router that went away acts
 * on (mq_sm.h scopes). */
enum own_level { OWN_CHANNEL = 0, OWN_CONN, OWN_ROUTER, OWN__COUNT };

struct mq_msg;

/* What only a checked-out message needs, allocated at checkout and freed
 * when it is ready again or gone, so that a backlog of ready messages
 * costs struct mq_msg alone. */
struct mq_co {
    struct hnode hn; /* tag table */
    struct mq_msg *m;
    struct mq_consumer *c; /* NULL once taken back (take_unacked) */
    uint64_t tag;          /* 0 once taken back */
    uint64_t co_seq;       /* the CHECKOUT seq that did it */
};

/* One message: 64 bytes on LP64 (asserted below), the body not
 * included (mq_sm.h, "Message bodies"), unless the state keeps bodies
 * inline (mq_sm.h, "Switching to external bodies"): then seg is 0 (no
 * segment has that number) and the body follows the struct, in data, as
 * before bodies left the state. */
struct mq_msg {
    struct mq_msg *prev; /* ready list or consumer's unacked list */
    struct mq_msg *next;
    struct mq_queue *q;
    struct mq_co *co; /* checked out; NULL while ready */
    uint64_t id;
    uint64_t exp_ms; /* NEVER = no TTL */
    uint32_t delivery_count;
    uint32_t len;
    uint32_t seg;             /* the body's ref, with len and off */
    uint32_t off : 31;        /* below a segment's size (<= 2^26) */
    uint32_t redelivered : 1; /* returned at least once */
    unsigned char data[];     /* seg 0: the body */
};

_Static_assert(sizeof(void *) != 8 || sizeof(struct mq_msg) == 64,
               "struct mq_msg grew");
_Static_assert(MQ_SM_SEG_BYTES < (1u << 31), "off has 31 bits");

static uint64_t msg_tag(const struct mq_msg *m)
{
    return m->co != NULL ? m->co->tag : 0;
}

static uint64_t msg_co_seq(const struct mq_msg *m)
{
    return m->co != NULL ? m->co->co_seq : 0;
}

struct mlist {
    struct mq_msg *head;
    struct mq_msg *tail;
    uint64_t n;
    uint64_t bytes;
};

struct mq_queue {
    struct hnode hn;       /* queue table, by hash_name() */
    struct mq_queue *prev; /* creation order */
    struct mq_queue *next;
    struct mlist ready;
    uint64_t unacked;
    uint32_t consumers; /* registered */
    bool had_consumer;
    bool excl_consumer; /* a registered consumer is exclusive */
    bool durable;
    bool exclusive;
    bool auto_delete;
    bool has_ttl;
    bool has_expires;
    bool has_max_len;
    bool overflow_reject; /* x-overflow reject-publish */
    bool has_dlx;
    bool has_dlrk;
    uint64_t owner_router;
    uint64_t owner_conn;
    uint64_t ttl_ms;
    uint64_t expires_ms;
    uint64_t max_len;
    uint64_t last_used_ms;
    uint64_t gen; /* placement gen it was created or moved in with */
    /* Moves. out_epoch names the freeze while FROZEN. in_epoch (0: not
     * imported) names the source's freeze it was imported from, in_pos
     * and in_total count its messages imported and announced; kept after
     * MOVE_IN_END so reruns of that move are no-ops. */
    uint64_t out_epoch;
    uint64_t in_epoch;
    uint64_t in_pos;
    uint64_t in_total;
    struct mq_msg **frozen; /* FROZEN: the ready list as an array */
    /* scratch of one command (struct returns): what it gives back here,
     * and the next queue it gives back to; NULL between commands */
    struct mq_msg *back;
    struct mq_queue *back_next;
    /* Derived indexes (not in snapshots; restore rebuilds them): its
     * consumer records in creation order, its rank in creation order,
     * and its place in the list an auto-delete sweep looks at. */
    struct mq_consumer *cq_first;
    struct mq_consumer *cq_last;
    uint64_t seq;
    struct mq_queue *idle_prev;
    struct mq_queue *idle_next;
    bool idle_listed;
    /* The due index (derived, not replicated): its machine, for hooks
     * given only the queue; its key in sm->due (see queue_due()); its
     * place there (1 + index, 0: not in it). Keyed with seq. */
    struct mq_sm *sm;
    uint64_t due_ms;
    size_t due_pos;
    /* exclusive: its place among its connection's and its router's
     * exclusive queues (xown[OWN_CONN - 1], xown[OWN_ROUTER - 1]) */
    struct {
        struct mq_owner *o;
        struct mq_queue *prev;
        struct mq_queue *next;
    } xown[2];
    uint8_t move;           /* enum mq_sm_move_state */
    uint8_t vhost_len;
    uint8_t name_len;
    uint8_t dlx_len;
    uint8_t dlrk_len;
    char data[]; /* vhost, name, dlx, dlrk */
};

/* A queue that moved away from this shard (MOVE_DONE). */
struct mq_tomb {
    struct hnode hn; /* tombstone table, by hash_name() */
    struct mq_tomb *prev; /* age: oldest first */
    struct mq_tomb *next;
    uint64_t gen;
    uint8_t vhost_len;
    uint8_t name_len;
    char data[]; /* vhost, name */
};

struct mq_consumer {
    struct hnode hn; /* consumer table, by mix64(id) */
    struct mq_consumer *prev; /* creation order */
    struct mq_consumer *next;
    struct mq_queue *q;
    struct mlist unacked; /* tag ascending */
    uint64_t id;
    uint64_t router;
    uint64_t conn;
    uint64_t channel;
    /* The last CHECKOUT seq that delivered something (0: none, or none
     * since a LEADER_CHANGED): a CHECKOUT with this seq is a retry whose
     * reply the edge lost, an older one a late copy. */
    uint64_t co_seq;
    /* Dispatch (dispatch()): the credit its edge last announced, by
     * CONSUME or CHECKOUT (max_messages, prefetch; credit 0: unknown, no
     * message is set aside for it), and the tag of the last message
     * dispatched to it (round robin: least recently served first). */
    uint32_t credit;
    uint32_t prefetch;
    uint64_t served_tag;
    uint64_t pending; /* unacked ones set aside (CO_PENDING); derived */
    struct mq_consumer *cand_next; /* dispatch()'s scratch list */
    /* Derived indexes: its rank in creation order, its queue's records
     * and its channel's, connection's and router's, each in creation
     * order. */
    uint64_t seq;
    struct mq_consumer *q_prev;
    struct mq_consumer *q_next;
    struct {
        struct mq_owner *o;
        struct mq_consumer *prev;
        struct mq_consumer *next;
    } own[OWN__COUNT];
    bool registered;
    bool exclusive;
};

/* The consumer records of one channel (router, conn, channel), connection
 * (router, conn, 0) or router (router, 0, 0), and the exclusive queues of
 * a connection or router, each in creation order: derived, exists while
 * it has one. Routers are also listed (mq_sm_for_each_router). */
struct mq_owner {
    struct hnode hn; /* owner table, by owner_hash() */
    struct mq_owner *prev; /* routers */
    struct mq_owner *next;
    uint64_t router;
    uint64_t conn;
    uint64_t channel;
    struct mq_consumer *first;
    struct mq_consumer *last;
    struct mq_queue *xq_first;
    struct mq_queue *xq_last;
    uint8_t level; /* enum own_level */
};

/* The co_seq of a message set aside for its consumer by another
 * consumer's CHECKOUT: checked out, but not yet handed to the edge. Edge
 * seqs count up from 1 and never get here. */
#define CO_PENDING UINT64_MAX

struct mq_client {
    struct hnode hn; /* client table, by mix64(id) */
    struct mq_client *prev; /* LRU: least recent first */
    struct mq_client *next;
    uint64_t id;
    uint64_t max_seq;
    uint64_t bits[]; /* bit i of word w: seq max_seq - (64 w + i) seen */
};

struct mq_sm {
    uint32_t dedup_words;
    uint32_t dedup_clients;

    struct htable queues;
    struct mq_queue *q_first;
    struct mq_queue *q_last;
    struct htable consumers;
    struct mq_consumer *c_first;
    struct mq_consumer *c_last;
    struct htable tags;
    struct htable clients;
    struct mq_client *cl_first;
    struct mq_client *cl_last;
    struct htable tombs;
    struct mq_tomb *t_first;
    struct mq_tomb *t_last;
    /* Derived: the owners' records and exclusive queues, the routers
     * among them; the queues that were auto-delete, had a consumer and
     * were left with none when listed (a sweep drops the ones that no
     * longer are); queues and records created so far, to rank them. */
    struct htable owners;
    struct mq_owner *rt_first;
    struct mq_owner *rt_last;
    struct mq_queue *idle_first;
    struct mq_queue *idle_last;
    uint64_t q_seq;
    uint64_t c_seq;
    /* mq_sm_visits(): not state, and behind a pointer so that the walks
     * of const readers count too */
    uint64_t *visits;

    uint64_t clock_ms;
    uint64_t next_msg_id;
    uint64_t next_tag;
    uint64_t create_floor; /* DECLARE may create with place_gen >= this */
    uint64_t move_seq;     /* freezes so far: names the next one */
    struct mq_outbox outbox; /* dead letters not yet settled */
    struct mq_segs segs;     /* where bodies go */
    /* Bodies in the body store (refs), or inline: replicated, see mq_sm.h
     * "Switching to external bodies". */
    bool bodies_external;
    uint64_t applied;
    /* Queues that an EXPIRE will act on at some time (queue_due() not
     * NEVER), a min-heap by (due_ms, seq): derived, not replicated; see
     * "Due index" below. */
    struct {
        struct mq_queue **v;
        size_t n;
        size_t cap;
    } due;
};

static void visit(const struct mq_sm *sm)
{
    (*sm->visits)++;
}

static void mlist_append(struct mlist *l, struct mq_msg *m)
{
    DL_APPEND(l->head, l->tail, m);
    l->n++;
    l->bytes += m->len;
}

static void mlist_remove(struct mlist *l, struct mq_msg *m)
{
    DL_REMOVE(l->head, l->tail, m);
    l->n--;
    l->bytes -= m->len;
}

/* Insert @m before @at (NULL = at the tail). */
static void mlist_insert_before(struct mlist *l, struct mq_msg *at,
                                struct mq_msg *m)
{
    if (at == NULL) {
        mlist_append(l, m);
        return;
    }
    m->next = at;
    m->prev = at->prev;
    if (at->prev != NULL) {
        at->prev->next = m;
    } else {
        l->head = m;
    }
    at->prev = m;
    l->n++;
    l->bytes += m->len;
}

static const char *q_vhost(const struct mq_queue *q)
{
    return q->data;
}

static const char *q_name(const struct mq_queue *q)
{
    return q->data + q->vhost_len;
}

static const char *q_dlx(const struct mq_queue *q)
{
    return q->data + q->vhost_len + q->name_len;
}

static const char *q_dlrk(const struct mq_queue *q)
{
    return q->data + q->vhost_len + q->name_len + q->dlx_len;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

/* ---------------------------------------------------------------- results */

void mq_sm_result_init(struct mq_sm_result *res)
{
    memset(res, 0, sizeof(*res));
    res->reply_text = "";
}

void mq_sm_result_drop_writes(struct mq_sm_result *res)
{
    size_t i;

    for (i = 0; i < res->n_writes; i++) {
        free(res->writes[i].own);
    }
    free(res->writes);
    res->writes = NULL;
    res->n_writes = 0;
}

void mq_sm_result_clear(struct mq_sm_result *res)
{
    size_t i;

    for (i = 0; i < res->n_deliveries; i++) {
        free(res->deliveries[i].body);
    }
    free(res->deliveries);
    for (i = 0; i < res->n_dead; i++) {
        free((void *)res->dead[i].vhost);
        free((void *)res->dead[i].body);
    }
    free(res->dead);
    mq_sm_result_drop_writes(res);
    free(res->freed);
    for (i = 0; i < res->n_deleted; i++) {
        free((void *)res->deleted[i].vhost);
    }
    free(res->deleted);
    mq_sm_result_init(res);
}

static void set_error(struct mq_sm_result *res, enum mq_sm_status st,
                      const char *text)
{
    /* Placement answers have no AMQP code: the router retries them. */
    static const uint16_t codes[MQ_SM_STATUS__COUNT] = {
        [MQ_SM_NOT_FOUND] = MQ_SM_REPLY_NOT_FOUND,
        [MQ_SM_RESOURCE_LOCKED] = MQ_SM_REPLY_RESOURCE_LOCKED,
        [MQ_SM_PRECONDITION_FAILED] = MQ_SM_REPLY_PRECONDITION_FAILED,
        [MQ_SM_ACCESS_REFUSED] = MQ_SM_REPLY_ACCESS_REFUSED,
    };

    res->status = st;
    res->reply_code = codes[st];
    res->reply_text = text;
}

/* Grow a result array to hold one more element. */
static void grow(void **arr, size_t n, size_t size)
{
    /* capacity is implicit: powers of two from 4 */
    if (n < 4 || (n & (n - 1)) == 0) {
        *arr = xrealloc(*arr, (n < 4 ? 4 : n * 2) * size);
    }
}

/* A copy of an inline body for a result (NULL if empty, as the caller
 * that fills bodies leaves an empty one). */
static void *body_copy(const void *body, uint32_t len)
{
    void *copy;

    if (len == 0) {
        return NULL;
    }
    copy = xmalloc(len);
    memcpy(copy, body, len);
    return copy;
}

/* A copy of outbox entry @e (kept or not: id 0) into @res. */
static void add_dead_letter(struct mq_sm_result *res,
                            const struct mq_outbox_entry *e)
{
    struct mq_sm_dead_letter *d;
    size_t len = mq_outbox_names_len(e);
    char *p;

    grow((void **)&res->dead, res->n_dead, sizeof(*res->dead));
    p = xmalloc(len > 0 ? len : 1);
    d = &res->dead[res->n_dead++];
    d->reason = (enum mq_sm_dl_reason)e->reason;
    d->msg_id = e->msg_id;
    d->outbox_id = e->id;
    d->gen = e->gen;
    d->has_dlrk = e->has_dlrk;
    /* vhost first: result_clear frees the block through it */
    memcpy(p, e->data, len);
    d->vhost = p;
    d->vhost_len = e->vhost_len;
    d->queue = p + e->vhost_len;
    d->queue_len = e->queue_len;
    d->dlx = d->queue + e->queue_len;
    d->dlx_len = e->dlx_len;
    d->dlrk = d->dlx + e->dlx_len;
    d->dlrk_len = e->dlrk_len;
    d->seg = e->seg;
    d->off = e->off;
    d->body = e->seg == 0 ? body_copy(mq_outbox_body(e), e->body_len) : NULL;
    d->body_len = e->body_len;
}

static void add_deleted(struct mq_sm_result *res, const struct mq_queue *q,
                        enum mq_sm_deleted_reason reason)
{
    struct mq_sm_deleted *d;
    size_t len = (size_t)q->vhost_len + q->name_len;
    char *p;

    grow((void **)&res->deleted, res->n_deleted, sizeof(*res->deleted));
    p = xmalloc(len > 0 ? len : 1);
    memcpy(p, q->data, len);
    d = &res->deleted[res->n_deleted++];
    d->reason = reason;
    d->gen = q->gen;
    d->vhost = p;
    d->vhost_len = q->vhost_len;
    d->queue = p + q->vhost_len;
    d->queue_len = q->name_len;
}

static void add_delivery(struct mq_sm_result *res, const struct mq_msg *m)
{
    struct mq_sm_delivery *d;

    grow((void **)&res->deliveries, res->n_deliveries,
         sizeof(*res->deliveries));
    d = &res->deliveries[res->n_deliveries++];
    d->tag = msg_tag(m);
    d->msg_id = m->id;
    d->delivery_count = m->delivery_count;
    d->redelivered = m->redelivered;
    d->seg = m->seg;
    d->off = m->off;
    d->body = m->seg == 0 ? body_copy(m->data, m->len) : NULL;
    d->body_len = m->len;
}

/* --------------------------------------------------------------- messages */

/* A body of @len bytes gets its record; @res is told to store @body
 * there, and to free @own with the write (NULL: @body is the command's). */
static void body_place(struct mq_sm *sm, const void *body, uint32_t len,
                       void *own, uint32_t *seg, uint32_t *off,
                       struct mq_sm_result *res)
{
    struct mq_sm_write *w;

    INVARIANT(sm->bodies_external);
    mq_segs_place(&sm->segs, len, seg, off);
    grow((void **)&res->writes, res->n_writes, sizeof(*res->writes));
    w = &res->writes[res->n_writes++];
    w->seg = *seg;
    w->off = *off;
    w->len = len;
    w->body = body != NULL ? body : ""; /* never NULL (mq_sm.h) */
    w->own = own;
}

/* A message (in no list) with the body of @len bytes at @body: inline,
 * or, with bodies external, with a record now, to be stored by whoever
 * gets @res. */
static struct mq_msg *msg_new(struct mq_sm *sm, const void *body,
                              uint32_t len, struct mq_sm_result *res)
{
    struct mq_msg *m;
    uint32_t seg, off;

    if (!sm->bodies_external) {
        m = xmalloc(sizeof(*m) + len);
        memset(m, 0, sizeof(*m));
        m->len = len;
        if (len > 0) {
            memcpy(m->data, body, len);
        }
        return m;
    }
    m = xmalloc(sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->len = len;
    body_place(sm, body, len, NULL, &seg, &off, res);
    m->seg = seg;
    m->off = off;
    return m;
}

/* Free a message that is in no list; drops its tag entry if checked out
 * and its ref of its segment. */
static void msg_free(struct mq_sm *sm, struct mq_msg *m)
{
    if (m->co != NULL) {
        if (m->co->tag != 0) {
            ht_remove(&sm->tags, &m->co->hn);
        }
        free(m->co);
    }
    if (m->seg != 0) {
        mq_segs_unref(&sm->segs, m->seg);
    }
    free(m);
}

/* The message left the queue for good: dead-letter it if the queue has a
 * DLX, then free it. */
static void msg_discard(struct mq_sm *sm, struct mq_queue *q,
                        struct mq_msg *m, enum mq_sm_dl_reason reason,
                        struct mq_sm_result *res)
{
    if (q->has_dlx) {
        struct mq_outbox_src src = {
            .reason = (uint8_t)reason,
            .has_dlrk = q->has_dlrk,
            .msg_id = m->id,
            .gen = q->gen,
            .names = q->data, /* vhost, name, dlx, dlrk */
            .vhost_len = q->vhost_len,
            .queue_len = q->name_len,
            .dlx_len = q->dlx_len,
            .dlrk_len = q->dlrk_len,
            .seg = m->seg,
            .off = m->off,
            .body = m->data, /* seg 0: inline */
            .body_len = m->len,
        };
        struct mq_outbox_entry *e = mq_outbox_entry_new(&src);
        bool kept = mq_outbox_add(&sm->outbox, e, sm->clock_ms);

        add_dead_letter(res, e);
        if (!kept) {
            free(e);
        } else if (m->seg != 0) {
            mq_segs_ref(&sm->segs, m->seg); /* the entry's, before m's goes */
        }
    }
    msg_free(sm, m);
}

static void mlist_free_all(struct mq_sm *sm, struct mlist *l)
{
    struct mq_msg *m = l->head;

    while (m != NULL) {
        struct mq_msg *next = m->next;

        msg_free(sm, m);
        m = next;
    }
    memset(l, 0, sizeof(*l));
}

/* Expire from the head of the ready list; returns how many. */
static uint64_t expire_head(struct mq_sm *sm, struct mq_queue *q,
                            struct mq_sm_result *res)
{
    uint64_t n = 0;

    while (q->ready.head != NULL && q->ready.head->exp_ms <= sm->clock_ms) {
        struct mq_msg *m = q->ready.head;

        mlist_remove(&q->ready, m);
        msg_discard(sm, q, m, MQ_SM_DL_EXPIRED, res);
        n++;
    }
    return n;
}

/* In-place merge sort of a NULL-terminated singly linked list (through
 * ->next) by message id; no allocation, so returns cannot fail. */
static struct mq_msg *sort_by_id(struct mq_msg *head)
{
    struct mq_msg *a;
    struct mq_msg *b;
    struct mq_msg *slow;
    struct mq_msg *fast;
    struct mq_msg out;
    struct mq_msg *t = &out;

    if (head == NULL || head->next == NULL) {
        return head;
    }
    slow = head;
    fast = head->next;
    while (fast != NULL && fast->next != NULL) {
        slow = slow->next;
        fast = fast->next->next;
    }
    b = slow->next;
    slow->next = NULL;
    a = sort_by_id(head);
    b = sort_by_id(b);
    while (a != NULL && b != NULL) {
        if (a->id < b->id) {
            t->next = a;
            a = a->next;
        } else {
            t->next = b;
            b = b->next;
        }
        t = t->next;
    }
    t->next = a != NULL ? a : b;
    return out.next;
}

/* Which of a consumer's checked-out messages take_unacked() takes. */
enum pick {
    PICK_ALL,       /* the owner went, or everything goes back */
    PICK_DELIVERED, /* by tag: the edge never saw the ones set aside */
    PICK_PENDING    /* the ones set aside: their consumer cancelled */
};

static bool picked(const struct mq_msg *m, enum pick pick)
{
    return pick == PICK_ALL ||
           (pick == PICK_PENDING) == (msg_co_seq(m) == CO_PENDING);
}

/* Take every message of consumer @c with tag <= @max_tag (0 = all) that
 * @pick selects or, if @only is set, just that one, out of its unacked
 * list. Returns them as a singly linked list in tag order, tags dropped
 * from the table. */
static struct mq_msg *take_unacked(struct mq_sm *sm, struct mq_consumer *c,
                                   uint64_t max_tag, struct mq_msg *only,
                                   enum pick pick, uint64_t *count)
{
    struct mq_msg *out = NULL;
    struct mq_msg **tail = &out;
    struct mq_msg *next = c->unacked.head;

    while (next != NULL) {
        struct mq_msg *m = only != NULL ? only : next;

        if (only == NULL && max_tag != 0 && msg_tag(m) > max_tag) {
            break;
        }
        next = m->next;
        if (!picked(m, pick)) {
            if (only != NULL) {
                break;
            }
            continue;
        }
        if (m->co->co_seq == CO_PENDING) {
            c->pending--;
        }
        mlist_remove(&c->unacked, m);
        c->q->unacked--;
        ht_remove(&sm->tags, &m->co->hn);
        m->co->tag = 0;
        /* co (its co_seq) stays until requeue() reads it (set aside or
         * delivered) and frees it there */
        m->co->c = NULL;
        m->next = NULL;
        *tail = m;
        tail = &m->next;
        (*count)++;
        if (only != NULL) {
            break;
        }
    }
    return out;
}

/* -------------------------------------------------------------- due index
 *
 * When an EXPIRE first acts on a queue is queue_due(); sm->due holds every
 * queue for which that is a time, keyed by it, so mq_sm_next_due() is the
 * heap's top and apply_expire() visits only the queues due. A key is
 * never later than its queue's due time: everything that can bring a due
 * time forward re-keys the queue (a message back at the head: requeue();
 * the last consumer gone: consumer_unregister(); any command naming the
 * queue, which covers creation, enqueue, checkout, purge and the end of a
 * move: mq_sm_apply()). What only puts it off (a use, BOOT) leaves an
 * early key, corrected when it reaches the top. */

/* When an EXPIRE would first act on @q: apply_expire()'s tests as a time. */
static uint64_t queue_due(const struct mq_queue *q)
{
    uint64_t due = NEVER;

    if (q->move != MQ_SM_MOVE_NONE) {
        return NEVER; /* frozen or being imported: time stands still */
    }
    if (q->ready.head != NULL) {
        due = q->ready.head->exp_ms;
    }
    if (q->has_expires && q->consumers == 0) {
        uint64_t idle = sat_add(q->last_used_ms, q->expires_ms);

        due = idle < due ? idle : due;
    }
    return due;
}

static bool due_before(const struct mq_queue *a, const struct mq_queue *b)
{
    return a->due_ms < b->due_ms ||
           (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void due_place(struct mq_sm *sm, struct mq_queue *q, size_t i)
{
    sm->due.v[i] = q;
    q->due_pos = i + 1;
}

static void due_sift(struct mq_sm *sm, size_t i)
{
    struct mq_queue *q = sm->due.v[i];

    while (i > 0 && due_before(q, sm->due.v[(i - 1) / 2])) {
        due_place(sm, sm->due.v[(i - 1) / 2], i);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= sm->due.n) {
            break;
        }
        if (c + 1 < sm->due.n && due_before(sm->due.v[c + 1], sm->due.v[c])) {
            c++;
        }
        if (!due_before(sm->due.v[c], q)) {
            break;
        }
        due_place(sm, sm->due.v[c], i);
        i = c;
    }
    due_place(sm, q, i);
}

static void due_remove(struct mq_sm *sm, struct mq_queue *q)
{
    size_t i;

    if (q->due_pos == 0) {
        return;
    }
    i = q->due_pos - 1;
    q->due_pos = 0;
    q->due_ms = NEVER;
    if (i != --sm->due.n) {
        due_place(sm, sm->due.v[sm->due.n], i);
        due_sift(sm, i);
    }
}

/* Key @q by its due time now (in, moved or out). */
static void due_update(struct mq_queue *q)
{
    struct mq_sm *sm = q->sm;
    uint64_t due = queue_due(q);

    if (sm == NULL) {
        return; /* created by the command being applied: due_named() */
    }
    if (due == NEVER) {
        due_remove(sm, q);
        return;
    }
    q->due_ms = due;
    if (q->due_pos == 0) {
        if (sm->due.n == sm->due.cap) {
            sm->due.cap = sm->due.cap > 0 ? 2 * sm->due.cap : 16;
            sm->due.v = xrealloc(sm->due.v, sm->due.cap * sizeof(*sm->due.v));
        }
        due_place(sm, q, sm->due.n++);
    }
    due_sift(sm, q->due_pos - 1);
}

/* A queue new to the index: created (by the command mq_sm_apply() looks
 * at after) or restored (its seq is queue_link's). */
static void due_track(struct mq_sm *sm, struct mq_queue *q)
{
    q->sm = sm;
    q->due_ms = NEVER;
    q->due_pos = 0;
    due_update(q);
}

/* The heap's top with its key made exact, or NULL. */
static struct mq_queue *due_top(struct mq_sm *sm)
{
    while (sm->due.n > 0 && sm->due.v[0]->due_ms != queue_due(sm->due.v[0])) {
        due_update(sm->due.v[0]);
    }
    return sm->due.n > 0 ? sm->due.v[0] : NULL;
}

static int by_seq(const void *a, const void *b)
{
    const struct mq_queue *x = *(struct mq_queue *const *)a;
    const struct mq_queue *y = *(struct mq_queue *const *)b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Put returned messages back in the ready list at their id positions,
 * marked redelivered unless they were only set aside (never delivered).
 * @list is a singly linked list in any order. One pass over the ready
 * list, up to the last position taken. */
static void requeue(struct mq_sm *sm, struct mq_queue *q, struct mq_msg *list)
{
    struct mq_msg *at = q->ready.head;

    list = sort_by_id(list);
    while (list != NULL) {
        struct mq_msg *m = list;

        list = list->next;
        while (at != NULL && at->id < m->id) {
            visit(sm);
            at = at->next;
        }
        if (msg_co_seq(m) != CO_PENDING) {
            m->redelivered = true;
        }
        free(m->co); /* as a ready message restores from a snapshot */
        m->co = NULL;
        m->prev = NULL;
        m->next = NULL;
        mlist_insert_before(&q->ready, at, m);
    }
    due_update(q); /* a message of an earlier deadline may lead now */
}

/* What one command gives back to the queues, gathered per queue so that
 * each takes it in one requeue() (one pass over its ready list), not one
 * per consumer record or tag: the ready lists end the same, sorted by
 * id. */
struct returns {
    struct mq_queue *touched; /* chained by back_next */
};

static void returns_add(struct returns *r, struct mq_queue *q,
                        struct mq_msg *list)
{
    struct mq_msg *tail = list;

    if (list == NULL) {
        return;
    }
    while (tail->next != NULL) {
        tail = tail->next;
    }
    if (q->back == NULL) {
        q->back_next = r->touched;
        r->touched = q;
    }
    tail->next = q->back;
    q->back = list;
}

/* Before anything reads a ready list or deletes a queue. */
static void returns_flush(struct mq_sm *sm, struct returns *r)
{
    while (r->touched != NULL) {
        struct mq_queue *q = r->touched;

        r->touched = q->back_next;
        q->back_next = NULL;
        requeue(sm, q, q->back);
        q->back = NULL;
    }
}

/* -------------------------------------------------------------- consumers */

static struct mq_consumer *consumer_find(const struct mq_sm *sm, uint64_t id)
{
    uint64_t h = mix64(id);
    struct hnode *e;

    for (e = ht_chain(&sm->consumers, h); e != NULL; e = e->next) {
        struct mq_consumer *c = container_of(e, struct mq_consumer, hn);

        if (c->id == id) {
            return c;
        }
    }
    return NULL;
}

static uint64_t owner_hash(enum own_level level, uint64_t router,
                           uint64_t conn, uint64_t channel)
{
    return mix64((uint64_t)level ^ mix64(router ^ mix64(conn ^
                                                       mix64(channel))));
}

/* The owner at @level of what (router, conn, channel) names: the ids
 * above the level count, the others are 0. */
static void owner_key(enum own_level level, uint64_t *conn,
                      uint64_t *channel)
{
    if (level != OWN_CHANNEL) {
        *channel = 0;
    }
    if (level == OWN_ROUTER) {
        *conn = 0;
    }
}

static struct mq_owner *owner_find(const struct mq_sm *sm,
                                   enum own_level level, uint64_t router,
                                   uint64_t conn, uint64_t channel)
{
    uint64_t h;
    struct hnode *e;

    owner_key(level, &conn, &channel);
    h = owner_hash(level, router, conn, channel);
    for (e = ht_chain(&sm->owners, h); e != NULL; e = e->next) {
        struct mq_owner *o = container_of(e, struct mq_owner, hn);

        if (o->level == level && o->router == router && o->conn == conn &&
            o->channel == channel) {
            return o;
        }
    }
    return NULL;
}

static struct mq_owner *owner_get(struct mq_sm *sm, enum own_level level,
                                  uint64_t router, uint64_t conn,
                                  uint64_t channel)
{
    struct mq_owner *o = owner_find(sm, level, router, conn, channel);

    if (o == NULL) {
        owner_key(level, &conn, &channel);
        o = xcalloc(1, sizeof(*o));
        o->level = (uint8_t)level;
        o->router = router;
        o->conn = conn;
        o->channel = channel;
        o->hn.hash = owner_hash(level, router, conn, channel);
        ht_insert(&sm->owners, &o->hn);
        if (level == OWN_ROUTER) {
            DL_APPEND(sm->rt_first, sm->rt_last, o);
        }
    }
    return o;
}

/* An owner lives while it owns something. */
static void owner_put(struct mq_sm *sm, struct mq_owner *o)
{
    if (o->first == NULL && o->xq_first == NULL) {
        if (o->level == OWN_ROUTER) {
            DL_REMOVE(sm->rt_first, sm->rt_last, o);
        }
        ht_remove(&sm->owners, &o->hn);
        free(o);
    }
}

/* Record @c (its id, queue and channel set) in the machine and its
 * indexes, last in creation order. */
static void consumer_link(struct mq_sm *sm, struct mq_consumer *c)
{
    int l;

    ht_insert(&sm->consumers, &c->hn);
    c->seq = sm->c_seq++;
    DL_APPEND(sm->c_first, sm->c_last, c);
    DL_APPEND_VIA(c->q->cq_first, c->q->cq_last, c, q_prev, q_next);
    for (l = 0; l < OWN__COUNT; l++) {
        struct mq_owner *o =
            owner_get(sm, (enum own_level)l, c->router, c->conn, c->channel);

        c->own[l].o = o;
        DL_APPEND_VIA(o->first, o->last, c, own[l].prev, own[l].next);
    }
}

static void consumer_unlink_free(struct mq_sm *sm, struct mq_consumer *c)
{
    int l;

    mlist_free_all(sm, &c->unacked);
    ht_remove(&sm->consumers, &c->hn);
    DL_REMOVE(sm->c_first, sm->c_last, c);
    DL_REMOVE_VIA(c->q->cq_first, c->q->cq_last, c, q_prev, q_next);
    for (l = 0; l < OWN__COUNT; l++) {
        struct mq_owner *o = c->own[l].o;

        DL_REMOVE_VIA(o->first, o->last, c, own[l].prev, own[l].next);
        owner_put(sm, o);
    }
    free(c);
}

/* A record that is neither registered nor holding messages has no reason
 * to exist. */
static void consumer_gc(struct mq_sm *sm, struct mq_consumer *c)
{
    if (!c->registered && c->unacked.n == 0) {
        consumer_unlink_free(sm, c);
    }
}

static bool idle_auto_delete(const struct mq_queue *q)
{
    return q->auto_delete && q->had_consumer && q->consumers == 0;
}

/* List @q for the next auto-delete sweep if it qualifies: every queue
 * that qualifies is listed, so a sweep looks at these only. */
static void idle_note(struct mq_sm *sm, struct mq_queue *q)
{
    if (!q->idle_listed && idle_auto_delete(q)) {
        DL_APPEND_VIA(sm->idle_first, sm->idle_last, q, idle_prev,
                      idle_next);
        q->idle_listed = true;
    }
}

static void idle_unlist(struct mq_sm *sm, struct mq_queue *q)
{
    if (q->idle_listed) {
        DL_REMOVE_VIA(sm->idle_first, sm->idle_last, q, idle_prev,
                      idle_next);
        q->idle_listed = false;
    }
}

static void consumer_unregister(struct mq_sm *sm, struct mq_consumer *c)
{
    if (c->registered) {
        c->registered = false;
        c->q->consumers--;
        due_update(c->q); /* x-expires counts once the last one left */
        if (c->exclusive) {
            c->q->excl_consumer = false;
            c->exclusive = false;
        }
        idle_note(sm, c->q);
    }
}

static bool match_channel(const struct mq_consumer *c,
                          const struct mq_sm_who *w)
{
    return c->router == w->router && c->conn == w->conn &&
           c->channel == w->channel;
}

/* ------------------------------------------------------------- tombstones */

static const char *t_name(const struct mq_tomb *t)
{
    return t->data + t->vhost_len;
}

static struct mq_tomb *tomb_find(const struct mq_sm *sm, const char *vhost,
                                 size_t vlen, const char *name, size_t nlen)
{
    uint64_t h = hash_name(vhost, vlen, name, nlen);
    struct hnode *e;

    for (e = ht_chain(&sm->tombs, h); e != NULL; e = e->next) {
        struct mq_tomb *t = container_of(e, struct mq_tomb, hn);

        if (e->hash == h && t->vhost_len == vlen && t->name_len == nlen &&
            (vlen == 0 || memcmp(t->data, vhost, vlen) == 0) &&
            memcmp(t_name(t), name, nlen) == 0) {
            return t;
        }
    }
    return NULL;
}

static struct mq_tomb *tomb_new(const char *vhost, size_t vlen,
                                const char *name, size_t nlen, uint64_t gen)
{
    struct mq_tomb *t = xcalloc(1, sizeof(*t) + vlen + nlen);

    t->gen = gen;
    t->vhost_len = (uint8_t)vlen;
    t->name_len = (uint8_t)nlen;
    if (vlen > 0) {
        memcpy(t->data, vhost, vlen);
    }
    memcpy(t->data + vlen, name, nlen);
    t->hn.hash = hash_name(vhost, vlen, name, nlen);
    return t;
}

static void tomb_remove(struct mq_sm *sm, struct mq_tomb *t)
{
    ht_remove(&sm->tombs, &t->hn);
    DL_REMOVE(sm->t_first, sm->t_last, t);
    free(t);
}

/* Newest last; beyond the bound the oldest goes (mq_sm.h: the floor still
 * refuses a stale re-creation, only the answer gets less precise). */
static void tomb_link(struct mq_sm *sm, struct mq_tomb *t)
{
    struct mq_tomb *old = tomb_find(sm, t->data, t->vhost_len, t_name(t),
                                    t->name_len);

    if (old != NULL) {
        tomb_remove(sm, old);
    }
    ht_insert(&sm->tombs, &t->hn);
    DL_APPEND(sm->t_first, sm->t_last, t);
    while (sm->tombs.count > MQ_SM_TOMBSTONES_MAX) {
        tomb_remove(sm, sm->t_first);
    }
}

/* ----------------------------------------------------------------- queues */

static struct mq_queue *queue_find(const struct mq_sm *sm, const char *vhost,
                                   size_t vlen, const char *name, size_t nlen)
{
    uint64_t h = hash_name(vhost, vlen, name, nlen);
    struct hnode *e;

    for (e = ht_chain(&sm->queues, h); e != NULL; e = e->next) {
        struct mq_queue *q = container_of(e, struct mq_queue, hn);

        if (e->hash == h && q->vhost_len == vlen && q->name_len == nlen &&
            (vlen == 0 || memcmp(q_vhost(q), vhost, vlen) == 0) &&
            (nlen == 0 || memcmp(q_name(q), name, nlen) == 0)) {
            return q;
        }
    }
    return NULL;
}

/* Link new queue @q in the machine, last in creation order. */
static void queue_link(struct mq_sm *sm, struct mq_queue *q)
{
    int l;

    ht_insert(&sm->queues, &q->hn);
    DL_APPEND(sm->q_first, sm->q_last, q);
    q->seq = sm->q_seq++;
    for (l = OWN_CONN; q->exclusive && l <= OWN_ROUTER; l++) {
        struct mq_owner *o = owner_get(sm, (enum own_level)l,
                                       q->owner_router, q->owner_conn, 0);

        q->xown[l - 1].o = o;
        DL_APPEND_VIA(o->xq_first, o->xq_last, q, xown[l - 1].prev,
                      xown[l - 1].next);
    }
}

static void queue_unlink_owners(struct mq_sm *sm, struct mq_queue *q)
{
    int l;

    for (l = OWN_CONN; q->exclusive && l <= OWN_ROUTER; l++) {
        struct mq_owner *o = q->xown[l - 1].o;

        DL_REMOVE_VIA(o->xq_first, o->xq_last, q, xown[l - 1].prev,
                      xown[l - 1].next);
        owner_put(sm, o);
    }
}

/* Remove a queue with its ready and unacked messages and every consumer
 * record on it. Nothing is dead-lettered (RabbitMQ does not either). Its
 * gen can no longer create it here (mq_sm.h, create_floor), unless it was
 * an import that never served (no directory entry can name it yet). */
static void queue_destroy(struct mq_sm *sm, struct mq_queue *q,
                          enum mq_sm_deleted_reason reason,
                          struct mq_sm_result *res)
{
    struct mq_consumer *c = q->cq_first;

    add_deleted(res, q, reason);
    if (q->move != MQ_SM_MOVE_IMPORT && q->gen >= sm->create_floor) {
        sm->create_floor = sat_add(q->gen, 1);
    }
    free(q->frozen);
    while (c != NULL) {
        struct mq_consumer *next = c->q_next;

        visit(sm);
        consumer_unlink_free(sm, c);
        c = next;
    }
    idle_unlist(sm, q);
    queue_unlink_owners(sm, q);
    mlist_free_all(sm, &q->ready);
    due_remove(sm, q);
    ht_remove(&sm->queues, &q->hn);
    DL_REMOVE(sm->q_first, sm->q_last, q);
    free(q);
}

static int by_creation(const void *a, const void *b)
{
    const struct mq_queue *x = *(struct mq_queue *const *)a;
    const struct mq_queue *y = *(struct mq_queue *const *)b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* After consumers went: auto-delete queues left without any, in creation
 * order, except those in a move (they stay listed for a later sweep).
 * Every queue that qualifies is on the idle list (idle_note). */
static void auto_delete_sweep(struct mq_sm *sm, struct mq_sm_result *res)
{
    struct mq_queue *q = sm->idle_first;
    struct mq_queue **due = NULL;
    size_t n = 0, cap = 0, i;

    while (q != NULL) {
        struct mq_queue *next = q->idle_next;

        visit(sm);
        if (!idle_auto_delete(q)) {
            idle_unlist(sm, q);
        } else if (q->move == MQ_SM_MOVE_NONE) {
            if (n == cap) {
                cap = cap ? 2 * cap : 4;
                due = xrealloc(due, cap * sizeof(*due));
            }
            due[n++] = q;
        }
        q = next;
    }
    if (n > 1) {
        qsort(due, n, sizeof(*due), by_creation);
    }
    for (i = 0; i < n; i++) {
        queue_destroy(sm, due[i], MQ_SM_DEL_AUTO_DELETE, res);
    }
    free(due);
}

/* 405 when @q is exclusive to another connection. */
static bool locked(const struct mq_queue *q, const struct mq_sm_who *w)
{
    return q->exclusive &&
           (q->owner_router != w->router || q->owner_conn != w->conn);
}

static bool names_valid(const struct mq_sm_cmd *cmd)
{
    return cmd->vhost_len <= MQ_SM_NAME_MAX && cmd->queue_len > 0 &&
           cmd->queue_len <= MQ_SM_NAME_MAX &&
           (cmd->vhost != NULL || cmd->vhost_len == 0) && cmd->queue != NULL;
}

/* Whether a command naming @q (NULL: absent) may act here: not while @q is
 * in a move (MOVING), nor when it moved away (MOVED). Answers itself. */
static bool placed_here(const struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                        const struct mq_queue *q, struct mq_sm_result *res)
{
    if (q != NULL) {
        if (q->move != MQ_SM_MOVE_NONE) {
            set_error(res, MQ_SM_MOVING, "MOVING - queue is being moved");
            return false;
        }
        return true;
    }
    if (tomb_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue,
                  cmd->queue_len) != NULL) {
        set_error(res, MQ_SM_MOVED, "MOVED - queue moved to another shard");
        res->moved = true;
        return false;
    }
    return true;
}

/* Find the queue a command names, answering 404/405 and the placement
 * answers itself. */
static struct mq_queue *queue_lookup(struct mq_sm *sm,
                                     const struct mq_sm_cmd *cmd,
                                     struct mq_sm_result *res)
{
    struct mq_queue *q;

    q = queue_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue,
                   cmd->queue_len);
    if (!placed_here(sm, cmd, q, res)) {
        return NULL;
    }
    if (q == NULL) {
        set_error(res, MQ_SM_NOT_FOUND, "NOT_FOUND - no queue");
        return NULL;
    }
    if (locked(q, &cmd->who)) {
        set_error(res, MQ_SM_RESOURCE_LOCKED,
                  "RESOURCE_LOCKED - cannot obtain exclusive access to "
                  "locked queue");
        return NULL;
    }
    return q;
}

/* The reply text naming the first argument that differs, or NULL. */
static const char *args_differ(const struct mq_queue *q,
                               const struct mq_sm_queue_args *a)
{
    if (q->has_ttl != a->has_message_ttl ||
        (q->has_ttl && q->ttl_ms != a->message_ttl_ms)) {
        return "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl'";
    }
    if (q->has_expires != a->has_expires ||
        (q->has_expires && q->expires_ms != a->expires_ms)) {
        return "PRECONDITION_FAILED - inequivalent arg 'x-expires'";
    }
    if (q->has_max_len != a->has_max_length ||
        (q->has_max_len && q->max_len != a->max_length)) {
        return "PRECONDITION_FAILED - inequivalent arg 'x-max-length'";
    }
    if (q->overflow_reject != a->overflow_reject) {
        return "PRECONDITION_FAILED - inequivalent arg 'x-overflow'";
    }
    if (q->has_dlx != a->has_dlx ||
        (q->has_dlx && (q->dlx_len != a->dlx_len ||
                        memcmp(q_dlx(q), a->dlx, a->dlx_len) != 0))) {
        return "PRECONDITION_FAILED - inequivalent arg "
               "'x-dead-letter-exchange'";
    }
    if (q->has_dlrk != a->has_dlrk ||
        (q->has_dlrk && (q->dlrk_len != a->dlrk_len ||
                         memcmp(q_dlrk(q), a->dlrk, a->dlrk_len) != 0))) {
        return "PRECONDITION_FAILED - inequivalent arg "
               "'x-dead-letter-routing-key'";
    }
    return NULL;
}

static void apply_declare(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                          struct mq_sm_result *res)
{
    const struct mq_sm_queue_args *a = &cmd->args;
    struct mq_tomb *t = NULL;
    struct mq_queue *q;
    size_t len;
    char *p;

    if ((a->has_dlx && (a->dlx_len > MQ_SM_NAME_MAX ||
                        (a->dlx == NULL && a->dlx_len != 0))) ||
        (a->has_dlrk && (a->dlrk_len > MQ_SM_NAME_MAX ||
                         (a->dlrk == NULL && a->dlrk_len != 0)))) {
        set_error(res, MQ_SM_BAD_REQUEST, "bad arguments");
        return;
    }
    q = queue_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue,
                   cmd->queue_len);
    if (q == NULL) {
        t = tomb_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue,
                      cmd->queue_len);
    }
    /* A tombstone yields only to a creation placed after the move. */
    if ((q != NULL || t == NULL || cmd->passive ||
         cmd->place_gen <= t->gen) &&
        !placed_here(sm, cmd, q, res)) {
        return;
    }
    if (q != NULL) {
        if (locked(q, &cmd->who)) {
            set_error(res, MQ_SM_RESOURCE_LOCKED,
                      "RESOURCE_LOCKED - cannot obtain exclusive access to "
                      "locked queue");
            return;
        }
        if (!cmd->passive) {
            if (q->durable != cmd->durable) {
                set_error(res, MQ_SM_PRECONDITION_FAILED,
                          "PRECONDITION_FAILED - inequivalent arg 'durable'");
                return;
            }
            if (q->auto_delete != cmd->auto_delete) {
                set_error(res, MQ_SM_PRECONDITION_FAILED,
                          "PRECONDITION_FAILED - inequivalent arg "
                          "'auto_delete'");
                return;
            }
            if (q->exclusive != cmd->exclusive) {
                set_error(res, MQ_SM_PRECONDITION_FAILED,
                          "PRECONDITION_FAILED - inequivalent arg "
                          "'exclusive'");
                return;
            }
            if (args_differ(q, a) != NULL) {
                set_error(res, MQ_SM_PRECONDITION_FAILED, args_differ(q, a));
                return;
            }
        }
        q->last_used_ms = sm->clock_ms;
        res->count = q->ready.n;
        res->consumer_count = q->consumers;
        res->gen = q->gen;
        return;
    }
    if (cmd->passive) {
        set_error(res, MQ_SM_NOT_FOUND, "NOT_FOUND - no queue");
        return;
    }
    if (a->has_expires && a->expires_ms == 0) {
        set_error(res, MQ_SM_PRECONDITION_FAILED,
                  "PRECONDITION_FAILED - invalid arg 'x-expires'");
        return;
    }
    if (cmd->place_gen != 0 && cmd->place_gen < sm->create_floor) {
        set_error(res, MQ_SM_PLACE_STALE,
                  "PLACE_STALE - placement generation below the floor");
        return;
    }

    len = cmd->vhost_len + cmd->queue_len + (a->has_dlx ? a->dlx_len : 0) +
          (a->has_dlrk ? a->dlrk_len : 0);
    q = xcalloc(1, sizeof(*q) + len);
    q->durable = cmd->durable;
    q->exclusive = cmd->exclusive;
    q->auto_delete = cmd->auto_delete;
    q->owner_router = cmd->exclusive ? cmd->who.router : 0;
    q->owner_conn = cmd->exclusive ? cmd->who.conn : 0;
    q->has_ttl = a->has_message_ttl;
    q->ttl_ms = a->has_message_ttl ? a->message_ttl_ms : 0;
    q->has_expires = a->has_expires;
    q->expires_ms = a->has_expires ? a->expires_ms : 0;
    q->has_max_len = a->has_max_length;
    q->max_len = a->has_max_length ? a->max_length : 0;
    q->overflow_reject = a->overflow_reject;
    q->has_dlx = a->has_dlx;
    q->has_dlrk = a->has_dlrk;
    q->vhost_len = (uint8_t)cmd->vhost_len;
    q->name_len = (uint8_t)cmd->queue_len;
    q->dlx_len = a->has_dlx ? (uint8_t)a->dlx_len : 0;
    q->dlrk_len = a->has_dlrk ? (uint8_t)a->dlrk_len : 0;
    q->last_used_ms = sm->clock_ms;
    p = q->data;
    if (cmd->vhost_len > 0) {
        memcpy(p, cmd->vhost, cmd->vhost_len);
    }
    memcpy(p + q->vhost_len, cmd->queue, cmd->queue_len);
    if (q->dlx_len > 0) {
        memcpy((char *)q_dlx(q), a->dlx, q->dlx_len);
    }
    if (q->dlrk_len > 0) {
        memcpy((char *)q_dlrk(q), a->dlrk, q->dlrk_len);
    }
    q->gen = cmd->place_gen;
    q->hn.hash = hash_name(cmd->vhost, cmd->vhost_len, cmd->queue,
                           cmd->queue_len);
    queue_link(sm, q);
    if (t != NULL) {
        tomb_remove(sm, t);
    }
    res->gen = q->gen;
}

static void apply_delete(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                         struct mq_sm_result *res)
{
    struct mq_queue *q = queue_lookup(sm, cmd, res);

    if (q == NULL) {
        return;
    }
    if (cmd->if_unused && q->consumers > 0) {
        set_error(res, MQ_SM_PRECONDITION_FAILED,
                  "PRECONDITION_FAILED - queue in use");
        return;
    }
    if (cmd->if_empty && q->ready.n > 0) {
        set_error(res, MQ_SM_PRECONDITION_FAILED,
                  "PRECONDITION_FAILED - queue not empty");
        return;
    }
    res->count = q->ready.n;
    queue_destroy(sm, q, MQ_SM_DEL_COMMAND, res);
}

static void apply_purge(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                        struct mq_sm_result *res)
{
    struct mq_queue *q = queue_lookup(sm, cmd, res);

    if (q == NULL) {
        return;
    }
    res->count = q->ready.n;
    mlist_free_all(sm, &q->ready);
}

/* ------------------------------------------------------------------ dedup */

static struct mq_client *client_find(const struct mq_sm *sm, uint64_t id)
{
    struct hnode *e;

    for (e = ht_chain(&sm->clients, mix64(id)); e != NULL; e = e->next) {
        struct mq_client *cl = container_of(e, struct mq_client, hn);

        if (cl->id == id) {
            return cl;
        }
    }
    return NULL;
}

static bool client_seen(const struct mq_sm *sm, const struct mq_client *cl,
                        uint64_t seq, bool *stale)
{
    uint64_t d;

    *stale = false;
    if (cl == NULL || seq > cl->max_seq) {
        return false;
    }
    d = cl->max_seq - seq;
    if (d >= (uint64_t)sm->dedup_words * 64) {
        *stale = true;
        return true;
    }
    return (cl->bits[d / 64] >> (d % 64)) & 1;
}

/* Shift the window so bit 0 is @seq's (seq > max_seq). */
static void client_advance(const struct mq_sm *sm, struct mq_client *cl,
                           uint64_t seq)
{
    uint64_t d = seq - cl->max_seq;
    uint32_t words = sm->dedup_words;
    uint64_t ws = d / 64;
    unsigned bs = (unsigned)(d % 64);
    uint32_t i;

    if (ws >= words) {
        memset(cl->bits, 0, words * sizeof(uint64_t));
    } else {
        /* bits move toward higher distance: word i takes from i - ws */
        for (i = words; i-- > 0;) {
            uint64_t v = 0;

            if (i >= ws) {
                v = cl->bits[i - ws] << bs;
                if (bs != 0 && i >= ws + 1) {
                    v |= cl->bits[i - ws - 1] >> (64 - bs);
                }
            }
            cl->bits[i] = v;
        }
    }
    cl->max_seq = seq;
}

/* Record (client, seq) as applied. */
static void client_record(struct mq_sm *sm, struct mq_client *cl,
                          uint64_t client_id, uint64_t seq)
{
    uint64_t d;

    if (cl == NULL) {
        cl = xcalloc(1, sizeof(*cl) + sm->dedup_words * sizeof(uint64_t));
        cl->id = client_id;
        cl->max_seq = seq;
        cl->hn.hash = mix64(client_id);
        ht_insert(&sm->clients, &cl->hn);
        DL_APPEND(sm->cl_first, sm->cl_last, cl);
        while (sm->clients.count > sm->dedup_clients) {
            struct mq_client *old = sm->cl_first;

            ht_remove(&sm->clients, &old->hn);
            DL_REMOVE(sm->cl_first, sm->cl_last, old);
            free(old);
        }
    } else {
        DL_REMOVE(sm->cl_first, sm->cl_last, cl);
        DL_APPEND(sm->cl_first, sm->cl_last, cl);
        if (seq > cl->max_seq) {
            client_advance(sm, cl, seq);
        }
    }
    d = cl->max_seq - seq;
    cl->bits[d / 64] |= (uint64_t)1 << (d % 64);
}

static void apply_enqueue(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                          struct mq_sm_result *res)
{
    struct mq_client *cl = NULL;
    struct mq_queue *q;
    struct mq_msg *m;
    uint64_t ttl = NEVER;
    bool stale;

    if (cmd->body_len > UINT32_MAX ||
        (cmd->body == NULL && cmd->body_len != 0)) {
        set_error(res, MQ_SM_BAD_REQUEST, "body too large");
        return;
    }
    if (cmd->seq != 0) {
        cl = client_find(sm, cmd->client_id);
        if (client_seen(sm, cl, cmd->seq, &stale)) {
            res->status = stale ? MQ_SM_STALE : MQ_SM_DUPLICATE;
            return;
        }
        if (cmd->prev_seq != 0 && cmd->prev_seq < cmd->seq &&
            !client_seen(sm, cl, cmd->prev_seq, &stale)) {
            set_error(res, MQ_SM_OUT_OF_ORDER,
                      "an earlier publish is not applied yet");
            return;
        }
    }
    q = queue_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue,
                   cmd->queue_len);
    if (!placed_here(sm, cmd, q, res)) {
        return; /* not recorded: it will be applied where the queue is */
    }
    if (q == NULL) {
        set_error(res, MQ_SM_NOT_FOUND, "NOT_FOUND - no queue");
        if (cmd->seq != 0) {
            client_record(sm, cl, cmd->client_id, cmd->seq);
        }
        return;
    }
    if (q->overflow_reject && q->has_max_len) {
        (void)expire_head(sm, q, res);
        if (q->ready.n >= q->max_len) {
            /* Not recorded for dedup: nothing was stored. */
            set_error(res, MQ_SM_REJECTED, "queue full (reject-publish)");
            return;
        }
    }
    m = msg_new(sm, cmd->body, (uint32_t)cmd->body_len, res);
    if (cmd->seq != 0) {
        client_record(sm, cl, cmd->client_id, cmd->seq);
    }
    if (q->has_ttl) {
        ttl = q->ttl_ms;
    }
    if (cmd->has_ttl && cmd->ttl_ms < ttl) {
        ttl = cmd->ttl_ms;
    }
    m->q = q;
    m->id = sm->next_msg_id++;
    m->exp_ms = ttl == NEVER ? NEVER : sat_add(sm->clock_ms, ttl);
    if (m->exp_ms == NEVER && ttl != NEVER) {
        m->exp_ms = NEVER - 1; /* keep "has a TTL" distinct, never reached */
    }
    res->msg_id = m->id;
    res->count = 1;
    (void)expire_head(sm, q, res);
    mlist_append(&q->ready, m);
    if (q->has_max_len) {
        while (q->ready.n > q->max_len) {
            struct mq_msg *h = q->ready.head;

            if (h == m) {
                res->count = 0;
            }
            mlist_remove(&q->ready, h);
            msg_discard(sm, q, h, MQ_SM_DL_MAXLEN, res);
        }
    }
}

/* ------------------------------------------------------ consume / deliver */

static void apply_consume(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                          struct mq_sm_result *res)
{
    struct mq_queue *q = queue_lookup(sm, cmd, res);
    struct mq_consumer *c;

    if (q == NULL) {
        return;
    }
    c = consumer_find(sm, cmd->who.consumer);
    /* An unregistered record (basic.get deliveries) may become the
     * consumer only for the same channel, or its unacked messages would
     * change hands. */
    if (c != NULL &&
        (c->registered || c->q != q || !match_channel(c, &cmd->who))) {
        set_error(res, MQ_SM_BAD_REQUEST, "consumer id in use");
        return;
    }
    if (q->excl_consumer || (cmd->exclusive && q->consumers > 0)) {
        set_error(res, MQ_SM_ACCESS_REFUSED,
                  "ACCESS_REFUSED - queue in exclusive use");
        return;
    }
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        c->id = cmd->who.consumer;
        c->q = q;
        c->router = cmd->who.router;
        c->conn = cmd->who.conn;
        c->channel = cmd->who.channel;
        c->hn.hash = mix64(c->id);
        consumer_link(sm, c);
    }
    c->registered = true;
    c->exclusive = cmd->exclusive;
    c->credit = cmd->max_messages;
    c->prefetch = cmd->prefetch;
    q->consumers++;
    q->had_consumer = true;
    q->excl_consumer = cmd->exclusive;
    q->last_used_ms = sm->clock_ms;
    res->consumer_count = q->consumers;
}

static void apply_cancel(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                         struct mq_sm_result *res)
{
    struct mq_consumer *c = consumer_find(sm, cmd->who.consumer);
    uint64_t n = 0;

    if (c == NULL || !c->registered) {
        return; /* idempotent */
    }
    consumer_unregister(sm, c);
    /* Its edge asks no more: what was set aside for it is ready again. */
    requeue(sm, c->q, take_unacked(sm, c, 0, NULL, PICK_PENDING, &n));
    res->count = 1;
    consumer_gc(sm, c);
    auto_delete_sweep(sm, res);
}

/* Check ready message @m out to consumer @c with @co_seq. */
static void checkout_msg(struct mq_sm *sm, struct mq_consumer *c,
                         struct mq_msg *m, uint64_t co_seq)
{
    mlist_remove(&c->q->ready, m);
    INVARIANT(m->co == NULL);
    m->co = xmalloc(sizeof(*m->co));
    m->co->m = m;
    m->co->c = c;
    m->co->tag = sm->next_tag++;
    m->co->co_seq = co_seq;
    m->co->hn.hash = mix64(m->co->tag);
    ht_insert(&sm->tags, &m->co->hn);
    mlist_append(&c->unacked, m);
    c->q->unacked++;
    c->served_tag = m->co->tag;
}

/* Checked-out message @m goes to the edge in @res. */
static void deliver_msg(struct mq_msg *m, uint64_t co_seq,
                        struct mq_sm_result *res)
{
    m->co->co_seq = co_seq;
    m->delivery_count++;
    res->count++;
    add_delivery(res, m);
}

static bool self_can_take(const struct mq_consumer *c,
                          const struct mq_sm_cmd *cmd,
                          const struct mq_sm_result *res)
{
    return res->count < cmd->max_messages &&
           (cmd->prefetch == 0 || c->unacked.n < cmd->prefetch);
}

static bool other_can_take(const struct mq_consumer *o)
{
    return o->pending < o->credit &&
           (o->prefetch == 0 || o->unacked.n < o->prefetch);
}

/* Deal @q's ready messages one by one, in queue order, over its
 * registered consumers that can take one more, least recently served
 * first (round robin, as RabbitMQ): registered consumer @c's go into @res,
 * the others' are set aside for their own next CHECKOUT. Ends when @c can
 * take no more: the rest waits for the next CHECKOUT of the queue. Only
 * the log decides (credits, served tags), so every replica deals alike.
 * Cost: one pass over the queue's consumer records when it has several. */
static void dispatch(struct mq_sm *sm, struct mq_queue *q,
                     struct mq_consumer *c, const struct mq_sm_cmd *cmd,
                     struct mq_sm_result *res)
{
    struct mq_consumer *others = NULL;
    struct mq_consumer *o;

    if (q->consumers > 1) {
        /* in creation order, each pushed: the list ends up newest first,
         * which decides ties among never served consumers (old logs
         * replay to the same deals) */
        for (o = q->cq_first; o != NULL; o = o->q_next) {
            visit(sm);
            if (o != c && o->registered && o->credit > 0) {
                o->cand_next = others;
                others = o;
            }
        }
    }
    while (q->ready.head != NULL && self_can_take(c, cmd, res)) {
        struct mq_msg *m = q->ready.head;
        struct mq_consumer *to = c;

        for (o = others; o != NULL; o = o->cand_next) {
            if (o->served_tag < to->served_tag && other_can_take(o)) {
                to = o;
            }
        }
        checkout_msg(sm, to, m, to == c ? cmd->seq : CO_PENDING);
        if (to == c) {
            deliver_msg(m, cmd->seq, res);
        } else {
            to->pending++;
            res->set_aside++;
        }
    }
}

static void apply_checkout(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                           struct mq_sm_result *res)
{
    struct mq_queue *q = queue_lookup(sm, cmd, res);
    struct mq_consumer *c;
    struct mq_msg *m;

    if (q == NULL) {
        return;
    }
    c = consumer_find(sm, cmd->who.consumer);
    if (c != NULL && c->q != q) {
        set_error(res, MQ_SM_BAD_REQUEST, "consumer on another queue");
        return;
    }
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        c->id = cmd->who.consumer;
        c->q = q;
        c->router = cmd->who.router;
        c->conn = cmd->who.conn;
        c->channel = cmd->who.channel;
        c->hn.hash = mix64(c->id);
        consumer_link(sm, c);
    }
    q->last_used_ms = sm->clock_ms;
    if (cmd->seq != 0 && cmd->seq <= c->co_seq) {
        /* Seen before: hand out again what it delivered and is still
         * unacked, never more, so no delivery exists that the edge cannot
         * know of (it would hold the consumer's credit, unseen). */
        for (m = c->unacked.head; m != NULL; m = m->next) {
            if (m->co->co_seq == cmd->seq) {
                res->count++;
                add_delivery(res, m);
            }
        }
        res->message_count = q->ready.n;
        return;
    }
    (void)expire_head(sm, q, res);
    /* First what other CHECKOUTs set aside for it, oldest first. */
    for (m = c->unacked.head; m != NULL && c->pending > 0 &&
                              res->count < cmd->max_messages;
         m = m->next) {
        if (m->co->co_seq == CO_PENDING) {
            c->pending--;
            deliver_msg(m, cmd->seq, res);
        }
    }
    if (c->registered) {
        c->credit = cmd->max_messages;
        c->prefetch = cmd->prefetch;
        dispatch(sm, q, c, cmd, res);
    } else {
        /* basic.get: the head of the queue */
        while (q->ready.head != NULL && self_can_take(c, cmd, res)) {
            m = q->ready.head;
            checkout_msg(sm, c, m, cmd->seq);
            deliver_msg(m, cmd->seq, res);
        }
    }
    if (cmd->seq != 0 && res->count > 0) {
        c->co_seq = cmd->seq;
    }
    res->message_count = q->ready.n;
    consumer_gc(sm, c);
}

/* ------------------------------------------------- settle / return / drop */

enum settle_kind { SETTLE_ACK, SETTLE_REQUEUE, SETTLE_DROP };

static void finish_taken(struct mq_sm *sm, struct mq_queue *q,
                         struct mq_msg *list, enum settle_kind kind,
                         struct returns *back, struct mq_sm_result *res)
{
    if (kind == SETTLE_REQUEUE) {
        returns_add(back, q, list);
        return;
    }
    while (list != NULL) {
        struct mq_msg *m = list;

        list = list->next;
        if (kind == SETTLE_DROP) {
            msg_discard(sm, q, m, MQ_SM_DL_REJECTED, res);
        } else {
            msg_free(sm, m);
        }
    }
}

static struct mq_msg *tag_find(const struct mq_sm *sm, uint64_t tag)
{
    struct hnode *e;

    for (e = ht_chain(&sm->tags, mix64(tag)); e != NULL; e = e->next) {
        struct mq_co *co = container_of(e, struct mq_co, hn);

        if (co->tag == tag) {
            return co->m;
        }
    }
    return NULL;
}

/* One delivery of the command's channel; an unknown tag, or one of another
 * channel, is ignored (already settled, or returned by a leader change). */
static void settle_one(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                       uint64_t tag, enum settle_kind kind,
                       struct returns *back, struct mq_sm_result *res)
{
    struct mq_msg *m = tag != 0 ? tag_find(sm, tag) : NULL;
    struct mq_consumer *c;
    struct mq_msg *list;

    if (m == NULL || !match_channel(m->co->c, &cmd->who)) {
        return;
    }
    c = m->co->c;
    list = take_unacked(sm, c, 0, m, PICK_DELIVERED, &res->count);
    finish_taken(sm, c->q, list, kind, back, res);
    consumer_gc(sm, c);
}

static void settle_by_tag(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                          enum settle_kind kind, struct mq_sm_result *res)
{
    struct returns back = {NULL};
    struct mq_owner *ch;
    struct mq_consumer *c;
    struct mq_msg *list;

    if (cmd->n_tags > 0) {
        size_t i;

        for (i = 0; i < cmd->n_tags; i++) {
            settle_one(sm, cmd, cmd->tags[i], kind, &back, res);
        }
        returns_flush(sm, &back);
        return;
    }
    if (!cmd->multiple) {
        settle_one(sm, cmd, cmd->tag, kind, &back, res);
        returns_flush(sm, &back);
        return;
    }
    /* the channel's records, in creation order */
    ch = owner_find(sm, OWN_CHANNEL, cmd->who.router, cmd->who.conn,
                    cmd->who.channel);
    c = ch != NULL ? ch->first : NULL;
    while (c != NULL) {
        /* the gc below frees the channel with its last record: next is
         * NULL then */
        struct mq_consumer *next = c->own[OWN_CHANNEL].next;

        visit(sm);
        list = take_unacked(sm, c, cmd->tag, NULL, PICK_DELIVERED,
                            &res->count);
        finish_taken(sm, c->q, list, kind, &back, res);
        consumer_gc(sm, c);
        c = next;
    }
    returns_flush(sm, &back);
}

/* Consumer record @c's owner went: its deliveries go back (into @back),
 * it is unregistered. */
static void return_record(struct mq_sm *sm, struct mq_consumer *c,
                          struct returns *back, struct mq_sm_result *res)
{
    visit(sm);
    returns_add(back, c->q,
                take_unacked(sm, c, 0, NULL, PICK_ALL, &res->count));
    consumer_unregister(sm, c);
    consumer_gc(sm, c);
}

static enum own_level scope_level(enum mq_sm_scope scope)
{
    return scope == MQ_SM_SCOPE_CHANNEL      ? OWN_CHANNEL
           : scope == MQ_SM_SCOPE_CONNECTION ? OWN_CONN
                                             : OWN_ROUTER;
}

/* The owner's records in creation order, then (a connection or router)
 * its exclusive queues in creation order, as a walk over the whole shard
 * meets them. */
static void return_gone(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                        struct mq_sm_result *res)
{
    const struct mq_sm_who *w = &cmd->who;
    enum own_level level = scope_level(cmd->scope);
    struct returns back = {NULL};
    struct mq_owner *o;
    struct mq_consumer *c;
    struct mq_queue *q;

    if (cmd->scope == MQ_SM_SCOPE_CONSUMER) {
        c = consumer_find(sm, w->consumer);
        if (c != NULL) {
            return_record(sm, c, &back, res);
        }
        returns_flush(sm, &back);
        auto_delete_sweep(sm, res);
        return;
    }
    o = owner_find(sm, level, w->router, w->conn, w->channel);
    c = o != NULL ? o->first : NULL;
    while (c != NULL) {
        /* the owner goes with its last record if it owns no queue: next
         * is NULL then */
        struct mq_consumer *next = c->own[level].next;

        return_record(sm, c, &back, res);
        c = next;
    }
    returns_flush(sm, &back);
    /* looked up again: it may have gone with its records */
    o = level != OWN_CHANNEL
            ? owner_find(sm, level, w->router, w->conn, w->channel)
            : NULL;
    q = o != NULL ? o->xq_first : NULL;
    while (q != NULL) {
        struct mq_queue *next = q->xown[level - 1].next;

        visit(sm);
        if (q->move == MQ_SM_MOVE_NONE) {
            queue_destroy(sm, q, MQ_SM_DEL_EXCLUSIVE, res);
        }
        q = next;
    }
    auto_delete_sweep(sm, res);
}

/* The old era command (mq_sm.h): kept for the logs that hold it. */
static void apply_leader_changed(struct mq_sm *sm, struct mq_sm_result *res)
{
    struct mq_consumer *c = sm->c_first;
    struct returns back = {NULL};

    while (c != NULL) {
        struct mq_consumer *next = c->next;

        returns_add(&back, c->q,
                    take_unacked(sm, c, 0, NULL, PICK_ALL, &res->count));
        /* Whatever earlier CHECKOUTs delivered is back in the queue: a
         * retry of one is a new CHECKOUT now. */
        c->co_seq = 0;
        consumer_gc(sm, c);
        c = next;
    }
    returns_flush(sm, &back);
}

/* Broker restart: the same recovery as RabbitMQ's. Consumers and their
 * deliveries belong to connections that cannot exist any more. Surviving
 * queues restart their x-expires lease (RabbitMQ renews it on restart) and
 * forget had_consumer, so an auto-delete queue waits for a new consumer
 * instead of being swept by the next unrelated cancel. */
static void apply_boot(struct mq_sm *sm, struct mq_sm_result *res)
{
    struct mq_consumer *c = sm->c_first;
    struct returns back = {NULL};
    struct mq_queue *q;

    while (c != NULL) {
        struct mq_consumer *next = c->next;

        returns_add(&back, c->q,
                    take_unacked(sm, c, 0, NULL, PICK_ALL, &res->count));
        consumer_unregister(sm, c);
        consumer_gc(sm, c);
        c = next;
    }
    returns_flush(sm, &back);
    q = sm->q_first;
    while (q != NULL) {
        struct mq_queue *next = q->next;

        /* A queue in a move is the coordinator's to finish or abort. */
        if ((!q->durable || q->exclusive) && q->move == MQ_SM_MOVE_NONE) {
            queue_destroy(sm, q, MQ_SM_DEL_BOOT, res);
        } else {
            q->had_consumer = false;
            q->last_used_ms = sm->clock_ms;
        }
        q = next;
    }
}

static void hand_out(void *arg, const struct mq_outbox_entry *e)
{
    add_dead_letter(arg, e);
}

/* The queues due (due index), in creation order as a walk of every queue
 * would meet them: what one does (dead letters, outbox ids) depends on
 * the order. Queues not due would do nothing. */
static void apply_expire(struct mq_sm *sm, struct mq_sm_result *res)
{
    struct mq_queue **due = NULL;
    struct mq_queue *q;
    size_t n = 0, cap = 0, i;

    while ((q = due_top(sm)) != NULL && q->due_ms <= sm->clock_ms) {
        if (n == cap) {
            cap = cap > 0 ? 2 * cap : 16;
            due = xrealloc(due, cap * sizeof(*due));
        }
        due[n++] = q;
        due_remove(sm, q);
    }
    if (n > 1) {
        qsort(due, n, sizeof(*due), by_seq);
    }
    for (i = 0; i < n; i++) {
        q = due[i];
        res->count += expire_head(sm, q, res);
        if (q->has_expires && q->consumers == 0 &&
            sm->clock_ms >= sat_add(q->last_used_ms, q->expires_ms)) {
            queue_destroy(sm, q, MQ_SM_DEL_EXPIRES, res);
        } else {
            due_update(q);
        }
    }
    free(due);
    /* Dead letters whose republish was not settled within the claim
     * window (a lost reply, an edge gone, a failed ENQUEUE): this edge
     * republishes them now. Those made just above are claimed now. */
    mq_outbox_claim_due(&sm->outbox, sm->clock_ms, MQ_SM_DL_CLAIM_MS,
                        MQ_SM_DL_HAND_MAX, MQ_SM_DL_HAND_BYTES, hand_out,
                        res);
}

static void entry_gone(void *arg, const struct mq_outbox_entry *e)
{
    struct mq_sm *sm = arg;

    if (e->seg != 0) {
        mq_segs_unref(&sm->segs, e->seg);
    }
}

static void apply_dl_settle(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                            struct mq_sm_result *res)
{
    if (cmd->n_tags > MQ_SM_MAX_TAGS || (cmd->n_tags > 0 && !cmd->tags)) {
        set_error(res, MQ_SM_BAD_REQUEST, "bad outbox ids");
        return;
    }
    res->count = mq_outbox_settle(&sm->outbox, cmd->tags, cmd->n_tags,
                                  entry_gone, sm);
}

/* ------------------------------------------------------------- lifecycle */

static int state_init(struct mq_sm *sm)
{
    if (ht_init(&sm->queues, 0) != 0) {
        goto err;
    }
    if (ht_init(&sm->consumers, 0) != 0) {
        goto err_after_queues;
    }
    if (ht_init(&sm->tags, 0) != 0) {
        goto err_after_consumers;
    }
    if (ht_init(&sm->clients, 0) != 0) {
        goto err_after_tags;
    }
    if (ht_init(&sm->tombs, 0) != 0) {
        goto err_after_clients;
    }
    if (ht_init(&sm->owners, 0) != 0) {
        goto err_after_tombs;
    }
    sm->visits = xcalloc(1, sizeof(*sm->visits));
    sm->next_msg_id = 1;
    sm->next_tag = 1;
    mq_outbox_init(&sm->outbox);
    mq_segs_init(&sm->segs, sm->segs.seg_bytes);
    return 0;

err_after_tombs:
    ht_close(&sm->tombs);
err_after_clients:
    ht_close(&sm->clients);
err_after_tags:
    ht_close(&sm->tags);
err_after_consumers:
    ht_close(&sm->consumers);
err_after_queues:
    ht_close(&sm->queues);
err:
    return -1;
}

/* The owner records: most are in no list but their table's. */
static void owners_free(struct mq_sm *sm)
{
    size_t i;

    for (i = 0; sm->owners.b != NULL && i <= sm->owners.mask; i++) {
        struct hnode *e = sm->owners.b[i];

        while (e != NULL) {
            struct hnode *next = e->next;

            free(container_of(e, struct mq_owner, hn));
            e = next;
        }
    }
}

/* Free everything the state owns (not @sm itself). */
static void state_free(struct mq_sm *sm)
{
    struct mq_consumer *c = sm->c_first;
    struct mq_queue *q = sm->q_first;
    struct mq_client *cl = sm->cl_first;
    struct mq_tomb *t = sm->t_first;

    /* Messages are freed without touching the tables, which go whole. */
    while (c != NULL) {
        struct mq_consumer *next = c->next;
        struct mq_msg *m = c->unacked.head;

        while (m != NULL) {
            struct mq_msg *mn = m->next;

            free(m->co);
            free(m);
            m = mn;
        }
        free(c);
        c = next;
    }
    while (q != NULL) {
        struct mq_queue *next = q->next;
        struct mq_msg *m = q->ready.head;

        while (m != NULL) {
            struct mq_msg *mn = m->next;

            free(m);
            m = mn;
        }
        free(q->frozen);
        free(q);
        q = next;
    }
    while (cl != NULL) {
        struct mq_client *next = cl->next;

        free(cl);
        cl = next;
    }
    while (t != NULL) {
        struct mq_tomb *next = t->next;

        free(t);
        t = next;
    }
    owners_free(sm);
    ht_close(&sm->queues);
    ht_close(&sm->consumers);
    ht_close(&sm->tags);
    ht_close(&sm->clients);
    ht_close(&sm->tombs);
    ht_close(&sm->owners);
    mq_outbox_free(&sm->outbox);
    mq_segs_free(&sm->segs);
    free(sm->due.v);
    free(sm->visits);
}

struct mq_sm *mq_sm_new(const struct mq_sm_config *cfg)
{
    struct mq_sm *sm;
    uint32_t window = MQ_SM_DEDUP_WINDOW_DEFAULT;

    sm = xcalloc(1, sizeof(*sm));
    if (cfg != NULL && cfg->dedup_window != 0) {
        window = cfg->dedup_window;
    }
    if (window > (1U << 24)) {
        window = 1U << 24;
    }
    sm->dedup_words = (window + 63) / 64;
    sm->dedup_clients = MQ_SM_DEDUP_CLIENTS_DEFAULT;
    if (cfg != NULL && cfg->dedup_clients != 0) {
        sm->dedup_clients = cfg->dedup_clients;
    }
    if (cfg != NULL && cfg->seg_bytes != 0) {
        INVARIANT(cfg->seg_bytes % MQ_SM_REC_ALIGN == 0 &&
                  cfg->seg_bytes <= MQ_SM_SEG_BYTES);
        sm->segs.seg_bytes = cfg->seg_bytes;
    }
    if (state_init(sm) != 0) {
        goto err_after_alloc;
    }
    return sm;

err_after_alloc:
    free(sm);
    return NULL;
}

void mq_sm_free(struct mq_sm *sm)
{
    if (sm == NULL) {
        return;
    }
    state_free(sm);
    free(sm);
}

/* Queue moves: below the snapshot code, whose encoders they share. */
static void apply_move_out(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                           struct mq_sm_result *res);
static void apply_move_in(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                          struct mq_sm_result *res);
static void apply_move_in_end(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                              struct mq_sm_result *res);
static void apply_move_done(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                            struct mq_sm_result *res);
static void apply_move_abort(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                             struct mq_sm_result *res);
static void frozen_fill(struct mq_queue *q);

/* ------------------------------------------------------- external bodies */

/* Inline @m of list @l gets its body's record: a copy of @m that names
 * it by ref takes its place (list, checkout), and @m goes to @res, whose
 * write points into it. Returns the copy. */
static struct mq_msg *msg_externalize(struct mq_sm *sm, struct mlist *l,
                                      struct mq_msg *m,
                                      struct mq_sm_result *res)
{
    struct mq_msg *x = xmalloc(sizeof(*x));
    uint32_t seg, off;

    *x = *m; /* the struct, not the body after it */
    body_place(sm, m->data, m->len, m, &seg, &off, res);
    x->seg = seg;
    x->off = off;
    if (x->prev != NULL) {
        x->prev->next = x;
    } else {
        l->head = x;
    }
    if (x->next != NULL) {
        x->next->prev = x;
    } else {
        l->tail = x;
    }
    if (x->co != NULL) {
        x->co->m = x;
    }
    return x;
}

static void mlist_externalize(struct mq_sm *sm, struct mlist *l,
                              struct mq_sm_result *res)
{
    struct mq_msg *m;

    for (m = l->head; m != NULL; m = m->next) {
        m = msg_externalize(sm, l, m, res);
    }
}

struct externalize {
    struct mq_sm *sm;
    struct mq_sm_result *res;
};

static void entry_externalize(void *arg, struct mq_outbox_entry *old,
                              uint32_t *seg, uint32_t *off)
{
    struct externalize *x = arg;

    body_place(x->sm, mq_outbox_body(old), old->body_len, old, seg, off,
               x->res);
}

/* The switch to external bodies (mq_sm.h): every inline body gets its
 * record, in an order that is a function of the state: the ready
 * messages of each queue (queues in creation order, each in queue
 * order), then each consumer record's checked-out ones (records in
 * creation order, each in tag order), then the outbox entries (id
 * order). */
static void bodies_externalize(struct mq_sm *sm, struct mq_sm_result *res)
{
    struct externalize x = {sm, res};
    struct mq_queue *q;
    struct mq_consumer *c;

    INVARIANT(!sm->bodies_external && sm->segs.n == 0);
    sm->bodies_external = true;
    for (q = sm->q_first; q != NULL; q = q->next) {
        mlist_externalize(sm, &q->ready, res);
        if (q->frozen != NULL) {
            frozen_fill(q); /* the copies */
        }
    }
    for (c = sm->c_first; c != NULL; c = c->next) {
        mlist_externalize(sm, &c->unacked, res);
    }
    mq_outbox_externalize(&sm->outbox, entry_externalize, &x);
}

static void apply_one(struct mq_sm *sm, uint64_t now_ms,
                      const struct mq_sm_cmd *cmd, struct mq_sm_result *res)
{
    mq_sm_result_init(res);
    sm->applied++;
    if (now_ms > sm->clock_ms) {
        sm->clock_ms = now_ms;
    }
    if (cmd == NULL || (unsigned)cmd->type >= MQ_SM_CMD__COUNT) {
        set_error(res, MQ_SM_BAD_REQUEST, "bad command");
        return;
    }
    switch (cmd->type) {
        case MQ_SM_DECLARE:
        case MQ_SM_DELETE:
        case MQ_SM_PURGE:
        case MQ_SM_ENQUEUE:
        case MQ_SM_CONSUME:
        case MQ_SM_CHECKOUT:
        case MQ_SM_MOVE_OUT:
        case MQ_SM_MOVE_IN:
        case MQ_SM_MOVE_IN_END:
        case MQ_SM_MOVE_DONE:
        case MQ_SM_MOVE_ABORT:
            if (!names_valid(cmd)) {
                set_error(res, MQ_SM_BAD_REQUEST, "bad queue name");
                return;
            }
            break;
        default:
            break;
    }
    switch (cmd->type) {
        case MQ_SM_DECLARE:
            apply_declare(sm, cmd, res);
            break;
        case MQ_SM_DELETE:
            apply_delete(sm, cmd, res);
            break;
        case MQ_SM_PURGE:
            apply_purge(sm, cmd, res);
            break;
        case MQ_SM_ENQUEUE:
            apply_enqueue(sm, cmd, res);
            break;
        case MQ_SM_CONSUME:
            apply_consume(sm, cmd, res);
            break;
        case MQ_SM_CANCEL:
            apply_cancel(sm, cmd, res);
            break;
        case MQ_SM_CHECKOUT:
            apply_checkout(sm, cmd, res);
            break;
        case MQ_SM_SETTLE:
            settle_by_tag(sm, cmd, SETTLE_ACK, res);
            break;
        case MQ_SM_DROP:
            settle_by_tag(sm, cmd, SETTLE_DROP, res);
            break;
        case MQ_SM_RETURN:
            if (cmd->scope == MQ_SM_SCOPE_TAG) {
                settle_by_tag(sm, cmd, SETTLE_REQUEUE, res);
            } else if ((unsigned)cmd->scope < MQ_SM_SCOPE__COUNT) {
                return_gone(sm, cmd, res);
            } else {
                set_error(res, MQ_SM_BAD_REQUEST, "bad scope");
            }
            break;
        case MQ_SM_EXPIRE:
            apply_expire(sm, res);
            break;
        case MQ_SM_LEADER_CHANGED:
            apply_leader_changed(sm, res);
            break;
        case MQ_SM_BOOT:
            apply_boot(sm, res);
            if (!sm->bodies_external) {
                bodies_externalize(sm, res); /* what BOOT left */
            }
            break;
        case MQ_SM_ERA:
            /* a marker: deliveries stay where they are (mq_sm.h) */
            if (!sm->bodies_external) {
                bodies_externalize(sm, res);
            }
            break;
        case MQ_SM_MOVE_OUT:
            apply_move_out(sm, cmd, res);
            break;
        case MQ_SM_MOVE_IN:
            apply_move_in(sm, cmd, res);
            break;
        case MQ_SM_MOVE_IN_END:
            apply_move_in_end(sm, cmd, res);
            break;
        case MQ_SM_MOVE_DONE:
            apply_move_done(sm, cmd, res);
            break;
        case MQ_SM_MOVE_ABORT:
            apply_move_abort(sm, cmd, res);
            break;
        case MQ_SM_DL_SETTLE:
            apply_dl_settle(sm, cmd, res);
            break;
        default:
            set_error(res, MQ_SM_BAD_REQUEST, "bad command");
            break;
    }
}

/* Re-key (or start keeping) the queue @cmd names: whatever it did to it
 * may have brought its due time forward. */
static void due_named(struct mq_sm *sm, const struct mq_sm_cmd *cmd)
{
    struct mq_queue *q;

    if (cmd == NULL || cmd->queue_len == 0 || !names_valid(cmd)) {
        return;
    }
    q = queue_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue, cmd->queue_len);
    if (q == NULL) {
        return;
    }
    if (q->sm == NULL) {
        due_track(sm, q);
    } else {
        due_update(q);
    }
}

void mq_sm_apply(struct mq_sm *sm, uint64_t now_ms,
                 const struct mq_sm_cmd *cmd, struct mq_sm_result *res)
{
    apply_one(sm, now_ms, cmd, res);
    due_named(sm, cmd);
    res->freed = mq_segs_take_freed(&sm->segs, &res->n_freed);
    INVARIANT(sm->tags.count <= sm->next_tag);
    /* messages ever made: a bound on those still here */
    if (deep_check_due(sm->applied, sm->next_msg_id + sm->queues.count)) {
        mq_sm_check(sm);
    }
}

/* A message list's links, count and bytes; @f(m) for each. */
static void check_mlist(const struct mlist *l, void (*f)(const struct mq_msg *m,
                                                        const void *owner),
                        const void *owner)
{
    const struct mq_msg *m, *prev = NULL;
    uint64_t n = 0, bytes = 0;

    for (m = l->head; m != NULL; prev = m, m = m->next) {
        INVARIANT(m->prev == prev);
        f(m, owner);
        n++;
        bytes += m->len;
    }
    INVARIANT(prev == l->tail);
    INVARIANT(n == l->n && bytes == l->bytes);
}

static void check_ready(const struct mq_msg *m, const void *owner)
{
    INVARIANT(m->q == owner && m->co == NULL);
    INVARIANT(m->prev == NULL || m->prev->id < m->id); /* id order */
}

static void check_unacked(const struct mq_msg *m, const void *owner)
{
    const struct mq_consumer *c = owner;

    INVARIANT(m->co != NULL && m->co->m == m);
    INVARIANT(m->co->c == c && m->q == c->q && m->co->tag != 0);
    INVARIANT(m->prev == NULL || msg_tag(m->prev) < m->co->tag); /* order */
}

/* One owner's lists: each member points back to it, in creation order;
 * adds their lengths to @records and @xqueues. */
static void check_owner(const struct mq_owner *o, uint64_t *records,
                        uint64_t *xqueues)
{
    const struct mq_consumer *c;
    const struct mq_queue *q;
    int l = o->level;

    INVARIANT(o->first != NULL || o->xq_first != NULL);
    INVARIANT(l != OWN_CHANNEL || o->xq_first == NULL);
    INVARIANT(l == OWN_CHANNEL || o->channel == 0);
    INVARIANT(l != OWN_ROUTER || o->conn == 0);
    for (c = o->first; c != NULL; c = c->own[l].next) {
        INVARIANT(c->own[l].o == o && c->router == o->router);
        INVARIANT(l == OWN_ROUTER || c->conn == o->conn);
        INVARIANT(l != OWN_CHANNEL || c->channel == o->channel);
        INVARIANT(c->own[l].next == NULL || c->seq < c->own[l].next->seq);
        INVARIANT(c->own[l].next != NULL || o->last == c);
        (*records)++;
    }
    for (q = l != OWN_CHANNEL ? o->xq_first : NULL; q != NULL;
         q = q->xown[l - 1].next) {
        INVARIANT(q->exclusive && q->xown[l - 1].o == o &&
                  q->owner_router == o->router);
        INVARIANT(l == OWN_ROUTER || q->owner_conn == o->conn);
        INVARIANT(q->xown[l - 1].next == NULL ||
                  q->seq < q->xown[l - 1].next->seq);
        (*xqueues)++;
    }
}

/* The derived indexes agree with a walk over the whole state: each
 * consumer record is on its queue's list and on its channel's,
 * connection's and router's, each exclusive queue on its connection's
 * and router's, every list in creation order; the routers listed are the
 * router owners; every queue an auto-delete sweep must find is on the
 * idle list. */
static void check_indexes(const struct mq_sm *sm)
{
    const struct mq_queue *q;
    const struct mq_consumer *c;
    const struct mq_owner *o;
    uint64_t on_queues = 0, records = 0, xqueues = 0, exclusive = 0;
    uint64_t listed = 0, routers = 0;
    size_t i;
    int l;

    for (q = sm->q_first; q != NULL; q = q->next) {
        INVARIANT(q->next == NULL || q->seq < q->next->seq);
        INVARIANT(q->idle_listed || !idle_auto_delete(q));
        INVARIANT(q->back == NULL && q->back_next == NULL);
        listed += q->idle_listed;
        exclusive += q->exclusive;
        for (c = q->cq_first; c != NULL; c = c->q_next) {
            INVARIANT(c->q == q);
            INVARIANT(c->q_next == NULL || c->seq < c->q_next->seq);
            on_queues++;
        }
        for (l = OWN_CONN; q->exclusive && l <= OWN_ROUTER; l++) {
            INVARIANT(q->xown[l - 1].o == owner_find(sm, (enum own_level)l,
                                                     q->owner_router,
                                                     q->owner_conn, 0));
        }
    }
    for (q = sm->idle_first; q != NULL; q = q->idle_next) {
        listed--;
    }
    INVARIANT(listed == 0);
    for (c = sm->c_first; c != NULL; c = c->next) {
        INVARIANT(c->next == NULL || c->seq < c->next->seq);
        for (l = 0; l < OWN__COUNT; l++) {
            INVARIANT(c->own[l].o == owner_find(sm, (enum own_level)l,
                                                c->router, c->conn,
                                                c->channel));
        }
    }
    for (i = 0; sm->owners.b != NULL && i <= sm->owners.mask; i++) {
        const struct hnode *e;

        for (e = sm->owners.b[i]; e != NULL; e = e->next) {
            o = container_of(e, const struct mq_owner, hn);
            check_owner(o, &records, &xqueues);
            routers += o->level == OWN_ROUTER;
        }
    }
    for (o = sm->rt_first; o != NULL; o = o->next) {
        INVARIANT(o->level == OWN_ROUTER);
        routers--;
    }
    INVARIANT(routers == 0);
    INVARIANT(on_queues == sm->consumers.count);
    INVARIANT(records == OWN__COUNT * sm->consumers.count);
    INVARIANT(xqueues == 2 * exclusive);
}

/* The due index holds every queue with a due time, never keyed later than
 * it, in heap order. */
static void check_due(const struct mq_sm *sm)
{
    const struct mq_queue *q;
    size_t i, n = 0;

    for (q = sm->q_first; q != NULL; q = q->next) {
        uint64_t due = queue_due(q);

        INVARIANT(q->sm == sm);
        INVARIANT(q->prev == NULL || q->prev->seq < q->seq);
        INVARIANT(q->due_ms <= due);
        INVARIANT((q->due_pos != 0) == (q->due_ms != NEVER));
        INVARIANT(q->due_pos == 0 || sm->due.v[q->due_pos - 1] == q);
        n += q->due_pos != 0;
    }
    INVARIANT(n == sm->due.n);
    for (i = 1; i < sm->due.n; i++) {
        INVARIANT(!due_before(sm->due.v[i], sm->due.v[(i - 1) / 2]));
    }
}

/* Count @seg's ref in @refs (parallel to the segment table): false
 * unless it is listed and the record inside what was reserved there. */
static bool count_ref(const struct mq_sm *sm, uint32_t *refs, uint32_t seg,
                      uint32_t off, uint32_t len)
{
    size_t i;

    if (!sm->bodies_external) {
        return seg == 0 && off == 0; /* inline */
    }
    i = mq_segs_index(&sm->segs, seg);
    if (seg == 0 || i == SIZE_MAX || off >= sm->segs.seg_bytes ||
        off + mq_segs_rec_len(len) > sm->segs.v[i].used ||
        refs[i] == UINT32_MAX) {
        return false;
    }
    refs[i]++;
    return true;
}

static bool mlist_refs(const struct mq_sm *sm, uint32_t *refs,
                       const struct mlist *l)
{
    const struct mq_msg *m;

    for (m = l->head; m != NULL; m = m->next) {
        if (!count_ref(sm, refs, m->seg, m->off, m->len)) {
            return false;
        }
    }
    return true;
}

/* With bodies external, every body is named by a ref, every ref names a
 * segment of the table, inside what it reserved, and each segment's refs
 * are those naming it; with bodies inline, every body is inline and
 * nothing was ever placed. @refs: room for one count per segment,
 * zeroed. */
static bool refs_agree(const struct mq_sm *sm, uint32_t *refs)
{
    const struct mq_outbox_entry *e;
    const struct mq_queue *q;
    const struct mq_consumer *c;
    size_t pos = 0;
    size_t i;

    if (!sm->bodies_external &&
        (sm->segs.n != 0 || sm->segs.cur_seg != 1 || sm->segs.cur_off != 0)) {
        return false;
    }
    for (q = sm->q_first; q != NULL; q = q->next) {
        if (!mlist_refs(sm, refs, &q->ready)) {
            return false;
        }
    }
    for (c = sm->c_first; c != NULL; c = c->next) {
        if (!mlist_refs(sm, refs, &c->unacked)) {
            return false;
        }
    }
    while ((e = mq_outbox_next(&sm->outbox, &pos)) != NULL) {
        if (!count_ref(sm, refs, e->seg, e->off, e->body_len)) {
            return false;
        }
    }
    for (i = 0; i < sm->segs.n; i++) {
        if (refs[i] != sm->segs.v[i].refs) {
            return false;
        }
    }
    return true;
}

static void check_segs(const struct mq_sm *sm)
{
    uint32_t *refs = xcalloc(sm->segs.n + 1, sizeof(*refs));

    INVARIANT(refs_agree(sm, refs));
    mq_segs_check(&sm->segs, refs);
    free(refs);
}

void mq_sm_check(const struct mq_sm *sm)
{
    const struct mq_queue *q;
    const struct mq_consumer *c;
    uint64_t nq = 0, nc = 0, unacked_q = 0, unacked_c = 0;

    for (q = sm->q_first; q != NULL; q = q->next) {
        check_mlist(&q->ready, check_ready, q);
        unacked_q += q->unacked;
        nq++;
    }
    INVARIANT(nq == sm->queues.count);
    for (c = sm->c_first; c != NULL; c = c->next) {
        const struct mq_msg *m;
        uint64_t pending = 0;

        check_mlist(&c->unacked, check_unacked, c);
        for (m = c->unacked.head; m != NULL; m = m->next) {
            pending += m->co->co_seq == CO_PENDING;
        }
        INVARIANT(pending == c->pending);
        INVARIANT(c->q != NULL || c->unacked.n == 0);
        unacked_c += c->unacked.n;
        nc++;
    }
    INVARIANT(nc == sm->consumers.count);
    check_indexes(sm);
    INVARIANT(unacked_q == unacked_c && unacked_c == sm->tags.count);
    INVARIANT(sm->clients.count <= sm->dedup_clients);
    check_due(sm);
    mq_outbox_check(&sm->outbox);
    check_segs(sm);
}

void mq_sm_for_each_segment(const struct mq_sm *sm,
                            void (*fn)(void *arg, uint32_t seg,
                                       uint64_t used),
                            void *arg)
{
    size_t i;

    for (i = 0; i < sm->segs.n; i++) {
        fn(arg, sm->segs.v[i].seg, sm->segs.v[i].used);
    }
    /* listed once something is reserved there */
    if (sm->segs.cur_off == 0) {
        fn(arg, sm->segs.cur_seg, 0);
    }
}

/* ------------------------------------------------------------------ stats */

int mq_sm_queue_stats(const struct mq_sm *sm, const char *vhost,
                      size_t vhost_len, const char *queue, size_t queue_len,
                      struct mq_sm_queue_stats *out)
{
    const struct mq_queue *q;

    memset(out, 0, sizeof(*out));
    q = queue_find(sm, vhost, vhost_len, queue, queue_len);
    if (q == NULL) {
        return -1;
    }
    out->ready = q->ready.n;
    out->ready_bytes = q->ready.bytes;
    out->unacked = q->unacked;
    out->consumers = q->consumers;
    out->gen = q->gen;
    out->move = (enum mq_sm_move_state)q->move;
    return 0;
}

static int cmp_router(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

void mq_sm_for_each_router(const struct mq_sm *sm,
                           void (*fn)(void *data, uint64_t router),
                           void *data)
{
    const struct mq_owner *o;
    uint64_t *ids;
    size_t n = 0;
    size_t i;

    /* each router that owns something is listed once; sorted, as the
     * callers have always had them */
    for (o = sm->rt_first; o != NULL; o = o->next) {
        visit(sm);
        n++;
    }
    ids = xmalloc((n + 1) * sizeof(*ids));
    n = 0;
    for (o = sm->rt_first; o != NULL; o = o->next) {
        ids[n++] = o->router;
    }
    qsort(ids, n, sizeof(*ids), cmp_router);
    for (i = 0; i < n; i++) {
        fn(data, ids[i]);
    }
    free(ids);
}

uint64_t mq_sm_visits(const struct mq_sm *sm)
{
    return *sm->visits;
}

uint64_t mq_sm_consumer_pending(const struct mq_sm *sm, uint64_t consumer)
{
    const struct mq_consumer *c = consumer_find(sm, consumer);

    return c != NULL ? c->pending : 0;
}

uint64_t mq_sm_consumer_seq(const struct mq_sm *sm, uint64_t consumer)
{
    const struct mq_consumer *c = consumer_find(sm, consumer);

    return c != NULL ? c->co_seq : 0;
}

void mq_sm_stats(const struct mq_sm *sm, struct mq_sm_stats *out)
{
    const struct mq_queue *q;

    memset(out, 0, sizeof(*out));
    for (q = sm->q_first; q != NULL; q = q->next) {
        out->ready += q->ready.n;
        out->unacked += q->unacked;
    }
    out->queues = sm->queues.count;
    out->consumers = sm->consumers.count;
    out->clients = sm->clients.count;
    out->next_msg_id = sm->next_msg_id;
    out->next_tag = sm->next_tag;
    out->clock_ms = sm->clock_ms;
    out->create_floor = sm->create_floor;
    out->tombstones = sm->tombs.count;
    out->dead_kept = mq_outbox_count(&sm->outbox);
    out->dead_kept_bytes = sm->outbox.bytes;
    out->dead_dropped = sm->outbox.dropped;
    out->next_dead_id = sm->outbox.next_id;
    out->bodies_external = sm->bodies_external;
    out->applied = sm->applied;
}

/* ----------------------------------------------------------------- digest */

/* An inline body is hashed as the machine before refs did, so an old
 * log replayed from the start digests as it did then. */
static uint64_t msg_digest(const struct mq_msg *m)
{
    uint64_t h;

    if (m->seg == 0) {
        h = hash_bytes(m->data, m->len, m->id);
    } else {
        h = mix64(m->id ^ mix64((uint64_t)m->seg << 32 | m->off));
        h = mix64(h ^ m->len);
    }
    h = mix64(h ^ msg_tag(m));
    h = mix64(h ^ msg_co_seq(m));
    h = mix64(h ^ m->exp_ms);
    h = mix64(h ^ (((uint64_t)m->delivery_count << 1) | m->redelivered));
    return h;
}

static uint64_t queue_digest(const struct mq_queue *q)
{
    const struct mq_msg *m;
    uint64_t flags;
    uint64_t h;

    flags = (uint64_t)q->durable | (uint64_t)q->exclusive << 1 |
            (uint64_t)q->auto_delete << 2 | (uint64_t)q->has_ttl << 3 |
            (uint64_t)q->has_expires << 4 | (uint64_t)q->has_max_len << 5 |
            (uint64_t)q->has_dlx << 6 | (uint64_t)q->has_dlrk << 7 |
            (uint64_t)q->had_consumer << 8 | (uint64_t)q->excl_consumer << 9 |
            (uint64_t)q->overflow_reject << 10;
    h = hash_bytes(q->data,
                   (size_t)q->vhost_len + q->name_len + q->dlx_len +
                       q->dlrk_len,
                   q->hn.hash);
    h = mix64(h ^ flags);
    h = mix64(h ^ q->owner_router);
    h = mix64(h ^ q->owner_conn);
    h = mix64(h ^ q->ttl_ms);
    h = mix64(h ^ q->expires_ms);
    h = mix64(h ^ q->max_len);
    h = mix64(h ^ q->last_used_ms);
    h = mix64(h ^ q->consumers);
    h = mix64(h ^ q->unacked);
    h = mix64(h ^ q->gen);
    h = mix64(h ^ q->move);
    h = mix64(h ^ q->out_epoch);
    h = mix64(h ^ q->in_epoch);
    h = mix64(h ^ q->in_pos);
    h = mix64(h ^ q->in_total);
    for (m = q->ready.head; m != NULL; m = m->next) {
        h = mix64(h ^ msg_digest(m)) + 0x9e3779b97f4a7c15ULL;
    }
    return mix64(h ^ q->ready.n);
}

static uint64_t consumer_digest(const struct mq_consumer *c)
{
    const struct mq_msg *m;
    uint64_t h = mix64(c->id ^ DIGEST_SEED);

    h = mix64(h ^ c->q->hn.hash);
    h = mix64(h ^ c->router);
    h = mix64(h ^ c->conn);
    h = mix64(h ^ c->channel);
    h = mix64(h ^ ((uint64_t)c->registered | (uint64_t)c->exclusive << 1));
    h = mix64(h ^ c->co_seq);
    h = mix64(h ^ c->served_tag);
    h = mix64(h ^ ((uint64_t)c->credit << 32 | c->prefetch));
    for (m = c->unacked.head; m != NULL; m = m->next) {
        h = mix64(h ^ msg_digest(m)) + 0x9e3779b97f4a7c15ULL;
    }
    return mix64(h ^ c->unacked.n);
}

static uint64_t client_digest(const struct mq_sm *sm,
                              const struct mq_client *cl)
{
    return hash_bytes(cl->bits, sm->dedup_words * sizeof(uint64_t),
                      mix64(cl->id) ^ cl->max_seq);
}

/* In id order, claims included: they decide what EXPIRE hands out. */
static uint64_t outbox_digest(const struct mq_outbox *o)
{
    const struct mq_outbox_entry *e;
    size_t pos = 0;
    uint64_t h = mix64(o->next_id ^ mix64(o->dropped));

    while ((e = mq_outbox_next(o, &pos)) != NULL) {
        uint64_t x = mix64(e->id) ^ mix64(e->claim_ms + 1) ^
                     mix64(e->msg_id + 2) ^ mix64(e->gen + 3) ^
                     ((uint64_t)e->reason << 8 | e->has_dlrk);

        if (e->seg == 0) { /* inline: as before refs (msg_digest()) */
            x = hash_bytes(e->data, mq_outbox_names_len(e) + e->body_len, x);
        } else {
            x = hash_bytes(e->data, mq_outbox_names_len(e), x);
            x = mix64(x ^ ((uint64_t)e->seg << 32 | e->off)) ^ e->body_len;
        }
        x ^= (uint64_t)e->vhost_len | (uint64_t)e->queue_len << 8 |
             (uint64_t)e->dlx_len << 16 | (uint64_t)e->dlrk_len << 24;
        h = mix64(h ^ x) + 0x9e3779b97f4a7c15ULL;
    }
    return h;
}

/* The cursor and the table in order. */
static uint64_t segs_digest(const struct mq_segs *s)
{
    uint64_t h = mix64(s->cur_seg ^ mix64(s->cur_off));
    size_t i;

    for (i = 0; i < s->n; i++) {
        h = mix64(h ^ ((uint64_t)s->v[i].seg << 32 | s->v[i].refs));
        h = mix64(h ^ s->v[i].used) + 0x9e3779b97f4a7c15ULL;
    }
    return h;
}

uint64_t mq_sm_digest(const struct mq_sm *sm)
{
    const struct mq_queue *q;
    const struct mq_consumer *c;
    const struct mq_client *cl;
    const struct mq_tomb *t;
    uint64_t qs = 0;
    uint64_t cs = 0;
    uint64_t ls = 0;
    uint64_t ts = DIGEST_SEED;
    uint64_t d;

    /* Sums: independent of iteration order, and unlike xor they do not
     * cancel equal terms. The client LRU order decides future evictions,
     * so it is folded in order-dependently. */
    uint64_t lru = DIGEST_SEED;

    for (q = sm->q_first; q != NULL; q = q->next) {
        qs += queue_digest(q);
    }
    for (c = sm->c_first; c != NULL; c = c->next) {
        cs += consumer_digest(c);
    }
    for (cl = sm->cl_first; cl != NULL; cl = cl->next) {
        uint64_t h = client_digest(sm, cl);

        ls += h;
        lru = mix64(lru ^ cl->id) + 0x9e3779b97f4a7c15ULL;
    }
    /* Tombstones in age order: it decides which goes first. */
    for (t = sm->t_first; t != NULL; t = t->next) {
        ts = mix64(ts ^ t->hn.hash ^ mix64(t->gen)) + 0x9e3779b97f4a7c15ULL;
    }
    d = mix64(qs ^ sm->queues.count);
    d = mix64(d ^ cs);
    d = mix64(d ^ sm->consumers.count);
    d = mix64(d ^ ls);
    d = mix64(d ^ lru);
    d = mix64(d ^ sm->next_msg_id);
    d = mix64(d ^ sm->next_tag);
    d = mix64(d ^ sm->clock_ms);
    d = mix64(d ^ sm->dedup_words);
    d = mix64(d ^ sm->create_floor);
    d = mix64(d ^ sm->move_seq);
    d = mix64(d ^ ts);
    d = mix64(d ^ sm->tombs.count);
    d = mix64(d ^ outbox_digest(&sm->outbox));
    /* The flag: with bodies inline the digest is the one of the machine
     * before refs, with them external it covers the cursor and table. */
    if (sm->bodies_external) {
        d = mix64(d ^ segs_digest(&sm->segs));
    }
    return d;
}

/* --------------------------------------------------------------- snapshot */

/*
 * Snapshot format, all integers little-endian:
 *
 *   u32 magic "RMQQ" | u32 version (7) | u64 clock_ms | u64 next_msg_id
 *   u64 next_tag | u32 dedup_words
 *   (version 7) u8 bodies: 1 external (refs), 0 inline; version 6 has
 *     no such byte and bodies external (the machine that wrote it kept
 *     no body inline)
 *   u64 queue count
 *   queues, in creation order:
 *     QDEF with the ready count
 *     (version 3) u64 gen | u8 move | u64 out_epoch | u64 in_epoch
 *                 | u64 in_pos | u64 in_total
 *     ready messages (MSG), id ascending
 *   u64 consumer count
 *   consumers, in creation order:
 *     u64 id | u64 router | u64 conn | u64 channel | u64 queue index
 *     u8 flags (registered, exclusive) | u64 co_seq
 *     (version 4) u64 served_tag | u32 credit | u32 prefetch
 *     u64 unacked count
 *     unacked messages: u64 tag, u64 co_seq, then MSG; tag ascending
 *   (version 1, still read: no co_seq fields; they restore as 0)
 *   (versions 1 to 3: no dispatch fields; they restore as 0)
 *   u64 client count
 *   clients, least recently used first: CLIENT
 *   (version 3) u64 create_floor | u64 move_seq | u64 tombstone count
 *     tombstones, oldest first: u8 vhost_len | u8 name_len | u64 gen
 *     | vhost, name bytes
 *   (version 5) the dead-letter outbox (mq_outbox.c: counter, dropped
 *     count, entries in id order); older versions restore it empty
 *   (version 6) the body cursor and segment table (mq_segs.h): with
 *     bodies inline, the cursor at (1, 0) and no segment
 *   u64 checksum: hash_bytes(all bytes before it, SNAP_SEED)
 *
 *   QDEF = u8 vhost_len | u8 name_len | u8 dlx_len | u8 dlrk_len
 *          | u16 flags | u64 owner_router | u64 owner_conn | u64 ttl_ms
 *          | u64 expires_ms | u64 max_len | u64 last_used_ms
 *          | u64 message count | vhost, name, dlx, dlrk bytes
 *   MSG = u64 id | u64 exp_ms | u32 delivery_count | u8 redelivered
 *         | u32 len | u32 seg | u32 off     (the body's ref)
 *   bodies inline (versions 1 to 5, and 7 with bodies 0): MSG = ...
 *         | u32 len | body bytes, as in an export chunk, and outbox
 *         entries with their bodies: they restore inline
 *   CLIENT = u64 id | u64 max_seq | dedup_words x u64
 *
 * Versions 1 and 2 (still read) have no version-3 parts: gens and the
 * floor restore as 0, no queue is in a move, there are no tombstones.
 * Derived state (per-queue consumers and unacked, frozen arrays) is
 * recomputed.
 */
#define SNAP_HEADER_LEN (4 + 4 + 8 + 8 + 8 + 4 + 8)
#define SNAP_QUEUE_FIXED (4 + 2 + 8 * 7)
#define SNAP_QUEUE_MOVE (8 + 1 + 8 * 4) /* version 3 */
#define SNAP_MSG_FIXED (8 + 8 + 4 + 1 + 4)
#define SNAP_MSG_REF (4 + 4) /* version 6 */
#define SNAP_CONSUMER_FIXED (8 * 5 + 1 + 8) /* version 1; 2 adds 8 */
#define SNAP_CONSUMER_DISPATCH (8 + 4 + 4)   /* version 4 */
#define SNAP_TAIL_FIXED (8 * 3)             /* version 3 */
#define SNAP_TOMB_FIXED (1 + 1 + 8)
#define SNAP_TRAILER_LEN 8

#define QF_DURABLE 0x001
#define QF_EXCLUSIVE 0x002
#define QF_AUTO_DELETE 0x004
#define QF_TTL 0x008
#define QF_EXPIRES 0x010
#define QF_MAX_LEN 0x020
#define QF_DLX 0x040
#define QF_DLRK 0x080
#define QF_HAD_CONSUMER 0x100
#define QF_REJECT 0x200
#define QF_ALL 0x3ff

static size_t q_names_len(const struct mq_queue *q)
{
    return (size_t)q->vhost_len + q->name_len + q->dlx_len + q->dlrk_len;
}

static unsigned char *put_qdef(unsigned char *p, const struct mq_queue *q,
                               uint64_t count)
{
    uint16_t flags = (q->durable ? QF_DURABLE : 0) |
                     (q->exclusive ? QF_EXCLUSIVE : 0) |
                     (q->auto_delete ? QF_AUTO_DELETE : 0) |
                     (q->has_ttl ? QF_TTL : 0) |
                     (q->has_expires ? QF_EXPIRES : 0) |
                     (q->has_max_len ? QF_MAX_LEN : 0) |
                     (q->overflow_reject ? QF_REJECT : 0) |
                     (q->has_dlx ? QF_DLX : 0) | (q->has_dlrk ? QF_DLRK : 0) |
                     (q->had_consumer ? QF_HAD_CONSUMER : 0);

    *p++ = q->vhost_len;
    *p++ = q->name_len;
    *p++ = q->dlx_len;
    *p++ = q->dlrk_len;
    p = le_put_u16(p, flags);
    p = le_put_u64(p, q->owner_router);
    p = le_put_u64(p, q->owner_conn);
    p = le_put_u64(p, q->ttl_ms);
    p = le_put_u64(p, q->expires_ms);
    p = le_put_u64(p, q->max_len);
    p = le_put_u64(p, q->last_used_ms);
    p = le_put_u64(p, count);
    memcpy(p, q->data, q_names_len(q));
    return p + q_names_len(q);
}

/* MSG up to its len: the body or its ref follows. */
static unsigned char *put_msg_fixed(unsigned char *p, const struct mq_msg *m)
{
    p = le_put_u64(p, m->id);
    p = le_put_u64(p, m->exp_ms);
    p = le_put_u32(p, m->delivery_count);
    *p++ = m->redelivered ? 1 : 0;
    return le_put_u32(p, m->len);
}

static unsigned char *put_msg(unsigned char *p, const struct mq_msg *m)
{
    p = put_msg_fixed(p, m);
    if (m->seg == 0) {
        memcpy(p, m->data, m->len);
        return p + m->len;
    }
    p = le_put_u32(p, m->seg);
    return le_put_u32(p, m->off);
}

/* The MSG records of @l, each after @per_msg bytes of its own. */
static size_t msgs_snap_len(const struct mq_sm *sm, const struct mlist *l,
                            size_t per_msg)
{
    if (sm->bodies_external) {
        return l->n * (per_msg + SNAP_MSG_FIXED + SNAP_MSG_REF);
    }
    return l->n * (per_msg + SNAP_MSG_FIXED) + l->bytes;
}

static unsigned char *put_client(unsigned char *p, const struct mq_sm *sm,
                                 const struct mq_client *cl)
{
    uint32_t i;

    p = le_put_u64(p, cl->id);
    p = le_put_u64(p, cl->max_seq);
    for (i = 0; i < sm->dedup_words; i++) {
        p = le_put_u64(p, cl->bits[i]);
    }
    return p;
}

/* The position of @q in creation order, from @seqs: every queue's rank,
 * in that order (ascending). */
static uint64_t queue_index(const uint64_t *seqs, size_t n,
                            const struct mq_queue *q)
{
    size_t lo = 0, hi = n;

    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (seqs[mid] <= q->seq) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    INVARIANT(lo < n && seqs[lo] == q->seq);
    return lo;
}

int mq_sm_snapshot(const struct mq_sm *sm, void *(*alloc)(size_t),
                   void **out, size_t *out_len)
{
    const struct mq_queue *q;
    const struct mq_consumer *c;
    const struct mq_client *cl;
    const struct mq_tomb *t;
    const struct mq_msg *m;
    unsigned char *buf;
    unsigned char *p;
    size_t len = SNAP_HEADER_LEN + 1 + 8 + 8 + SNAP_TAIL_FIXED +
                 SNAP_TRAILER_LEN; /* 1: the bodies flag */
    uint64_t *seqs;
    size_t nq = 0;

    for (q = sm->q_first; q != NULL; q = q->next) {
        len += SNAP_QUEUE_FIXED + q_names_len(q) + SNAP_QUEUE_MOVE;
        len += msgs_snap_len(sm, &q->ready, 0);
    }
    for (c = sm->c_first; c != NULL; c = c->next) {
        len += SNAP_CONSUMER_FIXED + 8 + SNAP_CONSUMER_DISPATCH;
        len += msgs_snap_len(sm, &c->unacked, 16);
    }
    len += sm->clients.count * (16 + sm->dedup_words * (size_t)8);
    for (t = sm->t_first; t != NULL; t = t->next) {
        len += SNAP_TOMB_FIXED + (size_t)t->vhost_len + t->name_len;
    }
    len += mq_outbox_snap_len(&sm->outbox, !sm->bodies_external);
    len += mq_segs_snap_len(&sm->segs);

    buf = alloc(len);
    if (buf == NULL) {
        return -1;
    }
    /* a consumer names its queue by position: ranks, to find it in
     * O(log queues) */
    seqs = xmalloc((sm->queues.count + 1) * sizeof(*seqs));
    for (q = sm->q_first; q != NULL; q = q->next) {
        seqs[nq++] = q->seq;
    }
    p = le_put_u32(buf, SNAP_MAGIC);
    p = le_put_u32(p, SNAP_VERSION);
    p = le_put_u64(p, sm->clock_ms);
    p = le_put_u64(p, sm->next_msg_id);
    p = le_put_u64(p, sm->next_tag);
    p = le_put_u32(p, sm->dedup_words);
    *p++ = sm->bodies_external ? 1 : 0;
    p = le_put_u64(p, sm->queues.count);
    for (q = sm->q_first; q != NULL; q = q->next) {
        p = put_qdef(p, q, q->ready.n);
        p = le_put_u64(p, q->gen);
        *p++ = q->move;
        p = le_put_u64(p, q->out_epoch);
        p = le_put_u64(p, q->in_epoch);
        p = le_put_u64(p, q->in_pos);
        p = le_put_u64(p, q->in_total);
        for (m = q->ready.head; m != NULL; m = m->next) {
            p = put_msg(p, m);
        }
    }
    p = le_put_u64(p, sm->consumers.count);
    for (c = sm->c_first; c != NULL; c = c->next) {
        p = le_put_u64(p, c->id);
        p = le_put_u64(p, c->router);
        p = le_put_u64(p, c->conn);
        p = le_put_u64(p, c->channel);
        p = le_put_u64(p, queue_index(seqs, nq, c->q));
        *p++ = (unsigned char)((c->registered ? 1 : 0) |
                               (c->exclusive ? 2 : 0));
        p = le_put_u64(p, c->co_seq);
        p = le_put_u64(p, c->served_tag);
        p = le_put_u32(p, c->credit);
        p = le_put_u32(p, c->prefetch);
        p = le_put_u64(p, c->unacked.n);
        for (m = c->unacked.head; m != NULL; m = m->next) {
            p = le_put_u64(p, m->co->tag);
            p = le_put_u64(p, m->co->co_seq);
            p = put_msg(p, m);
        }
    }
    free(seqs);
    p = le_put_u64(p, sm->clients.count);
    for (cl = sm->cl_first; cl != NULL; cl = cl->next) {
        p = put_client(p, sm, cl);
    }
    p = le_put_u64(p, sm->create_floor);
    p = le_put_u64(p, sm->move_seq);
    p = le_put_u64(p, sm->tombs.count);
    for (t = sm->t_first; t != NULL; t = t->next) {
        *p++ = t->vhost_len;
        *p++ = t->name_len;
        p = le_put_u64(p, t->gen);
        memcpy(p, t->data, (size_t)t->vhost_len + t->name_len);
        p += (size_t)t->vhost_len + t->name_len;
    }
    p = mq_outbox_snap_put(&sm->outbox, p, !sm->bodies_external);
    p = mq_segs_snap_put(&sm->segs, p);
    p = le_put_u64(p, hash_bytes(buf, (size_t)(p - buf), SNAP_SEED));
    INVARIANT((size_t)(p - buf) == len);
    *out = buf;
    *out_len = len;
    return 0;
}

/* One MSG record as read; body points into the input. */
struct msg_rec {
    uint64_t id;
    uint64_t exp_ms;
    uint32_t count;
    uint8_t redelivered;
    uint32_t len;
    const unsigned char *body;
};

static bool get_msg_rec(struct le_reader *r, struct msg_rec *m)
{
    return le_get_u64(r, &m->id) && le_get_u64(r, &m->exp_ms) &&
           le_get_u32(r, &m->count) && le_get_u8(r, &m->redelivered) &&
           le_get_u32(r, &m->len) && le_get_bytes(r, &m->body, m->len) &&
           m->id != 0 && m->redelivered <= 1;
}

/* A message of @rec: its body inline, or with a record now (to be
 * stored by whoever gets @res). */
static struct mq_msg *msg_from_rec(struct mq_sm *sm, const struct msg_rec *rec,
                                   struct mq_sm_result *res)
{
    struct mq_msg *m = msg_new(sm, rec->body, rec->len, res);

    m->id = rec->id;
    m->exp_ms = rec->exp_ms;
    m->delivery_count = rec->count;
    m->redelivered = rec->redelivered;
    return m;
}

/* Version 6's MSG: the body's ref. */
static bool get_msg_ref(struct le_reader *r, struct msg_rec *m, uint32_t *seg,
                        uint32_t *off)
{
    m->body = NULL;
    return le_get_u64(r, &m->id) && le_get_u64(r, &m->exp_ms) &&
           le_get_u32(r, &m->count) && le_get_u8(r, &m->redelivered) &&
           le_get_u32(r, &m->len) && le_get_u32(r, seg) &&
           le_get_u32(r, off) && m->id != 0 && m->redelivered <= 1 &&
           *seg != 0 && *off < MQ_SM_SEG_BYTES;
}

/* One MSG record, of the form @tmp's bodies take; ids must be <
 * next_msg_id and delivery counts sane. */
static struct mq_msg *restore_msg(struct mq_sm *tmp, struct le_reader *r)
{
    struct msg_rec rec;
    struct mq_msg *m;
    uint32_t seg, off;

    if (!tmp->bodies_external) {
        if (!get_msg_rec(r, &rec) || rec.id >= tmp->next_msg_id) {
            return NULL;
        }
        return msg_from_rec(tmp, &rec, NULL);
    }
    if (!get_msg_ref(r, &rec, &seg, &off) || rec.id >= tmp->next_msg_id) {
        return NULL;
    }
    m = xcalloc(1, sizeof(*m));
    m->id = rec.id;
    m->exp_ms = rec.exp_ms;
    m->delivery_count = rec.count;
    m->redelivered = rec.redelivered;
    m->len = rec.len;
    m->seg = seg;
    m->off = off;
    return m;
}

enum { GET_OK = 0, GET_BAD = -1, GET_NO_MEMORY = -2 };

/* A QDEF into a new queue, not linked anywhere (hash set). */
static int get_qdef(struct le_reader *r, struct mq_queue **out,
                    uint64_t *count)
{
    const unsigned char *names;
    struct mq_queue *q;
    uint8_t lens[4];
    uint16_t flags;
    size_t nlen;

    if (!le_get_u8(r, &lens[0]) || !le_get_u8(r, &lens[1]) ||
        !le_get_u8(r, &lens[2]) || !le_get_u8(r, &lens[3]) ||
        !le_get_u16(r, &flags) || (flags & ~QF_ALL) != 0 || lens[1] == 0) {
        return GET_BAD;
    }
    if ((!(flags & QF_DLX) && lens[2] != 0) ||
        (!(flags & QF_DLRK) && lens[3] != 0)) {
        return GET_BAD;
    }
    nlen = (size_t)lens[0] + lens[1] + lens[2] + lens[3];
    q = xcalloc(1, sizeof(*q) + nlen);
    q->vhost_len = lens[0];
    q->name_len = lens[1];
    q->dlx_len = lens[2];
    q->dlrk_len = lens[3];
    q->durable = flags & QF_DURABLE;
    q->exclusive = flags & QF_EXCLUSIVE;
    q->auto_delete = flags & QF_AUTO_DELETE;
    q->has_ttl = flags & QF_TTL;
    q->has_expires = flags & QF_EXPIRES;
    q->has_max_len = flags & QF_MAX_LEN;
    q->overflow_reject = flags & QF_REJECT;
    q->has_dlx = flags & QF_DLX;
    q->has_dlrk = flags & QF_DLRK;
    q->had_consumer = flags & QF_HAD_CONSUMER;
    if (!le_get_u64(r, &q->owner_router) || !le_get_u64(r, &q->owner_conn) ||
        !le_get_u64(r, &q->ttl_ms) || !le_get_u64(r, &q->expires_ms) ||
        !le_get_u64(r, &q->max_len) || !le_get_u64(r, &q->last_used_ms) ||
        !le_get_u64(r, count) || !le_get_bytes(r, &names, nlen)) {
        free(q);
        return GET_BAD;
    }
    memcpy(q->data, names, nlen);
    q->hn.hash = hash_name(q_vhost(q), q->vhost_len, q_name(q), q->name_len);
    *out = q;
    return GET_OK;
}

static bool restore_queue(struct mq_sm *tmp, struct le_reader *r,
                          struct mq_queue **index, uint64_t i,
                          uint32_t version)
{
    struct mq_queue *q;
    uint64_t nready;
    uint64_t last_id = 0;
    uint64_t k;

    if (get_qdef(r, &q, &nready) != GET_OK) {
        return false;
    }
    if (version >= 3 &&
        (!le_get_u64(r, &q->gen) || !le_get_u8(r, &q->move) ||
         !le_get_u64(r, &q->out_epoch) || !le_get_u64(r, &q->in_epoch) ||
         !le_get_u64(r, &q->in_pos) || !le_get_u64(r, &q->in_total))) {
        goto err;
    }
    if (nready > r->left / SNAP_MSG_FIXED ||
        queue_find(tmp, q_vhost(q), q->vhost_len, q_name(q), q->name_len) !=
            NULL) {
        goto err;
    }
    /* Linked before its messages so a later failure frees them with it. */
    queue_link(tmp, q);
    index[i] = q;
    for (k = 0; k < nready; k++) {
        struct mq_msg *m = restore_msg(tmp, r);

        if (m == NULL) {
            return false;
        }
        m->q = q;
        mlist_append(&q->ready, m);
        if (m->id <= last_id) {
            return false;
        }
        last_id = m->id;
    }
    return true;

err:
    free(q);
    return false;
}

static bool restore_consumer(struct mq_sm *tmp, struct le_reader *r,
                             struct mq_queue **index, uint64_t nqueues,
                             uint32_t version)
{
    size_t per_msg = (version >= 2 ? 16 : 8) + SNAP_MSG_FIXED;
    struct mq_consumer *c;
    uint64_t qi;
    uint64_t n;
    uint64_t k;
    uint64_t last_tag = 0;
    uint8_t flags;

    c = xcalloc(1, sizeof(*c));
    if (!le_get_u64(r, &c->id) || !le_get_u64(r, &c->router) ||
        !le_get_u64(r, &c->conn) || !le_get_u64(r, &c->channel) ||
        !le_get_u64(r, &qi) || !le_get_u8(r, &flags) ||
        (version >= 2 && !le_get_u64(r, &c->co_seq)) ||
        (version >= 4 &&
         (!le_get_u64(r, &c->served_tag) || !le_get_u32(r, &c->credit) ||
          !le_get_u32(r, &c->prefetch))) ||
        !le_get_u64(r, &n) ||
        qi >= nqueues || (flags & ~3) != 0 || n > r->left / per_msg ||
        consumer_find(tmp, c->id) != NULL) {
        free(c);
        return false;
    }
    c->q = index[qi];
    c->registered = flags & 1;
    c->exclusive = flags & 2;
    if (c->exclusive && (!c->registered || c->q->excl_consumer)) {
        free(c);
        return false;
    }
    c->hn.hash = mix64(c->id);
    consumer_link(tmp, c);
    if (c->registered) {
        c->q->consumers++;
        c->q->excl_consumer |= c->exclusive;
    }
    for (k = 0; k < n; k++) {
        struct mq_msg *m;
        uint64_t tag;
        uint64_t co_seq = 0;

        if (!le_get_u64(r, &tag) || tag <= last_tag || tag >= tmp->next_tag ||
            tag_find(tmp, tag) != NULL ||
            (version >= 2 && !le_get_u64(r, &co_seq))) {
            return false;
        }
        last_tag = tag;
        m = restore_msg(tmp, r);
        if (m == NULL) {
            return false;
        }
        m->q = c->q;
        m->co = xmalloc(sizeof(*m->co));
        m->co->m = m;
        m->co->c = c;
        m->co->tag = tag;
        m->co->co_seq = co_seq;
        if (co_seq == CO_PENDING) {
            c->pending++;
        }
        m->co->hn.hash = mix64(tag);
        ht_insert(&tmp->tags, &m->co->hn);
        mlist_append(&c->unacked, m);
        c->q->unacked++;
    }
    /* A record with no reason to exist would make states differ that
     * behave the same. */
    return c->registered || n > 0;
}

static bool restore_client(struct mq_sm *tmp, struct le_reader *r)
{
    struct mq_client *cl;
    uint32_t i;

    cl = xcalloc(1, sizeof(*cl) + tmp->dedup_words * sizeof(uint64_t));
    if (!le_get_u64(r, &cl->id) || !le_get_u64(r, &cl->max_seq) ||
        client_find(tmp, cl->id) != NULL) {
        free(cl);
        return false;
    }
    for (i = 0; i < tmp->dedup_words; i++) {
        if (!le_get_u64(r, &cl->bits[i])) {
            free(cl);
            return false;
        }
    }
    cl->hn.hash = mix64(cl->id);
    ht_insert(&tmp->clients, &cl->hn);
    DL_APPEND(tmp->cl_first, tmp->cl_last, cl);
    return true;
}

/* A tombstone never coexists with a queue of its name. */
static bool restore_tomb(struct mq_sm *tmp, struct le_reader *r)
{
    const unsigned char *names;
    struct mq_tomb *t;
    uint8_t vlen;
    uint8_t nlen;
    uint64_t gen;

    if (!le_get_u8(r, &vlen) || !le_get_u8(r, &nlen) ||
        !le_get_u64(r, &gen) || nlen == 0 ||
        !le_get_bytes(r, &names, (size_t)vlen + nlen)) {
        return false;
    }
    if (tomb_find(tmp, (const char *)names, vlen, (const char *)names + vlen,
                  nlen) != NULL ||
        queue_find(tmp, (const char *)names, vlen, (const char *)names + vlen,
                   nlen) != NULL) {
        return false;
    }
    t = tomb_new((const char *)names, vlen, (const char *)names + vlen, nlen,
                 gen);
    if (t == NULL) {
        return false;
    }
    ht_insert(&tmp->tombs, &t->hn);
    DL_APPEND(tmp->t_first, tmp->t_last, t);
    return true;
}

static bool freeze_array(struct mq_queue *q);

/* The move states of a restored machine are ones the commands can reach
 * (mq_sm.c top, struct mq_queue); frozen arrays are rebuilt. */
static bool restore_moves(struct mq_sm *tmp)
{
    struct mq_queue *q;

    for (q = tmp->q_first; q != NULL; q = q->next) {
        bool imported_all = q->in_pos == q->in_total;

        if (q->in_epoch == 0 ? (q->in_pos | q->in_total) != 0
                             : q->in_pos > q->in_total) {
            return false;
        }
        switch (q->move) {
            case MQ_SM_MOVE_NONE:
                if (q->out_epoch != 0 || !imported_all) {
                    return false;
                }
                break;
            case MQ_SM_MOVE_FROZEN:
                if (q->exclusive || q->unacked != 0 || q->out_epoch == 0 ||
                    q->out_epoch > tmp->move_seq || !imported_all ||
                    !freeze_array(q)) {
                    return false;
                }
                break;
            case MQ_SM_MOVE_IMPORT:
                if (q->exclusive || q->unacked != 0 || q->out_epoch != 0 ||
                    q->in_epoch == 0 || q->ready.n != q->in_pos) {
                    return false;
                }
                break;
            default:
                return false;
        }
    }
    return true;
}

/* Version 3's tail: floor, freeze counter and tombstones. */
static bool restore_tail(struct mq_sm *tmp, struct le_reader *r)
{
    uint64_t n;
    uint64_t i;

    if (!le_get_u64(r, &tmp->create_floor) || !le_get_u64(r, &tmp->move_seq) ||
        !le_get_u64(r, &n) || n > MQ_SM_TOMBSTONES_MAX ||
        n > r->left / SNAP_TOMB_FIXED) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (!restore_tomb(tmp, r)) {
            return false;
        }
    }
    return true;
}

uint64_t mq_sm_next_due(struct mq_sm *sm)
{
    const struct mq_queue *q = due_top(sm);
    uint64_t due = mq_outbox_next_due(&sm->outbox, MQ_SM_DL_CLAIM_MS);

    return q != NULL && q->due_ms < due ? q->due_ms : due;
}

int mq_sm_restore(struct mq_sm *sm, const void *buf, size_t len)
{
    uint32_t *refs = NULL;
    struct mq_sm tmp;
    struct mq_queue **index = NULL;
    struct mq_queue *q;
    struct le_reader r;
    uint32_t magic;
    uint32_t version;
    uint64_t checksum;
    uint64_t nqueues;
    uint64_t n;
    uint64_t i;
    uint8_t bodies = 0; /* versions 1 to 5: inline */

    if (buf == NULL || len < SNAP_HEADER_LEN + 16 + SNAP_TRAILER_LEN) {
        goto err;
    }
    r.p = (const unsigned char *)buf + len - SNAP_TRAILER_LEN;
    r.left = SNAP_TRAILER_LEN;
    le_get_u64(&r, &checksum);
    if (checksum != hash_bytes(buf, len - SNAP_TRAILER_LEN, SNAP_SEED)) {
        goto err;
    }

    memset(&tmp, 0, sizeof(tmp));
    tmp.dedup_clients = sm->dedup_clients;
    tmp.segs.seg_bytes = sm->segs.seg_bytes; /* before version 6 */
    if (state_init(&tmp) != 0) {
        goto err;
    }
    r.p = buf;
    r.left = len - SNAP_TRAILER_LEN;
    le_get_u32(&r, &magic);
    le_get_u32(&r, &version);
    le_get_u64(&r, &tmp.clock_ms);
    le_get_u64(&r, &tmp.next_msg_id);
    le_get_u64(&r, &tmp.next_tag);
    le_get_u32(&r, &tmp.dedup_words);
    if (version == 6) {
        bodies = 1;
    } else if (version >= 7 && !le_get_u8(&r, &bodies)) {
        goto err_after_state;
    }
    le_get_u64(&r, &nqueues);
    if (magic != SNAP_MAGIC || version < 1 || version > SNAP_VERSION ||
        tmp.next_msg_id == 0 || tmp.next_tag == 0 || tmp.dedup_words == 0 ||
        tmp.dedup_words > (1U << 24) / 64 || bodies > 1 ||
        nqueues > r.left / SNAP_QUEUE_FIXED) {
        goto err_after_state;
    }
    tmp.bodies_external = bodies == 1;
    index = xcalloc(nqueues > 0 ? nqueues : 1, sizeof(*index));
    for (i = 0; i < nqueues; i++) {
        if (!restore_queue(&tmp, &r, index, i, version)) {
            goto err_after_index;
        }
    }
    if (!le_get_u64(&r, &n) || n > r.left / SNAP_CONSUMER_FIXED) {
        goto err_after_index;
    }
    for (i = 0; i < n; i++) {
        if (!restore_consumer(&tmp, &r, index, nqueues, version)) {
            goto err_after_index;
        }
    }
    if (!le_get_u64(&r, &n) || n > r.left / 16) {
        goto err_after_index;
    }
    for (i = 0; i < n; i++) {
        if (!restore_client(&tmp, &r)) {
            goto err_after_index;
        }
    }
    if (version >= 3 && !restore_tail(&tmp, &r)) {
        goto err_after_index;
    }
    if (version >= 5 &&
        !mq_outbox_snap_get(&tmp.outbox, &r, !tmp.bodies_external)) {
        goto err_after_index;
    }
    if (version >= 6 && !mq_segs_snap_get(&tmp.segs, &r)) {
        goto err_after_index;
    }
    refs = xcalloc(tmp.segs.n + 1, sizeof(*refs));
    if (r.left != 0 || !restore_moves(&tmp) || !refs_agree(&tmp, refs)) {
        goto err_after_index;
    }
    free(refs);
    free(index);
    for (q = tmp.q_first; q != NULL; q = q->next) {
        idle_note(&tmp, q);
    }

    tmp.applied = 0;
    state_free(sm);
    *sm = tmp;
    for (q = sm->q_first; q != NULL; q = q->next) {
        due_track(sm, q);
    }
    return 0;

err_after_index:
    free(refs);
    free(index);
err_after_state:
    state_free(&tmp);
err:
    return -1;
}

/* ------------------------------------------------------------ queue moves */

/*
 * Export chunk format (mq_sm_export() -> MOVE_IN), little-endian:
 *
 *   u32 magic "RMQX" | u32 version (1) | u8 kind (0 definition, 1 messages)
 *   | u8 vhost_len | u8 name_len | vhost, name bytes
 *   | u64 epoch (the source's freeze) | u64 cursor (the one it answers)
 *   definition (cursor 0):
 *     QDEF with the frozen message count
 *     u64 consumer count, CONSUMER each (registered, creation order)
 *     u32 dedup_words | u64 client count, CLIENT each (least recent first)
 *   messages (cursor 1 + position of the first in the frozen queue):
 *     u64 count, MSG each (the source's ids, ascending)
 *   u64 checksum: hash_bytes(all bytes before it, EXPORT_SEED)
 *
 *   CONSUMER = u64 id | u64 router | u64 conn | u64 channel
 *              | u8 flags (1 registered, 2 exclusive) | u64 co_seq
 *   QDEF, MSG and CLIENT as in the snapshot.
 */
#define EXPORT_HEADER_FIXED (4 + 4 + 1 + 1 + 1 + 8 + 8)
#define EXPORT_CONSUMER (8 * 4 + 1 + 8)
#define EXPORT_TRAILER_LEN 8

enum { CHUNK_DEF = 0, CHUNK_MSGS = 1 };

static bool names_ok(const char *vhost, size_t vlen, const char *queue,
                     size_t qlen)
{
    return vlen <= MQ_SM_NAME_MAX && qlen > 0 && qlen <= MQ_SM_NAME_MAX &&
           (vhost != NULL || vlen == 0) && queue != NULL;
}

/* Room for @n pointers of a frozen array, or NULL. */
static struct mq_msg **frozen_alloc(uint64_t n)
{
    if (n >= SIZE_MAX / sizeof(struct mq_msg *)) {
        return NULL;
    }
    return xmalloc((size_t)(n > 0 ? n : 1) * sizeof(struct mq_msg *));
}

static void frozen_fill(struct mq_queue *q)
{
    struct mq_msg *m;
    size_t i = 0;

    for (m = q->ready.head; m != NULL; m = m->next) {
        q->frozen[i++] = m;
    }
}

/* The ready list as an array, for exports: nothing changes the list while
 * the queue is frozen. false on ENOMEM. */
static bool freeze_array(struct mq_queue *q)
{
    q->frozen = frozen_alloc(q->ready.n);
    if (q->frozen == NULL) {
        return false;
    }
    frozen_fill(q);
    return true;
}

/* Freeze @q: what its consumers hold goes back to ready (redelivered, in
 * id order; their CHECKOUT seqs restart, as after a leader change, since
 * what those delivered is back in the queue), and the ready list is kept
 * as an array. false on ENOMEM: nothing changed. */
static bool freeze(struct mq_sm *sm, struct mq_queue *q)
{
    struct mq_consumer *c = q->cq_first;
    struct mq_msg *back = NULL;
    struct mq_msg **tail = &back;
    uint64_t count = 0;

    /* Sized before anything moves: the array takes the returns too. */
    q->frozen = frozen_alloc(q->ready.n + q->unacked);
    if (q->frozen == NULL) {
        return false;
    }
    while (c != NULL) {
        struct mq_consumer *next = c->q_next;

        visit(sm);
        *tail = take_unacked(sm, c, 0, NULL, PICK_ALL, &count);
        while (*tail != NULL) {
            tail = &(*tail)->next;
        }
        c->co_seq = 0;
        consumer_gc(sm, c);
        c = next;
    }
    requeue(sm, q, back);
    frozen_fill(q);
    q->move = MQ_SM_MOVE_FROZEN;
    q->out_epoch = ++sm->move_seq;
    return true;
}

static void unfreeze(struct mq_sm *sm, struct mq_queue *q)
{
    free(q->frozen);
    q->frozen = NULL;
    q->move = MQ_SM_MOVE_NONE;
    q->out_epoch = 0;
    q->last_used_ms = sm->clock_ms; /* the freeze was not idleness */
}

/* -------------------------------------------------------------- export */

static unsigned char *put_export_header(unsigned char *p,
                                        const struct mq_queue *q,
                                        uint8_t kind, uint64_t cursor)
{
    size_t nlen = (size_t)q->vhost_len + q->name_len;

    p = le_put_u32(p, EXPORT_MAGIC);
    p = le_put_u32(p, EXPORT_VERSION);
    *p++ = kind;
    *p++ = q->vhost_len;
    *p++ = q->name_len;
    memcpy(p, q->data, nlen);
    p += nlen;
    p = le_put_u64(p, q->out_epoch);
    return le_put_u64(p, cursor);
}

static enum mq_sm_status export_def(const struct mq_sm *sm,
                                    const struct mq_queue *q,
                                    void *(*alloc)(size_t), void **out,
                                    size_t *out_len)
{
    const struct mq_consumer *c;
    const struct mq_client *cl;
    unsigned char *buf;
    unsigned char *p;
    uint64_t nc = 0;
    size_t len;

    for (c = q->cq_first; c != NULL; c = c->q_next) {
        visit(sm);
        nc += c->registered;
    }
    len = EXPORT_HEADER_FIXED + (size_t)q->vhost_len + q->name_len +
          SNAP_QUEUE_FIXED + q_names_len(q) + 8 + nc * EXPORT_CONSUMER + 4 +
          8 + sm->clients.count * (16 + sm->dedup_words * (size_t)8) +
          EXPORT_TRAILER_LEN;
    buf = alloc(len);
    if (buf == NULL) {
        return MQ_SM_NO_MEMORY;
    }
    p = put_export_header(buf, q, CHUNK_DEF, 0);
    p = put_qdef(p, q, q->ready.n);
    p = le_put_u64(p, nc);
    for (c = q->cq_first; c != NULL; c = c->q_next) {
        if (!c->registered) {
            continue;
        }
        p = le_put_u64(p, c->id);
        p = le_put_u64(p, c->router);
        p = le_put_u64(p, c->conn);
        p = le_put_u64(p, c->channel);
        *p++ = (unsigned char)(1 | (c->exclusive ? 2 : 0));
        p = le_put_u64(p, c->co_seq);
    }
    p = le_put_u32(p, sm->dedup_words);
    p = le_put_u64(p, sm->clients.count);
    for (cl = sm->cl_first; cl != NULL; cl = cl->next) {
        p = put_client(p, sm, cl);
    }
    p = le_put_u64(p, hash_bytes(buf, (size_t)(p - buf), EXPORT_SEED));
    *out = buf;
    *out_len = len;
    return MQ_SM_OK;
}

/* Messages from position @first: at least one (if any is left), else as
 * many as fit in @max_bytes of records. The chunk is made in a scratch
 * buffer first: a body that cannot be read leaves nothing of @alloc's to
 * free. */
static enum mq_sm_status export_msgs(const struct mq_queue *q, uint64_t first,
                                     size_t max_bytes,
                                     void *(*alloc)(size_t),
                                     mq_sm_read_fn read, void *read_arg,
                                     void **out, size_t *out_len,
                                     uint64_t *n_out)
{
    unsigned char *scratch;
    unsigned char *buf;
    unsigned char *p;
    size_t bytes = 0;
    uint64_t n = 0;
    uint64_t i;
    size_t len;

    while (first + n < q->ready.n) {
        size_t rec = SNAP_MSG_FIXED + (size_t)q->frozen[first + n]->len;

        if (n > 0 && (rec > max_bytes || bytes > max_bytes - rec)) {
            break;
        }
        bytes += rec;
        n++;
    }
    len = EXPORT_HEADER_FIXED + (size_t)q->vhost_len + q->name_len + 8 +
          bytes + EXPORT_TRAILER_LEN;
    scratch = xmalloc(len);
    p = put_export_header(scratch, q, CHUNK_MSGS, first + 1);
    p = le_put_u64(p, n);
    for (i = 0; i < n; i++) {
        const struct mq_msg *m = q->frozen[first + i];

        p = put_msg_fixed(p, m);
        if (m->seg == 0) {
            memcpy(p, m->data, m->len);
        } else if (read(read_arg, m->seg, m->off, m->len, p) != 0) {
            free(scratch);
            return MQ_SM_UNAVAILABLE;
        }
        p += m->len;
    }
    p = le_put_u64(p, hash_bytes(scratch, (size_t)(p - scratch), EXPORT_SEED));
    buf = alloc(len);
    if (buf == NULL) {
        free(scratch);
        return MQ_SM_NO_MEMORY;
    }
    memcpy(buf, scratch, len);
    free(scratch);
    *out = buf;
    *out_len = len;
    *n_out = n;
    return MQ_SM_OK;
}

enum mq_sm_status mq_sm_export(const struct mq_sm *sm, const char *vhost,
                               size_t vhost_len, const char *queue,
                               size_t queue_len, uint64_t cursor,
                               size_t max_bytes, void *(*alloc)(size_t),
                               mq_sm_read_fn read, void *read_arg,
                               void **out, size_t *out_len,
                               uint64_t *next_cursor, bool *last)
{
    const struct mq_queue *q;
    enum mq_sm_status st;
    uint64_t n = 0;

    if (!names_ok(vhost, vhost_len, queue, queue_len)) {
        return MQ_SM_BAD_REQUEST;
    }
    q = queue_find(sm, vhost, vhost_len, queue, queue_len);
    if (q == NULL) {
        return tomb_find(sm, vhost, vhost_len, queue, queue_len) != NULL
                   ? MQ_SM_MOVED
                   : MQ_SM_NOT_FOUND;
    }
    if (q->move != MQ_SM_MOVE_FROZEN) {
        return MQ_SM_PRECONDITION_FAILED;
    }
    if (cursor == 0) {
        st = export_def(sm, q, alloc, out, out_len);
        if (st == MQ_SM_OK) {
            *next_cursor = 1;
            *last = q->ready.n == 0;
        }
        return st;
    }
    if (cursor - 1 > q->ready.n) {
        return MQ_SM_BAD_REQUEST;
    }
    st = export_msgs(q, cursor - 1, max_bytes, alloc, read, read_arg, out,
                     out_len, &n);
    if (st == MQ_SM_OK) {
        *next_cursor = cursor + n;
        *last = cursor - 1 + n == q->ready.n;
    }
    return st;
}

/* -------------------------------------------------------------- import */

/* An export chunk, parsed and checked; readers point into the command's
 * body at the first record of each part. */
struct chunk {
    uint8_t kind;
    uint64_t epoch;
    uint64_t cursor;
    /* CHUNK_DEF */
    struct mq_queue *q; /* allocated, not linked; owned by the chunk */
    uint64_t total;
    uint64_t n_consumers;
    struct le_reader consumers;
    uint32_t words;
    uint64_t n_clients;
    struct le_reader clients;
    /* CHUNK_MSGS */
    uint64_t n_msgs;
    struct le_reader msgs;
};

static bool skip_bytes(struct le_reader *r, size_t n)
{
    const unsigned char *p;

    return le_get_bytes(r, &p, n);
}

/* Consumers: registered, at most one exclusive and then alone. */
static bool parse_consumers(struct le_reader *r, struct chunk *ch)
{
    struct le_reader c;
    uint64_t i;
    uint64_t exclusive = 0;

    if (!le_get_u64(r, &ch->n_consumers) ||
        ch->n_consumers > r->left / EXPORT_CONSUMER) {
        return false;
    }
    ch->consumers = *r;
    c = *r;
    for (i = 0; i < ch->n_consumers; i++) {
        uint8_t flags;

        if (!skip_bytes(&c, 8 * 4) || !le_get_u8(&c, &flags) ||
            !skip_bytes(&c, 8) || (flags & ~3) != 0 || !(flags & 1)) {
            return false;
        }
        exclusive += (flags & 2) != 0;
    }
    *r = c;
    return exclusive == 0 || ch->n_consumers == 1;
}

static bool parse_clients(struct le_reader *r, struct chunk *ch)
{
    struct le_reader c;
    size_t per;
    uint64_t i;

    if (!le_get_u32(r, &ch->words) || ch->words == 0 ||
        ch->words > (1U << 24) / 64 || !le_get_u64(r, &ch->n_clients)) {
        return false;
    }
    per = 16 + (size_t)ch->words * 8;
    if (ch->n_clients > r->left / per) {
        return false;
    }
    ch->clients = *r;
    c = *r;
    for (i = 0; i < ch->n_clients; i++) {
        uint64_t id;
        uint64_t max_seq;

        /* seq 0 is "no dedup": a window always has max_seq >= 1 */
        if (!le_get_u64(&c, &id) || !le_get_u64(&c, &max_seq) ||
            max_seq == 0 || !skip_bytes(&c, (size_t)ch->words * 8)) {
            return false;
        }
    }
    *r = c;
    return true;
}

static enum mq_sm_status parse_def(struct le_reader *r, const char *names,
                                   uint8_t vlen, uint8_t nlen,
                                   struct chunk *ch)
{
    int got = get_qdef(r, &ch->q, &ch->total);

    if (got != GET_OK) {
        return got == GET_NO_MEMORY ? MQ_SM_NO_MEMORY : MQ_SM_BAD_REQUEST;
    }
    /* An exclusive queue is never frozen (MOVE_OUT refuses it). */
    if (ch->q->vhost_len != vlen || ch->q->name_len != nlen ||
        memcmp(ch->q->data, names, (size_t)vlen + nlen) != 0 ||
        ch->q->exclusive || !parse_consumers(r, ch) ||
        !parse_clients(r, ch)) {
        return MQ_SM_BAD_REQUEST;
    }
    return MQ_SM_OK;
}

static bool parse_msgs(struct le_reader *r, struct chunk *ch)
{
    struct le_reader c;
    uint64_t last_id = 0;
    uint64_t i;

    if (!le_get_u64(r, &ch->n_msgs) || ch->n_msgs > r->left / SNAP_MSG_FIXED) {
        return false;
    }
    ch->msgs = *r;
    c = *r;
    for (i = 0; i < ch->n_msgs; i++) {
        struct msg_rec rec;

        if (!get_msg_rec(&c, &rec) || rec.id <= last_id) {
            return false;
        }
        last_id = rec.id;
    }
    *r = c;
    return true;
}

/* Check a MOVE_IN body from end to end; a chunk of another queue is
 * refused as corrupt. On OK the caller frees ch->q. */
static enum mq_sm_status chunk_parse(const struct mq_sm_cmd *cmd,
                                     struct chunk *ch)
{
    const unsigned char *body = cmd->body;
    const unsigned char *names;
    enum mq_sm_status st = MQ_SM_BAD_REQUEST;
    struct le_reader r;
    uint64_t checksum;
    uint32_t magic;
    uint32_t version;
    uint8_t vlen;
    uint8_t nlen;

    memset(ch, 0, sizeof(*ch));
    if (body == NULL ||
        cmd->body_len < EXPORT_HEADER_FIXED + EXPORT_TRAILER_LEN) {
        return MQ_SM_BAD_REQUEST;
    }
    r.p = body + cmd->body_len - EXPORT_TRAILER_LEN;
    r.left = EXPORT_TRAILER_LEN;
    le_get_u64(&r, &checksum);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    /* a fuzzer does not get past a checksum: fuzz builds parse on */
    if (checksum !=
        hash_bytes(body, cmd->body_len - EXPORT_TRAILER_LEN, EXPORT_SEED)) {
        return MQ_SM_BAD_REQUEST;
    }
#endif
    r.p = body;
    r.left = cmd->body_len - EXPORT_TRAILER_LEN;
    if (!le_get_u32(&r, &magic) || !le_get_u32(&r, &version) ||
        !le_get_u8(&r, &ch->kind) || !le_get_u8(&r, &vlen) ||
        !le_get_u8(&r, &nlen) ||
        !le_get_bytes(&r, &names, (size_t)vlen + nlen) ||
        !le_get_u64(&r, &ch->epoch) || !le_get_u64(&r, &ch->cursor)) {
        return MQ_SM_BAD_REQUEST;
    }
    if (magic != EXPORT_MAGIC || version != EXPORT_VERSION ||
        ch->epoch == 0 || vlen != cmd->vhost_len || nlen != cmd->queue_len ||
        (vlen > 0 && memcmp(names, cmd->vhost, vlen) != 0) ||
        memcmp(names + vlen, cmd->queue, nlen) != 0) {
        return MQ_SM_BAD_REQUEST;
    }
    if (ch->kind == CHUNK_DEF && ch->cursor == 0) {
        st = parse_def(&r, (const char *)names, vlen, nlen, ch);
    } else if (ch->kind == CHUNK_MSGS && ch->cursor != 0) {
        st = parse_msgs(&r, ch) ? MQ_SM_OK : MQ_SM_BAD_REQUEST;
    }
    if (st == MQ_SM_OK && r.left != 0) {
        st = MQ_SM_BAD_REQUEST;
    }
    if (st != MQ_SM_OK) {
        free(ch->q);
        ch->q = NULL;
    }
    return st;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Consumer ids are the edges' and unique per router, so a known one (or
 * one twice) is a bug somewhere: refused rather than merged. */
static enum mq_sm_status consumers_check(const struct mq_sm *sm,
                                         const struct chunk *ch)
{
    struct le_reader r = ch->consumers;
    uint64_t *ids;
    uint64_t i;
    enum mq_sm_status st = MQ_SM_OK;

    if (ch->n_consumers == 0) {
        return MQ_SM_OK;
    }
    ids = xmalloc((size_t)ch->n_consumers * sizeof(*ids));
    for (i = 0; i < ch->n_consumers; i++) {
        le_get_u64(&r, &ids[i]);
        skip_bytes(&r, EXPORT_CONSUMER - 8);
        if (consumer_find(sm, ids[i]) != NULL) {
            st = MQ_SM_BAD_REQUEST;
        }
    }
    qsort(ids, (size_t)ch->n_consumers, sizeof(*ids), cmp_u64);
    for (i = 1; i < ch->n_consumers; i++) {
        if (ids[i] == ids[i - 1]) {
            st = MQ_SM_BAD_REQUEST;
        }
    }
    free(ids);
    return st;
}

/* Free a list chained through ->next (consumers or clients not linked). */
#define FREE_CHAIN(type, head)          \
    do {                                \
        while ((head) != NULL) {        \
            type *next_ = (head)->next; \
            free(head);                 \
            (head) = next_;             \
        }                               \
    } while (0)

/* Records for the chunk's consumers, chained in order; NULL on ENOMEM
 * (with @n > 0). */
static struct mq_consumer *consumers_alloc(const struct chunk *ch,
                                           struct mq_queue *q)
{
    struct le_reader r = ch->consumers;
    struct mq_consumer *head = NULL;
    struct mq_consumer **tail = &head;
    uint64_t i;

    for (i = 0; i < ch->n_consumers; i++) {
        struct mq_consumer *c = xcalloc(1, sizeof(*c));
        uint8_t flags = 0;

        le_get_u64(&r, &c->id);
        le_get_u64(&r, &c->router);
        le_get_u64(&r, &c->conn);
        le_get_u64(&r, &c->channel);
        le_get_u8(&r, &flags);
        le_get_u64(&r, &c->co_seq);
        c->q = q;
        c->registered = true;
        c->exclusive = (flags & 2) != 0;
        c->hn.hash = mix64(c->id);
        *tail = c;
        tail = &c->next;
    }
    return head;
}

/* Blank client records, one per chunk client unknown here; false on
 * ENOMEM. Interchangeable: clients_merge takes them in turn. */
static bool clients_alloc(const struct mq_sm *sm, const struct chunk *ch,
                          struct mq_client **fresh)
{
    struct le_reader r = ch->clients;
    uint64_t i;

    *fresh = NULL;
    for (i = 0; i < ch->n_clients; i++) {
        uint64_t id = 0;

        le_get_u64(&r, &id);
        skip_bytes(&r, 8 + (size_t)ch->words * 8);
        if (client_find(sm, id) == NULL) {
            struct mq_client *cl =
                xcalloc(1, sizeof(*cl) + sm->dedup_words * sizeof(uint64_t));

            cl->next = *fresh;
            *fresh = cl;
        }
    }
    return true;
}

/* Mark in @cl every seq the source's window (@max_seq, @words words at
 * @bits) saw: after a shift the source's bit d is ours at d + delta. What
 * falls below our window is forgotten, as our own would be. */
static void client_merge(const struct mq_sm *sm, struct mq_client *cl,
                         uint64_t max_seq, struct le_reader bits,
                         uint32_t words)
{
    uint64_t delta;
    uint64_t ws;
    unsigned bs;
    uint64_t w;

    if (max_seq > cl->max_seq) {
        client_advance(sm, cl, max_seq);
    }
    delta = cl->max_seq - max_seq;
    ws = delta / 64;
    bs = (unsigned)(delta % 64);
    for (w = 0; w < words && w + ws < sm->dedup_words; w++) {
        uint64_t v = 0;

        le_get_u64(&bits, &v);
        cl->bits[w + ws] |= v << bs;
        if (bs != 0 && w + ws + 1 < sm->dedup_words) {
            cl->bits[w + ws + 1] |= v >> (64 - bs);
        }
    }
}

/* Union of the source's dedup windows with ours: a seq seen at either is a
 * duplicate here. Clients new here come before ours in LRU order, so when
 * the client limit bites the source's least recent go first, ours stay
 * (only a few of the source's publishers wrote to this queue). */
static void clients_merge(struct mq_sm *sm, const struct chunk *ch,
                          struct mq_client *fresh)
{
    struct le_reader r = ch->clients;
    struct mq_client *first = NULL;
    struct mq_client *last = NULL;
    uint64_t i;

    for (i = 0; i < ch->n_clients; i++) {
        struct mq_client *cl;
        uint64_t id = 0;
        uint64_t max_seq = 0;

        le_get_u64(&r, &id);
        le_get_u64(&r, &max_seq);
        cl = client_find(sm, id);
        if (cl == NULL) {
            cl = fresh;
            fresh = fresh->next;
            cl->id = id;
            cl->hn.hash = mix64(id);
            ht_insert(&sm->clients, &cl->hn);
            DL_APPEND(first, last, cl);
        }
        client_merge(sm, cl, max_seq, r, ch->words);
        skip_bytes(&r, (size_t)ch->words * 8);
    }
    if (first != NULL) {
        last->next = sm->cl_first;
        if (sm->cl_first != NULL) {
            sm->cl_first->prev = last;
        } else {
            sm->cl_last = last;
        }
        sm->cl_first = first;
    }
    while (sm->clients.count > sm->dedup_clients) {
        struct mq_client *old = sm->cl_first;

        ht_remove(&sm->clients, &old->hn);
        DL_REMOVE(sm->cl_first, sm->cl_last, old);
        free(old);
    }
    FREE_CHAIN(struct mq_client, fresh); /* ids given twice */
}

/* Chunk 0: the queue, in the moving-in state, with its consumers, and the
 * source's dedup windows. Everything is allocated before anything links. */
static void import_def(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                       struct chunk *ch, struct mq_sm_result *res)
{
    struct mq_queue *q = queue_find(sm, cmd->vhost, cmd->vhost_len,
                                    cmd->queue, cmd->queue_len);
    struct mq_consumer *cons = NULL;
    struct mq_client *fresh = NULL;
    struct mq_tomb *t;
    enum mq_sm_status st;

    if (q != NULL) {
        if (q->move == MQ_SM_MOVE_FROZEN) {
            set_error(res, MQ_SM_MOVING, "MOVING - queue is being moved");
        } else if (q->in_epoch == ch->epoch && q->gen == cmd->place_gen) {
            res->count = q->in_total; /* a rerun of this move */
        } else {
            set_error(res, MQ_SM_PRECONDITION_FAILED,
                      "PRECONDITION_FAILED - queue exists here");
        }
        return;
    }
    /* As for DECLARE: the gen of a queue deleted here (after a move that
     * ended) cannot bring it back, e.g. by a coordinator's blind rerun. */
    if (cmd->place_gen < sm->create_floor) {
        set_error(res, MQ_SM_PLACE_STALE,
                  "PLACE_STALE - placement generation below the floor");
        return;
    }
    st = consumers_check(sm, ch);
    if (st != MQ_SM_OK) {
        set_error(res, st, st == MQ_SM_NO_MEMORY ? "no memory"
                                                 : "consumer id in use");
        return;
    }
    q = ch->q;
    cons = consumers_alloc(ch, q);
    if ((cons == NULL && ch->n_consumers > 0) ||
        !clients_alloc(sm, ch, &fresh)) {
        FREE_CHAIN(struct mq_consumer, cons);
        set_error(res, MQ_SM_NO_MEMORY, "no memory");
        return;
    }
    ch->q = NULL; /* the machine's now */
    q->gen = cmd->place_gen;
    q->move = MQ_SM_MOVE_IMPORT;
    q->in_epoch = ch->epoch;
    q->in_total = ch->total;
    queue_link(sm, q);
    while (cons != NULL) {
        struct mq_consumer *c = cons;

        cons = c->next;
        consumer_link(sm, c);
        q->consumers++;
        q->had_consumer = true;
        q->excl_consumer |= c->exclusive;
    }
    idle_note(sm, q);
    clients_merge(sm, ch, fresh);
    t = tomb_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue, cmd->queue_len);
    if (t != NULL) {
        tomb_remove(sm, t);
    }
    res->count = q->in_total;
}

/* A message chunk: appended from where the import stands (resume), with
 * our own ids, so the queue keeps the source's order. */
static void import_msgs(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                        const struct chunk *ch, struct mq_sm_result *res)
{
    struct mq_queue *q = queue_find(sm, cmd->vhost, cmd->vhost_len,
                                    cmd->queue, cmd->queue_len);
    struct le_reader r = ch->msgs;
    struct mq_msg *head = NULL;
    struct mq_msg **tail = &head;
    uint64_t first = ch->cursor - 1;
    uint64_t i;

    if (q == NULL || q->move == MQ_SM_MOVE_FROZEN) {
        (void)placed_here(sm, cmd, q, res);
        if (q == NULL && res->status == MQ_SM_OK) {
            set_error(res, MQ_SM_NOT_FOUND, "NOT_FOUND - no queue");
        }
        return;
    }
    if (q->in_epoch != ch->epoch || q->gen != cmd->place_gen) {
        set_error(res, MQ_SM_PRECONDITION_FAILED,
                  "PRECONDITION_FAILED - another move of this queue");
        return;
    }
    if (ch->n_msgs > q->in_total || first > q->in_total - ch->n_msgs ||
        first > q->in_pos) {
        set_error(res, MQ_SM_BAD_REQUEST, "export chunk out of order");
        return;
    }
    if (first + ch->n_msgs <= q->in_pos) {
        return; /* imported already */
    }
    for (i = 0; i < ch->n_msgs; i++) {
        struct msg_rec rec;

        get_msg_rec(&r, &rec);
        if (first + i < q->in_pos) {
            continue;
        }
        *tail = msg_from_rec(sm, &rec, res);
        if (*tail == NULL) {
            FREE_CHAIN(struct mq_msg, head);
            set_error(res, MQ_SM_NO_MEMORY, "no memory");
            return;
        }
        tail = &(*tail)->next;
    }
    while (head != NULL) {
        struct mq_msg *m = head;

        head = m->next;
        m->q = q;
        m->id = sm->next_msg_id++;
        mlist_append(&q->ready, m);
        res->count++;
    }
    q->in_pos = first + ch->n_msgs;
}

/* ------------------------------------------------------------ commands */

/* The queue MOVE_OUT and MOVE_DONE act on at the source; NULL when it
 * is not there, with @res answered: NOT_FOUND, or OK and moved (a rerun
 * after MOVE_DONE: its tombstone). */
static struct mq_queue *source_queue(struct mq_sm *sm,
                                     const struct mq_sm_cmd *cmd,
                                     struct mq_sm_result *res)
{
    struct mq_queue *q = queue_find(sm, cmd->vhost, cmd->vhost_len,
                                    cmd->queue, cmd->queue_len);
    struct mq_tomb *t;

    if (q != NULL) {
        return q;
    }
    t = tomb_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue, cmd->queue_len);
    if (t == NULL) {
        set_error(res, MQ_SM_NOT_FOUND, "NOT_FOUND - no queue");
    } else {
        res->moved = true;
        res->gen = t->gen;
    }
    return NULL;
}

static void apply_move_out(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                           struct mq_sm_result *res)
{
    struct mq_queue *q = source_queue(sm, cmd, res);

    if (q == NULL) {
        return;
    }
    if (q->move == MQ_SM_MOVE_IMPORT) {
        set_error(res, MQ_SM_MOVING, "MOVING - queue is being moved");
        return;
    }
    if (q->move == MQ_SM_MOVE_NONE) {
        if (q->exclusive) {
            set_error(res, MQ_SM_PRECONDITION_FAILED,
                      "PRECONDITION_FAILED - exclusive queues do not move");
            return;
        }
        if (!freeze(sm, q)) {
            set_error(res, MQ_SM_NO_MEMORY, "no memory");
            return;
        }
    }
    res->count = q->ready.n;
    res->gen = q->gen;
}

static void apply_move_in(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                          struct mq_sm_result *res)
{
    struct chunk ch;
    enum mq_sm_status st;

    if (cmd->place_gen == 0) {
        set_error(res, MQ_SM_BAD_REQUEST, "bad placement gen");
        return;
    }
    st = chunk_parse(cmd, &ch);
    if (st != MQ_SM_OK) {
        set_error(res, st,
                  st == MQ_SM_NO_MEMORY ? "no memory" : "bad export chunk");
        return;
    }
    if (ch.kind == CHUNK_DEF) {
        import_def(sm, cmd, &ch, res);
    } else {
        import_msgs(sm, cmd, &ch, res);
    }
    free(ch.q);
}

static void apply_move_in_end(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                              struct mq_sm_result *res)
{
    struct mq_queue *q = queue_find(sm, cmd->vhost, cmd->vhost_len,
                                    cmd->queue, cmd->queue_len);

    if (q == NULL || q->move == MQ_SM_MOVE_FROZEN) {
        (void)placed_here(sm, cmd, q, res);
        if (q == NULL && res->status == MQ_SM_OK) {
            set_error(res, MQ_SM_NOT_FOUND, "NOT_FOUND - no queue");
        }
        return;
    }
    if (q->in_epoch == 0) {
        set_error(res, MQ_SM_PRECONDITION_FAILED,
                  "PRECONDITION_FAILED - queue not imported");
        return;
    }
    if (q->in_pos < q->in_total) {
        set_error(res, MQ_SM_PRECONDITION_FAILED,
                  "PRECONDITION_FAILED - import incomplete");
        return;
    }
    res->count = q->ready.n;
    if (q->move == MQ_SM_MOVE_IMPORT) {
        q->move = MQ_SM_MOVE_NONE;
        q->last_used_ms = sm->clock_ms; /* the move was not idleness */
        auto_delete_sweep(sm, res);
    }
}

static void apply_move_done(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                            struct mq_sm_result *res)
{
    struct mq_queue *q = source_queue(sm, cmd, res);
    struct mq_tomb *t;

    if (q == NULL) {
        return;
    }
    if (q->move != MQ_SM_MOVE_FROZEN) {
        if (q->move == MQ_SM_MOVE_IMPORT) {
            set_error(res, MQ_SM_MOVING, "MOVING - queue is being moved");
        } else {
            set_error(res, MQ_SM_PRECONDITION_FAILED,
                      "PRECONDITION_FAILED - queue not frozen");
        }
        return;
    }
    t = tomb_new(q_vhost(q), q->vhost_len, q_name(q), q->name_len, q->gen);
    res->count = q->ready.n;
    res->moved = true;
    res->gen = q->gen;
    queue_destroy(sm, q, MQ_SM_DEL_MOVED, res);
    tomb_link(sm, t);
}

static void apply_move_abort(struct mq_sm *sm, const struct mq_sm_cmd *cmd,
                             struct mq_sm_result *res)
{
    struct mq_queue *q = queue_find(sm, cmd->vhost, cmd->vhost_len,
                                    cmd->queue, cmd->queue_len);

    if (q == NULL) {
        /* At the source a tombstone says the move finished. At the target
         * (place_gen: the move's gen) it is an earlier incarnation's, one
         * that moved away from here before (the queue moves back): the
         * move has nothing here to undo. */
        res->moved = cmd->place_gen == 0 &&
                     tomb_find(sm, cmd->vhost, cmd->vhost_len, cmd->queue,
                               cmd->queue_len) != NULL;
        return;
    }
    if (q->move == MQ_SM_MOVE_FROZEN) {
        unfreeze(sm, q);
        res->count = 1;
        auto_delete_sweep(sm, res); /* consumers that left meanwhile */
    } else if (q->move == MQ_SM_MOVE_IMPORT) {
        res->count = 1;
        queue_destroy(sm, q, MQ_SM_DEL_MOVED, res);
    } else if (cmd->place_gen != 0 && q->in_epoch != 0 &&
               q->gen == cmd->place_gen) {
        /* This move's import, complete (MOVE_IN_END): the queue may have
         * served here since (a router whose directory view is behind), so
         * dropping it could drop what it took; the move can only be
         * finished. */
        res->moved = true;
    }
}
