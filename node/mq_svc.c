/*
 * mq_svc: see mq_svc.h.
 *
 *   submit -> [CHECKOUT, wait, nothing ready?] -- yes --> park (waitq)
 *      |                                                   |
 *      | no                        applied ENQUEUE/SETTLE/RETURN/... marks
 *      v                           the waitq dirty; prepare/check wakes
 *   encode MqCommand -> rgroup_submit <---- waiters with something to take
 *   -> raft commit -> fsm_apply (every replica) -> mq_sm_apply
 *        (leader: into call->result via mine->data)
 *        -> the result's body writes and frees into the body store
 *           (every replica), its bodies read from it (a result handed
 *           to a caller)
 *   -> cmd_done: empty long-poll result with time left? park again
 *                else call->cb
 *
 * Handles (node/svc_shell): process() runs every loop turn (leadership
 * detection, waking dirty waiters: both must happen outside raft code,
 * where rgroup_submit is allowed); a TICK_MS tick expires long polls and
 * router leases.
 *
 * Reentrancy: a call's cb may submit again or close the service. Waiters
 * are therefore always detached into a local list first and completed or
 * proposed after every shared structure is consistent again.
 */
#include "node/mq_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/invariant.h"
#include "common/log.h"
#include "mq.pb-c.h"
#include "node/mq_store.h"
#include "node/svc_shell.h"
#include "proto/mq_pb.h"
#include "proto/pb_arena.h"

#define TICK_MS 50
#define LEASE_CHECK_MS 1000
#define WQ_BUCKETS 256 /* waitqs are queues with parked consumers */

/* The waiters of one queue, in arrival order. */
struct mq_svc_waitq {
    struct mq_svc_waitq *next; /* bucket chain */
    uint64_t hash;
    struct mq_svc_call *head;
    struct mq_svc_call *tail;
    size_t n;
    bool dirty; /* an applied command may have made messages available */
    size_t vhost_len;
    size_t queue_len;
    char name[]; /* vhost then queue */
};

/* When a router was last seen here (leader-local, restarted every era
 * from the routers the state names: leases_restart()). */
struct lease {
    struct lease *next;
    uint64_t router;
    uint64_t seen_ms; /* uv_now */
};

enum pending_kind {
    PENDING_CALL = 0, /* a client's call */
    PENDING_ERA,      /* ERA or BOOT */
    PENDING_LEASE     /* RETURN scope ROUTER of an expired lease */
};

enum era_state {
    ERA_NONE = 0, /* no era command submitted in era_term */
    ERA_PENDING,  /* submitted, not completed yet */
    ERA_APPLIED,
    ERA_FAILED    /* completed unapplied: submit it again */
};

/* A command on its way through Raft. */
struct pending {
    struct rgroup_cmd rcmd;
    struct mq_svc *svc;
    enum pending_kind kind;
    struct mq_svc_call *call; /* PENDING_CALL */
    struct mq_sm_cmd cmd;     /* internal commands (no pointers) */
    uint64_t term;            /* PENDING_ERA: the era's term */
    struct mq_sm_result res;  /* internal commands */
    uint8_t *payload;
};

struct mq_svc {
    char name[64];
    struct svc_shell sh; /* group, loop, closing */
    struct mq_sm *sm;
    struct mq_svc_config cfg;
    /* The messages' bodies (node/mq_store.h): written at apply on every
     * replica, read for the results handed to callers. */
    struct mq_store *store;
    struct pb_arena cmd_arena; /* what apply unpacks a command into */
    /* The group has started: a restore from now on is a snapshot
     * installed from the leader, not this replica's own at start. */
    bool started;
    uint64_t reclaimed_at; /* snapshot index last reclaimed up to */
    uint64_t stat_body_misses;

    /* era: the term of the last era command submitted, and what became
     * of it. One era command per term: proposed again only when it
     * failed (never applied), whatever leadership did in between. */
    bool leading;
    uint64_t era_term;
    enum era_state era;
    bool booted;

    struct mq_svc_waitq *wq[WQ_BUCKETS];
    uint64_t n_waiters;
    bool wake_pending; /* some waitq dirty, or wake_all */
    bool wake_all;
    /* Applied events that can make messages available, counted on every
     * replica: a CHECKOUT that came back empty parks again only if none
     * happened since it was applied, else it would miss its wakeup. */
    uint64_t wakes;

    struct lease *leases;
    uint64_t lease_checked_ms;

    uint64_t stat_wakeups;
    uint64_t stat_timeouts;
    uint64_t stat_eras;
    uint64_t stat_lease_returns;
    uint64_t stat_expires_answered;
    /* EXPIREs proposed and not completed: another router's tick meanwhile
     * is answered without a second entry (that one applies what is due). */
    unsigned expires_in_flight;
};

/* ------------------------------------------------------------ waitqs */

static uint64_t name_hash(const char *vhost, size_t vlen, const char *queue,
                          size_t qlen)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < vlen; i++) {
        h = (h ^ (unsigned char)vhost[i]) * 0x100000001b3ULL;
    }
    h = (h ^ 0xffu) * 0x100000001b3ULL; /* separator: "a"+"bc" != "ab"+"c" */
    for (i = 0; i < qlen; i++) {
        h = (h ^ (unsigned char)queue[i]) * 0x100000001b3ULL;
    }
    return h;
}

static struct mq_svc_waitq *waitq_find(struct mq_svc *svc, const char *vhost,
                                       size_t vlen, const char *queue,
                                       size_t qlen, bool create)
{
    uint64_t h = name_hash(vhost, vlen, queue, qlen);
    struct mq_svc_waitq **b = &svc->wq[h % WQ_BUCKETS];
    struct mq_svc_waitq *w;

    for (w = *b; w != NULL; w = w->next) {
        if (w->hash == h && w->vhost_len == vlen && w->queue_len == qlen &&
            memcmp(w->name, vhost, vlen) == 0 &&
            memcmp(w->name + vlen, queue, qlen) == 0) {
            return w;
        }
    }
    if (!create) {
        return NULL;
    }
    w = xcalloc(1, sizeof(*w) + vlen + qlen + 1);
    w->hash = h;
    w->vhost_len = vlen;
    w->queue_len = qlen;
    memcpy(w->name, vhost, vlen);
    memcpy(w->name + vlen, queue, qlen);
    w->next = *b;
    *b = w;
    return w;
}

static void park(struct mq_svc *svc, struct mq_svc_call *call)
{
    struct mq_svc_waitq *w =
        waitq_find(svc, call->cmd.vhost, call->cmd.vhost_len, call->cmd.queue,
                   call->cmd.queue_len, true);

    call->wq = w;
    call->wnext = NULL;
    call->wprev = w->tail;
    if (w->tail != NULL) {
        w->tail->wnext = call;
    } else {
        w->head = call;
    }
    w->tail = call;
    w->n++;
    svc->n_waiters++;
}

static void unpark(struct mq_svc *svc, struct mq_svc_call *call)
{
    struct mq_svc_waitq *w = call->wq;

    if (call->wprev != NULL) {
        call->wprev->wnext = call->wnext;
    } else {
        w->head = call->wnext;
    }
    if (call->wnext != NULL) {
        call->wnext->wprev = call->wprev;
    } else {
        w->tail = call->wprev;
    }
    w->n--;
    svc->n_waiters--;
    call->wq = NULL;
    call->wnext = NULL;
    call->wprev = NULL;
}

/* Detached calls travel in a singly linked list through wnext. */
struct call_list {
    struct mq_svc_call *head;
    struct mq_svc_call **tail;
};

static void list_init(struct call_list *l)
{
    l->head = NULL;
    l->tail = &l->head;
}

static void detach(struct mq_svc *svc, struct mq_svc_call *call,
                   struct call_list *l)
{
    unpark(svc, call);
    *l->tail = call;
    l->tail = &call->wnext;
}

/* Free empty waitqs of every bucket. */
static void waitq_gc(struct mq_svc *svc)
{
    unsigned i;

    for (i = 0; i < WQ_BUCKETS; i++) {
        struct mq_svc_waitq **pw = &svc->wq[i];

        while (*pw != NULL) {
            struct mq_svc_waitq *w = *pw;

            if (w->n == 0) {
                *pw = w->next;
                free(w);
            } else {
                pw = &w->next;
            }
        }
    }
}

/* --------------------------------------------------------------- fsm */

static void mark_queue(struct mq_svc *svc, const char *vhost, size_t vlen,
                       const char *queue, size_t qlen)
{
    struct mq_svc_waitq *w;

    if (svc->n_waiters == 0) {
        return;
    }
    w = waitq_find(svc, vhost, vlen, queue, qlen, false);
    if (w != NULL && w->n > 0) {
        w->dirty = true;
        svc->wake_pending = true;
    }
}

/* Runs inside raft, on every replica: only flags, no submit. Which applied
 * commands can make messages available to a parked CHECKOUT: an ENQUEUE
 * that stored one (its queue); a CHECKOUT that set messages aside for
 * other consumers (its queue); SETTLE/RETURN/DROP/LEADER_CHANGED/BOOT
 * that acted on messages and a CANCEL (they name tags or consumers, not
 * queues: requeued messages or freed prefetch may be on any queue, so
 * every waitq is looked at); a queue deleted (its waiters must learn it:
 * 404). */
static void note_applied(struct mq_svc *svc, const struct mq_sm_cmd *c,
                         const struct mq_sm_result *res)
{
    size_t i;

    switch (c->type) {
        case MQ_SM_ENQUEUE:
            if (res->status == MQ_SM_OK && res->count > 0) {
                svc->wakes++;
                mark_queue(svc, c->vhost, c->vhost_len, c->queue,
                           c->queue_len);
            }
            break;
        case MQ_SM_CHECKOUT:
            if (res->status == MQ_SM_OK && res->set_aside > 0) {
                svc->wakes++;
                mark_queue(svc, c->vhost, c->vhost_len, c->queue,
                           c->queue_len);
            }
            break;
        case MQ_SM_MOVE_IN_END:
        case MQ_SM_MOVE_ABORT:
            /* A queue in a move parks its CHECKOUTs: it serves again (or
             * is gone, which the deleted entry below wakes). */
            if (res->status == MQ_SM_OK) {
                svc->wakes++;
                mark_queue(svc, c->vhost, c->vhost_len, c->queue,
                           c->queue_len);
            }
            break;
        case MQ_SM_CANCEL:
        case MQ_SM_SETTLE:
        case MQ_SM_RETURN:
        case MQ_SM_DROP:
        case MQ_SM_LEADER_CHANGED:
        case MQ_SM_BOOT:
            if (res->count > 0) {
                svc->wakes++;
                if (svc->n_waiters > 0) {
                    svc->wake_all = true;
                    svc->wake_pending = true;
                }
            }
            break;
        default:
            break;
    }
    for (i = 0; i < res->n_deleted; i++) {
        svc->wakes++;
        mark_queue(svc, res->deleted[i].vhost, res->deleted[i].vhost_len,
                   res->deleted[i].queue, res->deleted[i].queue_len);
    }
}

/* ------------------------------------------------------------ bodies */

/* A replica that did not store what the others did would diverge, as one
 * that could not allocate: stop (a restart replays the log). */
static void store_failed(struct mq_svc *svc, const char *what)
{
    log_error("%s: body store %s failed: stopping", svc->name, what);
    abort();
}

/* The raft index of the entry being applied. raft 0.15 raises
 * last_applied after the apply returns; were it raised before, this names
 * the next entry, which only delays a reclaim. */
static uint64_t applying_index(struct mq_svc *svc)
{
    struct rgroup_status st;

    if (svc->sh.group == NULL) {
        return UINT64_MAX; /* not started: never reclaimed by this entry */
    }
    rgroup_status(svc->sh.group, &st);
    return st.last_applied + 1;
}

/* Read @len bytes at (@seg, @off) into a new buffer: NULL when the store
 * cannot give them (@len 0: nothing to read, NULL too). */
static void *body_read(struct mq_svc *svc, uint32_t seg, uint32_t off,
                       size_t len, bool *ok)
{
    void *body;

    *ok = true;
    if (len == 0) {
        return NULL;
    }
    body = xmalloc(len);
    if (mq_store_read(svc->store, seg, off, (uint32_t)len, body) != 0) {
        free(body);
        svc->stat_body_misses++;
        *ok = false;
        return NULL;
    }
    return body;
}

/* Fill the bodies of a result handed to a caller; those with seg 0 come
 * filled (the state keeps bodies inline until it switches: mq_sm.h,
 * "Switching to external bodies"). A delivery whose body cannot be read
 * (a range this replica still lacks after an installed snapshot) is left
 * out and the result marked incomplete: the edge gives back what it did
 * not see (mq_sm.h). A dead letter is left out too: a
 * kept one is handed out again by a later EXPIRE (mq_sm.h, "Dead
 * letters"), one the outbox did not keep is lost, as when it is full. */
static void bodies_fill(struct mq_svc *svc, struct mq_sm_result *res)
{
    size_t i, kept = 0;
    bool ok;

    for (i = 0; i < res->n_deliveries; i++) {
        struct mq_sm_delivery d = res->deliveries[i];

        ok = true;
        if (d.seg != 0) {
            d.body = body_read(svc, d.seg, d.off, d.body_len, &ok);
        }
        if (!ok) {
            res->incomplete = true;
            res->count--;
            continue;
        }
        res->deliveries[kept++] = d;
    }
    res->n_deliveries = kept;
    kept = 0;
    for (i = 0; i < res->n_dead; i++) {
        struct mq_sm_dead_letter d = res->dead[i];

        ok = true;
        if (d.seg != 0) {
            d.body = body_read(svc, d.seg, d.off, d.body_len, &ok);
        }
        if (!ok) {
            free((void *)d.vhost);
            continue;
        }
        res->dead[kept++] = d;
    }
    res->n_dead = kept;
}

/* What the store must do for @res, before the command's buffer (which the
 * writes point into) is freed; @handed: @res goes to a caller. The
 * writes go once stored (a switch to external bodies names every body of
 * the state, which its result holds). */
static void bodies_apply(struct mq_svc *svc, struct mq_sm_result *res,
                         bool handed)
{
    uint64_t index;
    size_t i;

    for (i = 0; i < res->n_writes; i++) {
        const struct mq_sm_write *w = &res->writes[i];

        if (mq_store_write(svc->store, w->seg, w->off, w->body, w->len) !=
            0) {
            store_failed(svc, "write");
        }
    }
    mq_sm_result_drop_writes(res);
    if (handed) {
        bodies_fill(svc, res);
    }
    if (res->n_freed > 0) {
        index = applying_index(svc);
        for (i = 0; i < res->n_freed; i++) {
            mq_store_freed(svc->store, res->freed[i], index);
        }
    }
}

/* Freed segments go once a snapshot past their freeing is stored. */
static void bodies_reclaim(struct mq_svc *svc)
{
    struct rgroup_status st;

    rgroup_status(svc->sh.group, &st);
    if (st.snapshot_index > svc->reclaimed_at) {
        mq_store_reclaim(svc->store, st.snapshot_index);
        svc->reclaimed_at = st.snapshot_index;
    }
}

static void restore_expect(void *arg, uint32_t seg, uint64_t used)
{
    struct mq_svc *svc = arg;

    if (used > UINT32_MAX || mq_store_expect(svc->store, seg,
                                             (uint32_t)used) != 0) {
        store_failed(svc, "restore");
    }
}

static int store_read(void *arg, uint32_t seg, uint32_t off, uint32_t len,
                      void *out)
{
    return mq_store_read(arg, seg, off, len, out);
}

/* --------------------------------------------------------------- apply */

static void fsm_apply(void *data, uint64_t time_ms, const void *cmd,
                      size_t len, struct rgroup_cmd *mine)
{
    struct mq_svc *svc = data;
    struct pending *p = mine != NULL ? mine->data : NULL;
    struct mq_sm_result scratch;
    struct mq_sm_result *res = &scratch;
    Ringmq__MqCommand *pb;
    struct mq_sm_cmd c;

    if (p != NULL) {
        res = p->call != NULL ? &p->call->result : &p->res;
    }
    pb = ringmq__mq_command__unpack(pb_arena_allocator(&svc->cmd_arena), len,
                                    cmd);
    if (pb == NULL || mq_pb_cmd_from_pb(pb, &c, NULL) != 0) {
        /* Only our own leaders write entries: a bug or a newer peer.
         * Answer the proposer, keep every replica alike. */
        log_error("%s: undecodable mq command (%zu bytes) skipped",
                  svc->name, len);
        mq_sm_result_init(res);
        res->status = MQ_SM_BAD_REQUEST;
        res->reply_text = "bad command";
    } else {
        mq_sm_apply(svc->sm, time_ms, &c, res);
        bodies_apply(svc, res, res != &scratch);
        note_applied(svc, &c, res);
        if (p != NULL && p->call != NULL) {
            p->call->seen_wakes = svc->wakes;
        }
    }
    pb_arena_reset(&svc->cmd_arena); /* pb, and c's borrowed bytes */
    if (res == &scratch) {
        mq_sm_result_clear(&scratch);
    }
}

/* In the forked child (raft/fsm.h): no logging. The bodies the snapshot
 * names are made durable before it is stored. */
static int fsm_snapshot(void *data, void **buf, size_t *len)
{
    struct mq_svc *svc = data;

    if (mq_store_sync(svc->store) != 0) {
        return -1; /* raft tries again later */
    }
    return mq_sm_snapshot(svc->sm, malloc, buf, len);
}

/* The store learns what the restored state names. A snapshot installed
 * from the leader names bodies this replica may never have written: they
 * are missing until fetched (docs/bodies.md). One whose state keeps
 * bodies inline names none. */
static int fsm_restore(void *data, const void *buf, size_t len)
{
    struct mq_svc *svc = data;
    bool installed;

    if (mq_sm_restore(svc->sm, buf, len) != 0) {
        return -1;
    }
    installed = svc->started;
    if (mq_store_begin_restore(svc->store, installed) != 0) {
        store_failed(svc, "restore");
    }
    mq_sm_for_each_segment(svc->sm, restore_expect, svc);
    if (mq_store_end_restore(svc->store) != 0) {
        store_failed(svc, "restore");
    }
    if (installed && svc->cfg.on_bodies_missing != NULL) {
        svc->cfg.on_bodies_missing(svc->cfg.on_bodies_missing_data);
    }
    return 0;
}

/* ------------------------------------------------------------ leases */

static void leases_clear(struct mq_svc *svc)
{
    while (svc->leases != NULL) {
        struct lease *l = svc->leases;

        svc->leases = l->next;
        free(l);
    }
}

static struct lease *lease_find(struct mq_svc *svc, uint64_t router)
{
    struct lease *l;

    for (l = svc->leases; l != NULL; l = l->next) {
        if (l->router == router) {
            return l;
        }
    }
    return NULL;
}

static void lease_add(struct mq_svc *svc, uint64_t router)
{
    struct lease *l = xcalloc(1, sizeof(*l));

    l->router = router;
    l->seen_ms = uv_now(svc->sh.loop);
    l->next = svc->leases;
    svc->leases = l;
}

static void lease_seen(struct mq_svc *svc, uint64_t router)
{
    struct lease *l = lease_find(svc, router);

    if (l != NULL) {
        l->seen_ms = uv_now(svc->sh.loop);
    } else {
        lease_add(svc, router);
    }
}

static void lease_seed_one(void *data, uint64_t router)
{
    struct mq_svc *svc = data;

    if (lease_find(svc, router) == NULL) {
        lease_add(svc, router);
    }
}

/* A lease, starting now, for every router the state names that has none
 * yet: one that went away with the previous leader sends nothing here,
 * and only its lease running out gives its deliveries back (the era
 * command keeps them, mq_sm.h MQ_SM_ERA). */
static void leases_seed(struct mq_svc *svc)
{
    mq_sm_for_each_router(svc->sm, lease_seed_one, svc);
}

/* Leading again: whoever this replica saw before may have gone since. */
static void leases_restart(struct mq_svc *svc)
{
    leases_clear(svc);
    leases_seed(svc);
    svc->lease_checked_ms = uv_now(svc->sh.loop);
}

/* --------------------------------------------------------- proposing */

static void complete(struct mq_svc_call *call, enum outcome st)
{
    if (st != OUTCOME_OK) {
        mq_sm_result_clear(&call->result);
    }
    call->status = st;
    call->cb(call);
}

static void cmd_done(struct rgroup_cmd *rcmd, int status);

/* Encode @c and submit it for @p. 0, or an rgroup error (nothing
 * proposed, @p untouched apart from its payload being freed). */
static int submit_pending(struct mq_svc *svc, struct pending *p,
                          const struct mq_sm_cmd *c)
{
    struct mq_pb_cmd_buf b;
    size_t n;
    int rv;

    if (mq_pb_cmd_to_pb(c, 0, &b) != 0) {
        mq_pb_cmd_buf_clear(&b);
        return RGROUP_EINVAL; /* callers validated: not reached */
    }
    n = ringmq__mq_command__get_packed_size(&b.pb);
    p->payload = xmalloc(n > 0 ? n : 1);
    ringmq__mq_command__pack(&b.pb, p->payload);
    mq_pb_cmd_buf_clear(&b);
    p->svc = svc;
    p->rcmd.payload = p->payload;
    p->rcmd.len = n;
    p->rcmd.cb = cmd_done;
    p->rcmd.data = p;
    rv = rgroup_submit(svc->sh.group, &p->rcmd);
    if (rv != 0) {
        free(p->payload);
        p->payload = NULL;
    }
    return rv;
}

/* Whether an EXPIRE proposed now would act on anything (mq_sm.h
 * mq_sm_next_due, against the stamp its entry would get) that one already
 * on its way will not. Until the era command is applied this leader's
 * state may lack entries of earlier terms: then it is proposed anyway. */
static bool expire_due(struct mq_svc *svc)
{
    if (svc->era != ERA_APPLIED) {
        return true;
    }
    return svc->expires_in_flight == 0 &&
           mq_sm_next_due(svc->sm) <= rgroup_clock_ms(svc->sh.group);
}

static void propose(struct mq_svc *svc, struct mq_svc_call *call)
{
    struct pending *p;
    int rv;

    p = xcalloc(1, sizeof(*p));
    p->kind = PENDING_CALL;
    p->call = call;
    mq_sm_result_init(&call->result);
    p->rcmd.deadline_ms = call->until_ms;
    rv = submit_pending(svc, p, &call->cmd);
    if (rv != 0) {
        free(p);
        complete(call, svc_outcome(rv, svc->sh.closing));
        return;
    }
    if (call->cmd.type == MQ_SM_EXPIRE) {
        svc->expires_in_flight++; /* until cmd_done */
    }
}

/* Submit a command of the service itself. false if not proposed. */
static bool propose_internal(struct mq_svc *svc, enum pending_kind kind,
                             const struct mq_sm_cmd *c, uint64_t term)
{
    struct pending *p = xcalloc(1, sizeof(*p));

    p->kind = kind;
    p->term = term;
    p->cmd = *c;
    mq_sm_result_init(&p->res);
    if (kind == PENDING_ERA && svc->cfg.test_expire_eras > 0) {
        svc->cfg.test_expire_eras--;
        p->rcmd.deadline_ms = 1; /* passed: the group drops it */
    }
    if (submit_pending(svc, p, c) != 0) {
        free(p);
        return false;
    }
    return true;
}

/* A CHECKOUT with the seq of one of its consumer's that delivered (or
 * older): a retry, whose answer is known now (mq_sm.h, CHECKOUT). Parked,
 * it would hold what that one delivered until a wakeup or its deadline,
 * and with nothing left be parked again after every wakeup. */
static bool is_retry(struct mq_svc *svc, const struct mq_sm_cmd *c)
{
    return c->seq != 0 &&
           c->seq <= mq_sm_consumer_seq(svc->sm, c->who.consumer);
}

static bool should_repark(struct mq_svc *svc, const struct mq_svc_call *call)
{
    const struct mq_sm_result *r = &call->result;

    /* Dead letters and deleted queues must reach the edge: never dropped
     * by parking again. */
    return !svc->sh.closing && svc->leading &&
           call->cmd.type == MQ_SM_CHECKOUT && call->wait_ms > 0 &&
           r->status == MQ_SM_OK && r->n_deliveries == 0 && r->n_dead == 0 &&
           r->n_deleted == 0 && !r->incomplete &&
           uv_now(svc->sh.loop) < call->deadline &&
           !is_retry(svc, &call->cmd);
}

static void cmd_done(struct rgroup_cmd *rcmd, int status)
{
    struct pending *p = rcmd->data;
    struct mq_svc *svc = p->svc;
    struct mq_svc_call *call = p->call;

    free(p->payload);
    if (p->kind != PENDING_CALL) {
        if (p->kind == PENDING_ERA && p->term == svc->era_term) {
            svc->era = status == 0 ? ERA_APPLIED : ERA_FAILED;
            if (status == 0 && svc->leading) {
                /* everything of earlier terms is applied now */
                leases_seed(svc);
            }
        }
        if (status == 0) {
            if (p->kind == PENDING_ERA) {
                svc->stat_eras++;
                if (p->cmd.type == MQ_SM_BOOT) {
                    svc->booted = true;
                }
            } else {
                svc->stat_lease_returns++;
            }
            if (svc->cfg.on_internal != NULL) {
                svc->cfg.on_internal(svc->cfg.on_internal_data, &p->cmd,
                                     &p->res);
            }
        } else {
            log_warn("%s: %s not applied (%d)", svc->name,
                     p->kind == PENDING_ERA ? "era command" : "lease return",
                     status);
        }
        mq_sm_result_clear(&p->res);
        free(p);
        return;
    }
    free(p);
    if (call->cmd.type == MQ_SM_EXPIRE) {
        INVARIANT(svc->expires_in_flight > 0);
        svc->expires_in_flight--;
    }
    if (status != 0) {
        complete(call, svc_outcome(status, svc->sh.closing));
        return;
    }
    if (should_repark(svc, call)) {
        mq_sm_result_clear(&call->result);
        park(svc, call);
        if (call->seen_wakes != svc->wakes) {
            call->wq->dirty = true;
            svc->wake_pending = true;
        }
        return;
    }
    complete(call, OUTCOME_OK);
}

/* ------------------------------------------------------- leadership */

static bool group_leads(struct mq_svc *svc)
{
    return rgroup_is_leader(svc->sh.group) &&
           (svc->cfg.test_leads == NULL ||
            svc->cfg.test_leads(svc->cfg.test_data));
}

/* Detect a new era and submit its command first; keep svc->leading.
 * Leading again in the term of an era command pending or applied (raft
 * said not-leader for a moment, a hand-off that did not happen) is the
 * same era (a second BOOT would return every delivery made since). One
 * that failed is submitted again, before any client command. Either way
 * the router leases start again from the state (leases_restart). */
static void leader_check(struct mq_svc *svc)
{
    struct rgroup_status st;
    struct mq_sm_cmd c;
    bool resumed;

    if (svc->sh.closing || !group_leads(svc)) {
        svc->leading = false;
        return;
    }
    rgroup_status(svc->sh.group, &st);
    resumed = svc->era_term == st.term &&
              (svc->era == ERA_PENDING || svc->era == ERA_APPLIED);
    if (resumed) {
        if (!svc->leading) {
            log_info("%s: leading again in term %" PRIu64, svc->name,
                     st.term);
            svc->leading = true;
            leases_restart(svc);
        }
        return;
    }
    memset(&c, 0, sizeof(c));
    c.type = svc->cfg.boot && !svc->booted ? MQ_SM_BOOT : MQ_SM_ERA;
    c.vhost = "";
    c.queue = "";
    if (!propose_internal(svc, PENDING_ERA, &c, st.term)) {
        svc->leading = false;
        return;
    }
    log_info("%s: leading in term %" PRIu64 " (%s%s)", svc->name, st.term,
             c.type == MQ_SM_BOOT ? "boot" : "era",
             svc->era_term == st.term ? ", again: the first one failed"
                                      : "");
    svc->leading = true;
    svc->era_term = st.term;
    svc->era = ERA_PENDING;
    leases_restart(svc); /* again once the era command is applied */
}

/* Complete every waiter whose predicate holds, after detaching them all. */
static void finish_waiters(struct mq_svc *svc, bool only_expired,
                           enum outcome st)
{
    struct call_list l;
    uint64_t now = uv_now(svc->sh.loop);
    unsigned i;

    if (svc->n_waiters == 0) {
        return;
    }
    list_init(&l);
    for (i = 0; i < WQ_BUCKETS; i++) {
        struct mq_svc_waitq *w;

        for (w = svc->wq[i]; w != NULL; w = w->next) {
            struct mq_svc_call *c = w->head;

            while (c != NULL) {
                struct mq_svc_call *next = c->wnext;

                if (!only_expired || c->deadline <= now) {
                    detach(svc, c, &l);
                }
                c = next;
            }
        }
    }
    waitq_gc(svc);
    while (l.head != NULL) {
        struct mq_svc_call *c = l.head;

        l.head = c->wnext;
        c->wnext = NULL;
        if (only_expired) {
            svc->stat_timeouts++;
        }
        mq_sm_result_init(&c->result);
        complete(c, st);
    }
}

/* A CHECKOUT has something to take: messages set aside for its consumer
 * (mq_sm.h, CHECKOUT), or ready ones, and its queue is not in a move. */
static bool has_work(struct mq_svc *svc, const struct mq_svc_call *call,
                     const struct mq_sm_queue_stats *qs)
{
    return qs->move == MQ_SM_MOVE_NONE &&
           (qs->ready > 0 ||
            mq_sm_consumer_pending(svc->sm, call->cmd.who.consumer) > 0);
}

/* Wake dirty waitqs: every waiter with messages set aside for it, and,
 * while messages are ready, as many more in arrival order (the first one
 * applied deals them over the queue's consumers, mq_sm.h; the others then
 * find their share set aside). A gone queue wakes everyone (the state
 * machine answers 404). */
static void wake(struct mq_svc *svc)
{
    struct call_list l;
    bool all = svc->wake_all;
    unsigned i;

    svc->wake_pending = false;
    svc->wake_all = false;
    list_init(&l);
    for (i = 0; i < WQ_BUCKETS; i++) {
        struct mq_svc_waitq *w;

        for (w = svc->wq[i]; w != NULL; w = w->next) {
            struct mq_sm_queue_stats qs;
            struct mq_svc_call *c;
            uint64_t ready;

            if (!(w->dirty || all) || w->n == 0) {
                continue;
            }
            w->dirty = false;
            if (mq_sm_queue_stats(svc->sm, w->name, w->vhost_len,
                                  w->name + w->vhost_len, w->queue_len,
                                  &qs) != 0) {
                while (w->head != NULL) {
                    detach(svc, w->head, &l);
                }
                continue;
            }
            if (qs.move != MQ_SM_MOVE_NONE) {
                continue;
            }
            ready = qs.ready;
            c = w->head;
            while (c != NULL) {
                struct mq_svc_call *next = c->wnext;

                if (mq_sm_consumer_pending(svc->sm, c->cmd.who.consumer) >
                    0) {
                    detach(svc, c, &l);
                } else if (ready > 0) {
                    ready--;
                    detach(svc, c, &l);
                }
                c = next;
            }
        }
    }
    waitq_gc(svc);
    while (l.head != NULL) {
        struct mq_svc_call *c = l.head;

        l.head = c->wnext;
        c->wnext = NULL;
        svc->stat_wakeups++;
        propose(svc, c);
    }
}

static void process(struct mq_svc *svc)
{
    if (svc->sh.closing) {
        return;
    }
    leader_check(svc);
    if (!svc->leading) {
        /* never proposed: the edge retries at the new leader */
        finish_waiters(svc, false, OUTCOME_NOT_LEADER);
        return;
    }
    if (svc->wake_pending) {
        wake(svc);
    }
}

static void shell_process(void *owner)
{
    process(owner);
}

/* ----------------------------------------------------- lease expiry */

static void lease_check(struct mq_svc *svc)
{
    uint64_t now = uv_now(svc->sh.loop);
    uint32_t lease = svc->cfg.lease_ms > 0 ? svc->cfg.lease_ms
                                           : MQ_SVC_LEASE_MS;
    struct lease **pl = &svc->leases;

    while (*pl != NULL) {
        struct lease *l = *pl;
        struct mq_sm_cmd c;

        if (now - l->seen_ms < lease) {
            pl = &l->next;
            continue;
        }
        memset(&c, 0, sizeof(c));
        c.type = MQ_SM_RETURN;
        c.scope = MQ_SM_SCOPE_ROUTER;
        c.who.router = l->router;
        c.vhost = "";
        c.queue = "";
        if (!propose_internal(svc, PENDING_LEASE, &c, 0)) {
            return; /* not leading any more: leases reset with the era */
        }
        log_warn("%s: router %" PRIu64 " unseen for %u ms: its deliveries "
                 "returned",
                 svc->name, l->router, (unsigned)lease);
        *pl = l->next;
        free(l);
    }
}

static void tick(void *owner)
{
    struct mq_svc *svc = owner;

    leader_check(svc);
    finish_waiters(svc, true, OUTCOME_OK);
    if (!svc->sh.closing) {
        bodies_reclaim(svc); /* every replica */
    }
    if (svc->sh.closing || !svc->leading) {
        return;
    }
    if (uv_now(svc->sh.loop) - svc->lease_checked_ms >=
        (svc->cfg.lease_ms > 0 && svc->cfg.lease_ms < LEASE_CHECK_MS
             ? svc->cfg.lease_ms / 2 + 1
             : LEASE_CHECK_MS)) {
        svc->lease_checked_ms = uv_now(svc->sh.loop);
        lease_check(svc);
    }
}

/* -------------------------------------------------------------- API */

struct mq_svc *mq_svc_new(uv_loop_t *loop, const struct rgroup_config *group,
                          const struct mq_svc_config *cfg, char *errmsg,
                          size_t errlen)
{
    struct mq_svc *svc = xcalloc(1, sizeof(*svc));
    struct rgroup_fsm fsm = {
        .data = svc,
        .apply = fsm_apply,
        .snapshot = fsm_snapshot,
        .restore = fsm_restore,
    };

    snprintf(svc->name, sizeof(svc->name), "%s", group->name);
    if (cfg != NULL) {
        svc->cfg = *cfg;
    }
    pb_arena_init(&svc->cmd_arena);
    svc->sm = mq_sm_new(&svc->cfg.sm);
    if (svc->sm == NULL) {
        snprintf(errmsg, errlen, "%s: cannot allocate the queue state",
                 svc->name);
        goto err;
    }
    /* before the group: its start restores the local snapshot */
    svc->store = mq_store_open(group->dir, errmsg, errlen);
    if (svc->store == NULL) {
        goto err_after_sm;
    }
    if (svc_shell_start(&svc->sh, loop, group, &fsm, svc, shell_process,
                        tick, TICK_MS, errmsg, errlen) != 0) {
        goto err_after_store;
    }
    svc->started = true;
    return svc;

err_after_store:
    mq_store_close(svc->store);
err_after_sm:
    mq_sm_free(svc->sm);
err:
    pb_arena_close(&svc->cmd_arena);
    free(svc);
    return NULL;
}

void mq_svc_submit(struct mq_svc *svc, struct mq_svc_call *call)
{
    mq_svc_submit_until(svc, call, 0);
}

void mq_svc_submit_until(struct mq_svc *svc, struct mq_svc_call *call,
                         uint64_t deadline_ms)
{
    const struct mq_sm_cmd *c = &call->cmd;
    struct mq_sm_queue_stats qs;

    call->svc = svc;
    call->until_ms = deadline_ms;
    call->wq = NULL;
    call->wnext = NULL;
    call->wprev = NULL;
    call->seen_wakes = 0;
    mq_sm_result_init(&call->result);
    if (svc->sh.closing) {
        complete(call, OUTCOME_CLOSING);
        return;
    }
    if ((unsigned)c->type >= MQ_SM_CMD__COUNT ||
        (unsigned)c->scope >= MQ_SM_SCOPE__COUNT ||
        (uint64_t)c->body_len > MQ_PB_BODY_MAX) {
        call->result.status = MQ_SM_BAD_REQUEST;
        call->result.reply_text = "bad command";
        complete(call, OUTCOME_OK);
        return;
    }
    leader_check(svc);
    if (!svc->leading) {
        complete(call, OUTCOME_NOT_LEADER);
        return;
    }
    lease_seen(svc, c->who.router);
    if (c->type == MQ_SM_EXPIRE && !expire_due(svc)) {
        /* An edge's tick with nothing due: the lease above was all it
         * did, and an idle shard writes no log entry for it. */
        svc->stat_expires_answered++;
        complete(call, OUTCOME_OK);
        return;
    }
    if (c->type == MQ_SM_CHECKOUT && call->wait_ms > 0) {
        call->deadline = uv_now(svc->sh.loop) + call->wait_ms;
        /* Nothing ready, or the queue in a move (mq_sm.h): park without
         * proposing; a missing queue is proposed so the state machine
         * answers 404 (or MOVED), and a retry for its known answer. */
        if (c->max_messages > 0 && !is_retry(svc, c) &&
            mq_sm_queue_stats(svc->sm, c->vhost, c->vhost_len, c->queue,
                              c->queue_len, &qs) == 0 &&
            !has_work(svc, call, &qs)) {
            park(svc, call);
            return;
        }
    }
    propose(svc, call);
}

void mq_svc_status(struct mq_svc *svc, struct mq_svc_status *out,
                   bool with_digest)
{
    memset(out, 0, sizeof(*out));
    rgroup_status(svc->sh.group, &out->raft);
    mq_sm_stats(svc->sm, &out->sm);
    out->digest = with_digest ? mq_sm_digest(svc->sm) : 0;
    out->waiters = svc->n_waiters;
    out->wakeups = svc->stat_wakeups;
    out->poll_timeouts = svc->stat_timeouts;
    out->eras = svc->stat_eras;
    out->lease_returns = svc->stat_lease_returns;
    out->expires_answered = svc->stat_expires_answered;
    out->booted = svc->booted;
    mq_store_stats(svc->store, &out->store);
    out->body_misses = svc->stat_body_misses;
}

enum outcome mq_svc_export(struct mq_svc *svc, const char *vhost,
                           const char *queue, uint64_t cursor,
                           uint32_t max_bytes, struct mq_svc_export *out)
{
    enum mq_sm_status st;

    memset(out, 0, sizeof(*out));
    if (!mq_svc_is_leader(svc)) {
        return OUTCOME_NOT_LEADER;
    }
    st = mq_sm_export(svc->sm, vhost, strlen(vhost), queue, strlen(queue),
                      cursor, max_bytes, malloc, store_read, svc->store,
                      &out->chunk, &out->len, &out->next_cursor, &out->last);
    if (st == MQ_SM_UNAVAILABLE) {
        return OUTCOME_UNAVAILABLE; /* a body not fetched yet: ask again */
    }
    if (st != MQ_SM_OK) {
        out->chunk = NULL;
    }
    return OUTCOME_OK;
}

struct mq_store *mq_svc_store(struct mq_svc *svc)
{
    return svc->store;
}

const char *mq_svc_name(const struct mq_svc *svc)
{
    return svc->name;
}

uint64_t mq_svc_leader_id(const struct mq_svc *svc)
{
    return rgroup_leader_id(svc->sh.group);
}

struct rgroup *mq_svc_group(struct mq_svc *svc)
{
    return svc->sh.group;
}

bool mq_svc_is_leader(struct mq_svc *svc)
{
    leader_check(svc);
    return svc->leading;
}

bool mq_svc_ready(struct mq_svc *svc)
{
    leader_check(svc);
    return svc->leading && svc->era == ERA_APPLIED;
}

bool mq_svc_booted(const struct mq_svc *svc)
{
    return svc->booted;
}

void mq_svc_set_on_internal(struct mq_svc *svc,
                            void (*cb)(void *data, const struct mq_sm_cmd *,
                                       const struct mq_sm_result *),
                            void *data)
{
    svc->cfg.on_internal = cb;
    svc->cfg.on_internal_data = data;
}

const struct mq_sm *mq_svc_sm(const struct mq_svc *svc)
{
    return svc->sm;
}

static void destroy(void *owner)
{
    struct mq_svc *svc = owner;

    leases_clear(svc);
    waitq_gc(svc);
    mq_sm_free(svc->sm);
    mq_store_close(svc->store);
    pb_arena_close(&svc->cmd_arena);
    free(svc);
}

void mq_svc_close(struct mq_svc *svc, void (*cb)(void *data), void *data)
{
    svc->leading = false;
    svc_shell_close(&svc->sh, destroy, cb, data);
    finish_waiters(svc, false, OUTCOME_CLOSING);
}
