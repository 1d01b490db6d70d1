/*
 * mq_fetch: copies the body ranges a queue-group replica lacks (after an
 * InstallSnapshot: node/mq_store.h, missing ranges) from the group's other
 * replicas, over node RPC (MqSegmentRead, proto/rpc.proto), and answers
 * the same request for peers (mq_fetch_answer, called by node_rpc).
 *
 * Every replica that applied the same log holds the same bytes at the same
 * place, so any peer that has a range will do: the fetcher asks the peers
 * the owner lists (the leader first: it has applied the most), one chunk
 * (<= chunk_bytes, whole records) at a time, while the store has a range
 * missing. A peer that lacks the range (it answers absent), fails, times
 * out or sends records that do not check is left for the next; when every
 * peer of the list failed, the fetcher waits (exponential backoff) and
 * starts again with the first. Chunks are checked record by record
 * (length and crc) before they are filled, so a peer's hole or stale
 * bytes never become a body here.
 *
 * One call in flight at a time: a fetch costs the loop one 1 MiB pwrite
 * (written through to the disk) per chunk, never a wait.
 *
 * Threads: the loop thread. The store is borrowed until mq_fetch_close's
 * callback; the owner closes the fetcher before the store.
 */
#ifndef RINGMQ_MQ_FETCH_H
#define RINGMQ_MQ_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "node/config.h"
#include "node/mq_store.h"
#include "rpc.pb-c.h"

#define MQ_FETCH_CHUNK_DEFAULT ((uint32_t)1 << 20)
/* A record larger than a chunk is asked whole, up to this (a frame). */
#define MQ_FETCH_ASK_MAX ((uint32_t)60 << 20)
#define MQ_FETCH_PEERS_MAX RGROUP_MAX_MEMBERS

/* The RPC addresses to ask, in order (the leader first), not this node's:
 * at most MQ_FETCH_PEERS_MAX into @out (strings valid until the next call);
 * returns how many. Called at the start of every round. */
typedef unsigned (*mq_fetch_peers_fn)(void *data, const char **out,
                                      unsigned max);

struct mq_fetch_config {
    const char *group; /* "<shard>.mq": the RpcRequest's group; copied */
    mq_fetch_peers_fn peers;
    void *peers_data;
    uint32_t chunk_bytes;     /* 0 = MQ_FETCH_CHUNK_DEFAULT */
    unsigned call_timeout_ms; /* 0 = 10000 */
    unsigned retry_min_ms;    /* 0 = 100 */
    unsigned retry_max_ms;    /* 0 = 5000 */
    /* Optional: called when nothing is missing any more (each time the
     * fetcher finds so after having had something to fetch). */
    void (*on_done)(void *data);
    void *on_done_data;
};

struct mq_fetch;

/* Starts fetching what @st lacks now (nothing: it waits for a kick).
 * NULL with @err if the configuration is bad. */
struct mq_fetch *mq_fetch_start(uv_loop_t *loop, struct mq_store *st,
                                const struct mq_fetch_config *cfg, char *err,
                                size_t errlen);
/* The store has new missing ranges (another restore): fetch them, now if
 * the fetcher was idle or waiting. */
void mq_fetch_kick(struct mq_fetch *f);

struct mq_fetch_stats {
    uint64_t chunks;    /* filled */
    uint64_t bytes;     /* filled */
    uint64_t failures;  /* asks that brought nothing usable */
    uint64_t rounds;    /* times every peer failed (then a backoff) */
    bool idle;          /* nothing missing */
};
void mq_fetch_stats(const struct mq_fetch *f, struct mq_fetch_stats *out);

/* Stop: a call in flight is cancelled, its answer ignored. @f is freed
 * before @cb(@data) runs (@cb may be NULL). Call once. */
void mq_fetch_close(struct mq_fetch *f, void (*cb)(void *data), void *data);

/* Peers from the node's configuration: the RPC addresses of group @g's
 * members but @self, member @leader's first (0: unknown). For a
 * mq_fetch_peers_fn. Returns how many (<= @max). */
unsigned mq_fetch_config_peers(const struct node_config *cfg, unsigned g,
                               uint64_t self, uint64_t leader,
                               const char **out, unsigned max);

/* Serve a peer's MqSegmentRead from @st into @out: the data (malloc'd:
 * mq_fetch_answer_free) or absent. @st NULL: absent. */
void mq_fetch_answer(struct mq_store *st, const Ringmq__MqSegmentRead *rq,
                     Ringmq__MqSegmentData *out);
void mq_fetch_answer_free(Ringmq__MqSegmentData *out);

#endif
