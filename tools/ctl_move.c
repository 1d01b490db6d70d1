/*
 * ctl_move: see ctl_move.h. Calls only ctl.
 *
 * Every step is a cache op at a shard's leader. The mover keeps one RPC
 * client per shard, at the node that last answered as its leader, so a
 * copy of many batches does not look for the leader again for each one;
 * when that node stops answering as the leader, ctl_call_leader finds
 * the new one. Steps whose outcome was unknown are simply sent again:
 * they are idempotent at the shard; a CUT carries a sequence number, so
 * repeated after a lost answer it answers the same keys again.
 */
#include "tools/ctl_move.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "proto/cache_pb.h"

/* An EXPORT answer's size bound: the IMPORT made of it, with its
 * framing, stays under CACHE_MOVE_BATCH_BYTES. */
#define EXPORT_MAX_BYTES (CACHE_MOVE_BATCH_BYTES / 2)
/* An item's share of an IMPORT beside its key and value. */
#define ITEM_OVERHEAD 32
/* Catch-up before the fence: rounds at most, and the dirty set size at
 * which the fence is short enough. */
#define CATCHUP_ROUNDS 10
#define CATCHUP_SMALL 100
/* After the fence, rounds until a CUT takes nothing: writes are refused,
 * so the set only empties; the bound is a safety net. */
#define FENCED_ROUNDS 100
/* Times a move is aborted and started again before giving up. */
#define MOVE_ATTEMPTS 4
/* Hand-offs tried per attempt when the digests differ. */
#define HANDOFF_TRIES 2
#define PROGRESS_MS 5000

struct peer {
    char shard[CLUSTER_NAME_MAX];
    struct rpc_client *client; /* at its leader, as last seen */
};

/* Where one move's time went (ns), printed after its hand-off: what
 * bounds a move (docs/resharding.md, BENCHMARKS.md "Moving keys"). */
struct move_times {
    uint64_t begin;    /* IN_BEGIN, OUT_BEGIN */
    uint64_t export;   /* EXPORT RANGES and KEYS at S, answers decoded */
    uint64_t import;   /* IMPORT at T (its commit) */
    uint64_t pace;     /* sleeping for --rate */
    uint64_t cut;      /* CUT at S (the keys' copy is export/import) */
    uint64_t fenced;   /* FENCE sent to HANDOFF answered: writes wait */
    uint64_t finish;   /* ACTIVATE, PURGE */
    uint64_t imported; /* bytes of IMPORT commands */
    uint64_t n_exports, n_imports, n_cuts;
};

struct ctl_mover {
    struct ctl *ctl;
    uint64_t cut_seq; /* the last CUT's */
    struct move_times t;
    ctl_move_stop_fn stop;
    void *stop_data;
    struct peer *peers;
    size_t n_peers;
    struct ctl_pace pace; /* imports */
};

/* A cache answer: the response it came in (the reply's items and keys
 * point into it) and its decoded move reply. */
struct answer {
    Ringmq__RpcResponse *resp;
    enum cache_status status;
    struct cache_move_reply reply;
    bool has_reply;
};

/* What an attempt at a move came to. */
enum attempt_end {
    ATTEMPT_HANDED_OFF,
    ATTEMPT_AGAIN, /* abort at both and start again */
    ATTEMPT_STOPPED,
    ATTEMPT_FAILED
};

struct ctl_mover *ctl_mover_new(struct ctl *ctl, uint64_t rate,
                                ctl_move_stop_fn stop, void *stop_data)
{
    struct ctl_mover *mv = xcalloc(1, sizeof(*mv));

    mv->ctl = ctl;
    ctl_pace_init(&mv->pace, rate);
    mv->stop = stop;
    mv->stop_data = stop_data;
    /* CUT numbers only grow, across runs too: a later run's CUT must be
     * new to the source */
    mv->cut_seq = clock_wall_ms() * 1000;
    return mv;
}

void ctl_mover_free(struct ctl_mover *mv)
{
    size_t i;

    if (mv == NULL) {
        return;
    }
    for (i = 0; i < mv->n_peers; i++) {
        if (mv->peers[i].client != NULL) {
            rpc_client_close(mv->peers[i].client, NULL, NULL);
        }
    }
    free(mv->peers);
    free(mv);
}

static void answer_clear(struct answer *a)
{
    if (a->has_reply) {
        cache_move_reply_clear(&a->reply);
    }
    if (a->resp != NULL) {
        ringmq__rpc_response__free_unpacked(a->resp, NULL);
    }
    memset(a, 0, sizeof(*a));
}

static struct peer *peer_of(struct ctl_mover *mv, const char *shard)
{
    size_t i;

    for (i = 0; i < mv->n_peers; i++) {
        if (strcmp(mv->peers[i].shard, shard) == 0) {
            return &mv->peers[i];
        }
    }
    mv->peers = xrealloc(mv->peers, (mv->n_peers + 1) * sizeof(*mv->peers));
    memset(&mv->peers[mv->n_peers], 0, sizeof(*mv->peers));
    snprintf(mv->peers[mv->n_peers].shard, CLUSTER_NAME_MAX, "%s", shard);
    return &mv->peers[mv->n_peers++];
}

/* An answer the leader gave (anything but "not me, not now"). */
static bool final_answer(const Ringmq__RpcResponse *r)
{
    switch (rpc_outcome(r->code)) {
    case OUTCOME_NOT_LEADER:
    case OUTCOME_UNAVAILABLE:
    case OUTCOME_EXPIRED:
    case OUTCOME_NO_GROUP:
        return false;
    default:
        return true;
    }
}

/* @req at @s's leader: first where the leader was, then by asking the
 * members (ctl_call_leader). 0 with *@resp, or EXIT_ERROR (printed). */
static int call_leader(struct ctl_mover *mv, const struct cluster_shard *s,
                       const Ringmq__RpcRequest *req,
                       Ringmq__RpcResponse **resp)
{
    struct ctl *ctl = mv->ctl;
    struct peer *p = peer_of(mv, s->name);
    struct rpc_client_config cfg = {0};
    char err[256];
    uint64_t deadline;

    if (p->client != NULL) {
        if (rpc_client_call_sync(p->client, req, 0, resp) == 0) {
            if (final_answer(*resp)) {
                return 0;
            }
            ringmq__rpc_response__free_unpacked(*resp, NULL);
            *resp = NULL;
        }
        rpc_client_close(p->client, NULL, NULL);
        p->client = NULL;
    }
    deadline = clock_mono_ms() + (uint64_t)ctl->o->seconds * 1000;
    if (ctl_call_leader(ctl, s, req, deadline, resp) != 0) {
        return EXIT_ERROR;
    }
    /* ctl->client is the node that answered: keep asking it */
    cfg.address = rpc_client_address(ctl->client);
    cfg.call_timeout_ms = ctl->o->timeout_ms;
    cfg.connect_timeout_ms = ctl->o->timeout_ms;
    p->client = rpc_client_new(&ctl->loop, &cfg, err, sizeof(err));
    return 0;
}

/* One cache op carrying @value (a move command or export request) at
 * @s's leader. 0 with @a (the cache's status, and the move reply when
 * the answer has a value), or EXIT_ERROR (printed). */
static int shard_op(struct ctl_mover *mv, const struct cluster_shard *s,
                    enum cache_op_type type, const void *value, size_t len,
                    struct answer *a)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp pb;
    struct cache_op op;
    const Ringmq__CacheResult *r;

    memset(a, 0, sizeof(*a));
    memset(&op, 0, sizeof(op));
    op.type = type;
    op.value = value;
    op.value_len = len;
    cache_op_to_pb(&op, &pb);
    req.group = (char *)s->name;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    if (call_leader(mv, s, &req, &a->resp) != 0) {
        return EXIT_ERROR;
    }
    if (rpc_outcome(a->resp->code) != OUTCOME_OK) {
        fprintf(stderr, "ringmqctl: %s: %s: ", s->name, cache_op_name(type));
        ctl_check_code(a->resp);
        answer_clear(a);
        return EXIT_ERROR;
    }
    if (a->resp->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE) {
        goto bad;
    }
    r = a->resp->cache;
    if (r->status >= CACHE_STATUS__COUNT) {
        goto bad;
    }
    a->status = (enum cache_status)r->status;
    if (r->value.len > 0 && (type == CACHE_OP_MOVE || type == CACHE_OP_EXPORT)) {
        if (cache_move_reply_decode(r->value.data, r->value.len, &a->reply) !=
            0) {
            goto bad;
        }
        a->has_reply = true;
    }
    return 0;
bad:
    fprintf(stderr, "ringmqctl: %s: bad answer to %s\n", s->name,
            cache_op_name(type));
    answer_clear(a);
    return EXIT_ERROR;
}

static const char *kind_name(enum cache_move_kind k)
{
    static const char *const names[] = {
        [CACHE_MOVE_IN_BEGIN] = "IN_BEGIN", [CACHE_MOVE_OUT_BEGIN] = "OUT_BEGIN",
        [CACHE_MOVE_IMPORT] = "IMPORT",     [CACHE_MOVE_CUT] = "CUT",
        [CACHE_MOVE_FENCE] = "FENCE",       [CACHE_MOVE_HANDOFF] = "HANDOFF",
        [CACHE_MOVE_ACTIVATE] = "ACTIVATE", [CACHE_MOVE_PURGE] = "PURGE",
        [CACHE_MOVE_ABORT] = "ABORT",
    };

    return (unsigned)k < CACHE_MOVE_KIND__COUNT && names[k] ? names[k] : "?";
}

/* A move command @c at @s. 0 with @a (any status: the caller decides),
 * or EXIT_ERROR. */
static int move_cmd(struct ctl_mover *mv, const struct cluster_shard *s,
                    const struct cache_move_cmd *c, struct answer *a)
{
    size_t len;
    void *buf = cache_move_cmd_encode(c, &len);
    int rv = shard_op(mv, s, CACHE_OP_MOVE, buf, len, a);

    free(buf);
    return rv;
}

/* A move command that must answer CACHE_OK: 0, 1 when refused because a
 * flush_all broke the move at S (start it again), or EXIT_ERROR. */
static int move_step(struct ctl_mover *mv, const struct ctl_move *m,
                     const struct cluster_shard *s, enum cache_move_kind kind)
{
    struct cache_move_cmd c;
    struct answer a;
    int rv = 0;

    memset(&c, 0, sizeof(c));
    c.kind = kind;
    c.move_id = m->id;
    if (kind == CACHE_MOVE_IN_BEGIN || kind == CACHE_MOVE_OUT_BEGIN) {
        snprintf(c.peer, sizeof(c.peer), "%s",
                 kind == CACHE_MOVE_IN_BEGIN ? m->from->name : m->to->name);
        c.arcs = (struct arc *)m->arcs;
        c.n_arcs = m->n_arcs;
    }
    if (move_cmd(mv, s, &c, &a) != 0) {
        return EXIT_ERROR;
    }
    if (a.status == CACHE_NOT_STORED && a.has_reply &&
        a.reply.state == CACHE_MOVE_BROKEN) {
        printf("move %s->%s: a flush_all at %s broke the move\n",
               m->from->name, m->to->name, s->name);
        fflush(stdout);
        rv = 1;
    } else if (a.status != CACHE_OK) {
        fprintf(stderr, "ringmqctl: move %s->%s: %s refused %s (%s%s%s)\n",
                m->from->name, m->to->name, s->name, kind_name(kind),
                cache_status_name(a.status), a.has_reply ? ", move " : "",
                a.has_reply ? cache_move_state_name(a.reply.state) : "");
        rv = EXIT_ERROR;
    }
    answer_clear(&a);
    return rv;
}

/* An export read @r at @s that must answer CACHE_OK with a reply. */
static int export_read(struct ctl_mover *mv, const struct cluster_shard *s,
                       const struct cache_export_req *r, struct answer *a)
{
    uint64_t t0 = clock_mono_ns();
    size_t len;
    void *buf = cache_export_req_encode(r, &len);
    int rv = shard_op(mv, s, CACHE_OP_EXPORT, buf, len, a);

    free(buf);
    if (r->kind == CACHE_EXPORT_RANGES || r->kind == CACHE_EXPORT_KEYS) {
        mv->t.export += clock_mono_ns() - t0;
        mv->t.n_exports++;
    }
    if (rv != 0) {
        return EXIT_ERROR;
    }
    if (a->status != CACHE_OK || !a->has_reply) {
        fprintf(stderr, "ringmqctl: %s: export refused (%s)\n", s->name,
                cache_status_name(a->status));
        answer_clear(a);
        return EXIT_ERROR;
    }
    return 0;
}

static int state_at(struct ctl_mover *mv, const struct cluster_shard *s,
                    uint64_t id, enum cache_move_state *out)
{
    struct cache_export_req r;
    struct answer a;

    memset(&r, 0, sizeof(r));
    r.kind = CACHE_EXPORT_STATE;
    r.move_id = id;
    if (export_read(mv, s, &r, &a) != 0) {
        return EXIT_ERROR;
    }
    *out = a.reply.state;
    answer_clear(&a);
    return 0;
}

int ctl_move_state(struct ctl_mover *mv, const struct ctl_move *m,
                   enum cache_move_state *at_from,
                   enum cache_move_state *at_to)
{
    if (state_at(mv, m->from, m->id, at_from) != 0 ||
        state_at(mv, m->to, m->id, at_to) != 0) {
        return EXIT_ERROR;
    }
    return 0;
}

bool ctl_move_done(enum cache_move_state at_from, enum cache_move_state at_to)
{
    /* S forgets a purged move after a while; T's ACTIVE then says it */
    return at_from == CACHE_MOVE_PURGED ||
           (at_from == CACHE_MOVE_NONE && at_to == CACHE_MOVE_ACTIVE);
}

/* IMPORT @items at T, as one command. */
static int import_batch(struct ctl_mover *mv, const struct ctl_move *m,
                        struct cache_move_item *items, size_t n)
{
    struct cache_move_cmd c;
    struct answer a;
    size_t len;
    void *buf;
    uint64_t t0;
    int rv;

    if (n == 0) {
        return 0;
    }
    memset(&c, 0, sizeof(c));
    c.kind = CACHE_MOVE_IMPORT;
    c.move_id = m->id;
    c.items = items;
    c.n_items = n;
    buf = cache_move_cmd_encode(&c, &len);
    t0 = clock_mono_ns();
    rv = shard_op(mv, m->to, CACHE_OP_MOVE, buf, len, &a);
    mv->t.import += clock_mono_ns() - t0;
    mv->t.imported += len;
    mv->t.n_imports++;
    free(buf);
    if (rv != 0) {
        return EXIT_ERROR;
    }
    if (a.status != CACHE_OK) {
        fprintf(stderr, "ringmqctl: move %s->%s: %s refused IMPORT (%s)\n",
                m->from->name, m->to->name, m->to->name,
                cache_status_name(a.status));
        rv = EXIT_ERROR;
    }
    answer_clear(&a);
    t0 = mv->pace.slept_ns;
    ctl_pace(&mv->pace, len);
    mv->t.pace += mv->pace.slept_ns - t0;
    return rv;
}

/* IMPORT @items at T in commands of CACHE_MOVE_BATCH_BYTES at most (one
 * item at least). */
static int import_items(struct ctl_mover *mv, const struct ctl_move *m,
                        struct cache_move_item *items, size_t n)
{
    size_t start = 0, i, bytes = 0;

    for (i = 0; i < n; i++) {
        size_t b = items[i].key_len + items[i].value_len + ITEM_OVERHEAD;

        if (i > start && bytes + b > CACHE_MOVE_BATCH_BYTES) {
            if (import_batch(mv, m, items + start, i - start) != 0) {
                return EXIT_ERROR;
            }
            start = i;
            bytes = 0;
        }
        bytes += b;
    }
    return import_batch(mv, m, items + start, n - start);
}

/* The whole ranges, S -> T, in batches. A new leader at S starts a new
 * listing (another generation): the copy starts over on it. *@copied
 * counts the items imported. 0, 1 (stop asked), EXIT_ERROR. */
static int copy_ranges(struct ctl_mover *mv, const struct ctl_move *m,
                       uint64_t *copied)
{
    struct cache_export_req r;
    uint64_t gen = 0, offset = 0, last_note = clock_mono_ms();
    unsigned restarts = 0;

    for (;;) {
        struct answer a;

        memset(&r, 0, sizeof(r));
        r.kind = CACHE_EXPORT_RANGES;
        r.move_id = m->id;
        r.generation = gen;
        r.offset = offset;
        r.max_bytes = EXPORT_MAX_BYTES;
        if (export_read(mv, m->from, &r, &a) != 0) {
            return EXIT_ERROR;
        }
        if (gen != 0 && a.reply.generation != gen) {
            /* a new leader made a new listing and answered from its
             * start: the copy goes on from there (what changed since the
             * old listing is in the dirty set anyway) */
            if (++restarts > MOVE_ATTEMPTS) {
                answer_clear(&a);
                fprintf(stderr, "ringmqctl: move %s->%s: %s changed leader "
                                "%u times during the copy\n",
                        m->from->name, m->to->name, m->from->name, restarts);
                return EXIT_ERROR;
            }
            printf("move %s->%s: %s has a new leader: copying again\n",
                   m->from->name, m->to->name, m->from->name);
            fflush(stdout);
        }
        gen = a.reply.generation;
        if (import_items(mv, m, a.reply.items, a.reply.n_items) != 0) {
            answer_clear(&a);
            return EXIT_ERROR;
        }
        *copied += a.reply.n_items;
        offset = a.reply.next_offset;
        if (a.reply.done) {
            answer_clear(&a);
            return 0;
        }
        if (a.reply.n_items == 0 && offset == r.offset &&
            a.reply.generation == r.generation) {
            answer_clear(&a);
            fprintf(stderr, "ringmqctl: move %s->%s: the export at %s does "
                            "not advance\n",
                    m->from->name, m->to->name, m->from->name);
            return EXIT_ERROR;
        }
        answer_clear(&a);
        if (clock_mono_ms() - last_note >= PROGRESS_MS) {
            last_note = clock_mono_ms();
            printf("move %s->%s: %" PRIu64 " keys copied so far\n",
                   m->from->name, m->to->name, *copied);
            fflush(stdout);
            if (mv->stop != NULL && mv->stop(mv->stop_data)) {
                return 1;
            }
        }
    }
}

/* The current items of @keys at S (tombstones for the gone ones) into T.
 * The answer is bounded in size: what it did not cover is asked again. */
/* One CUT at S and the keys it took copied. *@taken: the keys the CUT
 * took, *@left: the dirty keys still in the set. 0, 1 (a flush_all broke
 * the move), EXIT_ERROR. */
static int catch_up(struct ctl_mover *mv, const struct ctl_move *m,
                    uint64_t *taken, uint64_t *left)
{
    struct cache_move_cmd c;
    struct answer a;
    uint64_t t0;
    int rv;

    memset(&c, 0, sizeof(c));
    c.kind = CACHE_MOVE_CUT;
    c.move_id = m->id;
    /* sent again as is when its answer is lost: the source then answers
     * the same keys (as they are now) instead of taking new ones */
    c.seq = ++mv->cut_seq;
    t0 = clock_mono_ns();
    rv = move_cmd(mv, m->from, &c, &a);
    mv->t.cut += clock_mono_ns() - t0;
    mv->t.n_cuts++;
    if (rv != 0) {
        return EXIT_ERROR;
    }
    if (a.status == CACHE_NOT_STORED && a.has_reply &&
        a.reply.state == CACHE_MOVE_BROKEN) {
        printf("move %s->%s: a flush_all at %s broke the move\n",
               m->from->name, m->to->name, m->from->name);
        fflush(stdout);
        answer_clear(&a);
        return 1;
    }
    if (a.status != CACHE_OK || !a.has_reply) {
        fprintf(stderr, "ringmqctl: move %s->%s: %s refused CUT (%s)\n",
                m->from->name, m->to->name, m->from->name,
                cache_status_name(a.status));
        answer_clear(&a);
        return EXIT_ERROR;
    }
    *taken = a.reply.n_items;
    *left = a.reply.count;
    rv = import_items(mv, m, a.reply.items, a.reply.n_items);
    answer_clear(&a);
    return rv;
}

static int digest_at_target(struct ctl_mover *mv, const struct ctl_move *m,
                            uint64_t *digest, uint64_t *count)
{
    struct cache_export_req r;
    struct answer a;

    memset(&r, 0, sizeof(r));
    r.kind = CACHE_EXPORT_DIGEST;
    r.move_id = m->id;
    if (export_read(mv, m->to, &r, &a) != 0) {
        return EXIT_ERROR;
    }
    *digest = a.reply.digest;
    *count = a.reply.count;
    answer_clear(&a);
    return 0;
}

/* HANDOFF with T's digest: 0 handed off, 1 refused (*@broken: S says
 * a flush_all broke the move), EXIT_ERROR. */
static int handoff(struct ctl_mover *mv, const struct ctl_move *m,
                   bool *broken)
{
    struct cache_move_cmd c;
    struct answer a;
    uint64_t digest, count;
    int rv;

    *broken = false;
    if (digest_at_target(mv, m, &digest, &count) != 0) {
        return EXIT_ERROR;
    }
    memset(&c, 0, sizeof(c));
    c.kind = CACHE_MOVE_HANDOFF;
    c.move_id = m->id;
    c.digest = digest;
    if (move_cmd(mv, m->from, &c, &a) != 0) {
        return EXIT_ERROR;
    }
    switch (a.status) {
    case CACHE_OK:
        rv = 0;
        break;
    case CACHE_NOT_STORED:
        *broken = a.has_reply && a.reply.state == CACHE_MOVE_BROKEN;
        if (*broken) {
            printf("move %s->%s: a flush_all at %s broke the move\n",
                   m->from->name, m->to->name, m->from->name);
        } else {
            /* keys dirtied under the fence (evictions, expiry) refuse
             * it too: the caller catches up and asks again */
            printf("move %s->%s: hand-off refused (digests differ or keys "
                   "changed): %s digest %016" PRIx64 ", %s %016" PRIx64
                   " (%" PRIu64 " items)\n",
                   m->from->name, m->to->name, m->to->name, digest,
                   m->from->name, a.has_reply ? a.reply.digest : 0, count);
        }
        fflush(stdout);
        rv = 1;
        break;
    default:
        fprintf(stderr, "ringmqctl: move %s->%s: %s refused HANDOFF (%s)\n",
                m->from->name, m->to->name, m->from->name,
                cache_status_name(a.status));
        rv = EXIT_ERROR;
    }
    answer_clear(&a);
    return rv;
}

/* A step's result as an attempt's end: 1 (broken) starts again. */
static enum attempt_end broken_or_failed(int rv)
{
    return rv == 1 ? ATTEMPT_AGAIN : ATTEMPT_FAILED;
}

/* One attempt from the beginning (every step idempotent, so also from a
 * begun move) to the hand-off. */
static enum attempt_end attempt(struct ctl_mover *mv, const struct ctl_move *m,
                                uint64_t *copied)
{
    uint64_t taken, left, t0 = clock_mono_ns(), fence_at;
    unsigned round, tries;
    bool broken;
    int rv;

    if ((rv = move_step(mv, m, m->to, CACHE_MOVE_IN_BEGIN)) != 0 ||
        (rv = move_step(mv, m, m->from, CACHE_MOVE_OUT_BEGIN)) != 0) {
        return broken_or_failed(rv);
    }
    mv->t.begin += clock_mono_ns() - t0;
    rv = copy_ranges(mv, m, copied);
    if (rv != 0) {
        return rv == 1 ? ATTEMPT_STOPPED : ATTEMPT_FAILED;
    }
    /* while tracking, writes go on: catch up until the fence will be
     * short (the dirty set is small) or it stops shrinking */
    for (round = 0; round < CATCHUP_ROUNDS; round++) {
        if ((rv = catch_up(mv, m, &taken, &left)) != 0) {
            return broken_or_failed(rv);
        }
        *copied += taken;
        if (taken + left < CATCHUP_SMALL) {
            break;
        }
    }
    if (mv->stop != NULL && mv->stop(mv->stop_data)) {
        return ATTEMPT_STOPPED;
    }
    /* from here to the hand-off writes in the arcs wait: no stop */
    fence_at = clock_mono_ns();
    if ((rv = move_step(mv, m, m->from, CACHE_MOVE_FENCE)) != 0) {
        return broken_or_failed(rv);
    }
    for (tries = 0; tries < HANDOFF_TRIES; tries++) {
        /* evictions and expiry still dirty keys under the fence: the
         * hand-off wants an empty set, so a refused one catches up again */
        for (round = 0; round < FENCED_ROUNDS; round++) {
            if ((rv = catch_up(mv, m, &taken, &left)) != 0) {
                return broken_or_failed(rv);
            }
            *copied += taken;
            if (taken == 0 && left == 0) {
                break;
            }
        }
        if (round == FENCED_ROUNDS) {
            fprintf(stderr, "ringmqctl: move %s->%s: the dirty set at %s "
                            "does not empty under the fence\n",
                    m->from->name, m->to->name, m->from->name);
            return ATTEMPT_AGAIN;
        }
        rv = handoff(mv, m, &broken);
        if (rv == 0) {
            mv->t.fenced += clock_mono_ns() - fence_at;
            return ATTEMPT_HANDED_OFF;
        }
        if (rv != 1) {
            return ATTEMPT_FAILED;
        }
        if (broken) {
            return ATTEMPT_AGAIN;
        }
    }
    return ATTEMPT_AGAIN;
}

int ctl_move_finish(struct ctl_mover *mv, const struct ctl_move *m)
{
    uint64_t t0 = clock_mono_ns();

    if (move_step(mv, m, m->to, CACHE_MOVE_ACTIVATE) != 0 ||
        move_step(mv, m, m->from, CACHE_MOVE_PURGE) != 0) {
        return EXIT_ERROR;
    }
    mv->t.finish += clock_mono_ns() - t0;
    return 0;
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* "move S->T: time ..." : where the move's time went. */
static void print_times(const struct ctl_move *m, const struct move_times *t,
                        uint64_t total)
{
    uint64_t known = t->begin + t->export + t->import + t->pace + t->cut +
                     t->finish;

    printf("move %s->%s: time %.2f s: export %.2f s (%" PRIu64
           "), import %.2f s (%" PRIu64 ", %.1f MiB), rate wait %.2f s, "
           "cut %.2f s (%" PRIu64 "), begin %.2f s, activate+purge %.2f s, "
           "other %.2f s; fenced %.1f ms\n",
           m->from->name, m->to->name, secs(total), secs(t->export),
           t->n_exports, secs(t->import), t->n_imports,
           (double)t->imported / (1024.0 * 1024.0), secs(t->pace),
           secs(t->cut), t->n_cuts, secs(t->begin), secs(t->finish),
           total > known ? secs(total - known) : 0.0,
           (double)t->fenced / 1e6);
}

int ctl_move_abort(struct ctl_mover *mv, const struct ctl_move *m)
{
    /* S first: it serves the arcs again before T drops its copy */
    if (move_step(mv, m, m->from, CACHE_MOVE_ABORT) != 0 ||
        move_step(mv, m, m->to, CACHE_MOVE_ABORT) != 0) {
        return EXIT_ERROR;
    }
    return 0;
}

int ctl_move_run(struct ctl_mover *mv, const struct ctl_move *m)
{
    enum cache_move_state at_s, at_t;
    uint64_t copied = 0, t0 = clock_mono_ns();
    unsigned n;

    memset(&mv->t, 0, sizeof(mv->t));
    if (ctl_move_state(mv, m, &at_s, &at_t) != 0) {
        return EXIT_ERROR;
    }
    if (ctl_move_done(at_s, at_t)) {
        printf("move %s->%s: %zu arcs, moved already\n", m->from->name,
               m->to->name, m->n_arcs);
        fflush(stdout);
        return 0;
    }
    if (at_s == CACHE_MOVE_HANDED_OFF) {
        if (ctl_move_finish(mv, m) != 0) {
            return EXIT_ERROR;
        }
        printf("move %s->%s: %zu arcs, handed off (by an earlier run), "
               "activated, purged\n",
               m->from->name, m->to->name, m->n_arcs);
        fflush(stdout);
        return 0;
    }
    if (at_t == CACHE_MOVE_ACTIVE) {
        fprintf(stderr, "ringmqctl: move %s->%s: %s is active but %s says "
                        "%s: not touching it\n",
                m->from->name, m->to->name, m->to->name, m->from->name,
                cache_move_state_name(at_s));
        return EXIT_ERROR;
    }
    if (at_s != CACHE_MOVE_NONE) {
        /* an earlier run's copy may lack what its last CUT took: the
         * digest would refuse it; start over instead */
        printf("move %s->%s: found %s at %s from an earlier run: starting "
               "it again\n",
               m->from->name, m->to->name, cache_move_state_name(at_s),
               m->from->name);
        fflush(stdout);
        if (ctl_move_abort(mv, m) != 0) {
            return EXIT_ERROR;
        }
    }
    for (n = 0; n < MOVE_ATTEMPTS; n++) {
        switch (attempt(mv, m, &copied)) {
        case ATTEMPT_HANDED_OFF:
            if (ctl_move_finish(mv, m) != 0) {
                return EXIT_ERROR;
            }
            printf("move %s->%s: %zu arcs, %" PRIu64 " keys copied, handed "
                   "off\n",
                   m->from->name, m->to->name, m->n_arcs, copied);
            print_times(m, &mv->t, clock_mono_ns() - t0);
            fflush(stdout);
            return 0;
        case ATTEMPT_STOPPED:
            printf("move %s->%s: stopped (the plan is paused or gone): "
                   "aborting it\n",
                   m->from->name, m->to->name);
            fflush(stdout);
            return ctl_move_abort(mv, m) != 0 ? EXIT_ERROR : CTL_MOVE_STOPPED;
        case ATTEMPT_AGAIN:
            if (ctl_move_abort(mv, m) != 0) {
                return EXIT_ERROR;
            }
            printf("move %s->%s: aborted, starting again\n", m->from->name,
                   m->to->name);
            fflush(stdout);
            copied = 0;
            break;
        case ATTEMPT_FAILED:
            return EXIT_ERROR;
        }
    }
    fprintf(stderr, "ringmqctl: move %s->%s: gave up after %u attempts\n",
            m->from->name, m->to->name, n);
    return EXIT_ERROR;
}

int ctl_move_install_ring(struct ctl_mover *mv, const struct cluster_map *map,
                          const struct cluster_shard *shard)
{
    struct answer a;
    size_t len;
    void *spec = shard_ring_encode_map(map, shard->name, &len);
    int rv = shard_op(mv, shard, CACHE_OP_RING, spec, len, &a);

    free(spec);
    if (rv != 0) {
        return EXIT_ERROR;
    }
    if (a.status != CACHE_OK) {
        fprintf(stderr, "ringmqctl: %s refused the ring of epoch %" PRIu64
                        " (%s)\n",
                shard->name, map->epoch, cache_status_name(a.status));
        rv = EXIT_ERROR;
    }
    answer_clear(&a);
    return rv;
}

int ctl_move_wait_leader(struct ctl_mover *mv,
                         const struct cluster_shard *shard)
{
    struct cache_export_req r;
    struct answer a;
    size_t len;
    void *buf;
    int rv;

    memset(&r, 0, sizeof(r));
    r.kind = CACHE_EXPORT_STATE;
    r.move_id = 1; /* any: a read of nothing */
    buf = cache_export_req_encode(&r, &len);
    rv = shard_op(mv, shard, CACHE_OP_EXPORT, buf, len, &a);
    free(buf);
    if (rv == 0) {
        answer_clear(&a);
    }
    return rv;
}
