/*
 * ctl: see ctl.h. The bottom of tools/: calls no other module of it.
 */
#include "tools/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/parse_num.h"
#include "proto/cache_pb.h"

int ctl_parse_i64(const char *s, int64_t *out)
{
    char *end;

    if (s == NULL || *s == '\0') {
        return -1;
    }
    errno = 0;
    *out = strtoll(s, &end, 10);
    return (errno != 0 || *end != '\0') ? -1 : 0;
}

int ctl_connect(struct ctl *ctl, const char *address)
{
    struct rpc_client_config cfg = {0};
    char err[256];

    if (ctl->client) {
        rpc_client_close(ctl->client, NULL, NULL);
        ctl->client = NULL;
    }
    cfg.address = address;
    cfg.call_timeout_ms = ctl->o->timeout_ms;
    cfg.connect_timeout_ms = ctl->o->timeout_ms;
    ctl->client = rpc_client_new(&ctl->loop, &cfg, err, sizeof(err));
    if (ctl->client == NULL) {
        fprintf(stderr, "ringmqctl: %s\n", err);
        return -1;
    }
    return 0;
}

bool ctl_is_not_leader(const Ringmq__RpcResponse *r)
{
    return rpc_outcome(r->code) == OUTCOME_NOT_LEADER;
}

int ctl_call(struct ctl *ctl,
             const Ringmq__RpcRequest *req,
             bool try_others,
             Ringmq__RpcResponse **resp)
{
    int redirects = 0;
    char next[300];
    int rv;

    for (;;) {
        rv = rpc_client_call_sync(ctl->client, req, 0, resp);
        if (rv != 0) {
            fprintf(stderr, "ringmqctl: %s: %s\n",
                    rpc_client_address(ctl->client), uv_strerror(rv));
            if (!try_others || ctl->addr_index >= ctl->o->n_addrs ||
                ctl_connect(ctl, ctl->o->addrs[ctl->addr_index++]) != 0) {
                return -1;
            }
            continue;
        }
        if (!ctl_is_not_leader(*resp) || redirects == MAX_REDIRECTS ||
            (*resp)->leader_rpc == NULL || (*resp)->leader_rpc[0] == '\0' ||
            strcmp((*resp)->leader_rpc, rpc_client_address(ctl->client)) == 0) {
            return 0;
        }
        snprintf(next, sizeof(next), "%s", (*resp)->leader_rpc);
        fprintf(stderr, "ringmqctl: %s is not the leader, trying %s\n",
                rpc_client_address(ctl->client), next);
        ringmq__rpc_response__free_unpacked(*resp, NULL);
        *resp = NULL;
        redirects++;
        if (ctl_connect(ctl, next) != 0) {
            return -1;
        }
    }
}

const char *ctl_code_name(Ringmq__RpcCode code)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &ringmq__rpc_code__descriptor, (int)code);

    return v ? v->name : "?";
}

int ctl_check_code(const Ringmq__RpcResponse *r)
{
    if (rpc_outcome(r->code) == OUTCOME_OK) {
        return 0;
    }
    fprintf(stderr, "ringmqctl: %s%s%s", ctl_code_name(r->code),
            r->error && r->error[0] ? ": " : "", r->error ? r->error : "");
    if (rpc_outcome(r->code) == OUTCOME_NOT_LEADER) {
        fprintf(stderr, " (leader %" PRIu64 " %s)", r->leader_id,
                r->leader_rpc && r->leader_rpc[0] ? r->leader_rpc : "unknown");
    }
    fprintf(stderr, "\n");
    return EXIT_ERROR;
}

int ctl_call_leader(struct ctl *ctl,
                    const struct cluster_shard *s,
                    const Ringmq__RpcRequest *req,
                    uint64_t deadline,
                    Ringmq__RpcResponse **resp)
{
    char next[CLUSTER_ADDR_MAX] = "";
    char last_error[512] = "";
    char shown[512] = "";
    unsigned turn = 0;

    for (;;) {
        const char *addr;
        int rv;

        if (next[0] != '\0') {
            addr = next;
        } else {
            addr = s->members[turn % s->n_members].rpc;
            turn++;
            if (turn % s->n_members == 0) {
                usleep(300 * 1000); /* every member asked: let it settle */
            }
        }
        if (clock_mono_ms() > deadline) {
            fprintf(stderr, "ringmqctl: %s: gave up (--seconds)%s%s\n",
                    req->group, last_error[0] ? ": " : "", last_error);
            return EXIT_ERROR;
        }
        if (ctl_connect(ctl, addr) != 0) {
            return EXIT_ERROR;
        }
        next[0] = '\0';
        rv = rpc_client_call_sync(ctl->client, req, 0, resp);
        if (rv != 0) {
            snprintf(last_error, sizeof(last_error), "%s: %s", addr,
                     uv_strerror(rv));
            continue;
        }
        switch (rpc_outcome((*resp)->code)) {
            case OUTCOME_NOT_LEADER:
                if ((*resp)->leader_rpc != NULL &&
                    (*resp)->leader_rpc[0] != '\0' &&
                    strcmp((*resp)->leader_rpc, addr) != 0) {
                    snprintf(next, sizeof(next), "%s", (*resp)->leader_rpc);
                }
                snprintf(last_error, sizeof(last_error), "%s: %s", addr,
                         (*resp)->error ? (*resp)->error : "not leader");
                break;
            case OUTCOME_UNAVAILABLE:
            case OUTCOME_EXPIRED: /* not executed: ask again */
            case OUTCOME_NO_GROUP:
                snprintf(last_error, sizeof(last_error), "%s",
                         (*resp)->error ? (*resp)->error : "");
                if (strcmp(last_error, shown) != 0) {
                    fprintf(stderr, "ringmqctl: %s: %s: %s (asking again)\n",
                            req->group, addr, last_error);
                    memcpy(shown, last_error, sizeof(shown));
                }
                break;
            default:
                return 0;
        }
        ringmq__rpc_response__free_unpacked(*resp, NULL);
        *resp = NULL;
    }
}

void ctl_pace_init(struct ctl_pace *p, uint64_t rate)
{
    memset(p, 0, sizeof(*p));
    p->rate = rate;
    p->start_ms = clock_mono_ms();
}

void ctl_pace(struct ctl_pace *p, size_t bytes)
{
    uint64_t due, now;

    if (p->rate == 0) {
        return;
    }
    p->paced += bytes;
    due = p->start_ms + p->paced * 1000 / p->rate;
    now = clock_mono_ms();
    if (due > now) {
        uint64_t t0 = clock_mono_ns();

        usleep((useconds_t)((due - now) * 1000));
        p->slept_ns += clock_mono_ns() - t0;
    } else if (now - due > 1000) {
        p->paced = 0;
        p->start_ms = now;
    }
}
