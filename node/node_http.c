/* node_http: see node_http.h. */
#include "node/node_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/http_admin.h"

struct node_http {
    const struct node_config *cfg;
    struct cache_svc *const *groups;
    unsigned n_groups;
    struct mq_svc *const *mq;
    unsigned n_mq;
    struct meta_svc *meta;
    struct http_admin *admin;
};

/* Why this node cannot serve, or NULL. */
static const char *unhealthy(const struct node_http *h, unsigned *group)
{
    unsigned g;

    for (g = 0; g < h->n_groups; g++) {
        uint64_t leader = cache_svc_leader_id(h->groups[g]);

        *group = g;
        if (leader == 0) {
            return "no leader";
        }
        if (leader == h->cfg->id && !cache_svc_is_leader(h->groups[g])) {
            return "leader not ready (catching up after election)";
        }
    }
    return NULL;
}

static void on_healthz(void *data, const char *path, const char *query,
                       struct http_admin_response *resp)
{
    struct node_http *h = data;
    unsigned g = 0;
    const char *why;

    (void)path;
    if (http_admin_is_liveness(query)) {
        buf_append_str(&resp->body, "live\n");
        return;
    }
    why = unhealthy(h, &g);
    if (why == NULL) {
        buf_append_str(&resp->body, "ok\n");
        return;
    }
    resp->status = 503;
    buf_printf(&resp->body, "group %s: %s\n", h->cfg->groups[g].name, why);
}

/* Why replica @g of this node is not ready (node_http.h: /readyz), or
 * NULL. */
static const char *not_ready(const struct node_http *h, struct rgroup *g)
{
    struct rgroup_member_info members[RGROUP_MAX_MEMBERS + 2];
    struct rgroup_status st;
    unsigned n;
    unsigned i;
    bool voter = false;

    rgroup_status(g, &st);
    if (st.leader_id == 0) {
        return "no leader";
    }
    n = rgroup_members(g, members, RGROUP_MAX_MEMBERS + 2);
    for (i = 0; i < n && i < RGROUP_MAX_MEMBERS + 2; i++) {
        if (members[i].id == h->cfg->id &&
            strcmp(members[i].role, "voter") == 0) {
            voter = true;
        }
    }
    if (!voter) {
        return "not a voter (yet)";
    }
    if (st.leader_id == h->cfg->id) {
        return st.ready ? NULL
                        : "leader not ready (catching up after election)";
    }
    if (st.last_applied + NODE_HTTP_READY_LAG < st.commit_index) {
        return "catching up (applied behind commit)";
    }
    return NULL;
}

static void on_readyz(void *data, const char *path, const char *query,
                      struct http_admin_response *resp)
{
    struct node_http *h = data;
    struct rgroup_status st;
    struct rgroup *g = NULL;
    const char *why = NULL;
    const char *name = "";
    const char *suffix = "";
    unsigned i;

    (void)path;
    (void)query;
    for (i = 0; why == NULL && i < h->n_groups; i++) {
        g = cache_svc_group(h->groups[i]);
        name = h->cfg->groups[i].name;
        why = not_ready(h, g);
    }
    for (i = 0; why == NULL && i < h->n_mq; i++) {
        g = mq_svc_group(h->mq[i]);
        name = h->cfg->groups[i].name; /* mq[i] is "<group i>.mq" */
        suffix = ".mq";
        why = not_ready(h, g);
    }
    if (why == NULL && h->meta != NULL) {
        g = meta_svc_group(h->meta);
        name = "meta";
        suffix = "";
        why = not_ready(h, g);
    }
    if (why == NULL && h->n_groups == 0) {
        buf_append_str(&resp->body, "no groups\n");
        resp->status = 503;
        return;
    }
    if (why == NULL) {
        buf_append_str(&resp->body, "ready\n");
        return;
    }
    resp->status = 503;
    rgroup_status(g, &st);
    buf_printf(&resp->body,
               "group %s%s: %s (leader %llu, commit %llu, applied %llu)\n",
               name, suffix, why, (unsigned long long)st.leader_id,
               (unsigned long long)st.commit_index,
               (unsigned long long)st.last_applied);
}

static void on_metrics(void *data, const char *path, const char *query,
                       struct http_admin_response *resp)
{
    struct node_http *h = data;
    struct cache_svc_status st[NODE_MAX_GROUPS];
    uint64_t log_entries[NODE_MAX_GROUPS], log_bytes[NODE_MAX_GROUPS];
    struct http_admin_metrics m;
    unsigned g;

    (void)path;
    (void)query;
    for (g = 0; g < h->n_groups; g++) {
        cache_svc_status(h->groups[g], &st[g], false);
        cache_svc_log_memory(h->groups[g], &log_entries[g], &log_bytes[g]);
    }
    http_admin_metrics_init(&m, &resp->body);
    /* Prometheus wants each family's samples together: families outside,
     * groups inside. */
#define FAMILY(fam, kind, text, field)                                      \
    for (g = 0; g < h->n_groups; g++) {                                     \
        const char *labels[] = {"group", h->cfg->groups[g].name, NULL};     \
        http_admin_metric(&m, fam, kind, text, labels,                      \
                          (double)st[g].field);                             \
    }
#define FAMILY_OF(fam, kind, text, values)                                  \
    for (g = 0; g < h->n_groups; g++) {                                     \
        const char *labels[] = {"group", h->cfg->groups[g].name, NULL};     \
        http_admin_metric(&m, fam, kind, text, labels, (double)values[g]);  \
    }
    FAMILY("ringmq_group_leader", "gauge",
           "1 when this replica is the group's ready leader.", raft.ready);
    FAMILY("ringmq_group_leader_id", "gauge",
           "Raft id of the known leader, 0 when unknown.", raft.leader_id);
    FAMILY("ringmq_group_term", "gauge", "Raft term.", raft.term);
    FAMILY("ringmq_group_commit_index", "gauge", "Raft commit index.",
           raft.commit_index);
    FAMILY("ringmq_group_applied_index", "gauge",
           "Last log index applied to the state machine.", raft.last_applied);
    FAMILY("ringmq_group_last_index", "gauge", "Last log index.",
           raft.last_index);
    FAMILY("ringmq_group_snapshot_index", "gauge",
           "Index of the newest snapshot.", raft.snapshot_index);
    FAMILY("ringmq_group_snapshots_taken_total", "counter",
           "Snapshots taken by this replica.", raft.snapshots_taken);
    FAMILY_OF("ringmq_group_log_memory_bytes", "gauge",
              "Bytes of Raft log entries held in memory.", log_bytes);
    FAMILY_OF("ringmq_group_log_memory_entries", "gauge",
              "Raft log entries held in memory.", log_entries);
    FAMILY("ringmq_group_leader_changes_total", "counter",
           "Leader changes seen by this replica.", raft.leader_changes);
    FAMILY("ringmq_group_entries_proposed_total", "counter",
           "Raft entries this replica proposed (batches).",
           raft.batches_proposed);
    FAMILY("ringmq_group_commands_proposed_total", "counter",
           "Commands in those entries (group commit packs many).",
           raft.cmds_proposed);
    FAMILY("ringmq_group_queued_commands", "gauge",
           "Commands waiting to be proposed (admission bound: busy beyond).",
           raft.queued_cmds);
    FAMILY("ringmq_group_queued_bytes", "gauge",
           "Payload bytes of the commands waiting to be proposed.",
           raft.queued_bytes);
    FAMILY("ringmq_cache_items", "gauge", "Items in the cache.",
           sm.curr_items);
    FAMILY("ringmq_cache_bytes", "gauge", "Charged bytes of the cache's items.",
           sm.bytes);
    FAMILY("ringmq_cache_limit_bytes", "gauge", "Memory limit (-m).",
           sm.limit_maxbytes);
    FAMILY("ringmq_cache_evictions_total", "counter",
           "Items evicted by the memory limit.", sm.evictions);
#undef FAMILY
#undef FAMILY_OF
    http_admin_metrics_free(&m);
    resp->content_type = HTTP_ADMIN_METRICS_CONTENT_TYPE;
}

struct node_http *node_http_new(uv_loop_t *loop, const struct node_config *cfg,
                                struct cache_svc *const *groups,
                                unsigned n_groups, char *err, size_t errlen)
{
    struct node_http *h = xcalloc(1, sizeof(*h));
    struct http_admin_config ac = {0};
    char host[NODE_ADDR_MAX];
    char sub[256];

    h->cfg = cfg;
    h->groups = groups;
    h->n_groups = n_groups;
    if (node_config_split_addr(cfg->http, host, sizeof(host), &ac.port) != 0) {
        snprintf(err, errlen, "http: bad address '%s'", cfg->http);
        goto err;
    }
    ac.host = host;
    h->admin = http_admin_new(loop, &ac, sub, sizeof(sub));
    if (h->admin == NULL) {
        snprintf(err, errlen, "http %s: %s", cfg->http, sub);
        goto err;
    }
    if (http_admin_route(h->admin, "/healthz", on_healthz, h) != 0 ||
        http_admin_route(h->admin, "/readyz", on_readyz, h) != 0 ||
        http_admin_route(h->admin, "/metrics", on_metrics, h) != 0) {
        snprintf(err, errlen, "http: cannot register routes");
        http_admin_close(h->admin, NULL, NULL);
        goto err;
    }
    return h;
err:
    free(h);
    return NULL;
}

void node_http_set_amqp(struct node_http *h, struct mq_svc *const *mq,
                        unsigned n_mq, struct meta_svc *meta)
{
    h->mq = mq;
    h->n_mq = n_mq;
    h->meta = meta;
}

struct close_ctx {
    struct node_http *h;
    void (*cb)(void *data);
    void *data;
};

static void admin_closed(void *data)
{
    struct close_ctx *ctx = data;
    void (*cb)(void *) = ctx->cb;
    void *cb_data = ctx->data;

    free(ctx->h);
    free(ctx);
    if (cb != NULL) {
        cb(cb_data);
    }
}

void node_http_close(struct node_http *h, void (*cb)(void *data), void *data)
{
    struct close_ctx *ctx = xmalloc(sizeof(*ctx));

    ctx->h = h;
    ctx->cb = cb;
    ctx->data = data;
    http_admin_close(h->admin, admin_closed, ctx);
}
