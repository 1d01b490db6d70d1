/*
 * leader: see leader.h.
 *
 * A request is owned by exactly one place at a time: the rpc_client (one
 * call in flight, whose callback fires exactly once), the wait list
 * (sorted by due time, one timer armed at the head), or the code running
 * ops->send/ops->done for it. Closing empties the wait list and closes the
 * clients, which fail their calls with UV_ECANCELED, so every request has
 * ended before the engine is freed.
 */
#include "router/leader.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/random_id.h"
#include "proto/rpc_frame.h"

#define RETRY_BACKOFF_MS_DEFAULT 30

/* One distinct node RPC address, shared by every group it hosts. Never
 * freed before the engine: groups point at it, and a node that left every
 * group may still have calls in flight. */
struct leader_node {
    char addr[CLUSTER_ADDR_MAX];
    struct rpc_client *client;
    uint64_t down_until; /* uv_now() ms; 0 = not known dead */
    /* It answered NOT_LEADER: not the leader, whatever hints say, until
     * then (uv_now() ms) or until it answers a request OK (leader.h). */
    uint64_t not_leader_until;
    uint64_t answered_at; /* uv_now() ms of its last answer, 0 = none */
};

struct leader_group {
    struct leader_engine *e;
    char name[LEADER_GROUP_NAME_MAX];
    unsigned n_members; /* >= 1 */
    uint64_t member_id[CLUSTER_MAX_MEMBERS];
    struct leader_node *member_node[CLUSTER_MAX_MEMBERS];
    unsigned guess; /* < n_members */
    /* +1 per membership change: an attempt sent under another generation
     * asked a member index that may now name another node. */
    unsigned gen;
    struct leader_group_counters counters;
};

struct leader_engine {
    uv_loop_t *loop;
    struct leader_config cfg;
    /* Arrays of pointers, so that nodes and groups stay where they are
     * while more are added (callers and requests hold group pointers). */
    struct leader_node **nodes;
    unsigned n_nodes, cap_nodes;
    struct leader_group **groups;
    unsigned n_groups, cap_groups;

    struct leader_req *wait_head, *wait_tail;
    uv_timer_t retry_timer;
    uint64_t retry_due; /* 0 = not armed */

    bool closing;
    unsigned open; /* clients + the timer not yet closed */
    void (*close_cb)(void *data);
    void *close_data;
};

static void attempt(struct leader_req *q);

/* ---- a group's members --------------------------------------------------- */

/*
 * The call certainly was not written (leader.h: "never sent"). rpc_client
 * fails every call it had accepted, sent or still queued, when a connection
 * fails, and reports a connect timeout as UV_ETIMEDOUT, so this is decided
 * conservatively from the code alone: only codes that can only come from a
 * failed connection attempt or name lookup count.
 */
static bool never_sent(int status)
{
    if (status == UV_ECONNREFUSED || status == UV_EADDRNOTAVAIL) {
        return true;
    }
    /* name lookup failures: UV_EAI_ADDRFAMILY (-3000) .. UV_EAI_PROTOCOL */
    return status <= UV_EAI_ADDRFAMILY && status >= UV_EAI_PROTOCOL;
}

/* For every function taking a member index: callers hold indexes across
 * a membership change (leader.h), so any index must be safe. */
static bool member_ok(const struct leader_group *g, unsigned m)
{
    return m < g->n_members;
}

/* @m < n_members */
static struct leader_node *member_node(const struct leader_group *g, unsigned m)
{
    return g->member_node[m];
}

/* @m < n_members */
static bool member_dead(const struct leader_group *g, unsigned m)
{
    return member_node(g, m)->down_until > uv_now(g->e->loop);
}

/* It said it is not the leader a moment ago: a hint naming it is stale. */
static bool member_not_leader(const struct leader_group *g, unsigned m)
{
    return member_node(g, m)->not_leader_until > uv_now(g->e->loop);
}

const char *leader_group_name(const struct leader_group *g)
{
    return g->name;
}

unsigned leader_group_size(const struct leader_group *g)
{
    return g->n_members;
}

unsigned leader_group_guess(const struct leader_group *g)
{
    return g->guess;
}

uint64_t leader_group_member_id(const struct leader_group *g, unsigned m)
{
    return member_ok(g, m) ? g->member_id[m] : 0;
}

struct rpc_client *leader_group_client(const struct leader_group *g, unsigned m)
{
    return member_node(g, member_ok(g, m) ? m : 0)->client;
}

unsigned leader_group_next(const struct leader_group *g, unsigned m)
{
    unsigned i;

    /* Out of range: as if after the last, so the walk starts at 0. */
    if (!member_ok(g, m)) {
        m = g->n_members - 1;
    }
    for (i = 1; i < g->n_members; i++) {
        unsigned n = (m + i) % g->n_members;
        if (!member_dead(g, n)) {
            return n;
        }
    }
    return (m + 1) % g->n_members;
}

int leader_group_hint(const struct leader_group *g,
                      uint64_t id,
                      const char *rpc,
                      int except)
{
    int found = -1;
    unsigned m;

    /* The id is authoritative; the address is the fallback for nodes that
     * send no id. */
    for (m = 0; m < g->n_members && found < 0 && id != 0; m++) {
        if (g->member_id[m] == id) {
            found = (int)m;
        }
    }
    for (m = 0; m < g->n_members && found < 0 && rpc != NULL && *rpc != '\0';
         m++) {
        if (strcmp(member_node(g, m)->addr, rpc) == 0) {
            found = (int)m;
        }
    }
    if (found < 0 || found == except || member_dead(g, (unsigned)found) ||
        member_not_leader(g, (unsigned)found)) {
        return -1;
    }
    return found;
}

void leader_group_adopt(struct leader_group *g, unsigned m, const char *why)
{
    if (!member_ok(g, m) || g->guess == m) {
        return;
    }
    log_info("router: group %s: leader is now member %" PRIu64 " (%s), %s",
             g->name, g->member_id[m], member_node(g, m)->addr, why);
    g->guess = m;
    g->counters.leader_changes++;
}

void leader_group_failed(struct leader_group *g, unsigned m, int status)
{
    /* A reset usually means the node died: its followers keep naming it
     * until they elect, so its name in hints must be ignored for a while
     * (leader.h). */
    if (member_ok(g, m) && (never_sent(status) || status == UV_ECONNRESET)) {
        member_node(g, m)->down_until =
            uv_now(g->e->loop) + LEADER_NODE_DOWN_MS;
    }
}

void leader_group_answered(struct leader_group *g, unsigned m)
{
    if (member_ok(g, m)) {
        member_node(g, m)->down_until = 0;
        member_node(g, m)->answered_at = uv_now(g->e->loop);
    }
}

void leader_group_counters(const struct leader_group *g,
                           struct leader_group_counters *out)
{
    *out = g->counters;
}

/* @m failed us without naming a leader: stop sending there first. Other
 * requests may already have moved the guess; keep theirs. */
static void leave(struct leader_group *g, unsigned m)
{
    if (g->guess == m) {
        g->guess = leader_group_next(g, m);
    }
}

/* ---- the wait list ------------------------------------------------------- */

static void on_retry_timer(uv_timer_t *t);
static void end(struct leader_req *q, enum leader_end how, int err,
                const Ringmq__RpcResponse *resp);

static void arm_retry_timer(struct leader_engine *e)
{
    uint64_t now = uv_now(e->loop);

    if (e->wait_head == NULL) {
        uv_timer_stop(&e->retry_timer);
        e->retry_due = 0;
        return;
    }
    if (e->retry_due != 0 && e->retry_due <= e->wait_head->due) {
        return;
    }
    e->retry_due = e->wait_head->due;
    uv_timer_start(&e->retry_timer, on_retry_timer,
                   e->retry_due > now ? e->retry_due - now : 0, 0);
}

static void wait_unlink(struct leader_engine *e, struct leader_req *q)
{
    if (q->prev) {
        q->prev->next = q->next;
    } else {
        e->wait_head = q->next;
    }
    if (q->next) {
        q->next->prev = q->prev;
    } else {
        e->wait_tail = q->prev;
    }
    q->prev = q->next = NULL;
}

/* Park @q until now + @delay_ms (never past its deadline). Sorted insert
 * from the tail: with one backoff value it is O(1). */
static void wait_for(struct leader_req *q, uint64_t delay_ms)
{
    struct leader_engine *e = q->group->e;
    struct leader_req *p = e->wait_tail;

    q->hops = 0;
    q->due = uv_now(e->loop) + delay_ms;
    if (q->due > q->deadline) {
        q->due = q->deadline;
    }
    while (p && p->due > q->due) {
        p = p->prev;
    }
    q->prev = p;
    q->next = p ? p->next : e->wait_head;
    if (q->next) {
        q->next->prev = q;
    } else {
        e->wait_tail = q;
    }
    if (p) {
        p->next = q;
    } else {
        e->wait_head = q;
    }
    arm_retry_timer(e);
}

static void retry_wait(struct leader_req *q)
{
    q->group->counters.retries++;
    wait_for(q, q->group->e->cfg.retry_backoff_ms);
}

/* Bounded, so that a ping-pong of stale hints cannot spin. */
static void retry_now(struct leader_req *q)
{
    if (q->hops >= 2 * q->group->n_members) {
        retry_wait(q);
        return;
    }
    q->hops++;
    q->group->counters.retries++;
    attempt(q);
}

static void on_retry_timer(uv_timer_t *t)
{
    struct leader_engine *e = t->data;
    uint64_t now = uv_now(e->loop);
    struct leader_req *due = NULL;
    struct leader_req **tailp = &due;
    struct leader_req *q;

    /* Detach the due requests first: attempts may park requests again. */
    e->retry_due = 0;
    while (e->wait_head && e->wait_head->due <= now) {
        q = e->wait_head;
        wait_unlink(e, q);
        *tailp = q;
        tailp = &q->next;
    }
    arm_retry_timer(e);
    while (due) {
        void (*resume)(struct leader_req *);

        q = due;
        due = q->next;
        q->next = NULL;
        resume = q->resume;
        q->resume = NULL;
        if (resume == NULL) {
            attempt(q);
        } else if (e->closing) {
            end(q, LEADER_CLOSING, 0, NULL);
        } else if (uv_now(e->loop) >= q->deadline) {
            end(q, LEADER_DEADLINE, 0, NULL);
        } else {
            resume(q);
        }
    }
}

/* ---- one request --------------------------------------------------------- */

static void end(struct leader_req *q,
                enum leader_end how,
                int err,
                const Ringmq__RpcResponse *resp)
{
    q->group->e->cfg.ops->done(q, how, err, resp);
}

/* The leader is busy (@resp: BUSY, or EXPIRED after waiting in its queue):
 * nothing was proposed, so every request may be sent again, after a
 * backoff that doubles with each such answer it got. No point waiting past
 * the deadline: the caller gets the answer. */
static void retry_busy(struct leader_req *q, const Ringmq__RpcResponse *resp)
{
    struct leader_engine *e = q->group->e;
    uint64_t delay = e->cfg.retry_backoff_ms;
    uint64_t jitter;
    unsigned i;

    for (i = 0; i < q->busy && delay < LEADER_BUSY_BACKOFF_MAX_MS; i++) {
        delay *= 2;
    }
    if (delay > LEADER_BUSY_BACKOFF_MAX_MS) {
        delay = LEADER_BUSY_BACKOFF_MAX_MS;
    }
    random_bytes(&jitter, sizeof(jitter));
    delay = delay - delay / 2 + jitter % (delay / 2 + 1);
    q->busy++;
    if (uv_now(e->loop) + delay + e->cfg.busy_answer_min_ms >= q->deadline) {
        /* this attempt executed nothing, an earlier one may have */
        end(q, q->maybe_applied ? LEADER_MAYBE_APPLIED : LEADER_ANSWERED, 0,
            resp);
        return;
    }
    q->group->counters.retries++;
    wait_for(q, delay);
}

/* The outcome of @q's attempt is unknown (@err or @resp says why). */
static void maybe_applied(struct leader_req *q,
                          int err,
                          const Ringmq__RpcResponse *resp)
{
    if (q->may_retry_maybe_applied) {
        q->maybe_applied = true;
        retry_wait(q);
    } else {
        end(q, LEADER_MAYBE_APPLIED, err, resp);
    }
}

static void on_reply(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct leader_req *q = data;
    struct leader_group *g = q->group;
    struct leader_engine *e = g->e;
    unsigned asked = q->member;
    /* The members changed since the attempt was sent: @asked may now be
     * another node's index, so the answer teaches nothing about members
     * (it still decides what becomes of the request). */
    bool same = q->gen == g->gen;
    int hint;

    if (status == UV_ECANCELED || e->closing) {
        end(q, LEADER_CLOSING, 0, NULL);
        return;
    }
    if (status < 0) {
        if (same) {
            leader_group_failed(g, asked, status);
            /* A member that answered other requests since this one was
             * sent is alive: a leader holding this one in a long queue,
             * say. Leaving it would send every request of the group to a
             * follower (a stopped one, maybe) until they time out too. */
            if (status != UV_ETIMEDOUT ||
                member_node(g, asked)->answered_at < q->sent_at) {
                leave(g, asked);
            }
        }
        if (never_sent(status)) {
            if (e->cfg.unsent_retry_at_once) {
                retry_now(q);
            } else {
                retry_wait(q);
            }
            return;
        }
        log_debug("router: group %s member %" PRIu64 ": %s", g->name,
                  leader_group_member_id(g, asked), uv_strerror(status));
        maybe_applied(q, status, NULL);
        return;
    }
    if (same) {
        leader_group_answered(g, asked);
    }
    switch (rpc_outcome(resp->code)) {
        case OUTCOME_NOT_LEADER:
            if (same) {
                member_node(g, asked)->not_leader_until =
                    uv_now(e->loop) + LEADER_NODE_DOWN_MS;
            }
            hint = leader_group_hint(g, resp->leader_id, resp->leader_rpc,
                                     same ? (int)asked : -1);
            if (hint >= 0) {
                leader_group_adopt(g, (unsigned)hint, "NOT_LEADER hint");
                retry_now(q);
                return;
            }
            if (same) {
                leave(g, asked);
            }
            retry_wait(q);
            return;
        case OUTCOME_NO_GROUP:
            if (same) {
                leave(g, asked);
            }
            retry_wait(q);
            return;
        case OUTCOME_UNAVAILABLE:
            maybe_applied(q, 0, resp);
            return;
        case OUTCOME_BUSY:
            if (same) {
                member_node(g, asked)->not_leader_until = 0; /* it leads */
            }
            retry_busy(q, resp);
            return;
        case OUTCOME_EXPIRED:
            /* held in its queue past the budget (or unread: then it may
             * not even lead), never executed */
            retry_busy(q, resp);
            return;
        default:
            if (same && rpc_outcome(resp->code) == OUTCOME_OK) {
                member_node(g, asked)->not_leader_until = 0; /* it leads */
            }
            end(q, LEADER_ANSWERED, 0, resp);
            return;
    }
}

static void attempt(struct leader_req *q)
{
    struct leader_engine *e = q->group->e;
    uint64_t now = uv_now(e->loop);
    uint64_t left;
    int rv;

    if (e->closing) {
        end(q, LEADER_CLOSING, 0, NULL);
        return;
    }
    if (now >= q->deadline) {
        end(q, LEADER_DEADLINE, 0, NULL);
        return;
    }
    left = q->deadline - now;
    q->member = q->group->guess;
    q->sent_at = now;
    q->gen = q->group->gen;
    rv = e->cfg.ops->send(q, left > UINT32_MAX ? UINT32_MAX : (unsigned)left);
    if (rv == UV_ECANCELED) {
        end(q, LEADER_CLOSING, 0, NULL);
    } else if (rv != 0) {
        end(q, LEADER_NOT_SENT, rv, NULL);
    }
}

int leader_req_call(struct leader_req *q,
                    Ringmq__RpcRequest *req,
                    unsigned timeout_ms)
{
    struct leader_group *g = q->group;

    req->epoch = g->e->cfg.epoch;
    req->group = g->name;
    q->attempts++;
    return rpc_client_call(leader_group_client(g, q->member), req, timeout_ms,
                           on_reply, q, NULL);
}

void leader_req_start(struct leader_group *g,
                      struct leader_req *q,
                      unsigned budget_ms,
                      bool may_retry_maybe_applied)
{
    leader_req_start_later(g, q, budget_ms, may_retry_maybe_applied, 0,
                           NULL);
}

void leader_req_start_later(struct leader_group *g,
                            struct leader_req *q,
                            unsigned budget_ms,
                            bool may_retry_maybe_applied,
                            unsigned delay_ms,
                            void (*resume)(struct leader_req *q))
{
    memset(q, 0, sizeof(*q));
    q->group = g;
    q->may_retry_maybe_applied = may_retry_maybe_applied;
    q->deadline = uv_now(g->e->loop) + budget_ms;
    if (delay_ms == 0 && resume == NULL) {
        attempt(q);
    } else {
        q->resume = resume;
        wait_for(q, delay_ms);
    }
}

void leader_req_again(struct leader_req *q, struct leader_group *g)
{
    q->group = g;
    attempt(q);
}

void leader_req_wait(struct leader_req *q, unsigned delay_ms,
                     void (*resume)(struct leader_req *q))
{
    q->resume = resume;
    wait_for(q, delay_ms);
}

/* ---- construction -------------------------------------------------------- */

struct leader_engine *leader_engine_new(uv_loop_t *loop,
                                        const struct leader_config *cfg)
{
    struct leader_engine *e = xcalloc(1, sizeof(*e));

    e->loop = loop;
    e->cfg = *cfg;
    e->cfg.client.address = NULL;
    if (e->cfg.busy_answer_min_ms == 0) {
        e->cfg.busy_answer_min_ms = LEADER_BUSY_ANSWER_MIN_MS;
    }
    if (e->cfg.retry_backoff_ms == 0) {
        e->cfg.retry_backoff_ms = RETRY_BACKOFF_MS_DEFAULT;
    }
    uv_timer_init(loop, &e->retry_timer);
    e->retry_timer.data = e;
    e->open = 1;
    return e;
}

/* The node at @addr, its client created on first sight; NULL with a
 * reason in @errmsg. */
static struct leader_node *node_get(struct leader_engine *e,
                                    const char *addr,
                                    char *errmsg,
                                    size_t errlen)
{
    struct rpc_client_config cc = e->cfg.client;
    struct leader_node *n;
    char sub[256];
    unsigned i;

    /* Linear: a cluster has tens of nodes, and this runs when a map
     * arrives, not per request. */
    for (i = 0; i < e->n_nodes; i++) {
        if (strcmp(e->nodes[i]->addr, addr) == 0) {
            return e->nodes[i];
        }
    }
    cc.address = addr;
    n = xcalloc(1, sizeof(*n));
    n->client = rpc_client_new(e->loop, &cc, sub, sizeof(sub));
    if (n->client == NULL) {
        snprintf(errmsg, errlen, "%s", sub);
        free(n);
        return NULL;
    }
    snprintf(n->addr, sizeof(n->addr), "%s", addr);
    if (e->n_nodes == e->cap_nodes) {
        e->cap_nodes = e->cap_nodes ? 2 * e->cap_nodes : 8;
        e->nodes = xrealloc(e->nodes, e->cap_nodes * sizeof(*e->nodes));
    }
    e->nodes[e->n_nodes++] = n;
    e->open++;
    return n;
}

/* Find or create the nodes of @members into @nodes. 0, or -1 with a reason
 * in @errmsg; nodes created before a failure stay (closed with the
 * engine). */
static int resolve_members(struct leader_engine *e,
                           const char *name,
                           const struct cluster_member *members,
                           unsigned n,
                           struct leader_node **nodes,
                           char *errmsg,
                           size_t errlen)
{
    unsigned m;

    /* The clients are closed once, by leader_engine_close(): one created
     * later would never be. */
    if (e->closing) {
        snprintf(errmsg, errlen, "group %s: closing", name);
        return -1;
    }
    if (n == 0 || n > CLUSTER_MAX_MEMBERS) {
        snprintf(errmsg, errlen, "group %s has %s members", name,
                 n == 0 ? "no" : "too many");
        return -1;
    }
    for (m = 0; m < n; m++) {
        nodes[m] = node_get(e, members[m].rpc, errmsg, errlen);
        if (nodes[m] == NULL) {
            return -1;
        }
    }
    return 0;
}

struct leader_group *leader_group_add(struct leader_engine *e,
                                      const char *name,
                                      const struct cluster_member *members,
                                      unsigned n,
                                      char *errmsg,
                                      size_t errlen)
{
    struct leader_node *nodes[CLUSTER_MAX_MEMBERS];
    struct leader_group *g;
    unsigned m;

    if (resolve_members(e, name, members, n, nodes, errmsg, errlen) != 0) {
        return NULL;
    }
    g = xcalloc(1, sizeof(*g));
    g->e = e;
    snprintf(g->name, sizeof(g->name), "%s", name);
    for (m = 0; m < n; m++) {
        g->member_id[m] = members[m].id;
        g->member_node[m] = nodes[m];
    }
    g->n_members = n;
    if (e->n_groups == e->cap_groups) {
        e->cap_groups = e->cap_groups ? 2 * e->cap_groups : 8;
        e->groups = xrealloc(e->groups, e->cap_groups * sizeof(*e->groups));
    }
    e->groups[e->n_groups++] = g;
    return g;
}

int leader_group_set_members(struct leader_group *g,
                             const struct cluster_member *members,
                             unsigned n,
                             char *errmsg,
                             size_t errlen)
{
    struct leader_node *nodes[CLUSTER_MAX_MEMBERS];
    uint64_t guess_id = g->member_id[g->guess];
    unsigned m;

    if (resolve_members(g->e, g->name, members, n, nodes, errmsg, errlen) !=
        0) {
        return -1;
    }
    if (n == g->n_members) {
        for (m = 0; m < n; m++) {
            if (g->member_id[m] != members[m].id ||
                g->member_node[m] != nodes[m]) {
                break;
            }
        }
        if (m == n) {
            return 0; /* unchanged: the indexes callers hold stay right */
        }
    }
    g->guess = 0;
    for (m = 0; m < n; m++) {
        g->member_id[m] = members[m].id;
        g->member_node[m] = nodes[m];
        if (members[m].id == guess_id) {
            g->guess = m;
        }
    }
    g->n_members = n;
    g->gen++;
    log_info("router: group %s: now %u member(s); leader guess member %" PRIu64
             " (%s)",
             g->name, n, g->member_id[g->guess],
             member_node(g, g->guess)->addr);
    return 0;
}

void leader_engine_set_epoch(struct leader_engine *e, uint64_t epoch)
{
    e->cfg.epoch = epoch;
}

/* ---- close --------------------------------------------------------------- */

static void maybe_free(struct leader_engine *e)
{
    void (*cb)(void *) = e->close_cb;
    void *data = e->close_data;
    unsigned i;

    if (--e->open > 0) {
        return;
    }
    for (i = 0; i < e->n_nodes; i++) {
        free(e->nodes[i]);
    }
    for (i = 0; i < e->n_groups; i++) {
        free(e->groups[i]);
    }
    free(e->nodes);
    free(e->groups);
    free(e);
    if (cb) {
        cb(data);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    maybe_free(h->data);
}

static void on_client_closed(void *data)
{
    maybe_free(data);
}

void leader_engine_close(struct leader_engine *e,
                         void (*cb)(void *data),
                         void *data)
{
    struct leader_req *q;
    unsigned i;

    e->closing = true;
    e->close_cb = cb;
    e->close_data = data;
    uv_timer_stop(&e->retry_timer);
    /* Parked requests end now. Their done may start requests again;
     * closing makes those end at once without touching the list. */
    while ((q = e->wait_head) != NULL) {
        wait_unlink(e, q);
        end(q, LEADER_CLOSING, 0, NULL);
    }
    /* Requests in flight end with UV_ECANCELED inside each close. */
    for (i = 0; i < e->n_nodes; i++) {
        rpc_client_close(e->nodes[i]->client, on_client_closed, e);
    }
    uv_close((uv_handle_t *)&e->retry_timer, on_timer_closed);
}
