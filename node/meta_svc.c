/*
 * meta_svc: see meta_svc.h.
 *
 *   submit -> encode MetaCommand -> rgroup_submit -> commit -> fsm_apply
 *   (every replica: meta_sm_apply; leader: into call->result) -> cmd_done
 *   -> call->cb.   A change of version flags the watchers; the prepare/
 *   check handles complete them outside raft code; a TICK_MS timer ends
 *   the watches whose wait passed.
 */
#include "node/meta_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/le.h"
#include "common/log.h"
#include "mq.pb-c.h"
#include "node/svc_shell.h"
#include "proto/map_pb.h"
#include "proto/mq_pb.h"
#include "sm/meta_changes.h"
#include "sm/meta_rules.h"

#define TICK_MS 50
/* The group's snapshot: both state machines' snapshots in one envelope.
 * A snapshot that is one meta_sm snapshot alone (no map) came from a node
 * before the map was replicated: it restores with an empty map. */
#define SNAP_MAGIC 0x5052474du /* "MGRP" */
#define SNAP_VERSION 1u

struct meta_svc {
    char name[64];
    struct svc_shell sh; /* group, loop, closing */
    struct meta_sm *sm;
    struct meta_changes *changes; /* what sm's recent versions changed */
    struct map_sm *map;
    struct cluster_map bootstrap; /* epoch 0: none */
    bool init_inflight;
    struct meta_svc_map_call init_call;
    struct map_sm_cmd init_cmd;
    struct meta_svc_watch *watches; /* arrival order */
    struct meta_svc_watch *watches_tail;
    uint64_t n_watches;
    bool changed; /* version moved since the last watcher pass */
};

struct pending {
    struct rgroup_cmd rcmd;
    struct meta_svc *svc;
    struct meta_svc_call *call;         /* or */
    struct meta_svc_map_call *map_call;
    uint8_t *payload;
};

/* --------------------------------------------------------------- fsm */

static void apply_map(struct meta_svc *svc, const Ringmq__MapCommand *pb,
                      struct rgroup_cmd *mine)
{
    struct map_sm_result scratch;
    struct map_sm_result *res = &scratch;
    struct map_pb_cmd c;

    if (mine != NULL) {
        struct pending *p = mine->data;
        if (p->map_call != NULL) {
            res = &p->map_call->result;
        }
    }
    if (map_pb_cmd_from(pb, &c) != 0) {
        log_error("%s: undecodable map command skipped", svc->name);
        memset(res, 0, sizeof(*res));
        res->code = MAP_SM_INVALID;
        res->epoch = map_sm_epoch(svc->map);
        snprintf(res->why, sizeof(res->why), "undecodable map command");
    } else {
        if (meta_rules_map_ok(svc->sm, svc->map, &c.cmd, res)) {
            map_sm_apply(svc->map, &c.cmd, res);
        }
        if (res->changed) {
            svc->changed = true;
        }
    }
    map_pb_cmd_clear(&c);
}

static void fsm_apply(void *data, uint64_t time_ms, const void *cmd,
                      size_t len, struct rgroup_cmd *mine)
{
    struct meta_svc *svc = data;
    struct meta_sm_result scratch;
    struct meta_sm_result *res = &scratch;
    Ringmq__MetaCommand *pb;
    struct meta_sm_cmd c;

    (void)time_ms; /* neither state machine has a clock */
    pb = ringmq__meta_command__unpack(NULL, len, cmd);
    if (pb != NULL && pb->map != NULL) {
        apply_map(svc, pb->map, mine);
        ringmq__meta_command__free_unpacked(pb, NULL);
        return;
    }
    if (mine != NULL && ((struct pending *)mine->data)->call != NULL) {
        res = &((struct pending *)mine->data)->call->result;
    }
    if (pb == NULL || mq_pb_meta_cmd_from_pb(pb, &c) != 0) {
        log_error("%s: undecodable meta command (%zu bytes) skipped",
                  svc->name, len);
        memset(res, 0, sizeof(*res));
        res->reply_code = 540;
        res->reply_text = "NOT_IMPLEMENTED - unknown meta command";
        res->version = meta_sm_version(svc->sm);
    } else {
        if (meta_rules_directory_ok(svc->sm, svc->map, &c, res)) {
            meta_sm_apply(svc->sm, &c, res);
        }
        if (res->changed) {
            meta_changes_add(svc->changes, &c, res->version);
            svc->changed = true;
        }
        mq_pb_meta_cmd_release(&c);
    }
    if (pb != NULL) {
        ringmq__meta_command__free_unpacked(pb, NULL);
    }
}

static int fsm_snapshot(void *data, void **buf, size_t *len)
{
    struct meta_svc *svc = data;
    void *meta = NULL, *map = NULL;
    size_t meta_len, map_len;
    unsigned char *p;
    int rv = -1;

    if (meta_sm_snapshot(svc->sm, malloc, &meta, &meta_len) != 0 ||
        map_sm_snapshot(svc->map, malloc, &map, &map_len) != 0) {
        goto out;
    }
    *len = 4 + 4 + 8 + meta_len + 8 + map_len;
    *buf = malloc(*len);
    if (*buf == NULL) {
        goto out;
    }
    p = le_put_u32(*buf, SNAP_MAGIC);
    p = le_put_u32(p, SNAP_VERSION);
    p = le_put_u64(p, meta_len);
    memcpy(p, meta, meta_len);
    p = le_put_u64(p + meta_len, map_len);
    memcpy(p, map, map_len);
    rv = 0;
out:
    free(meta);
    free(map);
    return rv;
}

static int fsm_restore(void *data, const void *buf, size_t len)
{
    struct meta_svc *svc = data;
    struct le_reader r = {buf, len};
    const unsigned char *meta, *map;
    uint64_t meta_len, map_len;
    uint32_t magic, version;
    struct map_sm *empty;
    int rv;

    if (le_get_u32(&r, &magic) && magic != SNAP_MAGIC) {
        /* before the map was replicated: exchanges only */
        rv = meta_sm_restore(svc->sm, buf, len);
        if (rv == 0) {
            meta_changes_reset(svc->changes);
            empty = map_sm_new();
            map_sm_free(svc->map);
            svc->map = empty;
            svc->changed = true;
        }
        return rv;
    }
    if (!le_get_u32(&r, &version) || version != SNAP_VERSION ||
        !le_get_u64(&r, &meta_len) || meta_len > r.left ||
        !le_get_bytes(&r, &meta, (size_t)meta_len) ||
        !le_get_u64(&r, &map_len) || map_len != r.left ||
        !le_get_bytes(&r, &map, (size_t)map_len)) {
        return -1;
    }
    /* the map first: it checks more, and a refused restore keeps both */
    empty = map_sm_new();
    if (map_sm_restore(empty, map, (size_t)map_len) != 0 ||
        meta_sm_restore(svc->sm, meta, (size_t)meta_len) != 0) {
        map_sm_free(empty);
        return -1;
    }
    map_sm_free(svc->map);
    svc->map = empty;
    meta_changes_reset(svc->changes);
    svc->changed = true;
    return 0;
}

/* ------------------------------------------------------------ watches */

static void watch_unlink(struct meta_svc *svc, struct meta_svc_watch *w)
{
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        svc->watches = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    } else {
        svc->watches_tail = w->prev;
    }
    w->next = NULL;
    w->prev = NULL;
    svc->n_watches--;
}

static uint64_t watched_version(const struct meta_svc *svc,
                                const struct meta_svc_watch *w)
{
    return w->map ? map_sm_epoch(svc->map) : meta_sm_version(svc->sm);
}

enum pass {
    PASS_CHANGED,     /* the version moved past theirs */
    PASS_EXPIRED,     /* that, or their wait is over */
    PASS_ALL,         /* every one, OK: this replica no longer leads */
    PASS_ALL_CLOSING  /* every one, CLOSING */
};

/* Complete the watches that are due. Detached first: a cb may watch again
 * (it then waits for the next change, not this pass). */
static void watches_pass(struct meta_svc *svc, enum pass pass)
{
    bool all = pass == PASS_ALL || pass == PASS_ALL_CLOSING;
    bool expired = pass == PASS_EXPIRED;
    struct meta_svc_watch *due = NULL;
    struct meta_svc_watch **tail = &due;
    struct meta_svc_watch *w = svc->watches;
    uint64_t now = uv_now(svc->sh.loop);

    while (w != NULL) {
        struct meta_svc_watch *next = w->next;

        if (all || watched_version(svc, w) > w->known_version ||
            (expired && w->deadline <= now)) {
            watch_unlink(svc, w);
            *tail = w;
            tail = &w->next;
        }
        w = next;
    }
    while (due != NULL) {
        w = due;
        due = w->next;
        w->next = NULL;
        w->status = pass == PASS_ALL_CLOSING ? OUTCOME_CLOSING : OUTCOME_OK;
        w->version = watched_version(svc, w);
        w->cb(w);
    }
}

static void process(struct meta_svc *svc)
{
    if (!svc->sh.closing && svc->changed) {
        svc->changed = false;
        watches_pass(svc, PASS_CHANGED);
    }
}

static void shell_process(void *owner)
{
    process(owner);
}

static void maybe_bootstrap(struct meta_svc *svc);

static void tick(void *owner)
{
    struct meta_svc *svc = owner;

    maybe_bootstrap(svc);
    if (svc->n_watches == 0) {
        return;
    }
    /* Watches belong at the leader, whose fanout waits for them before a
     * meta change is answered (node/meta_fanout.h). A replica that lost
     * leadership hands its watches back now, so that routers park at the
     * next leader at once instead of waiting out their wait here while
     * the next leader answers binds they have not seen. */
    watches_pass(svc, meta_svc_is_leader(svc) ? PASS_EXPIRED : PASS_ALL);
}

void meta_svc_watch(struct meta_svc *svc, struct meta_svc_watch *w)
{
    w->next = NULL;
    w->prev = NULL;
    w->version = watched_version(svc, w);
    if (svc->sh.closing) {
        w->status = OUTCOME_CLOSING;
        w->cb(w);
        return;
    }
    if (w->version > w->known_version || w->wait_ms == 0) {
        w->status = OUTCOME_OK;
        w->cb(w);
        return;
    }
    w->deadline = uv_now(svc->sh.loop) + w->wait_ms;
    w->prev = svc->watches_tail;
    if (svc->watches_tail != NULL) {
        svc->watches_tail->next = w;
    } else {
        svc->watches = w;
    }
    svc->watches_tail = w;
    svc->n_watches++;
}

/* ------------------------------------------------------------ commands */

static void complete(struct meta_svc_call *call, enum outcome st)
{
    if (st != OUTCOME_OK) {
        memset(&call->result, 0, sizeof(call->result));
        call->result.reply_text = "";
    }
    call->status = st;
    call->cb(call);
}

static void complete_map(struct meta_svc_map_call *call, enum outcome st)
{
    if (st != OUTCOME_OK) {
        memset(&call->result, 0, sizeof(call->result));
    }
    call->status = st;
    call->cb(call);
}

static void finish(struct pending *p, enum outcome st)
{
    struct meta_svc_call *call = p->call;
    struct meta_svc_map_call *map_call = p->map_call;

    free(p->payload);
    free(p);
    if (call != NULL) {
        complete(call, st);
    } else {
        complete_map(map_call, st);
    }
}

static void cmd_done(struct rgroup_cmd *rcmd, int status)
{
    struct pending *p = rcmd->data;

    finish(p, status == 0 ? OUTCOME_OK
                          : svc_outcome(status, p->svc->sh.closing));
}

/* Propose @pb for @p (its call set), or complete it now. */
static void propose(struct meta_svc *svc, struct pending *p,
                    const Ringmq__MetaCommand *pb)
{
    size_t n = ringmq__meta_command__get_packed_size(pb);
    int rv;

    p->svc = svc;
    p->payload = xmalloc(n > 0 ? n : 1);
    ringmq__meta_command__pack(pb, p->payload);
    p->rcmd.payload = p->payload;
    p->rcmd.len = n;
    p->rcmd.cb = cmd_done;
    p->rcmd.data = p;
    rv = rgroup_submit(svc->sh.group, &p->rcmd);
    if (rv != 0) {
        finish(p, svc_outcome(rv, svc->sh.closing));
    }
}

/* Refused before the log: closing or not the leader. */
static enum outcome admit(const struct meta_svc *svc)
{
    if (svc->sh.closing) {
        return OUTCOME_CLOSING;
    }
    return rgroup_is_leader(svc->sh.group) ? OUTCOME_OK : OUTCOME_NOT_LEADER;
}

void meta_svc_submit(struct meta_svc *svc, struct meta_svc_call *call)
{
    meta_svc_submit_until(svc, call, 0);
}

void meta_svc_submit_until(struct meta_svc *svc, struct meta_svc_call *call,
                           uint64_t deadline_ms)
{
    struct mq_pb_meta_buf b;
    struct pending *p;
    enum outcome st = admit(svc);

    memset(&call->result, 0, sizeof(call->result));
    call->result.reply_text = "";
    if (st != OUTCOME_OK) {
        complete(call, st);
        return;
    }
    if (mq_pb_meta_cmd_to_pb(&call->cmd, &b) != 0) {
        /* what meta_sm itself answers for values out of range */
        mq_pb_meta_buf_clear(&b);
        call->result.reply_code =
            (unsigned)call->cmd.type >= META_SM_CMD__COUNT ? 540 : 503;
        call->result.reply_text =
            call->result.reply_code == 540
                ? "NOT_IMPLEMENTED - unknown meta command"
                : "COMMAND_INVALID - unknown exchange type";
        call->result.version = meta_sm_version(svc->sm);
        complete(call, OUTCOME_OK);
        return;
    }
    p = xcalloc(1, sizeof(*p));
    p->call = call;
    p->rcmd.deadline_ms = deadline_ms;
    propose(svc, p, &b.pb);
    mq_pb_meta_buf_clear(&b);
}

void meta_svc_map_submit(struct meta_svc *svc, struct meta_svc_map_call *call)
{
    Ringmq__MetaCommand pb = RINGMQ__META_COMMAND__INIT;
    Ringmq__MapCommand mpb;
    struct map_pb_arena a = {0};
    struct pending *p;
    enum outcome st = admit(svc);

    memset(&call->result, 0, sizeof(call->result));
    if (st != OUTCOME_OK) {
        complete_map(call, st);
        return;
    }
    map_pb_cmd_to(call->cmd, &mpb, &a);
    pb.map = &mpb;
    p = xcalloc(1, sizeof(*p));
    p->map_call = call;
    propose(svc, p, &pb);
    map_pb_arena_clear(&a);
}

/* ---- bootstrap ------------------------------------------------------------ */

static void init_done(struct meta_svc_map_call *call)
{
    struct meta_svc *svc = call->data;

    svc->init_inflight = false;
    if (call->status == OUTCOME_OK && call->result.code == MAP_SM_OK) {
        log_info("%s: cluster map initialised from the bootstrap map, "
                 "epoch %" PRIu64,
                 svc->name, call->result.epoch);
    } else if (call->status == OUTCOME_OK) {
        log_debug("%s: bootstrap map not used: %s", svc->name,
                  call->result.why);
    }
}

/* The leader of a group whose map is empty proposes the bootstrap map. A
 * second proposal (two leaders in a row, or a retry) is refused by apply:
 * INIT applies once. */
static void maybe_bootstrap(struct meta_svc *svc)
{
    if (svc->bootstrap.epoch == 0 || svc->init_inflight ||
        map_sm_epoch(svc->map) != 0 || !meta_svc_is_leader(svc)) {
        return;
    }
    svc->init_inflight = true;
    svc->init_cmd = (struct map_sm_cmd){.type = MAP_SM_INIT,
                                        .map = &svc->bootstrap};
    svc->init_call = (struct meta_svc_map_call){
        .cmd = &svc->init_cmd, .cb = init_done, .data = svc};
    meta_svc_map_submit(svc, &svc->init_call);
}

void meta_svc_set_bootstrap(struct meta_svc *svc,
                            const struct cluster_map *map)
{
    cluster_map_copy(&svc->bootstrap, map);
}

/* ---------------------------------------------------------------- API */

struct meta_svc *meta_svc_new(uv_loop_t *loop,
                              const struct rgroup_config *group,
                              char *errmsg, size_t errlen)
{
    struct meta_svc *svc = xcalloc(1, sizeof(*svc));
    struct rgroup_fsm fsm = {
        .data = svc,
        .apply = fsm_apply,
        .snapshot = fsm_snapshot,
        .restore = fsm_restore,
    };

    snprintf(svc->name, sizeof(svc->name), "%s", group->name);
    svc->sh.loop = loop;
    svc->map = map_sm_new();
    cluster_map_init(&svc->bootstrap);
    svc->sm = meta_sm_new();
    if (svc->sm == NULL) {
        snprintf(errmsg, errlen, "%s: cannot allocate the meta state",
                 svc->name);
        goto err;
    }
    svc->changes =
        meta_changes_new(META_CHANGES_KEEP, META_CHANGES_KEEP_BYTES);
    if (svc_shell_start(&svc->sh, loop, group, &fsm, svc, shell_process,
                        tick, TICK_MS, errmsg, errlen) != 0) {
        goto err_after_sm;
    }
    return svc;

err_after_sm:
    meta_changes_free(svc->changes);
    meta_sm_free(svc->sm);
err:
    map_sm_free(svc->map);
    free(svc);
    return NULL;
}

const struct meta_sm *meta_svc_sm(const struct meta_svc *svc)
{
    return svc->sm;
}

const struct meta_changes *meta_svc_changes(const struct meta_svc *svc)
{
    return svc->changes;
}

const struct map_sm *meta_svc_map(const struct meta_svc *svc)
{
    return svc->map;
}

void meta_svc_status(struct meta_svc *svc, struct meta_svc_status *out)
{
    memset(out, 0, sizeof(*out));
    rgroup_status(svc->sh.group, &out->raft);
    out->version = meta_sm_version(svc->sm);
    meta_sm_counts(svc->sm, &out->exchanges, &out->bindings);
    out->watchers = svc->n_watches;
    out->map_epoch = map_sm_epoch(svc->map);
}

const char *meta_svc_name(const struct meta_svc *svc)
{
    return svc->name;
}

uint64_t meta_svc_leader_id(const struct meta_svc *svc)
{
    return rgroup_leader_id(svc->sh.group);
}

struct rgroup *meta_svc_group(struct meta_svc *svc)
{
    return svc->sh.group;
}

bool meta_svc_is_leader(const struct meta_svc *svc)
{
    return !svc->sh.closing && rgroup_is_leader(svc->sh.group);
}

static void destroy(void *owner)
{
    struct meta_svc *svc = owner;

    meta_changes_free(svc->changes);
    meta_sm_free(svc->sm);
    map_sm_free(svc->map);
    cluster_map_clear(&svc->bootstrap);
    free(svc);
}

void meta_svc_close(struct meta_svc *svc, void (*cb)(void *data), void *data)
{
    svc_shell_close(&svc->sh, destroy, cb, data);
    watches_pass(svc, PASS_ALL_CLOSING);
}
