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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "mq.pb-c.h"
#include "node/svc_shell.h"
#include "proto/mq_pb.h"

#define TICK_MS 50

struct meta_svc {
    char name[64];
    struct svc_shell sh; /* group, loop, closing */
    struct meta_sm *sm;
    struct meta_svc_watch *watches; /* arrival order */
    struct meta_svc_watch *watches_tail;
    uint64_t n_watches;
    bool changed; /* version moved since the last watcher pass */
};

struct pending {
    struct rgroup_cmd rcmd;
    struct meta_svc *svc;
    struct meta_svc_call *call;
    uint8_t *payload;
};

/* --------------------------------------------------------------- fsm */

static void fsm_apply(void *data, uint64_t time_ms, const void *cmd,
                      size_t len, struct rgroup_cmd *mine)
{
    struct meta_svc *svc = data;
    struct meta_sm_result scratch;
    struct meta_sm_result *res = &scratch;
    Ringmq__MetaCommand *pb;
    struct meta_sm_cmd c;

    (void)time_ms; /* meta_sm has no clock */
    if (mine != NULL) {
        res = &((struct pending *)mine->data)->call->result;
    }
    pb = ringmq__meta_command__unpack(NULL, len, cmd);
    if (pb == NULL || mq_pb_meta_cmd_from_pb(pb, &c) != 0) {
        log_error("%s: undecodable meta command (%zu bytes) skipped",
                  svc->name, len);
        memset(res, 0, sizeof(*res));
        res->reply_code = 540;
        res->reply_text = "NOT_IMPLEMENTED - unknown meta command";
        res->version = meta_sm_version(svc->sm);
    } else {
        meta_sm_apply(svc->sm, &c, res);
        mq_pb_meta_cmd_release(&c);
        if (res->changed) {
            svc->changed = true;
        }
    }
    if (pb != NULL) {
        ringmq__meta_command__free_unpacked(pb, NULL);
    }
}

static int fsm_snapshot(void *data, void **buf, size_t *len)
{
    struct meta_svc *svc = data;

    return meta_sm_snapshot(svc->sm, malloc, buf, len);
}

static int fsm_restore(void *data, const void *buf, size_t len)
{
    struct meta_svc *svc = data;
    int rv = meta_sm_restore(svc->sm, buf, len);

    if (rv == 0) {
        svc->changed = true;
    }
    return rv;
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
    uint64_t version = meta_sm_version(svc->sm);
    uint64_t now = uv_now(svc->sh.loop);

    while (w != NULL) {
        struct meta_svc_watch *next = w->next;

        if (all || version > w->known_version ||
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
        w->version = version;
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

static void tick(void *owner)
{
    struct meta_svc *svc = owner;

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
    w->version = meta_sm_version(svc->sm);
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

static void cmd_done(struct rgroup_cmd *rcmd, int status)
{
    struct pending *p = rcmd->data;
    struct meta_svc *svc = p->svc;
    struct meta_svc_call *call = p->call;

    free(p->payload);
    free(p);
    complete(call,
             status == 0 ? OUTCOME_OK : svc_outcome(status, svc->sh.closing));
}

void meta_svc_submit(struct meta_svc *svc, struct meta_svc_call *call)
{
    struct mq_pb_meta_buf b;
    struct pending *p;
    size_t n;
    int rv;

    memset(&call->result, 0, sizeof(call->result));
    call->result.reply_text = "";
    if (svc->sh.closing) {
        complete(call, OUTCOME_CLOSING);
        return;
    }
    if (!rgroup_is_leader(svc->sh.group)) {
        complete(call, OUTCOME_NOT_LEADER);
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
    p->svc = svc;
    p->call = call;
    n = ringmq__meta_command__get_packed_size(&b.pb);
    p->payload = xmalloc(n > 0 ? n : 1);
    ringmq__meta_command__pack(&b.pb, p->payload);
    mq_pb_meta_buf_clear(&b);
    p->rcmd.payload = p->payload;
    p->rcmd.len = n;
    p->rcmd.cb = cmd_done;
    p->rcmd.data = p;
    rv = rgroup_submit(svc->sh.group, &p->rcmd);
    if (rv != 0) {
        free(p->payload);
        free(p);
        complete(call, svc_outcome(rv, svc->sh.closing));
    }
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
    svc->sm = meta_sm_new();
    if (svc->sm == NULL) {
        snprintf(errmsg, errlen, "%s: cannot allocate the meta state",
                 svc->name);
        goto err;
    }
    if (svc_shell_start(&svc->sh, loop, group, &fsm, svc, shell_process,
                        tick, TICK_MS, errmsg, errlen) != 0) {
        goto err_after_sm;
    }
    return svc;

err_after_sm:
    meta_sm_free(svc->sm);
err:
    free(svc);
    return NULL;
}

const struct meta_sm *meta_svc_sm(const struct meta_svc *svc)
{
    return svc->sm;
}

void meta_svc_status(struct meta_svc *svc, struct meta_svc_status *out)
{
    memset(out, 0, sizeof(*out));
    rgroup_status(svc->sh.group, &out->raft);
    out->version = meta_sm_version(svc->sm);
    meta_sm_counts(svc->sm, &out->exchanges, &out->bindings);
    out->watchers = svc->n_watches;
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

    meta_sm_free(svc->sm);
    free(svc);
}

void meta_svc_close(struct meta_svc *svc, void (*cb)(void *data), void *data)
{
    svc_shell_close(&svc->sh, destroy, cb, data);
    watches_pass(svc, PASS_ALL_CLOSING);
}
