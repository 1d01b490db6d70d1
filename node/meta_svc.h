/*
 * meta_svc: this node's replica of the "meta" group: the exchange/binding
 * state machine (sm/meta_sm) and the cluster map (sm/map_sm) behind one
 * Raft group, in the pattern of cache_svc and mq_svc (MetaCommand entries,
 * group commit, result from the leader's own apply). A snapshot holds both.
 *
 * The map starts empty. Given a bootstrap map (meta_svc_set_bootstrap:
 * the node's YAML), the replica that leads while the map is empty proposes
 * it (INIT, applied once: any later INIT is refused), so a new cluster
 * needs no extra step and a running one is never overwritten by a file.
 *
 * meta_svc_submit completes @call exactly once through call->cb, possibly
 * before returning, on the loop thread. Status as mq_svc: OK (applied,
 * call->result valid; its reply_text is static), NOT_LEADER (never
 * proposed), UNAVAILABLE (proposed, outcome unknown), TOO_LARGE, CLOSING,
 * BUSY (the group's queue is full: never proposed), EXPIRED
 * (meta_svc_submit_until's deadline passed in the queue: never proposed).
 *
 * The local state machine (meta_svc_sm) is this replica's view: on the
 * leader, once a command completed OK, the view includes it. Watches are
 * answered from the local view, so they work on any replica:
 * meta_svc_watch completes when the local version exceeds
 * watch->known_version (at once if it already does) or when wait_ms pass.
 *
 * Ownership: pointers inside call->cmd are borrowed until cb; @call and
 * @watch are caller-owned and must stay alive until their cb.
 */
#ifndef RINGMQ_META_SVC_H
#define RINGMQ_META_SVC_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "raft/group.h"
#include "sm/cluster_map.h"
#include "sm/map_sm.h"
#include "sm/meta_changes.h"
#include "sm/meta_sm.h"
#include "sm/outcome.h"

struct meta_svc;

struct meta_svc_call {
    /* in */
    struct meta_sm_cmd cmd;
    void (*cb)(struct meta_svc_call *call);
    void *data;
    /* out */
    enum outcome status;
    struct meta_sm_result result;
};

/* A cluster map command (sm/map_sm.h), completed like a meta_svc_call. */
struct meta_svc_map_call {
    /* in */
    const struct map_sm_cmd *cmd; /* borrowed until cb */
    void (*cb)(struct meta_svc_map_call *call);
    void *data;
    /* out */
    enum outcome status;
    struct map_sm_result result; /* valid when status is OK */
};

struct meta_svc_watch {
    /* in */
    bool map;               /* watch the map's epoch, not the exchanges */
    uint64_t known_version; /* the map: its epoch */
    uint32_t wait_ms; /* 0: answer now */
    void (*cb)(struct meta_svc_watch *w);
    void *data;
    /* out: OK (changed or timed out: compare version) or CLOSING */
    enum outcome status;
    uint64_t version; /* local version at completion */
    /* private */
    uint64_t deadline;
    struct meta_svc_watch *next;
    struct meta_svc_watch *prev;
};

struct meta_svc_status {
    struct rgroup_status raft;
    uint64_t version;
    uint64_t exchanges;
    uint64_t bindings;
    uint64_t watchers;
    uint64_t map_epoch;
};

/* @group is copied. NULL with @errmsg on failure. */
struct meta_svc *meta_svc_new(uv_loop_t *loop,
                              const struct rgroup_config *group,
                              char *errmsg, size_t errlen);

void meta_svc_submit(struct meta_svc *svc, struct meta_svc_call *call);
/* The same, for a call whose sender gives up at @deadline_ms
 * (clock_mono_ms(); 0 = never): still waiting to be proposed then, it is
 * dropped, never proposed, and completes EXPIRED. */
void meta_svc_submit_until(struct meta_svc *svc, struct meta_svc_call *call,
                           uint64_t deadline_ms);
void meta_svc_map_submit(struct meta_svc *svc, struct meta_svc_map_call *call);

/* The map this replica proposes while it leads and the map is empty;
 * @map is copied. Call once, before the group may elect. */
void meta_svc_set_bootstrap(struct meta_svc *svc,
                            const struct cluster_map *map);
void meta_svc_watch(struct meta_svc *svc, struct meta_svc_watch *w);

/* The local state machine: read-only, valid until meta_svc_close(). */
const struct meta_sm *meta_svc_sm(const struct meta_svc *svc);
/* The recent changes of meta_svc_sm (sm/meta_changes.h), recorded by
 * this replica's apply and emptied by a snapshot it restores: what a
 * watcher behind by a few versions is sent instead of the whole state.
 * Read-only, valid until meta_svc_close(). */
const struct meta_changes *meta_svc_changes(const struct meta_svc *svc);
/* This replica's cluster map state, read-only, valid until close. */
const struct map_sm *meta_svc_map(const struct meta_svc *svc);
void meta_svc_status(struct meta_svc *svc, struct meta_svc_status *out);
const char *meta_svc_name(const struct meta_svc *svc);
uint64_t meta_svc_leader_id(const struct meta_svc *svc);
bool meta_svc_is_leader(const struct meta_svc *svc);
/* The meta group (membership, member list). Valid until meta_svc_close(). */
struct rgroup *meta_svc_group(struct meta_svc *svc);

/* Stop: watches complete with CLOSING at once, queued and in-flight calls
 * with CLOSING or UNAVAILABLE. Freed before @cb runs. Call once. */
void meta_svc_close(struct meta_svc *svc, void (*cb)(void *data),
                    void *data);

#endif
