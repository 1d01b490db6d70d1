/* ctl_status: see ctl_status.h. Calls only ctl. */
#include "tools/ctl_status.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int cmd_status(struct ctl *ctl, bool digest_only)
{
    const struct opts *o = ctl->o;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__StatusRequest sreq = RINGMQ__STATUS_REQUEST__INIT;
    Ringmq__RpcResponse *resp;
    const Ringmq__StatusReply *st;
    size_t i;
    int rv;
    bool found = false;

    if (o->n_args != 1) {
        fprintf(stderr, "ringmqctl: %s takes no arguments\n", o->args[0]);
        return EXIT_USAGE;
    }
    sreq.digest = true;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
    req.status = &sreq;
    if (ctl_call(ctl, &req, false, &resp) != 0) {
        return EXIT_ERROR;
    }
    rv = ctl_check_code(resp);
    if (rv != 0) {
        goto out;
    }
    if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_STATUS) {
        fprintf(stderr, "ringmqctl: reply without status\n");
        rv = EXIT_ERROR;
        goto out;
    }
    st = resp->status;
    if (!digest_only && !o->kv) {
        printf("node %" PRIu64 "\n", st->node_id);
        printf(
            "%-10s %4s %-9s %-5s %6s %-21s %6s %10s %10s %10s %10s %9s "
            "%-16s\n",
            "GROUP", "ID", "STATE", "READY", "LEADER", "LEADER_RPC", "TERM",
            "COMMIT", "APPLIED", "LAST", "SNAPSHOT", "ITEMS", "DIGEST");
    }
    for (i = 0; i < st->n_groups; i++) {
        const Ringmq__GroupStatus *g = st->groups[i];
        const char *state = g->state[0] ? g->state : "-";
        const char *lrpc = g->leader_rpc[0] ? g->leader_rpc : "-";

        if (o->group_set && strcmp(g->name, o->group) != 0) {
            continue;
        }
        found = true;
        if (digest_only) {
            printf("%s %" PRIu64 " %016" PRIx64 "\n", g->name, g->last_applied,
                   g->digest);
        } else if (o->kv) {
            /* keys are the GroupStatus field names (scripts parse this) */
            printf("node_id=%" PRIu64 " name=%s id=%" PRIu64
                   " state=%s ready=%s leader_id=%" PRIu64
                   " leader_rpc=%s term=%" PRIu64 " commit_index=%" PRIu64
                   " last_applied=%" PRIu64 " last_index=%" PRIu64
                   " snapshot_index=%" PRIu64 " items=%" PRIu64
                   " bytes=%" PRIu64 " digest=%016" PRIx64
                   " snapshots_taken=%" PRIu64 " snapshots_restored=%" PRIu64
                   " batches_proposed=%" PRIu64 " cmds_proposed=%" PRIu64
                   " evictions=%" PRIu64 " limit_maxbytes=%" PRIu64
                   " last_stored=%" PRIu64 " progress=%s"
                   " body_segments=%" PRIu64 " body_bytes=%" PRIu64
                   " body_missing_bytes=%" PRIu64 " body_misses=%" PRIu64
                   "\n",
                   st->node_id, g->name, g->id, state,
                   g->ready ? "true" : "false", g->leader_id, lrpc, g->term,
                   g->commit_index, g->last_applied, g->last_index,
                   g->snapshot_index, g->items, g->bytes, g->digest,
                   g->snapshots_taken, g->snapshots_restored,
                   g->batches_proposed, g->cmds_proposed, g->evictions,
                   g->limit_maxbytes, g->last_stored,
                   g->progress[0] ? g->progress : "-", g->body_segments,
                   g->body_bytes, g->body_missing_bytes, g->body_misses);
        } else {
            printf("%-10s %4" PRIu64 " %-9s %-5s %6" PRIu64 " %-21s %6" PRIu64
                   " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64
                   " %9" PRIu64 " %016" PRIx64 "\n",
                   g->name, g->id, state, g->ready ? "yes" : "no", g->leader_id,
                   lrpc, g->term, g->commit_index, g->last_applied,
                   g->last_index, g->snapshot_index, g->items, g->digest);
        }
    }
    if (o->group_set && !found) {
        fprintf(stderr, "ringmqctl: no group '%s' on this node\n", o->group);
        rv = EXIT_ERROR;
    }
out:
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;
}
