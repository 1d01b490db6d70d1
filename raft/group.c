/*
 * rgroup: one replica of one Raft group (see group.h for the contract).
 *
 * Write path (leader):
 *
 *   rgroup_submit ──> queue (FIFO, cmd->next) ──flush──> batch ──raft_apply──>
 *                     (+ uv_idle while flushable)        (one RaftBatch entry,
 *                                                         in-flight list)
 *        | bound reached: RGROUP_EFULL        | deadline passed (expiry
 *        v (max_queued_cmds/bytes)            v timer, or at a flush):
 *                                               done list, RGROUP_EEXPIRED
 *   raft applies the entry on every replica ──> rfsm_apply
 * ──claim(proposer,seq)──> rgroup_fsm.apply(cmd_i, mine_i) for each command,
 * batch marked applied raft_apply cb ──> batch moved to the done list (status 0
 * if applied, else RGROUP_EUNKNOWN) ──deliver──> cmd->cb(cmd, status), in order
 *
 * Our uv_prepare and uv_check handles run process() on every loop turn:
 * poll raft_state (0.15 has no state callback), deliver completed commands,
 * flush the queue into new batches while fewer than max_inflight raft_apply
 * calls are in flight, deliver again. User callbacks therefore never run
 * inside raft code (raft callbacks only move batches to the done list), and
 * raft_apply is never called from inside a raft callback. A uv_idle handle is
 * started only while something is waiting to be flushed or delivered, so that
 * the loop does not block in poll meanwhile.
 *
 * Leadership: when raft_state turns LEADER we issue a raft_barrier; the group
 * becomes ready (rgroup_is_leader) when that barrier completes in the same
 * leadership epoch. When it stops being LEADER (or the term moves on) the
 * group is no longer ready, queued commands fail with RGROUP_ENOTLEADER, and
 * raft itself fails every in-flight raft_apply with RAFT_LEADERSHIPLOST, which
 * we turn into RGROUP_EUNKNOWN for each command not yet applied here.
 *
 * Direction: this file owns the struct rgroup, the raft instance and the
 * loop handles, and calls down into raft/fsm (the raft_fsm adapter and the
 * batch codec; it reaches our in-flight batches only through the claim
 * hook), raft/member (membership changes; it reaches us only through the
 * wake hook) and raft/transport. None of them calls or includes this file;
 * they share raft/types.h with group.h.
 */
#include "raft/group.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/container_of.h"
#include "common/invariant.h"
#include "common/log.h"
#include "common/mkdir_p.h"
#include "common/random_id.h"
#include "raft/fsm.h"
#include "raft/ident.h"
#include "raft/kaio.h"
#include "raft/member.h"
#include "raft/transport.h"

#define DEFAULT_ELECTION_MS 1000u
#define DEFAULT_HEARTBEAT_MS 100u
#define DEFAULT_SNAPSHOT_THRESHOLD 1024u
#define DEFAULT_SNAPSHOT_TRAILING 2048u
#define DEFAULT_MAX_ENTRY_BYTES ((size_t)4 << 20)
#define DEFAULT_MAX_INFLIGHT 16u

/* A list of commands that complete together: an in-flight batch, or (on the
 * done list only) a set of queued commands being failed. */
struct rgroup_batch {
    struct raft_apply req; /* in flight: raft's request */
    struct rgroup *g;
    uint64_t seq;
    struct rgroup_cmd *head; /* cmds linked by ->next, submission order */
    size_t n;
    bool applied; /* the fsm applied it here with mine = these cmds */
    int status;   /* on the done list */
    struct rgroup_batch *prev, *next;
};

struct rgroup_barrier {
    struct raft_barrier req;
    struct rgroup *g;
    uint64_t epoch;
};

struct rgroup {
    uv_loop_t *loop;
    char name[64];
    char *dir;
    uint64_t id;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    struct rfsm fsm;
    struct clock_stamp stamp; /* the time stamped on our batches */

    uv_prepare_t prepare;
    uv_check_t check;
    uv_idle_t idle;
    /* the snapshot worker frees a chunk the loop waits for (rfsm wake) */
    uv_async_t snap_wake;
    bool handles_init;
    unsigned handles_open;

    size_t max_entry_bytes;
    unsigned max_inflight;
    unsigned max_queued_cmds;
    size_t max_queued_bytes;
    uint64_t proposer; /* random per process lifetime */
    uint64_t seq;      /* last batch sequence number used */

    struct rgroup_cmd *q_head, *q_tail; /* submitted, not yet proposed */
    size_t q_len;
    size_t q_bytes;    /* payload bytes queued (admission bound) */
    size_t q_deadlines; /* queued commands that have a deadline */
    /* Expires queued commands at their deadline, not only when a batch
     * slot frees (entries that do not commit free none): their senders
     * learn "not executed" while they still wait for an answer. Armed
     * for expiry_at (clock_mono_ms), 0 = not armed; an earlier deadline
     * than the one it is armed for re-arms it, a command leaving the
     * queue does not (the timer then finds nothing yet and re-arms). */
    uv_timer_t expiry;
    uint64_t expiry_at;
    struct rgroup_batch *fl_head, *fl_tail; /* raft_apply in flight */
    unsigned n_inflight;
    struct rgroup_batch *done_head, *done_tail; /* callbacks to deliver */

    /* for the invariants (rgroup_check) */
    uint64_t submitted;   /* commands taken by rgroup_submit */
    uint64_t ok_no;       /* submit_no of the last command called back 0 */
    uint64_t claimed_seq; /* seq of our last batch the fsm applied */
    uint64_t last_stamp;  /* stamp of our last batch */
    uint64_t turns;       /* process() runs: paces the deep check */

    bool leading;        /* raft_state was LEADER at the last poll */
    bool ready;          /* leading and the epoch's barrier completed */
    bool barrier_needed; /* leading, barrier not issued yet */
    uint64_t lead_term;
    uint64_t lead_epoch; /* bumped on every leadership gain and loss */
    uint64_t known_leader, known_leader_term;

    uint64_t batches_proposed, cmds_proposed, leader_changes;
    /* log_memory_bytes: the counts in effect, their caps, and the fsm's
     * counters at the last look */
    size_t log_memory_bytes;
    unsigned threshold, trailing, max_threshold, max_trailing;
    uint64_t bound_entries, bound_bytes;

    struct rmember member; /* membership changes (raft/member.c) */

    bool closing;
    bool raft_closed;
    bool stopped_logged; /* raft went UNAVAILABLE by itself: said once */
    /* libraft 0.15 can fire the raft_io close callback twice (its
     * uvMaybeFireCloseCb has no once-guard; upstream c042b4e added one and
     * was reverted): the second call frees raft's address and log again, or
     * reads a freed group. io_close_wrap lets only the first through, and
     * the io, transport and group are released one loop turn after raft
     * reported closed (free_timer), when its close callbacks have run. */
    void (*io_close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_close_cb raft_io_close_cb;
    bool io_closed;
    uv_timer_t free_timer;
    rgroup_close_cb close_cb;
    void *close_data;
};

/* ------------------------------------------------------------------------ */
/* Lists and completion                                                     */

static void idle_cb(uv_idle_t *h);
static void expiry_cb(uv_timer_t *t);
static void lose_leadership(struct rgroup *g);
static void update_idle(struct rgroup *g);

static void push_done(struct rgroup *g, struct rgroup_batch *b, int status)
{
    INVARIANT(b->head != NULL && b->n > 0);
    b->status = status;
    b->prev = NULL;
    b->next = NULL;
    if (g->done_tail != NULL) {
        g->done_tail->next = b;
    } else {
        g->done_head = b;
    }
    g->done_tail = b;
    update_idle(g);
}

/* Fire the callbacks of every completed command, oldest first. Callbacks may
 * submit, or close the group (which appends more to the done list). */
static void deliver(struct rgroup *g)
{
    struct rgroup_batch *b;

    while ((b = g->done_head) != NULL) {
        struct rgroup_cmd *c = b->head;
        int status = b->status;

        g->done_head = b->next;
        if (g->done_head == NULL) {
            g->done_tail = NULL;
        }
        free(b);
        while (c != NULL) {
            struct rgroup_cmd *next = c->next;

            c->next = NULL;
            if (status == RGROUP_OK) {
                /* group.h: applied in submission order */
                INVARIANT(c->submit_no > g->ok_no);
                g->ok_no = c->submit_no;
            }
            c->cb(c, status);
            c = next;
        }
    }
}

static void fail_queue(struct rgroup *g, int status)
{
    struct rgroup_batch *b;

    if (g->q_head == NULL) {
        return;
    }
    b = xcalloc(1, sizeof *b);
    b->g = g;
    b->head = g->q_head;
    b->n = g->q_len;
    g->q_head = NULL;
    g->q_tail = NULL;
    g->q_len = 0;
    g->q_bytes = 0;
    g->q_deadlines = 0;
    push_done(g, b, status);
}

static void inflight_link(struct rgroup *g, struct rgroup_batch *b)
{
    INVARIANT(g->n_inflight < g->max_inflight);
    INVARIANT(g->fl_tail == NULL || g->fl_tail->seq < b->seq);
    b->next = NULL;
    b->prev = g->fl_tail;
    if (g->fl_tail != NULL) {
        g->fl_tail->next = b;
    } else {
        g->fl_head = b;
    }
    g->fl_tail = b;
    g->n_inflight++;
}

static void inflight_unlink(struct rgroup *g, struct rgroup_batch *b)
{
    INVARIANT(g->n_inflight > 0);
    if (b->prev != NULL) {
        b->prev->next = b->next;
    } else {
        g->fl_head = b->next;
    }
    if (b->next != NULL) {
        b->next->prev = b->prev;
    } else {
        g->fl_tail = b->prev;
    }
    b->prev = NULL;
    b->next = NULL;
    g->n_inflight--;
}

/* The counters agree with the lists' ends and stay within the admission
 * bounds: O(1), checked after every submit and every turn. */
static void check_counters(const struct rgroup *g)
{
    INVARIANT((g->q_head == NULL) == (g->q_tail == NULL));
    INVARIANT((g->q_head == NULL) == (g->q_len == 0));
    INVARIANT(g->q_tail == NULL || g->q_tail->next == NULL);
    INVARIANT(g->q_len > 0 || (g->q_bytes == 0 && g->q_deadlines == 0));
    INVARIANT(g->q_deadlines <= g->q_len);
    /* rgroup_submit: an empty queue takes one command of any size */
    INVARIANT(g->q_len <= g->max_queued_cmds);
    INVARIANT(g->q_len <= 1 || g->q_bytes <= g->max_queued_bytes);
    INVARIANT(g->n_inflight <= g->max_inflight);
    INVARIANT((g->fl_head == NULL) == (g->n_inflight == 0));
    INVARIANT((g->fl_head == NULL) == (g->fl_tail == NULL));
    INVARIANT((g->done_head == NULL) == (g->done_tail == NULL));
    INVARIANT(g->ok_no <= g->submitted && g->claimed_seq <= g->seq);
}

/* Walk @n commands from @c (no more: a cycle stops the walk); submit
 * numbers rise along the list, each above @after. Returns the last. */
static const struct rgroup_cmd *check_cmds(const struct rgroup_cmd *c,
                                           size_t n, uint64_t *after)
{
    const struct rgroup_cmd *last = NULL;

    for (; n > 0; n--) {
        INVARIANT(c != NULL && c->cb != NULL);
        INVARIANT(c->submit_no > *after);
        *after = c->submit_no;
        last = c;
        c = c->next;
    }
    INVARIANT(c == NULL);
    return last;
}

void rgroup_check(const struct rgroup *g)
{
    const struct rgroup_cmd *c, *last = NULL;
    const struct rgroup_batch *b, *prev = NULL;
    uint64_t no = 0;
    size_t n = 0, bytes = 0, deadlines = 0;
    unsigned inflight = 0;

    check_counters(g);
    /* in flight: proposed in order, each before anything still queued */
    for (b = g->fl_head; b != NULL; prev = b, b = b->next) {
        INVARIANT(++inflight <= g->n_inflight);
        INVARIANT(b->prev == prev && b->g == g);
        INVARIANT(prev == NULL || prev->seq < b->seq);
        INVARIANT(b->seq > 0 && b->seq <= g->seq);
        check_cmds(b->head, b->n, &no);
    }
    INVARIANT(prev == g->fl_tail && inflight == g->n_inflight);
    for (c = g->q_head; c != NULL; last = c, c = c->next) {
        INVARIANT(++n <= g->q_len);
        INVARIANT(c->submit_no > no);
        no = c->submit_no;
        bytes += c->len;
        deadlines += c->deadline_ms != 0;
    }
    INVARIANT(last == g->q_tail && n == g->q_len);
    INVARIANT(bytes == g->q_bytes && deadlines == g->q_deadlines);
    INVARIANT(no <= g->submitted);
    for (b = g->done_head, prev = NULL; b != NULL; prev = b, b = b->next) {
        uint64_t done_no = 0;

        check_cmds(b->head, b->n, &done_no);
    }
    INVARIANT(prev == g->done_tail);
}

static bool flushable(const struct rgroup *g)
{
    return g->q_head != NULL && g->ready && !g->closing &&
           g->n_inflight < g->max_inflight;
}

/* Keep the loop from blocking while there is work: commands to flush or
 * deliver, a membership step to continue, or a snapshot slice with a chunk
 * to write (one waiting for a chunk lets it block: snap_wake ends the
 * poll). */
static void update_idle(struct rgroup *g)
{
    if (!g->handles_init || g->closing) {
        return;
    }
    if (flushable(g) || g->done_head != NULL ||
        rmember_pending(&g->member) || rfsm_snapshot_slicing(&g->fsm)) {
        uv_idle_start(&g->idle, idle_cb);
    } else {
        uv_idle_stop(&g->idle);
    }
}

/* ------------------------------------------------------------------------ */
/* Apply path                                                               */

/* rfsm claim hook: the local waiters of batch (proposer, seq). */
static struct rgroup_cmd *claim_cb(void *data,
                                   uint64_t proposer,
                                   uint64_t seq,
                                   size_t n_cmds)
{
    struct rgroup *g = data;
    struct rgroup_batch *b;

    if (proposer != g->proposer) {
        return NULL;
    }
    /* our batches reach the log in the order we numbered them, and an
     * entry is applied once */
    INVARIANT(seq > g->claimed_seq && seq <= g->seq);
    g->claimed_seq = seq;
    for (b = g->fl_head; b != NULL; b = b->next) {
        if (b->seq != seq) {
            continue;
        }
        INVARIANT(!b->applied && b->n == n_cmds);
        b->applied = true;
        return b->head;
    }
    return NULL;
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct rgroup_batch *b = container_of(req, struct rgroup_batch, req);
    struct rgroup *g = b->g;

    (void)result;
    inflight_unlink(g, b);
    if (!b->applied) {
        log_info("raft group %s: batch %" PRIu64 " (%zu commands): "
                 "outcome unknown: %s (%d)",
                 g->name, b->seq, b->n,
                 status != 0 ? raft_strerror(status) : "not applied", status);
    }
    push_done(g, b, b->applied ? RGROUP_OK : RGROUP_EUNKNOWN);
}

/* A command leaves the queue (proposed or dropped). */
static void dequeued(struct rgroup *g, const struct rgroup_cmd *c)
{
    INVARIANT(g->q_len > 0 && g->q_bytes >= c->len);
    INVARIANT(c->deadline_ms == 0 || g->q_deadlines > 0);
    g->q_len--;
    g->q_bytes -= c->len;
    if (c->deadline_ms != 0) {
        g->q_deadlines--;
    }
}

/* Have the expiry timer fire by @deadline (clock_mono_ms). */
static void arm_expiry(struct rgroup *g, uint64_t deadline)
{
    uint64_t now;

    if (!g->handles_init || g->closing ||
        (g->expiry_at != 0 && g->expiry_at <= deadline)) {
        return;
    }
    now = clock_mono_ms();
    g->expiry_at = deadline;
    uv_timer_start(&g->expiry, expiry_cb, deadline > now ? deadline - now : 0,
                   0);
}

/* Drop the queued commands whose deadline has passed: their senders gave
 * up, and a command proposed after its sender was told it failed could
 * apply behind the sender's back (docs/consistency.md, "Timed-out
 * requests"). They complete RGROUP_EEXPIRED, together, in queue order. */
static void drop_expired(struct rgroup *g)
{
    struct rgroup_cmd **link = &g->q_head;
    struct rgroup_cmd *prev = NULL;
    struct rgroup_cmd *c;
    struct rgroup_batch *b = NULL;
    struct rgroup_cmd **b_tail = NULL;
    uint64_t next = 0; /* the earliest deadline still queued */
    uint64_t now;

    if (g->q_deadlines == 0) {
        return;
    }
    now = clock_mono_ms();
    while ((c = *link) != NULL) {
        if (c->deadline_ms == 0 || c->deadline_ms > now) {
            if (c->deadline_ms != 0 && (next == 0 || c->deadline_ms < next)) {
                next = c->deadline_ms;
            }
            prev = c;
            link = &c->next;
            continue;
        }
        *link = c->next;
        if (g->q_tail == c) {
            g->q_tail = prev;
        }
        dequeued(g, c);
        c->next = NULL;
        if (b == NULL) {
            b = xcalloc(1, sizeof *b);
            b->g = g;
            b_tail = &b->head;
        }
        *b_tail = c;
        b_tail = &c->next;
        b->n++;
    }
    if (b != NULL) {
        log_debug("raft group %s: %zu queued command(s) expired unproposed",
                  g->name, b->n);
        push_done(g, b, RGROUP_EEXPIRED);
    }
    INVARIANT((next != 0) == (g->q_deadlines > 0));
    if (next != 0 && next != g->expiry_at) {
        g->expiry_at = 0;
        arm_expiry(g, next);
    }
}

/* Propose queued commands, one batch per raft_apply, while slots are free. */
static void flush(struct rgroup *g)
{
    if (flushable(g)) {
        drop_expired(g);
    }
    while (flushable(g)) {
        struct rgroup_batch *b = xcalloc(1, sizeof *b);
        struct rgroup_cmd *last;
        struct raft_buffer buf;
        size_t size = RFSM_BATCH_OVERHEAD + rfsm_cmd_size(g->q_head->len);
        uint64_t stamp;
        int rv;

        /* rgroup_submit guarantees the first command fits alone */
        b->g = g;
        b->head = g->q_head;
        b->n = 1;
        last = g->q_head;
        dequeued(g, last);
        while (last->next != NULL &&
               size + rfsm_cmd_size(last->next->len) <= g->max_entry_bytes) {
            size += rfsm_cmd_size(last->next->len);
            last = last->next;
            dequeued(g, last);
            b->n++;
        }
        g->q_head = last->next;
        if (g->q_head == NULL) {
            g->q_tail = NULL;
        }
        last->next = NULL;
        b->seq = ++g->seq;

        /* the replicated clock never goes back: not behind our own last
         * batch nor behind any batch applied here */
        stamp = rgroup_clock_ms(g);
        INVARIANT(stamp >= g->last_stamp && stamp >= g->fsm.newest_stamp);
        g->last_stamp = stamp;
        if (rfsm_encode(stamp, g->proposer, b->seq, b->head, b->n, &buf) !=
            0) {
            log_error("raft group %s: out of memory encoding a batch", g->name);
            push_done(g, b, RGROUP_EIO);
            continue;
        }
        INVARIANT(buf.len <= size && size <= g->max_entry_bytes);
        /* linked first so the claim hook would find it even if raft applied
         * it synchronously */
        inflight_link(g, b);
        rv = raft_apply(&g->raft, &b->req, &buf, 1, apply_cb);
        if (rv != 0) {
            inflight_unlink(g, b);
            raft_free(buf.base); /* still ours when rv != 0 */
            log_warn("raft group %s: raft_apply: %s (%d)", g->name,
                     raft_strerror(rv), rv);
            if (rv == RAFT_NOTLEADER) {
                /* nothing proposed; poll_state re-detects leadership
                 * (and barriers again) if raft is still leader */
                push_done(g, b, RGROUP_ENOTLEADER);
                lose_leadership(g);
            } else {
                push_done(g, b, RGROUP_EIO);
            }
            continue;
        }
        g->batches_proposed++;
        g->cmds_proposed += b->n;
    }
}

/* ------------------------------------------------------------------------ */
/* Leader tracking                                                          */

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct rgroup_barrier *br =
        container_of(req, struct rgroup_barrier, req);
    struct rgroup *g = br->g;
    uint64_t epoch = br->epoch;

    free(br);
    if (epoch != g->lead_epoch || !g->leading || g->closing) {
        return; /* an older leadership; the loss was handled by poll */
    }
    if (status != 0) {
        log_warn("raft group %s: leader barrier failed: %s (%d); retrying",
                 g->name, raft_strerror(status), status);
        g->barrier_needed = true;
        return;
    }
    g->ready = true;
    log_info("raft group %s: leader ready (id %" PRIu64 ", term %" PRIu64
             ", applied %" PRIu64 ")",
             g->name, g->id, (uint64_t)g->raft.current_term,
             (uint64_t)raft_last_applied(&g->raft));
}

static void issue_barrier(struct rgroup *g)
{
    struct rgroup_barrier *br = xmalloc(sizeof *br);
    int rv;

    br->g = g;
    br->epoch = g->lead_epoch;
    rv = raft_barrier(&g->raft, &br->req, barrier_cb);
    if (rv != 0) {
        /* e.g. a transfer in progress: try again next loop turn */
        free(br);
        log_debug("raft group %s: raft_barrier: %s (%d)", g->name,
                  raft_strerror(rv), rv);
        return;
    }
    g->barrier_needed = false;
}

static void lose_leadership(struct rgroup *g)
{
    log_info("raft group %s: no longer leader (term %" PRIu64 ", state %d)",
             g->name, (uint64_t)g->raft.current_term, raft_state(&g->raft));
    g->leading = false;
    g->ready = false;
    g->barrier_needed = false;
    g->lead_epoch++;
    fail_queue(g, RGROUP_ENOTLEADER);
}

static void poll_state(struct rgroup *g)
{
    struct raft *r = &g->raft;
    int st = raft_state(r);
    uint64_t term = r->current_term;
    raft_id lid = 0;
    const char *laddr = NULL;

    raft_leader(r, &lid, &laddr);
    if (lid != 0 && (lid != g->known_leader || term != g->known_leader_term)) {
        g->leader_changes++;
        g->known_leader = lid;
        g->known_leader_term = term;
        log_debug("raft group %s: leader is %" PRIu64 " (%s) in term %" PRIu64,
                  g->name, (uint64_t)lid, laddr != NULL ? laddr : "?", term);
    }
    if (g->leading && (st != RAFT_LEADER || term != g->lead_term)) {
        lose_leadership(g);
    }
    if (st == RAFT_LEADER && !g->leading) {
        g->leading = true;
        g->lead_term = term;
        g->lead_epoch++;
        g->barrier_needed = true;
        log_info("raft group %s: elected leader in term %" PRIu64, g->name,
                 term);
    }
    if (g->leading && g->barrier_needed) {
        issue_barrier(g);
    }
    if (st == RAFT_UNAVAILABLE && !g->stopped_logged) {
        /* raft stops a replica for good on an error it will not recover
         * from (a disk write, a log conflicting with committed entries):
         * the replica stays behind without a word otherwise */
        g->stopped_logged = true;
        log_error("raft group %s: replica %" PRIu64 " stopped by raft "
                  "(term %" PRIu64 ", commit %" PRIu64 ", applied %" PRIu64
                  ", last index %" PRIu64 "): %s",
                  g->name, (uint64_t)g->id, term, (uint64_t)r->commit_index,
                  (uint64_t)r->last_applied, (uint64_t)raft_last_index(r),
                  raft_errmsg(r)[0] ? raft_errmsg(r) : "no message");
    }
}

/* Entries between two looks at the entry size (log_memory_bytes). */
#define LOG_BOUND_EVERY 64u

static unsigned clamp_entries(uint64_t n, unsigned lo, unsigned hi)
{
    if (n > hi) {
        return hi;
    }
    return n < lo ? (lo < hi ? lo : hi) : (unsigned)n;
}

/* Keep raft's in-memory log near log_memory_bytes: snapshot and truncate
 * by entry counts that fit it at the size of the entries applied lately. */
static void bound_log_memory(struct rgroup *g)
{
    uint64_t entries = g->fsm.entries_applied - g->bound_entries;
    uint64_t avg;
    unsigned threshold, trailing;

    if (entries < LOG_BOUND_EVERY || g->log_memory_bytes == SIZE_MAX) {
        return;
    }
    avg = (g->fsm.entry_bytes_applied - g->bound_bytes) / entries;
    g->bound_entries = g->fsm.entries_applied;
    g->bound_bytes = g->fsm.entry_bytes_applied;
    if (avg == 0) {
        avg = 1;
    }
    threshold = clamp_entries(g->log_memory_bytes / 4 * 3 / avg,
                              RGROUP_MIN_THRESHOLD, g->max_threshold);
    trailing = clamp_entries(g->log_memory_bytes / 4 / avg,
                             RGROUP_MIN_TRAILING, g->max_trailing);
    if (threshold != g->threshold || trailing != g->trailing) {
        log_debug("raft group %s: entries of ~%" PRIu64 " bytes: snapshot "
                  "every %u entries, %u kept after",
                  g->name, avg, threshold, trailing);
        g->threshold = threshold;
        g->trailing = trailing;
        raft_set_snapshot_threshold(&g->raft, threshold);
        raft_set_snapshot_trailing(&g->raft, trailing);
    }
}

/* Runs on every loop turn, from our prepare and check handles. */
static void process(struct rgroup *g)
{
    if (!g->closing) {
        poll_state(g);
        rmember_process(&g->member);
    }
    deliver(g);
    if (!g->closing) {
        flush(g);
        deliver(g);
    }
    update_idle(g);
    if (!g->closing) {
        bound_log_memory(g);
    }
    check_counters(g);
    if (deep_check_due(++g->turns, g->q_len + g->n_inflight)) {
        rgroup_check(g);
    }
}

static void prepare_cb(uv_prepare_t *h)
{
    process(h->data);
}

static void check_cb(uv_check_t *h)
{
    struct rgroup *g = h->data;

    /* once a turn (not in prepare too): a slice is the loop's time */
    if (!g->closing) {
        rfsm_snapshot_slice(&g->fsm);
    }
    process(g);
}

static void idle_cb(uv_idle_t *h)
{
    (void)h; /* only keeps uv_run from blocking; check_cb does the work */
}

static void snap_wake_cb(uv_async_t *h)
{
    (void)h; /* only ends the poll; check_cb writes the next slice */
}

/* rfsm's wake hook, on the snapshot worker's thread: the handle lives
 * until raft has closed, which waits for the worker. */
static void snap_wake(void *data)
{
    struct rgroup *g = data;

    uv_async_send(&g->snap_wake);
}

/* Not inside raft code: the expired commands' callbacks run from the
 * check handle, in this turn (push_done starts the idle handle). */
static void expiry_cb(uv_timer_t *t)
{
    struct rgroup *g = t->data;

    g->expiry_at = 0;
    if (!g->closing) {
        drop_expired(g);
    }
}

/* ------------------------------------------------------------------------ */
/* Close                                                                    */

static void io_close_once_cb(struct raft_io *io)
{
    struct rgroup *g = container_of(io, struct rgroup, io);

    if (g->io_closed) {
        return; /* libraft's second call: see struct rgroup */
    }
    g->io_closed = true;
    g->raft_io_close_cb(io);
}

static void io_close_wrap(struct raft_io *io, raft_io_close_cb cb)
{
    struct rgroup *g = container_of(io, struct rgroup, io);

    g->raft_io_close_cb = cb;
    g->io_close(io, io_close_once_cb);
}

static void free_closed_cb(uv_handle_t *h)
{
    struct rgroup *g = h->data;
    rgroup_close_cb cb = g->close_cb;
    void *data = g->close_data;

    raft_uv_close(&g->io);
    rtransport_release(&g->transport);
    rfsm_close(&g->fsm);
    free(g->dir);
    free(g);
    if (cb != NULL) {
        cb(data);
    }
}

static void free_timer_cb(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, free_closed_cb);
}

static void finish(struct rgroup *g)
{
    /* raft_close failed every pending request already; belt and braces */
    while (g->fl_head != NULL) {
        struct rgroup_batch *b = g->fl_head;

        inflight_unlink(g, b);
        push_done(g, b, b->applied ? RGROUP_OK : RGROUP_EUNKNOWN);
    }
    fail_queue(g, RGROUP_ECLOSING);
    deliver(g);
    rmember_close(&g->member);
    /* raft may still run close callbacks of this turn against io and
     * transport: release them (and us) on a later turn */
    uv_timer_init(g->loop, &g->free_timer);
    g->free_timer.data = g;
    uv_timer_start(&g->free_timer, free_timer_cb, 0, 0);
}

static void handle_close_cb(uv_handle_t *h)
{
    struct rgroup *g = h->data;

    if (--g->handles_open == 0) {
        finish(g);
    }
}

static void on_raft_closed(struct raft *r)
{
    struct rgroup *g = container_of(r, struct rgroup, raft);

    g->raft_closed = true;
    if (!g->handles_init) {
        finish(g);
        return;
    }
    g->handles_open = 5;
    uv_close((uv_handle_t *)&g->expiry, handle_close_cb);
    uv_close((uv_handle_t *)&g->prepare, handle_close_cb);
    uv_close((uv_handle_t *)&g->check, handle_close_cb);
    uv_close((uv_handle_t *)&g->idle, handle_close_cb);
    uv_close((uv_handle_t *)&g->snap_wake, handle_close_cb);
}

void rgroup_close(struct rgroup *g, rgroup_close_cb cb, void *data)
{
    if (g->closing) {
        log_error("raft group %s: rgroup_close called twice", g->name);
        return;
    }
    log_info("raft group %s: closing", g->name);
    g->closing = true;
    g->ready = false;
    g->leading = false;
    g->close_cb = cb;
    g->close_data = data;
    if (g->handles_init) {
        uv_idle_stop(&g->idle);
        uv_timer_stop(&g->expiry);
    }
    fail_queue(g, RGROUP_ECLOSING);
    /* fails in-flight applies (-> EUNKNOWN unless applied) synchronously */
    rfsm_abort_snapshot(&g->fsm);
    raft_close(&g->raft, on_raft_closed);
}

/* ------------------------------------------------------------------------ */
/* Membership: raft/member.c does the work                                  */

/* member.c's wake hook, possibly from inside raft: a step finished, so
 * process() must run rmember_process() before the loop blocks. */
static void member_wake(void *data)
{
    update_idle(data);
}

/* Whether a membership change may start here (member.h: @gate). */
static int change_gate(const struct rgroup *g)
{
    if (g->closing) {
        return RGROUP_ECLOSING;
    }
    if (!rgroup_is_leader(g)) {
        return RGROUP_ENOTLEADER;
    }
    return RGROUP_OK;
}

int rgroup_add_voter(struct rgroup *g,
                     uint64_t id,
                     const char *address,
                     rgroup_change_cb cb,
                     void *data)
{
    return rmember_add_voter(&g->member, change_gate(g), id, address, cb,
                             data);
}

int rgroup_remove_member(struct rgroup *g,
                         uint64_t id,
                         rgroup_change_cb cb,
                         void *data)
{
    return rmember_remove(&g->member, change_gate(g), id, cb, data);
}

int rgroup_hand_off(struct rgroup *g)
{
    int gate = RGROUP_OK;

    if (g->closing) {
        gate = RGROUP_ECLOSING;
    } else if (raft_state(&g->raft) != RAFT_LEADER) {
        gate = RGROUP_ENOTLEADER;
    }
    return rmember_hand_off(&g->member, gate);
}

unsigned rgroup_members(const struct rgroup *g,
                        struct rgroup_member_info *out,
                        unsigned max)
{
    if (g->raft_closed) {
        return 0;
    }
    return rmember_list(&g->member, out, max);
}

/* ------------------------------------------------------------------------ */
/* Construction                                                             */

/* Port 0 (any free port) is allowed only where no peer must reach us: a
 * single-member group. */
/* "host:port": an IPv4 literal or a DNS name (raft/transport resolves
 * names on every connect). */
static int check_address(const char *addr, bool allow_port_zero, char *errmsg,
                         size_t errlen)
{
    char host[256];
    int port;
    size_t i;

    if (rtransport_split(addr, host, sizeof host, &port) != 0 ||
        (port == 0 && !allow_port_zero)) {
        snprintf(errmsg, errlen,
                 "raft address '%s' is not 'host:port' (an IPv4 literal or "
                 "a DNS name, and a port)",
                 addr);
        return -1;
    }
    for (i = 0; host[i] != '\0'; i++) {
        char c = host[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_')) {
            snprintf(errmsg, errlen,
                     "raft address '%s': '%s' is neither an IPv4 literal nor "
                     "a host name (raft 0.15 takes no IPv6)",
                     addr, host);
            return -1;
        }
    }
    return 0;
}

static int check_config(const struct rgroup_config *cfg,
                        const struct rgroup_fsm *fsm,
                        const char **self_addr,
                        char *errmsg,
                        size_t errlen)
{
    unsigned i;
    unsigned j;
    unsigned election =
        cfg->election_ms ? cfg->election_ms : DEFAULT_ELECTION_MS;
    unsigned heartbeat =
        cfg->heartbeat_ms ? cfg->heartbeat_ms : DEFAULT_HEARTBEAT_MS;

    *self_addr = NULL;
    if (fsm == NULL || fsm->apply == NULL || fsm->snapshot == NULL ||
        fsm->restore == NULL ||
        (fsm->snapshot_begin == NULL) != (fsm->snapshot_step == NULL) ||
        (fsm->snapshot_begin == NULL) != (fsm->snapshot_end == NULL) ||
        (fsm->seal_begin == NULL) != (fsm->seal_update == NULL) ||
        (fsm->seal_begin == NULL) != (fsm->seal_end == NULL) ||
        (fsm->seal_begin != NULL && fsm->snapshot_begin == NULL)) {
        snprintf(errmsg, errlen, "state machine callbacks missing");
        return -1;
    }
    if (cfg->dir == NULL || cfg->dir[0] == '\0') {
        snprintf(errmsg, errlen, "no data directory");
        return -1;
    }
    if (strlen(cfg->dir) >= PATH_MAX - 64) {
        snprintf(errmsg, errlen, "data directory path too long");
        return -1;
    }
    if (cfg->id == 0) {
        snprintf(errmsg, errlen, "replica id must be > 0");
        return -1;
    }
    if (cfg->marker_dir != NULL && (cfg->name == NULL || cfg->name[0] == '\0')) {
        snprintf(errmsg, errlen, "an identity marker needs a group name");
        return -1;
    }
    if (cfg->n_members == 0 || cfg->n_members > RGROUP_MAX_MEMBERS) {
        snprintf(errmsg, errlen, "need 1..%d members, got %u",
                 RGROUP_MAX_MEMBERS, cfg->n_members);
        return -1;
    }
    if (heartbeat >= election) {
        snprintf(errmsg, errlen,
                 "heartbeat %u ms must be below the election timeout %u ms",
                 heartbeat, election);
        return -1;
    }
    for (i = 0; i < cfg->n_members; i++) {
        const struct rgroup_member *m = &cfg->members[i];

        if (m->id == 0) {
            snprintf(errmsg, errlen, "member %u: id must be > 0", i);
            return -1;
        }
        if (memchr(m->raft_address, '\0', sizeof m->raft_address) == NULL) {
            snprintf(errmsg, errlen, "member %" PRIu64 ": address too long",
                     m->id);
            return -1;
        }
        if (check_address(m->raft_address, cfg->n_members == 1, errmsg,
                          errlen) != 0) {
            return -1;
        }
        for (j = 0; j < i; j++) {
            if (cfg->members[j].id == m->id) {
                snprintf(errmsg, errlen, "member id %" PRIu64 " repeated",
                         m->id);
                return -1;
            }
        }
        if (m->id == cfg->id) {
            *self_addr = m->raft_address;
        }
    }
    if (*self_addr == NULL) {
        snprintf(errmsg, errlen, "replica id %" PRIu64 " is not a member",
                 cfg->id);
        return -1;
    }
    return 0;
}

/* mkdir -p @dir, then require a writable directory. */
static int prepare_dir(const char *dir, char *errmsg, size_t errlen)
{
    char sub[PATH_MAX + 64];
    struct stat st;

    if (mkdir_p(dir, sub, sizeof(sub)) != 0) {
        snprintf(errmsg, errlen, "data directory '%s': %s", dir, sub);
        return -1;
    }
    if (stat(dir, &st) != 0) {
        snprintf(errmsg, errlen, "data directory '%s': %s", dir,
                 strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(errmsg, errlen, "data directory '%s' is not a directory", dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(errmsg, errlen, "data directory '%s' is not writable", dir);
        return -1;
    }
    return 0;
}

/* Once the data directory is what it will be (bootstrapped, or raft's
 * metadata written for a joining replica), record whose it is, before
 * raft starts: from then on its loss is noticed. */
static int record_identity(const struct rgroup *g,
                           const struct rgroup_config *cfg,
                           int verdict,
                           const struct rident *ident,
                           char *errmsg,
                           size_t errlen)
{
    if (cfg->marker_dir == NULL || verdict == RIDENT_KNOWN) {
        return 0;
    }
    if (verdict == RIDENT_REJOIN) {
        log_warn("raft group %s: data lost, rejoining as member %" PRIu64
                 " with an empty log (--rejoin): it must have been removed "
                 "from the group; waiting to be added back",
                 g->name, g->id);
    } else if (verdict == RIDENT_ADOPT) {
        log_info("raft group %s: recording the identity of the data in '%s'",
                 g->name, g->dir);
    }
    return rident_record(cfg->marker_dir, g->dir, ident, errmsg, errlen);
}

/* Release a group whose raft_init succeeded but that failed later: raft must
 * be closed asynchronously; finish() frees it without a user callback. */
static void abandon(struct rgroup *g)
{
    g->closing = true;
    rfsm_abort_snapshot(&g->fsm);
    raft_close(&g->raft, on_raft_closed);
}

struct rgroup *rgroup_new(uv_loop_t *loop,
                          const struct rgroup_config *cfg,
                          const struct rgroup_fsm *fsm,
                          char *errmsg,
                          size_t errlen)
{
    struct raft_configuration conf;
    struct rgroup *g;
    struct rident ident;
    const char *self_addr;
    int verdict = RIDENT_KNOWN;
    bool join;
    unsigned i;
    int rv;

    if (errlen > 0) {
        errmsg[0] = '\0';
    }
    if (loop == NULL || cfg == NULL) {
        snprintf(errmsg, errlen, "no loop or configuration");
        return NULL;
    }
    if (check_config(cfg, fsm, &self_addr, errmsg, errlen) != 0) {
        return NULL;
    }
    if (prepare_dir(cfg->dir, errmsg, errlen) != 0) {
        return NULL;
    }
    if (cfg->marker_dir != NULL) {
        verdict = rident_check(cfg->marker_dir, cfg->dir, cfg->name, cfg->id,
                               cfg->rejoin, &ident, errmsg, errlen);
        if (verdict < 0) {
            return NULL;
        }
    }
    join = cfg->join || verdict == RIDENT_REJOIN;

    g = xcalloc(1, sizeof *g);
    g->loop = loop;
    snprintf(g->name, sizeof g->name, "%s", cfg->name ? cfg->name : "rgroup");
    g->dir = xstrdup(cfg->dir);
    g->id = cfg->id;
    g->max_entry_bytes =
        cfg->max_entry_bytes ? cfg->max_entry_bytes : DEFAULT_MAX_ENTRY_BYTES;
    g->max_inflight =
        cfg->max_inflight ? cfg->max_inflight : DEFAULT_MAX_INFLIGHT;
    g->max_queued_cmds = cfg->max_queued_cmds ? cfg->max_queued_cmds
                                              : RGROUP_MAX_QUEUED_CMDS_DEFAULT;
    g->max_queued_bytes = cfg->max_queued_bytes
                              ? cfg->max_queued_bytes
                              : RGROUP_MAX_QUEUED_BYTES_DEFAULT;
    g->proposer = random_id_nonzero();
    rmember_init(&g->member, &g->raft, g->name, g->id, member_wake, g);

    rv = rtransport_init(&g->transport, loop, self_addr);
    if (rv != 0) {
        snprintf(errmsg, errlen, "raft transport: %s (%d)", raft_strerror(rv),
                 rv);
        goto err_after_alloc;
    }
    rv = raft_uv_init(&g->io, loop, g->dir, &g->transport);
    if (rv != 0) {
        snprintf(errmsg, errlen, "data directory '%s': %s (%d)", g->dir,
                 g->io.errmsg[0] ? g->io.errmsg : raft_strerror(rv), rv);
        goto err_after_transport;
    }
    /* rfsm compresses snapshots itself */
    raft_uv_set_snapshot_compression(&g->io, false);

    rfsm_init(&g->fsm, fsm);
    g->fsm.claim = claim_cb;
    g->fsm.claim_data = g;
    g->fsm.stamp = &g->stamp;
    g->fsm.raft = &g->raft;
    if (!cfg->inline_snapshots ||
        (cfg->incremental_snapshots && fsm->snapshot_begin != NULL)) {
        /* raft 0.15's raft_uv_init says version 1 although its io has
         * async_work, and raft_init refuses an async fsm on a version 1 io
         * (fixed upstream in 0.17.1) */
        if (g->io.version < 2) {
            g->io.version = 2;
        }
        if (cfg->incremental_snapshots && fsm->snapshot_begin != NULL) {
            rfsm_slice_snapshots(&g->fsm);
        } else {
            rfsm_fork_snapshots(&g->fsm);
        }
    }

    /* io->init: checks the directory, probes O_DIRECT/KAIO, loads metadata */
    g->io_close = g->io.close;
    g->io.close = io_close_wrap;
    /* its probe of the directory must reach the kernel as it is */
    kaio_probe_begin();
    rv = raft_init(&g->raft, &g->io, &g->fsm.raft_fsm, cfg->id, self_addr);
    kaio_probe_end();
    if (rv != 0) {
        snprintf(errmsg, errlen, "data directory '%s': raft_init: %s (%d)",
                 g->dir,
                 raft_errmsg(&g->raft)[0] ? raft_errmsg(&g->raft)
                                          : raft_strerror(rv),
                 rv);
        goto err_after_io;
    }

    raft_configuration_init(&conf);
    for (i = 0; i < cfg->n_members && !join; i++) {
        rv = raft_configuration_add(&conf, cfg->members[i].id,
                                    cfg->members[i].raft_address, RAFT_VOTER);
        if (rv != 0) {
            break;
        }
    }
    if (rv == 0 && !join) {
        rv = raft_bootstrap(&g->raft, &conf);
    }
    raft_configuration_close(&conf);
    if (rv == RAFT_CANTBOOTSTRAP) {
        log_info("raft group %s: existing state in '%s'", g->name, g->dir);
    } else if (rv != 0) {
        snprintf(errmsg, errlen, "raft group %s: bootstrap in '%s': %s (%d)",
                 g->name, g->dir,
                 raft_errmsg(&g->raft)[0] ? raft_errmsg(&g->raft)
                                          : raft_strerror(rv),
                 rv);
        abandon(g);
        return NULL;
    } else if (!join) {
        log_info("raft group %s: bootstrapped '%s' with %u members", g->name,
                 g->dir, cfg->n_members);
    }
    if (record_identity(g, cfg, verdict, &ident, errmsg, errlen) != 0) {
        abandon(g);
        return NULL;
    }

    raft_set_election_timeout(
        &g->raft, cfg->election_ms ? cfg->election_ms : DEFAULT_ELECTION_MS);
    raft_set_heartbeat_timeout(
        &g->raft, cfg->heartbeat_ms ? cfg->heartbeat_ms : DEFAULT_HEARTBEAT_MS);
    g->max_threshold = cfg->snapshot_threshold ? cfg->snapshot_threshold
                                               : DEFAULT_SNAPSHOT_THRESHOLD;
    g->max_trailing = cfg->snapshot_trailing ? cfg->snapshot_trailing
                                             : DEFAULT_SNAPSHOT_TRAILING;
    g->threshold = g->max_threshold;
    g->trailing = g->max_trailing;
    g->log_memory_bytes = cfg->log_memory_bytes ? cfg->log_memory_bytes
                                                : RGROUP_LOG_MEMORY_DEFAULT;
    raft_set_snapshot_threshold(&g->raft, g->threshold);
    raft_set_snapshot_trailing(&g->raft, g->trailing);
    raft_set_pre_vote(&g->raft, true);

    /* loads the snapshot (fsm restore) and the log, starts ticking and
     * listening; a single voter elects itself here */
    rv = raft_start(&g->raft);
    if (rv != 0) {
        if (raft_errmsg(&g->raft)[0] != '\0') {
            snprintf(errmsg, errlen,
                     "raft group %s: start in '%s' on %s: %s (%d)", g->name,
                     g->dir, self_addr, raft_errmsg(&g->raft), rv);
        } else {
            /* 0.15 gives no detail when the listener cannot bind */
            snprintf(errmsg, errlen,
                     "raft group %s: start in '%s': %s (%d); is %s already "
                     "in use?",
                     g->name, g->dir, raft_strerror(rv), rv, self_addr);
        }
        abandon(g);
        return NULL;
    }

    uv_prepare_init(loop, &g->prepare);
    uv_check_init(loop, &g->check);
    uv_idle_init(loop, &g->idle);
    uv_timer_init(loop, &g->expiry);
    uv_async_init(loop, &g->snap_wake, snap_wake_cb);
    g->expiry.data = g;
    g->prepare.data = g;
    g->check.data = g;
    g->idle.data = g;
    g->snap_wake.data = g;
    g->handles_init = true;
    /* before the first snapshot: raft takes none before the loop runs */
    g->fsm.wake = snap_wake;
    g->fsm.wake_data = g;
    uv_prepare_start(&g->prepare, prepare_cb);
    uv_check_start(&g->check, check_cb);
    log_info("raft group %s: replica %" PRIu64 " started on %s (term %" PRIu64
             ", last index %" PRIu64 ")",
             g->name, g->id, self_addr, (uint64_t)g->raft.current_term,
             (uint64_t)raft_last_index(&g->raft));
    if (g->raft.configuration.n == 0) {
        log_info("raft group %s: no configuration yet: waiting for a leader "
                 "to add replica %" PRIu64 " (ringmqctl member add)",
                 g->name, g->id);
    }
    return g;

err_after_io:
    raft_uv_close(&g->io);
err_after_transport:
    rtransport_release(&g->transport);
err_after_alloc:
    free(g->dir);
    free(g);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Submit and introspection                                                 */

int rgroup_submit(struct rgroup *g, struct rgroup_cmd *cmd)
{
    if (cmd == NULL || cmd->cb == NULL ||
        (cmd->payload == NULL && cmd->len > 0)) {
        return RGROUP_EINVAL;
    }
    if (g->closing) {
        return RGROUP_ECLOSING;
    }
    if (cmd->len > g->max_entry_bytes ||
        RFSM_BATCH_OVERHEAD + rfsm_cmd_size(cmd->len) > g->max_entry_bytes) {
        return RGROUP_ETOOBIG;
    }
    if (!g->ready || raft_state(&g->raft) != RAFT_LEADER) {
        return RGROUP_ENOTLEADER;
    }
    /* Admission control: entries that do not commit (a slow disk,
     * followers that do not answer) must not grow the queue without
     * bound. An empty queue takes any command that fits an entry. */
    if (g->q_len >= g->max_queued_cmds ||
        (g->q_len > 0 && g->q_bytes + cmd->len > g->max_queued_bytes)) {
        return RGROUP_EFULL;
    }
    cmd->next = NULL;
    if (g->q_tail != NULL) {
        g->q_tail->next = cmd;
    } else {
        g->q_head = cmd;
    }
    g->q_tail = cmd;
    g->q_len++;
    g->q_bytes += cmd->len;
    if (cmd->deadline_ms != 0) {
        g->q_deadlines++;
    }
    cmd->submit_no = ++g->submitted;
    if (cmd->deadline_ms != 0) {
        arm_expiry(g, cmd->deadline_ms);
    }
    check_counters(g);
    update_idle(g);
    return RGROUP_OK;
}

bool rgroup_is_leader(const struct rgroup *g)
{
    return g->ready && !g->closing &&
           raft_state((struct raft *)&g->raft) == RAFT_LEADER;
}

uint64_t rgroup_leader_id(const struct rgroup *g)
{
    raft_id id = 0;
    const char *addr = NULL;

    if (g->raft_closed) {
        return 0;
    }
    raft_leader((struct raft *)&g->raft, &id, &addr);
    return id;
}

/* The leader's replication state of each other member (struct
 * raft_progress is public in 0.15; its state values are raft's
 * PROGRESS__PROBE, __PIPELINE, __SNAPSHOT). */
static void progress_text(const struct raft *r, char *buf, size_t len)
{
    static const char *const modes[] = {"probe", "pipeline", "snapshot"};
    size_t off = 0;
    unsigned i;

    buf[0] = '\0';
    for (i = 0; i < r->configuration.n && off < len; i++) {
        const struct raft_progress *p = &r->leader_state.progress[i];
        int n;

        if (r->configuration.servers[i].id == r->id) {
            continue;
        }
        n = snprintf(buf + off, len - off, "%s%llu:%s:%llu:%llu",
                     off ? "," : "",
                     (unsigned long long)r->configuration.servers[i].id,
                     p->state < 3 ? modes[p->state] : "?",
                     (unsigned long long)p->next_index,
                     (unsigned long long)p->match_index);
        if (n > 0 && p->state == 2 && (size_t)n < len - off) {
            n += snprintf(buf + off + n, len - off - n, ":%llu",
                          (unsigned long long)p->snapshot_index);
        }
        if (n < 0 || (size_t)n >= len - off) {
            break;
        }
        off += (size_t)n;
    }
}

void rgroup_log_memory(const struct rgroup *g, uint64_t *entries,
                       uint64_t *bytes)
{
    const struct raft_log *log = &g->raft.log;
    size_t i;

    *entries = 0;
    *bytes = 0;
    if (g->raft_closed) {
        return;
    }
    for (i = log->front; i != log->back; i = (i + 1) % log->size) {
        (*entries)++;
        *bytes += log->entries[i].buf.len;
    }
}

void rgroup_status(const struct rgroup *g, struct rgroup_status *out)
{
    struct raft *r = (struct raft *)&g->raft;
    int st = g->raft_closed ? RAFT_UNAVAILABLE : raft_state(r);

    memset(out, 0, sizeof *out);
    switch (st) {
        case RAFT_LEADER:
            out->state = "leader";
            break;
        case RAFT_FOLLOWER:
            out->state = "follower";
            break;
        case RAFT_CANDIDATE:
            out->state = "candidate";
            break;
        default:
            out->state = "unavailable";
            break;
    }
    out->ready = rgroup_is_leader(g);
    out->id = g->id;
    out->leader_id = rgroup_leader_id(g);
    out->term = r->current_term;
    out->commit_index = r->commit_index;
    out->last_applied = r->last_applied;
    out->last_stored = r->last_stored;
    out->snapshot_threshold = g->threshold;
    out->snapshot_trailing = g->trailing;
    if (!g->raft_closed) {
        out->last_index = raft_last_index(r);
        out->snapshot_index = r->log.snapshot.last_index;
    }
    if (st == RAFT_LEADER && r->leader_state.progress != NULL) {
        progress_text(r, out->progress, sizeof out->progress);
    }
    out->snapshots_taken = g->fsm.snapshots_taken;
    out->snapshots_restored = g->fsm.snapshots_restored;
    out->snapshots_sliced = g->fsm.snapshots_sliced;
    out->snapshot_slice_max_us = g->fsm.slice_max_ns / 1000;
    out->snapshot_slice_cpu_max_us = g->fsm.slice_cpu_max_ns / 1000;
    out->snapshot_chunk_waits = g->fsm.slice_waits;
    out->batches_proposed = g->batches_proposed;
    out->cmds_proposed = g->cmds_proposed;
    out->queued_cmds = g->q_len;
    out->queued_bytes = g->q_bytes;
    out->leader_changes = g->leader_changes;
}

uint64_t rgroup_clock_ms(struct rgroup *g)
{
    return clock_stamp_next(&g->stamp, clock_wall_ms(), clock_mono_ms());
}
