/* node_rpc: see node_rpc.h. */
#include "node/node_rpc.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "node/meta_fanout.h"
#include "node/mq_fetch.h"
#include "rpc/rpc_server.h"
#include "proto/cache_pb.h"
#include "proto/map_pb.h"
#include "proto/mq_pb.h"
#include "proto/rpc_frame.h"

#define DEFAULT_GROUP "cache"

struct rpc_meta_watch;
struct rpc_map_watch;

struct node_rpc {
    uv_loop_t *loop;
    const struct node_config *cfg;
    struct cache_svc *const *groups;
    unsigned n_groups;
    struct rpc_server *server;
    struct mq_svc *const *mq;
    unsigned n_mq;
    struct meta_svc *meta;
    struct meta_fanout *fanout;     /* with meta */
    struct rpc_meta_watch *watches; /* held in meta, this service's */
    struct rpc_map_watch *map_watches; /* likewise */
    struct watermark *watermark;
    struct rpc_mq_store {
        char group[CLUSTER_NAME_MAX + 8];
        struct mq_store *st;
    } stores[NODE_MAX_GROUPS];
    unsigned n_stores;
};

/* A cache op received over RPC, on its way through a group. */
struct rpc_cache_call {
    struct cache_call call;
    struct node_rpc *rpc;
    struct rpc_server_req *req;
    unsigned group;
};

static int find_group(const struct node_rpc *r, const char *name)
{
    unsigned g;

    if (name == NULL || *name == '\0') {
        name = DEFAULT_GROUP;
    }
    for (g = 0; g < r->n_groups; g++) {
        if (strcmp(r->cfg->groups[g].name, name) == 0) {
            return (int)g;
        }
    }
    return -1;
}

static void reply_code(struct rpc_server_req *req, enum outcome code,
                       const char *error)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;

    resp.code = rpc_code(code);
    resp.error = (char *)error;
    rpc_server_reply(req, &resp);
}

/* RPC address of member @id of the group named @name: the cache group "S"
 * and the queue group "S.mq" have shard S's members, the meta group the
 * first shard's. */
static const char *member_rpc(const struct node_rpc *r, const char *name,
                              uint64_t id)
{
    char shard[CLUSTER_NAME_MAX + 8];
    const char *dot = strrchr(name, '.');
    unsigned g;

    if (strcmp(name, "meta") == 0) {
        if (r->cfg->cluster == NULL || r->cfg->cluster->n_shards == 0) {
            return NULL;
        }
        snprintf(shard, sizeof(shard), "%s", r->cfg->cluster->shards[0].name);
    } else if (dot != NULL) {
        snprintf(shard, sizeof(shard), "%.*s", (int)(dot - name), name);
    } else {
        snprintf(shard, sizeof(shard), "%s", name);
    }
    for (g = 0; g < r->n_groups; g++) {
        if (strcmp(r->cfg->groups[g].name, shard) == 0) {
            return node_config_member_rpc(r->cfg, g, id);
        }
    }
    return NULL;
}

static void reply_not_leader(struct node_rpc *r, struct rpc_server_req *req,
                             const char *group, uint64_t leader)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    const char *rpc = member_rpc(r, group, leader);

    resp.code = rpc_code(OUTCOME_NOT_LEADER);
    resp.leader_id = leader;
    resp.leader_rpc = (char *)(rpc ? rpc : "");
    resp.error = "not leader";
    rpc_server_reply(req, &resp);
}

/* Why a request was not started, or its command never proposed, because
 * its deadline passed: EXPIRED, "not executed" for certain, so that a
 * sender that gave a budget shorter than its own timeout hears it while it
 * still waits, knows nothing ran and may send it again (a router retries
 * it as BUSY: docs/consistency.md, "Admission control"). */
static void reply_expired(struct rpc_server_req *req, const char *when)
{
    char why[128];

    snprintf(why, sizeof(why), "deadline passed %s: not executed", when);
    reply_code(req, OUTCOME_EXPIRED, why);
}

/* A service's failed outcome as routers are told it. A command too large
 * for an entry is the request's fault (BAD_REQUEST: never retried); a
 * closing node is to a router what a group without a leader is
 * (UNAVAILABLE: try again, elsewhere); a full queue is BUSY (never
 * proposed: the router tries again after a pause); a command whose
 * deadline passed in the queue (the group expires it then, raft/group.h)
 * gets the answer of a request that expired before it started. */
static void reply_failure(struct node_rpc *r, struct rpc_server_req *req,
                          enum outcome o, const char *group, uint64_t leader)
{
    switch (o) {
    case OUTCOME_NOT_LEADER:
        reply_not_leader(r, req, group, leader);
        break;
    case OUTCOME_TOO_LARGE:
        reply_code(req, OUTCOME_BAD_REQUEST, "command too large");
        break;
    case OUTCOME_BUSY:
        reply_code(req, OUTCOME_BUSY,
                   "busy: too many commands waiting to be proposed; not "
                   "executed");
        break;
    case OUTCOME_EXPIRED:
        reply_expired(req, "while the command waited to be proposed");
        break;
    default:
        reply_code(req, OUTCOME_UNAVAILABLE,
                   "leadership lost or closing: outcome unknown");
        break;
    }
}

static void cache_call_done(struct cache_call *call)
{
    struct rpc_cache_call *c = call->data;
    struct node_rpc *r = c->rpc;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__CacheResult result;

    if (call->outcome != OUTCOME_OK) {
        struct cache_svc *svc = r->groups[c->group];

        reply_failure(r, c->req, call->outcome, cache_svc_name(svc),
                      cache_svc_leader_id(svc));
    } else {
        resp.code = rpc_code(OUTCOME_OK);
        cache_result_to_pb(&call->result, &result);
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
        resp.cache = &result;
        rpc_server_reply(c->req, &resp);
    }
    cache_result_clear(&call->result);
    free(c);
}

static void handle_cache(struct node_rpc *r, struct rpc_server_req *req,
                         const Ringmq__RpcRequest *msg)
{
    struct rpc_cache_call *c;
    int g = find_group(r, msg->group);

    if (g < 0) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    c = xcalloc(1, sizeof(*c));
    if (cache_op_from_pb(msg->cache, &c->call.op) != 0) {
        free(c);
        reply_code(req, OUTCOME_BAD_REQUEST, "unknown cache op");
        return;
    }
    c->rpc = r;
    c->req = req;
    c->group = (unsigned)g;
    c->call.cb = cache_call_done;
    c->call.data = c;
    /* op key/value point into msg, which lives until the reply. */
    cache_svc_submit_until(r->groups[g], &c->call,
                           rpc_server_req_deadline(req));
}

/* The progress texts of the status reply being built: the reply is packed
 * before handle_status returns, on the loop thread, so one set serves. */
static char status_progress[2 * NODE_MAX_GROUPS + 1][RGROUP_PROGRESS_LEN];

static char *keep_progress(unsigned slot, const char *text)
{
    snprintf(status_progress[slot], RGROUP_PROGRESS_LEN, "%s", text);
    return status_progress[slot];
}

static void raft_status_pb(const struct rgroup_status *st,
                           Ringmq__GroupStatus *gs, unsigned slot)
{
    gs->id = st->id;
    gs->state = (char *)st->state;
    gs->ready = st->ready;
    gs->leader_id = st->leader_id;
    gs->term = st->term;
    gs->commit_index = st->commit_index;
    gs->last_applied = st->last_applied;
    gs->last_index = st->last_index;
    gs->snapshot_index = st->snapshot_index;
    gs->snapshots_taken = st->snapshots_taken;
    gs->snapshots_restored = st->snapshots_restored;
    gs->batches_proposed = st->batches_proposed;
    gs->cmds_proposed = st->cmds_proposed;
    gs->last_stored = st->last_stored;
    gs->progress = keep_progress(slot, st->progress);
}

/* The queue groups and the meta group, after the cache groups: items is
 * the ready messages (queues) or the bindings (meta). Returns the count. */
static unsigned status_amqp(struct node_rpc *r, Ringmq__GroupStatus *gs,
                            Ringmq__GroupStatus **gsp, unsigned room,
                            unsigned first_slot, bool with_digest)
{
    unsigned n = 0;
    unsigned i;

    for (i = 0; i < r->n_mq && n < room; i++, n++) {
        struct mq_svc_status st;
        const char *rpc;

        mq_svc_status(r->mq[i], &st, with_digest);
        ringmq__group_status__init(&gs[n]);
        gs[n].name = (char *)mq_svc_name(r->mq[i]);
        raft_status_pb(&st.raft, &gs[n], first_slot + n);
        rpc = member_rpc(r, gs[n].name, st.raft.leader_id);
        gs[n].leader_rpc = (char *)(rpc ? rpc : "");
        gs[n].digest = st.digest;
        gs[n].items = st.sm.ready;
        gs[n].body_segments = st.store.segments;
        gs[n].body_bytes = st.store.bytes;
        gs[n].body_missing_bytes = st.store.missing_bytes;
        gs[n].body_misses = st.body_misses;
        gsp[n] = &gs[n];
    }
    if (r->meta != NULL && n < room) {
        struct meta_svc_status st;
        const char *rpc;

        meta_svc_status(r->meta, &st);
        ringmq__group_status__init(&gs[n]);
        gs[n].name = "meta";
        raft_status_pb(&st.raft, &gs[n], first_slot + n);
        rpc = member_rpc(r, "meta", st.raft.leader_id);
        gs[n].leader_rpc = (char *)(rpc ? rpc : "");
        gs[n].digest = with_digest ? meta_sm_digest(meta_svc_sm(r->meta)) : 0;
        gs[n].items = st.bindings;
        gsp[n] = &gs[n];
        n++;
    }
    return n;
}

/* One group's configuration as RaftMember messages (strings point into
 * info). */
struct members_pb {
    struct rgroup_member_info info[RGROUP_MAX_MEMBERS];
    Ringmq__RaftMember pb[RGROUP_MAX_MEMBERS];
    Ringmq__RaftMember *ptr[RGROUP_MAX_MEMBERS];
};

static void fill_members(struct rgroup *g, Ringmq__GroupStatus *gs,
                         struct members_pb *m)
{
    unsigned n = rgroup_members(g, m->info, RGROUP_MAX_MEMBERS);
    unsigned i;

    if (n > RGROUP_MAX_MEMBERS) {
        n = RGROUP_MAX_MEMBERS;
    }
    for (i = 0; i < n; i++) {
        ringmq__raft_member__init(&m->pb[i]);
        m->pb[i].id = m->info[i].id;
        m->pb[i].raft = m->info[i].raft_address;
        m->pb[i].role = (char *)m->info[i].role;
        m->ptr[i] = &m->pb[i];
    }
    gs->n_members = n;
    gs->members = m->ptr;
}

/* The group named @name here (cache, "<shard>.mq" or "meta"), or NULL. */
static struct rgroup *group_by_name(struct node_rpc *r, const char *name)
{
    unsigned i;
    int g = find_group(r, name);

    if (g >= 0) {
        return cache_svc_group(r->groups[g]);
    }
    for (i = 0; i < r->n_mq && name != NULL; i++) {
        if (strcmp(mq_svc_name(r->mq[i]), name) == 0) {
            return mq_svc_group(r->mq[i]);
        }
    }
    if (r->meta != NULL && name != NULL && strcmp(name, "meta") == 0) {
        return meta_svc_group(r->meta);
    }
    return NULL;
}

static void handle_status(struct node_rpc *r, struct rpc_server_req *req,
                          bool with_digest)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__StatusReply reply = RINGMQ__STATUS_REPLY__INIT;
    Ringmq__GroupStatus gs[2 * NODE_MAX_GROUPS + 1];
    Ringmq__GroupStatus *gsp[2 * NODE_MAX_GROUPS + 1];
    struct members_pb *members;
    unsigned g;

    for (g = 0; g < r->n_groups; g++) {
        struct cache_svc_status st;
        const char *leader_rpc;

        cache_svc_status(r->groups[g], &st, with_digest);
        ringmq__group_status__init(&gs[g]);
        gs[g].name = (char *)r->cfg->groups[g].name;
        gs[g].id = st.raft.id;
        gs[g].state = (char *)st.raft.state;
        gs[g].ready = st.raft.ready;
        gs[g].leader_id = st.raft.leader_id;
        leader_rpc = node_config_member_rpc(r->cfg, g, st.raft.leader_id);
        gs[g].leader_rpc = (char *)(leader_rpc ? leader_rpc : "");
        gs[g].term = st.raft.term;
        gs[g].commit_index = st.raft.commit_index;
        gs[g].last_applied = st.raft.last_applied;
        gs[g].last_index = st.raft.last_index;
        gs[g].snapshot_index = st.raft.snapshot_index;
        gs[g].digest = st.digest;
        gs[g].items = st.sm.curr_items;
        gs[g].bytes = st.sm.bytes;
        gs[g].evictions = st.sm.evictions;
        gs[g].limit_maxbytes = st.sm.limit_maxbytes;
        gs[g].snapshots_taken = st.raft.snapshots_taken;
        gs[g].snapshots_restored = st.raft.snapshots_restored;
        gs[g].batches_proposed = st.raft.batches_proposed;
        gs[g].cmds_proposed = st.raft.cmds_proposed;
        gs[g].last_stored = st.raft.last_stored;
        gs[g].progress = keep_progress(g, st.raft.progress);
        gsp[g] = &gs[g];
    }
    g = r->n_groups;
    g += status_amqp(r, gs + g, gsp + g,
                     (unsigned)(sizeof(gs) / sizeof(gs[0])) - g, g,
                     with_digest);
    members = xcalloc(g > 0 ? g : 1, sizeof(*members));
    for (unsigned i = 0; i < g; i++) {
        struct rgroup *rg = group_by_name(r, gs[i].name);

        if (rg != NULL) {
            fill_members(rg, &gs[i], &members[i]);
        }
    }
    reply.node_id = r->cfg->id;
    reply.n_groups = g;
    reply.groups = gsp;
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_STATUS;
    resp.status = &reply;
    rpc_server_reply(req, &resp);
    free(members);
}

/* ---- AMQP: queue groups, the meta group -------------------------------- */

struct rpc_mq_call {
    struct mq_svc_call call;
    struct node_rpc *rpc;
    struct rpc_server_req *req;
    struct mq_svc *svc;
};

static void mq_call_done(struct mq_svc_call *call)
{
    struct rpc_mq_call *c = call->data;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    struct mq_pb_result_buf rb;

    switch (call->status) {
    case OUTCOME_OK:
        if (mq_pb_result_to_pb(&call->result, &rb) != 0) {
            reply_code(c->req, OUTCOME_UNAVAILABLE,
                       "cannot encode the result");
            break;
        }
        resp.code = rpc_code(OUTCOME_OK);
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MQ;
        resp.mq = &rb.pb;
        resp.publishers_blocked =
            c->rpc->watermark != NULL &&
            watermark_exceeded(c->rpc->watermark, clock_mono_ms());
        rpc_server_reply(c->req, &resp);
        mq_pb_result_buf_clear(&rb);
        break;
    default:
        reply_failure(c->rpc, c->req, call->status, mq_svc_name(c->svc),
                      mq_svc_leader_id(c->svc));
        break;
    }
    mq_sm_result_clear(&call->result);
    free(c);
}

static void handle_mq(struct node_rpc *r, struct rpc_server_req *req,
                      const Ringmq__RpcRequest *msg)
{
    struct rpc_mq_call *c;
    unsigned i;

    for (i = 0; i < r->n_mq; i++) {
        if (msg->group && strcmp(mq_svc_name(r->mq[i]), msg->group) == 0) {
            break;
        }
    }
    if (i == r->n_mq) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    c = xcalloc(1, sizeof(*c));
    /* Strings and the body point into msg, which lives until the reply. */
    if (mq_pb_cmd_from_pb(msg->mq, &c->call.cmd, &c->call.wait_ms) != 0) {
        free(c);
        reply_code(req, OUTCOME_BAD_REQUEST,
                   "bad queue command");
        return;
    }
    c->rpc = r;
    c->req = req;
    c->svc = r->mq[i];
    c->call.cb = mq_call_done;
    c->call.data = c;
    mq_svc_submit_until(c->svc, &c->call, rpc_server_req_deadline(req));
}

/* A chunk of a frozen queue's export, read at this leader (no log). */
static void handle_mq_export(struct node_rpc *r, struct rpc_server_req *req,
                             const Ringmq__RpcRequest *msg)
{
    const Ringmq__MqExport *x = msg->mq_export;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MqExportReply reply = RINGMQ__MQ_EXPORT_REPLY__INIT;
    struct mq_svc_export out;
    struct mq_svc *svc = NULL;
    enum outcome st;
    unsigned i;

    for (i = 0; i < r->n_mq; i++) {
        if (msg->group && strcmp(mq_svc_name(r->mq[i]), msg->group) == 0) {
            svc = r->mq[i];
        }
    }
    if (svc == NULL) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    st = mq_svc_export(svc, x->vhost, x->queue, x->cursor, x->max_bytes,
                       &out);
    if (st != OUTCOME_OK) {
        reply_failure(r, req, st, mq_svc_name(svc), mq_svc_leader_id(svc));
        return;
    }
    if (out.chunk == NULL) {
        reply_code(req, OUTCOME_BAD_REQUEST,
                   "the queue is not frozen for a move here");
        return;
    }
    reply.chunk.data = out.chunk;
    reply.chunk.len = out.len;
    reply.next_cursor = out.next_cursor;
    reply.last = out.last;
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MQ_EXPORT;
    resp.mq_export = &reply;
    rpc_server_reply(req, &resp);
    free(out.chunk);
}

static struct rpc_mq_store *store_slot(struct node_rpc *r, const char *group)
{
    unsigned i;

    for (i = 0; i < r->n_stores && group != NULL; i++) {
        if (strcmp(r->stores[i].group, group) == 0) {
            return &r->stores[i];
        }
    }
    return NULL;
}

void node_rpc_set_mq_store(struct node_rpc *r, const char *group,
                           struct mq_store *st)
{
    struct rpc_mq_store *slot = store_slot(r, group);

    if (st == NULL) {
        if (slot != NULL) {
            *slot = r->stores[--r->n_stores];
        }
        return;
    }
    if (slot == NULL) {
        assert(r->n_stores < NODE_MAX_GROUPS);
        slot = &r->stores[r->n_stores++];
        snprintf(slot->group, sizeof(slot->group), "%s", group);
    }
    slot->st = st;
}

/* Bytes of a segment file for a replica that lacks them: no log, any
 * replica. */
static void handle_mq_segment_read(struct node_rpc *r,
                                   struct rpc_server_req *req,
                                   const Ringmq__RpcRequest *msg)
{
    struct rpc_mq_store *slot = store_slot(r, msg->group);
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MqSegmentData data;

    if (slot == NULL) {
        reply_code(req, OUTCOME_NO_GROUP, "no body store for this group here");
        return;
    }
    mq_fetch_answer(slot->st, msg->mq_segment_read, &data);
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MQ_SEGMENT;
    resp.mq_segment = &data;
    rpc_server_reply(req, &resp);
    mq_fetch_answer_free(&data);
}

/* What a view at version @known lacks, as a MetaSnapshot: the changes
 * since, or the whole state, or neither (sm/meta_changes.h); free it with
 * meta_snapshot_pb_free. */
static int meta_snapshot_pb(struct node_rpc *r, uint64_t known,
                            Ringmq__MetaSnapshot *snap)
{
    const struct meta_sm *sm = meta_svc_sm(r->meta);
    void *state, *changes;
    size_t state_len, changes_len;

    ringmq__meta_snapshot__init(snap);
    if (meta_changes_answer(meta_svc_changes(r->meta), sm, known, malloc,
                            &state, &state_len, &changes,
                            &changes_len) != 0) {
        return -1;
    }
    snap->version = meta_sm_version(sm);
    snap->state.data = state;
    snap->state.len = state_len;
    snap->changes.data = changes;
    snap->changes.len = changes_len;
    return 0;
}

static void meta_snapshot_pb_free(Ringmq__MetaSnapshot *snap)
{
    free(snap->state.data);
    free(snap->changes.data);
}

/* The leader's term, for the fan-out (a new one forgets the routers). */
static void fanout_term(struct node_rpc *r)
{
    struct meta_svc_status st;

    meta_svc_status(r->meta, &st);
    meta_fanout_term(r->fanout, st.raft.term);
}

struct rpc_meta_call {
    struct meta_svc_call call;
    struct node_rpc *rpc;
    struct rpc_server_req *req;
    struct meta_fanout_wait wait;
    uint64_t view_version; /* the sender's view */
};

static void meta_reply_ok(struct rpc_meta_call *c)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MetaResult res;
    Ringmq__MetaSnapshot snap;

    mq_pb_meta_result_to_pb(&c->call.result, &res);
    /* The router's view follows at once, without waiting for a watch
     * round trip (its watch may have lapsed): what its view lacks, most
     * often nothing, since the fan-out waited for its watch. */
    if (meta_snapshot_pb(c->rpc, c->view_version, &snap) == 0) {
        res.snapshot = &snap;
    }
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_META;
    resp.meta = &res;
    rpc_server_reply(c->req, &resp);
    if (res.snapshot) {
        meta_snapshot_pb_free(&snap);
    }
}

static void meta_call_free(struct rpc_meta_call *c)
{
    mq_pb_meta_cmd_release(&c->call.cmd);
    free(c);
}

static void meta_fanned_out(struct meta_fanout_wait *w,
                            enum meta_fanout_end end)
{
    struct rpc_meta_call *c = w->data;

    if (end == META_FANOUT_CLOSED) {
        /* applied, but not known to be routed by: a retry is harmless */
        reply_code(c->req, OUTCOME_UNAVAILABLE, "closing");
    } else {
        if (end == META_FANOUT_LAPSED) {
            log_debug("meta: version %llu not confirmed by every router "
                      "(their leases ran out)",
                      (unsigned long long)w->version);
        }
        meta_reply_ok(c);
    }
    meta_call_free(c);
}

static void meta_call_done(struct meta_svc_call *call)
{
    struct rpc_meta_call *c = call->data;
    struct node_rpc *r = c->rpc;

    switch (call->status) {
    case OUTCOME_OK:
        if (call->result.changed && r->fanout != NULL) {
            /* bind-ok (and the rest) once every router routes by it. */
            c->wait.version = call->result.version;
            c->wait.cb = meta_fanned_out;
            c->wait.data = c;
            fanout_term(r);
            meta_fanout_wait(r->fanout, &c->wait);
            return;
        }
        meta_reply_ok(c);
        break;
    default:
        reply_failure(r, c->req, call->status, "meta",
                      meta_svc_leader_id(r->meta));
        break;
    }
    meta_call_free(c);
}

static void handle_meta(struct node_rpc *r, struct rpc_server_req *req,
                        const Ringmq__RpcRequest *msg)
{
    struct rpc_meta_call *c;

    if (r->meta == NULL || msg->group == NULL ||
        strcmp(msg->group, "meta") != 0) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    c = xcalloc(1, sizeof(*c));
    if (mq_pb_meta_cmd_from_pb(msg->meta, &c->call.cmd) != 0) {
        free(c);
        reply_code(req, OUTCOME_BAD_REQUEST, "bad meta command");
        return;
    }
    c->rpc = r;
    c->req = req;
    c->view_version = msg->meta->view_version;
    c->call.cb = meta_call_done;
    c->call.data = c;
    meta_svc_submit_until(r->meta, &c->call, rpc_server_req_deadline(req));
}

struct rpc_meta_watch {
    struct meta_svc_watch w;
    struct node_rpc *rpc; /* NULL once the service closed */
    struct rpc_server_req *req;
    uint64_t router_id; /* 0: not a router's (a one-off read) */
    uint64_t arrived_ms;
    struct rpc_meta_watch *prev;
    struct rpc_meta_watch *next;
};

static void watch_unlink(struct node_rpc *r, struct rpc_meta_watch *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        r->watches = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void meta_watch_done(struct meta_svc_watch *w)
{
    struct rpc_meta_watch *c = w->data;
    struct node_rpc *r = c->rpc;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MetaSnapshot snap;

    if (r == NULL) {
        reply_code(c->req, OUTCOME_UNAVAILABLE, "closing");
        free(c);
        return;
    }
    watch_unlink(r, c);
    if (w->status == OUTCOME_OK && !meta_svc_is_leader(r->meta)) {
        /* Only a leader's answer may renew a router's lease
         * (node/meta_fanout.h): a replica that lost leadership sends its
         * watches on. */
        reply_not_leader(r, c->req, "meta", meta_svc_leader_id(r->meta));
        free(c);
        return;
    }
    /* An unchanged state is not sent again: the version says so. */
    if (w->status != OUTCOME_OK ||
        meta_snapshot_pb(r, w->known_version, &snap) != 0) {
        reply_code(c->req, OUTCOME_UNAVAILABLE, "closing");
        free(c);
        return;
    }
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_META_SNAPSHOT;
    resp.meta_snapshot = &snap;
    rpc_server_reply(c->req, &resp);
    meta_snapshot_pb_free(&snap);
    fanout_term(r);
    meta_fanout_answered(r->fanout, c->router_id, c->arrived_ms);
    free(c);
}

static void handle_meta_watch(struct node_rpc *r, struct rpc_server_req *req,
                              const Ringmq__RpcRequest *msg)
{
    const Ringmq__MetaWatch *mw = msg->meta_watch;
    struct rpc_meta_watch *c;

    if (r->meta == NULL || msg->group == NULL ||
        strcmp(msg->group, "meta") != 0) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    if (!meta_svc_is_leader(r->meta)) {
        /* Watches live at the leader: it delays meta changes until every
         * watcher has them (meta_fanout.h). */
        reply_not_leader(r, req, "meta", meta_svc_leader_id(r->meta));
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->rpc = r;
    c->req = req;
    c->router_id = mw->one_off ? 0 : mw->router_id;
    c->arrived_ms = uv_now(r->loop);
    fanout_term(r);
    meta_fanout_request(r->fanout, c->router_id, mw->known_version);
    c->w.known_version = mw->known_version;
    c->w.wait_ms = mw->wait_ms > 60000 ? 60000 : mw->wait_ms;
    c->w.cb = meta_watch_done;
    c->w.data = c;
    /* Linked before it is handed over: the answer may come at once. */
    c->next = r->watches;
    if (r->watches) {
        r->watches->prev = c;
    }
    r->watches = c;
    meta_svc_watch(r->meta, &c->w);
}

/* ---- the cluster map ----------------------------------------------------- */

struct rpc_map_call {
    struct meta_svc_map_call call;
    struct map_pb_cmd cmd;
    struct node_rpc *rpc;
    struct rpc_server_req *req;
};

static void map_call_done(struct meta_svc_map_call *call)
{
    struct rpc_map_call *c = call->data;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MapResult res;

    if (call->status == OUTCOME_OK) {
        map_pb_result_to(&call->result, &res);
        resp.code = rpc_code(OUTCOME_OK);
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MAP;
        resp.map = &res;
        rpc_server_reply(c->req, &resp);
    } else {
        reply_failure(c->rpc, c->req, call->status, "meta",
                      meta_svc_leader_id(c->rpc->meta));
    }
    map_pb_cmd_clear(&c->cmd);
    free(c);
}

static void handle_map(struct node_rpc *r, struct rpc_server_req *req,
                       const Ringmq__RpcRequest *msg)
{
    struct rpc_map_call *c;

    if (r->meta == NULL) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    c = xcalloc(1, sizeof(*c));
    if (map_pb_cmd_from(msg->map, &c->cmd) != 0) {
        map_pb_cmd_clear(&c->cmd);
        free(c);
        reply_code(req, OUTCOME_BAD_REQUEST, "bad map command");
        return;
    }
    c->rpc = r;
    c->req = req;
    c->call.cmd = &c->cmd.cmd;
    c->call.cb = map_call_done;
    c->call.data = c;
    meta_svc_map_submit(r->meta, &c->call);
}

/* A map watch: answered from this replica's map, leader or not (a
 * follower's map is at most a little behind, and routers re-watch). */
struct rpc_map_watch {
    struct meta_svc_watch w;
    struct node_rpc *rpc; /* NULL once the service closed */
    struct rpc_server_req *req;
    struct rpc_map_watch *prev;
    struct rpc_map_watch *next;
};

static void map_watch_unlink(struct node_rpc *r, struct rpc_map_watch *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        r->map_watches = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void map_watch_done(struct meta_svc_watch *w)
{
    struct rpc_map_watch *c = w->data;
    struct node_rpc *r = c->rpc;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__MapDelta pb;
    struct map_pb_arena a = {0};
    struct map_delta d;

    if (r == NULL || w->status != OUTCOME_OK) {
        reply_code(c->req, OUTCOME_UNAVAILABLE, "closing");
        if (r != NULL) {
            map_watch_unlink(r, c);
        }
        free(c);
        return;
    }
    map_watch_unlink(r, c);
    map_delta_init(&d);
    map_sm_delta(meta_svc_map(r->meta), w->known_version, &d);
    map_pb_delta_to(&d, &pb, &a);
    resp.code = rpc_code(OUTCOME_OK);
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_MAP_DELTA;
    resp.map_delta = &pb;
    rpc_server_reply(c->req, &resp);
    map_pb_arena_clear(&a);
    map_delta_clear(&d);
    free(c);
}

static void handle_map_watch(struct node_rpc *r, struct rpc_server_req *req,
                             const Ringmq__RpcRequest *msg)
{
    struct rpc_map_watch *c;

    if (r->meta == NULL) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    if (msg->map_watch->at_leader && !meta_svc_is_leader(r->meta)) {
        reply_not_leader(r, req, "meta", meta_svc_leader_id(r->meta));
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->rpc = r;
    c->req = req;
    c->w.map = true;
    c->w.known_version = msg->map_watch->known_epoch;
    c->w.wait_ms = msg->map_watch->wait_ms > 60000
                       ? 60000
                       : msg->map_watch->wait_ms;
    c->w.cb = map_watch_done;
    c->w.data = c;
    c->next = r->map_watches;
    if (r->map_watches) {
        r->map_watches->prev = c;
    }
    r->map_watches = c;
    meta_svc_watch(r->meta, &c->w);
}

void node_rpc_set_watermark(struct node_rpc *r, struct watermark *w)
{
    r->watermark = w;
}

void node_rpc_set_amqp(struct node_rpc *r, struct mq_svc *const *mq,
                       unsigned n_mq, struct meta_svc *meta)
{
    r->mq = mq;
    r->n_mq = n_mq;
    r->meta = meta;
    if (meta != NULL && r->fanout == NULL) {
        r->fanout = meta_fanout_new(r->loop, 0, r->cfg->election_ms);
    }
}

/* ---- membership -------------------------------------------------------- */

struct rpc_member_call {
    struct node_rpc *rpc;
    struct rpc_server_req *req;
    uint64_t id;
    char group[CLUSTER_NAME_MAX + 8];
};

static void reply_member_status(struct node_rpc *r, struct rpc_server_req *req,
                                const char *group, struct rgroup *g,
                                uint64_t id, int status)
{
    char why[CLUSTER_NAME_MAX + 320];

    switch (status) {
    case RGROUP_OK:
        reply_code(req, OUTCOME_OK, NULL);
        return;
    case RGROUP_ENOTLEADER:
        reply_not_leader(r, req, group, rgroup_leader_id(g));
        return;
    case RGROUP_ESELF:
        /* the leader is handing over: no hint yet, ask again */
        reply_code(req, OUTCOME_NOT_LEADER,
                   "this leader is the member to remove: leadership is "
                   "moving to another voter; ask the next leader");
        return;
    case RGROUP_EBUSY:
        snprintf(why, sizeof(why),
                 "another membership change of group %s is in progress",
                 group);
        break;
    case RGROUP_ECATCHUP:
        snprintf(why, sizeof(why),
                 "member %" PRIu64 " of group %s did not catch up: is its "
                 "node running (with join: true in its map) and reachable "
                 "at its raft address? It stays a spare until added again "
                 "or removed",
                 id, group);
        break;
    case RGROUP_EINVAL:
        reply_code(req, OUTCOME_BAD_REQUEST,
                   "refused: the id or the address belongs to another "
                   "member, or it is the last voter (this node's log says "
                   "which)");
        return;
    case RGROUP_ECLOSING:
        snprintf(why, sizeof(why), "group %s is closing", group);
        break;
    default:
        snprintf(why, sizeof(why),
                 "leadership lost or closing: the change to member %" PRIu64
                 " may or may not have happened; ask again",
                 id);
        break;
    }
    reply_code(req, OUTCOME_UNAVAILABLE, why);
}

static void member_done(void *data, int status)
{
    struct rpc_member_call *c = data;

    /* it was proposed: whatever happened to leadership since, the outcome
     * is unknown */
    if (status == RGROUP_ENOTLEADER || status == RGROUP_ESELF) {
        status = RGROUP_EUNKNOWN;
    }
    reply_member_status(c->rpc, c->req, c->group, NULL, c->id, status);
    free(c);
}

static void handle_member(struct node_rpc *r, struct rpc_server_req *req,
                          const Ringmq__RpcRequest *msg)
{
    const Ringmq__MemberChange *mc = msg->member;
    struct rgroup *g = NULL;
    struct rpc_member_call *c;
    int rv;

    /* no default group here: a change names the group it changes */
    if (msg->group != NULL && msg->group[0] != '\0') {
        g = group_by_name(r, msg->group);
    }
    if (g == NULL) {
        reply_code(req, OUTCOME_NO_GROUP, "no such group here");
        return;
    }
    if (mc->id == 0 ||
        (mc->op == RINGMQ__MEMBER_CHANGE__OP__ADD_VOTER &&
         (mc->raft == NULL || mc->raft[0] == '\0')) ||
        (mc->op != RINGMQ__MEMBER_CHANGE__OP__ADD_VOTER &&
         mc->op != RINGMQ__MEMBER_CHANGE__OP__REMOVE)) {
        reply_code(req, OUTCOME_BAD_REQUEST,
                   "a member change needs an op, an id and (to add) a raft "
                   "address");
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->rpc = r;
    c->req = req;
    c->id = mc->id;
    snprintf(c->group, sizeof(c->group), "%s", msg->group);
    if (mc->op == RINGMQ__MEMBER_CHANGE__OP__ADD_VOTER) {
        log_info("rpc: group %s: add member %" PRIu64 " at %s", msg->group,
                 mc->id, mc->raft);
        rv = rgroup_add_voter(g, mc->id, mc->raft, member_done, c);
    } else {
        log_info("rpc: group %s: remove member %" PRIu64, msg->group, mc->id);
        rv = rgroup_remove_member(g, mc->id, member_done, c);
    }
    if (rv != RGROUP_OK) {
        free(c);
        reply_member_status(r, req, msg->group, g, mc->id, rv);
    }
}

static void on_request(void *data, struct rpc_server_req *req,
                       const Ringmq__RpcRequest *msg)
{
    struct node_rpc *r = data;
    uint64_t deadline = rpc_server_req_deadline(req);

    /* Its sender has given up on it, or is about to, and reported it
     * failed: whatever it asks must not happen now. */
    if (deadline != 0 && clock_mono_ms() >= deadline) {
        log_debug("rpc: request %" PRIu64 " expired before it started",
                  msg->id);
        reply_expired(req, "before the request started");
        return;
    }
    switch (msg->body_case) {
    case RINGMQ__RPC_REQUEST__BODY_CACHE:
        handle_cache(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_STATUS:
        handle_status(r, req, msg->status->digest);
        break;
    case RINGMQ__RPC_REQUEST__BODY_MQ:
        handle_mq(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_MQ_EXPORT:
        handle_mq_export(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_MQ_SEGMENT_READ:
        handle_mq_segment_read(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_META:
        handle_meta(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_META_WATCH:
        handle_meta_watch(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_MEMBER:
        handle_member(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_MAP:
        handle_map(r, req, msg);
        break;
    case RINGMQ__RPC_REQUEST__BODY_MAP_WATCH:
        handle_map_watch(r, req, msg);
        break;
    default:
        reply_code(req, OUTCOME_BAD_REQUEST, "empty request");
        break;
    }
}

struct node_rpc *node_rpc_new(uv_loop_t *loop, const struct node_config *cfg,
                              struct cache_svc *const *groups,
                              unsigned n_groups, char *err, size_t errlen)
{
    struct node_rpc *r = xcalloc(1, sizeof(*r));
    struct rpc_server_config sc = {0};

    r->loop = loop;
    char host[NODE_ADDR_MAX];
    char sub[256];

    r->cfg = cfg;
    r->groups = groups;
    r->n_groups = n_groups;
    if (node_config_split_addr(cfg->rpc, host, sizeof(host), &sc.port) != 0) {
        snprintf(err, errlen, "rpc: bad address '%s'", cfg->rpc);
        goto err;
    }
    sc.host = host;
    r->server = rpc_server_new(loop, &sc, on_request, r, sub, sizeof(sub));
    if (r->server == NULL) {
        snprintf(err, errlen, "rpc %s: %s", cfg->rpc, sub);
        goto err;
    }
    return r;
err:
    free(r);
    return NULL;
}

struct close_ctx {
    struct node_rpc *rpc;
    void (*cb)(void *data);
    void *data;
};

static void server_closed(void *data)
{
    struct close_ctx *ctx = data;
    void (*cb)(void *) = ctx->cb;
    void *cb_data = ctx->data;

    free(ctx->rpc);
    free(ctx);
    if (cb != NULL) {
        cb(cb_data);
    }
}

void node_rpc_close(struct node_rpc *r, void (*cb)(void *data), void *data)
{
    struct close_ctx *ctx = xmalloc(sizeof(*ctx));

    ctx->rpc = r;
    ctx->cb = cb;
    ctx->data = data;
    /* Watches still in the meta group outlive this service: detach them. */
    while (r->watches) {
        struct rpc_meta_watch *w = r->watches;

        watch_unlink(r, w);
        w->rpc = NULL;
    }
    while (r->map_watches) {
        struct rpc_map_watch *w = r->map_watches;

        map_watch_unlink(r, w);
        w->rpc = NULL;
    }
    if (r->fanout) {
        meta_fanout_close(r->fanout);
        r->fanout = NULL;
    }
    rpc_server_close(r->server, server_closed, ctx);
}
