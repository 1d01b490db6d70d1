/*
 * cache_svc: see cache_svc.h.
 *
 *   submit(write) -> encode CacheOp -> rgroup_submit ---- batch entry ---->
 *   raft commit -> fsm_apply on every replica -> cache_sm_apply
 *                     (on the proposer, into call->result via mine->data)
 *   -> cmd_done(status 0) -> call->cb
 */
#include "node/cache_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.pb-c.h"
#include "common/clock.h"
#include "common/log.h"
#include "node/cache_export.h"
#include "node/svc_shell.h"
#include "proto/cache_pb.h"
#include "proto/pb_arena.h"
#include "sm/shard_ring.h"

/* How often a leader looks whether its shard still needs its seed. */
#define SEED_TICK_MS 200

struct cache_svc {
    char name[64];
    bool linearizable_reads;
    struct cache_sm *sm;
    struct rgroup *group;
    struct cache_op_config seed; /* this node's flags: they seed a new shard */
    bool seeding;                /* a seed CONFIG is on its way */
    void *ring_seed;             /* the node's map's ring spec for this shard */
    size_t ring_seed_len;
    bool ring_seeding;           /* a seed RING is on its way */
    struct cache_export *export; /* a move coordinator's reads */
    bool told_flags_differ;      /* logged that the log's settings win */
    uv_timer_t tick;             /* runs while the shard is unconfigured */
    struct pb_arena op_arena;    /* what apply unpacks a command into */
    bool tick_started;
    unsigned closes_left;
    void (*close_cb)(void *data);
    void *close_data;
};

static void on_tick(uv_timer_t *t);
static void check_flags(struct cache_svc *svc);

/* Something a leader must still propose from this node's seeds. */
static bool needs_seed(const struct cache_svc *svc)
{
    return !cache_sm_configured(svc->sm) ||
           (svc->ring_seed != NULL && cache_sm_ring_epoch(svc->sm) == 0);
}

/* A write on its way through Raft. */
struct pending_write {
    struct rgroup_cmd cmd;
    struct cache_call *call;
    uint8_t *payload;
};

/* Read @op's key at @now_ms, never before the applied log's clock: a
 * leader whose clock is behind must not revive items the log expired. */
static void get_at(struct cache_svc *svc, uint64_t now_ms,
                   const struct cache_op *op, struct cache_result *res)
{
    struct cache_sm_stats st;

    cache_sm_stats(svc->sm, &st);
    if (st.clock_ms > now_ms) {
        now_ms = st.clock_ms;
    }
    cache_sm_get(svc->sm, now_ms, op->key, op->key_len, res);
}

static void fsm_apply(void *data, uint64_t time_ms, const void *cmd, size_t len,
                      struct rgroup_cmd *mine)
{
    struct cache_svc *svc = data;
    Ringmq__CacheOp *pb;
    struct cache_op op;
    struct cache_result scratch;
    struct cache_result *res = &scratch;

    cache_result_init(&scratch);
    if (mine != NULL) {
        struct pending_write *w = mine->data;
        res = &w->call->result;
    }
    pb = ringmq__cache_op__unpack(pb_arena_allocator(&svc->op_arena), len,
                                  cmd);
    if (pb == NULL || cache_op_from_pb(pb, &op) != 0) {
        /* Only our own leader writes entries, so this is a bug or a newer
         * peer: answer the proposer, keep every replica alike. */
        log_error("%s: undecodable cache command (%zu bytes) skipped",
                  svc->name, len);
        res->status = CACHE_BAD_REQUEST;
    } else if (op.type == CACHE_OP_GET) {
        /* A linearizable read: it takes effect at its place in the log,
         * which lies between its call and its reply. Only the proposer has
         * someone to answer, so only it reads; the other replicas skip the
         * command. That keeps them alike because cache_sm_get has no side
         * effects (cache_sm.h: it takes a const sm, does no LRU bump -
         * eviction follows write order - and no lazy delete of expired
         * items, which only writes do), and because the read does not move
         * the sm's clock either: state stays a function of the writes. */
        if (mine != NULL) {
            get_at(svc, time_ms, &op, res);
        }
    } else {
        cache_sm_apply(svc->sm, time_ms, &op, res);
        if (op.type == CACHE_OP_CONFIG) {
            check_flags(svc);
        }
    }
    pb_arena_reset(&svc->op_arena); /* pb, and op's borrowed bytes */
    cache_result_clear(&scratch);
}

static int fsm_snapshot(void *data, void **buf, size_t *len)
{
    struct cache_svc *svc = data;
    return cache_sm_snapshot(svc->sm, malloc, buf, len);
}

/* An incremental snapshot (cache_sm.h), written in slices by raft/fsm. */
static void *fsm_snapshot_begin(void *data, size_t *len)
{
    struct cache_svc *svc = data;
    return cache_sm_snapshot_begin(svc->sm, len);
}

static size_t fsm_snapshot_step(void *snap, void *out, size_t room)
{
    return cache_sm_snapshot_step(snap, out, room);
}

static void fsm_snapshot_end(void *snap)
{
    cache_sm_snapshot_end(snap);
}

/* The seal as the chunks go past (raft/types.h): raft keeps the state in
 * its opaque words, cache_sm in its own struct. */
_Static_assert(sizeof(struct cache_sm_seal) <=
                   sizeof(((struct rgroup_seal *)0)->word),
               "the seal's state fits raft's words");
_Static_assert(CACHE_SM_SEAL_LEN == RGROUP_SEAL_LEN, "the trailer");

static void fsm_seal_begin(struct rgroup_seal *st, size_t len)
{
    struct cache_sm_seal cs;

    cache_sm_seal_begin(&cs, len);
    memcpy(st->word, &cs, sizeof cs);
}

static void fsm_seal_update(struct rgroup_seal *st, const void *bytes,
                            size_t n)
{
    struct cache_sm_seal cs;

    memcpy(&cs, st->word, sizeof cs);
    cache_sm_seal_update(&cs, bytes, n);
    memcpy(st->word, &cs, sizeof cs);
}

static void fsm_seal_end(struct rgroup_seal *st, void *trailer)
{
    struct cache_sm_seal cs;

    memcpy(&cs, st->word, sizeof cs);
    cache_sm_seal_end(&cs, trailer);
}

static int fsm_restore(void *data, const void *buf, size_t len)
{
    struct cache_svc *svc = data;
    int rv = cache_sm_restore(svc->sm, buf, len);

    check_flags(svc);
    if (svc->tick_started && needs_seed(svc)) {
        /* a snapshot from before settings were in the log: seed again (at
         * start, rgroup_new restores before the tick exists and starts) */
        uv_timer_start(&svc->tick, on_tick, SEED_TICK_MS, SEED_TICK_MS);
    }
    return rv;
}

struct cache_svc *cache_svc_new(uv_loop_t *loop,
                                const struct rgroup_config *group,
                                const struct cache_sm_config *seed,
                                bool linearizable_reads, char *errmsg,
                                size_t errlen)
{
    struct cache_svc *svc = xcalloc(1, sizeof(*svc));
    struct rgroup_fsm fsm = {
        .data = svc,
        .apply = fsm_apply,
        .snapshot = fsm_snapshot,
        .restore = fsm_restore,
        .snapshot_begin = fsm_snapshot_begin,
        .snapshot_step = fsm_snapshot_step,
        .snapshot_end = fsm_snapshot_end,
        .seal_begin = fsm_seal_begin,
        .seal_update = fsm_seal_update,
        .seal_end = fsm_seal_end,
    };

    snprintf(svc->name, sizeof(svc->name), "%s", group->name);
    svc->linearizable_reads = linearizable_reads;
    pb_arena_init(&svc->op_arena);
    svc->seed.mem_limit = seed->mem_limit;
    svc->seed.item_size_max = seed->item_size_max;
    /* Every replica starts alike (the defaults); the log sets the rest. */
    svc->export = cache_export_new();
    svc->sm = cache_sm_new(NULL);
    if (svc->sm == NULL) {
        snprintf(errmsg, errlen, "%s: cannot allocate the cache", svc->name);
        goto err;
    }
    svc->group = rgroup_new(loop, group, &fsm, errmsg, errlen);
    if (svc->group == NULL) {
        goto err_after_sm;
    }
    uv_timer_init(loop, &svc->tick);
    svc->tick.data = svc;
    uv_timer_start(&svc->tick, on_tick, SEED_TICK_MS, SEED_TICK_MS);
    svc->tick_started = true;
    return svc;

err_after_sm:
    cache_sm_free(svc->sm);
err:
    cache_export_free(svc->export);
    pb_arena_close(&svc->op_arena);
    free(svc);
    return NULL;
}

/* Answered by the cache itself: outcome OK. */
static void complete(struct cache_call *call, enum cache_status status)
{
    call->outcome = OUTCOME_OK;
    call->result.status = status;
    call->cb(call);
}

/* Not (known to be) applied: @rgroup_status is an RGROUP_* code. A command
 * too large for an entry is the cache's answer to an item too large. */
static void fail(struct cache_call *call, int rgroup_status)
{
    cache_result_clear(&call->result);
    if (rgroup_status == RGROUP_ETOOBIG) {
        complete(call, CACHE_TOO_LARGE);
        return;
    }
    call->outcome = svc_outcome(rgroup_status, false);
    call->cb(call);
}

static void write_done(struct rgroup_cmd *cmd, int status)
{
    struct pending_write *w = cmd->data;
    struct cache_call *call = w->call;

    free(w->payload);
    free(w);
    if (status != 0) {
        fail(call, status);
        return;
    }
    call->outcome = OUTCOME_OK;
    call->cb(call);
}

/* Through the log; the proposer's apply fills call->result. Still queued
 * at @deadline_ms (0 = never), it is dropped unproposed: EXPIRED. */
static void propose(struct cache_svc *svc, struct cache_call *call,
                    uint64_t deadline_ms)
{
    struct pending_write *w;
    Ringmq__CacheOp pb;
    int rv;

    w = xcalloc(1, sizeof(*w));
    w->call = call;
    cache_op_to_pb(&call->op, &pb);
    w->payload = xmalloc(ringmq__cache_op__get_packed_size(&pb));
    w->cmd.len = ringmq__cache_op__pack(&pb, w->payload);
    w->cmd.payload = w->payload;
    w->cmd.cb = write_done;
    w->cmd.data = w;
    w->cmd.deadline_ms = deadline_ms;
    rv = rgroup_submit(svc->group, &w->cmd);
    if (rv != 0) {
        free(w->payload);
        free(w);
        fail(call, rv);
    }
}

static void seed_done(struct cache_call *call)
{
    struct cache_svc *svc = call->data;

    if (call->op.type == CACHE_OP_RING) {
        svc->ring_seeding = false;
    } else {
        svc->seeding = false;
    }
    cache_result_clear(&call->result);
    free(call);
}

/* A shard without a ring spec (a new cluster) takes the ring of the
 * node's map the same way: a seed applies only while there is none, so it
 * never undoes a spec installed later by a move. */
static void maybe_seed_ring(struct cache_svc *svc)
{
    struct cache_call *call;

    if (svc->ring_seed == NULL || svc->ring_seeding ||
        cache_sm_ring_epoch(svc->sm) != 0 || !rgroup_is_leader(svc->group)) {
        return;
    }
    call = xcalloc(1, sizeof(*call));
    call->op.type = CACHE_OP_RING;
    call->op.value = svc->ring_seed;
    call->op.value_len = svc->ring_seed_len;
    call->op.config.seed = true;
    call->cb = seed_done;
    call->data = svc;
    svc->ring_seeding = true;
    propose(svc, call, 0);
}

void cache_svc_set_ring_seed(struct cache_svc *svc,
                             const struct cluster_map *map)
{
    free(svc->ring_seed);
    svc->ring_seed = shard_ring_encode_map(map, svc->name,
                                           &svc->ring_seed_len);
}

/* A shard never configured takes its settings from the first leader's
 * flags, through the log like everything apply depends on: proposed before
 * the write that notices it, so that write already runs under them. The
 * seed applies only while the shard is unconfigured, so two leaders'
 * seeds, or a seed racing `ringmqctl shard set`, cannot undo a setting. */
static void maybe_seed(struct cache_svc *svc)
{
    struct cache_call *call;

    if (svc->seeding || cache_sm_configured(svc->sm) ||
        !rgroup_is_leader(svc->group)) {
        return;
    }
    call = xcalloc(1, sizeof(*call));
    call->op.type = CACHE_OP_CONFIG;
    call->op.config = svc->seed;
    call->op.config.seed = true;
    call->cb = seed_done;
    call->data = svc;
    svc->seeding = true;
    propose(svc, call, 0);
}

/* Say once that this node's flags are not its shard's settings: the log's
 * win, and only `ringmqctl shard set` changes them. */
static void check_flags(struct cache_svc *svc)
{
    struct cache_sm_stats st;
    bool differ;

    cache_sm_stats(svc->sm, &st);
    differ = st.configured && (st.limit_maxbytes != svc->seed.mem_limit ||
                               st.item_size_max != svc->seed.item_size_max);
    if (differ && !svc->told_flags_differ) {
        log_warn("%s: this node's memory limit %" PRIu64
                 " and item size max %" PRIu32
                 " are not the shard's (%" PRIu64 ", %" PRIu64
                 "); the shard's settings are in its log and win (change "
                 "them with ringmqctl shard set %s ...)",
                 svc->name, svc->seed.mem_limit, svc->seed.item_size_max,
                 st.limit_maxbytes, st.item_size_max, svc->name);
    }
    svc->told_flags_differ = differ;
}

/* Runs only while the shard is unconfigured: a leader seeds it even before
 * its first write (so `stats` shows the limit the flags asked for). */
static void on_tick(uv_timer_t *t)
{
    struct cache_svc *svc = t->data;

    if (!needs_seed(svc)) {
        uv_timer_stop(t);
        return;
    }
    maybe_seed(svc);
    maybe_seed_ring(svc);
}

void cache_svc_submit(struct cache_svc *svc, struct cache_call *call)
{
    cache_svc_submit_until(svc, call, 0);
}

void cache_svc_submit_until(struct cache_svc *svc, struct cache_call *call,
                            uint64_t deadline_ms)
{
    const struct cache_op *op = &call->op;
    const char *owner = NULL;

    cache_result_init(&call->result);
    if (op->type >= CACHE_OP__COUNT ||
        (cache_op_has_key(op->type) &&
         !cache_key_valid(op->key, op->key_len)) ||
        (op->type == CACHE_OP_CONFIG &&
         !cache_op_config_valid(&op->config))) {
        complete(call, CACHE_BAD_REQUEST);
        return;
    }
    if (!rgroup_is_leader(svc->group)) {
        fail(call, RGROUP_ENOTLEADER);
        return;
    }
    /* A repeat of a write already applied (a router's retry) answers here,
     * without the log, and before its key could be refused as moved away
     * since: what this replica applied is committed. */
    if (cache_sm_answered(svc->sm, op, &call->result)) {
        call->outcome = OUTCOME_OK;
        call->cb(call);
        return;
    }
    if (cache_op_has_key(op->type)) {
        bool tracked;
        enum cache_status st =
            cache_sm_admit(svc->sm, rgroup_clock_ms(svc->group), op->key,
                           op->key_len, cache_op_is_write(op->type), &owner,
                           &tracked);

        /* refused before the log; apply checks again (sm/cache_sm.h) */
        if (st == CACHE_WRONG_OWNER) {
            call->result.value_len = strlen(owner);
            call->result.value = xmemdup(owner, call->result.value_len);
        }
        if (st != CACHE_OK) {
            complete(call, st);
            return;
        }
    }
    if (op->type == CACHE_OP_EXPORT) {
        cache_export_read(svc->export, svc->sm, op, &call->result);
        call->outcome = OUTCOME_OK;
        call->cb(call);
        return;
    }
    if (op->type == CACHE_OP_GET && !svc->linearizable_reads) {
        get_at(svc, rgroup_clock_ms(svc->group), op, &call->result);
        call->outcome = OUTCOME_OK;
        call->cb(call);
        return;
    }
    maybe_seed(svc);
    maybe_seed_ring(svc);
    propose(svc, call, deadline_ms);
}

void cache_svc_status(struct cache_svc *svc, struct cache_svc_status *out,
                      bool with_digest)
{
    rgroup_status(svc->group, &out->raft);
    cache_sm_stats(svc->sm, &out->sm);
    out->digest = with_digest ? cache_sm_digest(svc->sm) : 0;
}

void cache_svc_stats(struct cache_svc *svc, struct buf *out)
{
    struct cache_svc_status st;

    /* no digest: stats must not cost O(items) on the loop */
    cache_svc_status(svc, &st, false);
    buf_printf(out, "STAT limit_maxbytes %" PRIu64 "\r\n",
               st.sm.limit_maxbytes);
    buf_printf(out, "STAT item_size_max %" PRIu64 "\r\n", st.sm.item_size_max);
    buf_printf(out, "STAT curr_items %" PRIu64 "\r\n", st.sm.curr_items);
    buf_printf(out, "STAT total_items %" PRIu64 "\r\n", st.sm.total_items);
    buf_printf(out, "STAT bytes %" PRIu64 "\r\n", st.sm.bytes);
    buf_printf(out, "STAT evictions %" PRIu64 "\r\n", st.sm.evictions);
    buf_printf(out, "STAT expired_unfetched %" PRIu64 "\r\n",
               st.sm.expired_unfetched);
    buf_printf(out, "STAT ringmq_group %s\r\n", svc->name);
    buf_printf(out, "STAT ringmq_read_mode %s\r\n",
               svc->linearizable_reads ? "linearizable" : "leader");
    buf_printf(out, "STAT ringmq_raft_state %s\r\n", st.raft.state);
    buf_printf(out, "STAT ringmq_raft_id %" PRIu64 "\r\n", st.raft.id);
    buf_printf(out, "STAT ringmq_raft_leader %" PRIu64 "\r\n",
               st.raft.leader_id);
    buf_printf(out, "STAT ringmq_raft_term %" PRIu64 "\r\n", st.raft.term);
    buf_printf(out, "STAT ringmq_commit_index %" PRIu64 "\r\n",
               st.raft.commit_index);
    buf_printf(out, "STAT ringmq_last_applied %" PRIu64 "\r\n",
               st.raft.last_applied);
    buf_printf(out, "STAT ringmq_snapshot_index %" PRIu64 "\r\n",
               st.raft.snapshot_index);
    buf_printf(out, "STAT ringmq_snapshots_taken %" PRIu64 "\r\n",
               st.raft.snapshots_taken);
    buf_printf(out, "STAT ringmq_batches %" PRIu64 "\r\n",
               st.raft.batches_proposed);
    buf_printf(out, "STAT ringmq_batched_cmds %" PRIu64 "\r\n",
               st.raft.cmds_proposed);
    buf_printf(out, "STAT ringmq_leader_changes %" PRIu64 "\r\n",
               st.raft.leader_changes);
}

const char *cache_svc_name(const struct cache_svc *svc)
{
    return svc->name;
}

void cache_svc_log_memory(const struct cache_svc *svc, uint64_t *entries,
                          uint64_t *bytes)
{
    rgroup_log_memory(svc->group, entries, bytes);
}

uint64_t cache_svc_leader_id(const struct cache_svc *svc)
{
    return rgroup_leader_id(svc->group);
}

bool cache_svc_is_leader(const struct cache_svc *svc)
{
    return rgroup_is_leader(svc->group);
}

struct rgroup *cache_svc_group(struct cache_svc *svc)
{
    return svc->group;
}

static void one_closed(struct cache_svc *svc)
{
    void (*cb)(void *) = svc->close_cb;
    void *cb_data = svc->close_data;

    if (--svc->closes_left > 0) {
        return;
    }
    cache_sm_free(svc->sm);
    cache_export_free(svc->export);
    pb_arena_close(&svc->op_arena);
    free(svc->ring_seed);
    free(svc);
    if (cb != NULL) {
        cb(cb_data);
    }
}

static void group_closed(void *data)
{
    one_closed(data);
}

static void tick_closed(uv_handle_t *h)
{
    one_closed(h->data);
}

void cache_svc_close(struct cache_svc *svc, void (*cb)(void *data), void *data)
{
    svc->close_cb = cb;
    svc->close_data = data;
    svc->closes_left = 2;
    uv_close((uv_handle_t *)&svc->tick, tick_closed);
    rgroup_close(svc->group, group_closed, svc);
}
