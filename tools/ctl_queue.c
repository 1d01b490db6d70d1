/*
 * ringmqctl queue: see ctl_queue.h.
 *
 * A move of queue Q from shard S to shard T, each step repeated until it is
 * answered (a step whose outcome was unknown is sent again: each is
 * idempotent):
 *   1. meta   MOVE_BEGIN(S -> T): the directory marks Q moving and hands out
 *             the generation Q will have at T;
 *   2. S      MOVE_OUT: Q frozen (its commands answer MOVING, routers wait);
 *             its unacked messages go back to ready, as redeliveries;
 *   3. S, T   the export read at S's leader, chunk by chunk, each chunk
 *             applied at T by MOVE_IN (a chunk T already has is a no-op);
 *   4. T      MOVE_IN_END: Q serves at T (not yet routed to);
 *   5. S      MOVE_DONE: Q deleted at S, a tombstone answers MOVED;
 *   6. meta   MOVE_COMMIT: the directory names T; routers follow.
 * Until step 4 the move can be taken back (`queue abort`); after it, only
 * finished (from MOVE_IN_END on T may serve the queue: a router whose view
 * of the directory is behind goes there). A rerun that finds S's
 * tombstone goes on from step 4.
 */
#include "tools/ctl_queue.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/ring.h"
#include "proto/mq_pb.h"
#include "sm/meta_sm.h"
#include "sm/mq_sm.h"
#include "tools/ctl_live.h"

#define QUEUE_VHOST "/"
#define EXPORT_CHUNK_BYTES (1u << 20)

struct qctl {
    struct ctl *ctl;
    struct cluster_map map; /* the live map */
    struct cluster_shard meta;
    const char *queue;
    uint64_t deadline;
};

static int usage_error(void)
{
    fprintf(stderr, "ringmqctl: queue where QUEUE | queue find QUEUE | "
                    "queue move QUEUE SHARD | queue abort QUEUE\n");
    return EXIT_USAGE;
}

/* A progress line of a move or an abort, "queue Q: ...", flushed at once:
 * who runs the coordinator (or kills it) sees which step it reached. */
static void step_line(const struct qctl *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void step_line(const struct qctl *q, const char *fmt, ...)
{
    va_list ap;

    printf("queue %s: ", q->queue);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* ---- calls ------------------------------------------------------------- */

/* @c at the meta leader: 0 with @res (its reply_code may refuse), or
 * EXIT_ERROR. */
static int meta_call(struct qctl *q, const struct meta_sm_cmd *c,
                     struct meta_sm_result *res)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__RpcResponse *resp = NULL;
    struct mq_pb_meta_buf b;
    int rv = EXIT_ERROR;

    if (mq_pb_meta_cmd_to_pb(c, &b) != 0) {
        fprintf(stderr, "ringmqctl: cannot encode a meta command\n");
        return EXIT_ERROR;
    }
    req.group = (char *)q->meta.name;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_META;
    req.meta = &b.pb;
    if (ctl_call_leader(q->ctl, &q->meta, &req, q->deadline, &resp) == 0 &&
        ctl_check_code(resp) == 0) {
        if (resp->body_case == RINGMQ__RPC_RESPONSE__BODY_META &&
            mq_pb_meta_result_from_pb(resp->meta, res) == 0) {
            rv = 0;
        } else {
            fprintf(stderr, "ringmqctl: meta: bad answer\n");
        }
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    mq_pb_meta_buf_clear(&b);
    return rv;
}

/* The group name "<shard>.mq" of @s into @out. */
static void mq_group(const struct cluster_shard *s, char *out, size_t len)
{
    snprintf(out, len, "%s.mq", s->name);
}

/* @c at the leader of @s's queue group: 0 with @res (clear it), or
 * EXIT_ERROR. */
static int mq_call(struct qctl *q, const struct cluster_shard *s,
                   const struct mq_sm_cmd *c, struct mq_sm_result *res)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__RpcResponse *resp = NULL;
    struct mq_pb_cmd_buf b;
    char group[CLUSTER_NAME_MAX + 8];
    int rv = EXIT_ERROR;

    mq_sm_result_init(res);
    if (mq_pb_cmd_to_pb(c, 0, &b) != 0) {
        fprintf(stderr, "ringmqctl: cannot encode a queue command\n");
        return EXIT_ERROR;
    }
    mq_group(s, group, sizeof(group));
    req.group = group;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MQ;
    req.mq = &b.pb;
    if (ctl_call_leader(q->ctl, s, &req, q->deadline, &resp) == 0 &&
        ctl_check_code(resp) == 0) {
        if (resp->body_case == RINGMQ__RPC_RESPONSE__BODY_MQ &&
            mq_pb_result_from_pb(resp->mq, res) == 0) {
            rv = 0;
        } else {
            fprintf(stderr, "ringmqctl: %s: bad answer\n", group);
        }
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    mq_pb_cmd_buf_clear(&b);
    return rv;
}

/* A queue command of @type on q->queue. */
static struct mq_sm_cmd queue_cmd(const struct qctl *q,
                                  enum mq_sm_cmd_type type)
{
    struct mq_sm_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = type;
    c.vhost = QUEUE_VHOST;
    c.vhost_len = strlen(QUEUE_VHOST);
    c.queue = q->queue;
    c.queue_len = strlen(q->queue);
    return c;
}

/* @type on q->queue at @s, which must answer OK: 0, or EXIT_ERROR. */
static int mq_step(struct qctl *q, const struct cluster_shard *s,
                   enum mq_sm_cmd_type type, struct mq_sm_result *res)
{
    struct mq_sm_cmd c = queue_cmd(q, type);

    if (mq_call(q, s, &c, res) != 0) {
        return EXIT_ERROR;
    }
    if (res->status != MQ_SM_OK) {
        fprintf(stderr, "ringmqctl: %s: queue '%s': %s (status %d)\n",
                s->name, q->queue,
                res->reply_text && *res->reply_text ? res->reply_text
                                                    : "refused",
                (int)res->status);
        mq_sm_result_clear(res);
        return EXIT_ERROR;
    }
    return 0;
}

/* The meta state, read from the leader (a watch that waits for nothing),
 * into @view. 0 or EXIT_ERROR. */
static int meta_read(struct qctl *q, struct meta_sm *view)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MetaWatch w = RINGMQ__META_WATCH__INIT;
    Ringmq__RpcResponse *resp = NULL;
    int rv = EXIT_ERROR;

    req.group = (char *)q->meta.name;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_META_WATCH;
    w.one_off = true;
    req.meta_watch = &w;
    if (ctl_call_leader(q->ctl, &q->meta, &req, q->deadline, &resp) == 0 &&
        ctl_check_code(resp) == 0) {
        if (resp->body_case == RINGMQ__RPC_RESPONSE__BODY_META_SNAPSHOT &&
            meta_sm_restore(view, resp->meta_snapshot->state.data,
                            resp->meta_snapshot->state.len) == 0) {
            rv = 0;
        } else {
            fprintf(stderr, "ringmqctl: meta: bad state\n");
        }
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;
}

/* ---- where ------------------------------------------------------------- */

/* The queue ring's shard for q->queue (where a queue declared before the
 * directory lives), or NULL after printing why. */
static const struct cluster_shard *ring_shard(const struct qctl *q)
{
    char err[160];
    char key[2 * MQ_SM_NAME_MAX + 2];
    struct ring *ring = cluster_map_queue_ring(&q->map, err, sizeof(err));
    const struct cluster_shard *s;
    size_t len;

    if (ring == NULL) {
        fprintf(stderr, "ringmqctl: queue ring: %s\n", err);
        return NULL;
    }
    len = ring_queue_key(QUEUE_VHOST, strlen(QUEUE_VHOST), q->queue,
                         strlen(q->queue), key, sizeof(key));
    s = cluster_map_shard(&q->map,
                          q->map.queue_ring[ring_lookup(ring, key, len)].name);
    ring_free(ring);
    return s;
}

/* q->queue's directory entry into @pl: 0 (found), 1 (none), EXIT_ERROR. */
static int lookup(struct qctl *q, struct meta_sm_placement *pl)
{
    struct meta_sm *view = meta_sm_new();
    int rv = meta_read(q, view);

    if (rv == 0) {
        rv = meta_sm_queue_lookup(view, QUEUE_VHOST, strlen(QUEUE_VHOST),
                                  q->queue, strlen(q->queue), pl) == 0
                 ? 0
                 : 1;
    }
    meta_sm_free(view);
    return rv;
}

static int cmd_where(struct qctl *q)
{
    struct meta_sm_placement pl;
    const struct cluster_shard *s;
    int rv = lookup(q, &pl);

    if (rv == EXIT_ERROR) {
        return rv;
    }
    if (rv == 0) {
        printf("%s shard %s gen %" PRIu64, q->queue, pl.shard, pl.gen);
        if (pl.moving) {
            printf(" moving-to %s", pl.target);
        }
        printf("\n");
        return 0;
    }
    s = ring_shard(q);
    if (s == NULL) {
        return EXIT_ERROR;
    }
    printf("%s shard %s queue-ring\n", q->queue, s->name);
    return 0;
}

/* ---- find -------------------------------------------------------------- */

/* Ask every shard of the live map whether it holds q->queue: a passive
 * declare at the leader of its queue group (a command in its log, so the
 * answer is the shard's applied state). One line per shard:
 *   SHARD holds gen G ready N consumers C
 *   SHARD moving            (frozen there, or being imported)
 *   SHARD moved-away        (a tombstone: it left by a move)
 *   SHARD none
 * Exit 0 once every shard answered, whatever the answers. */
static int cmd_find(struct qctl *q)
{
    unsigned i;

    for (i = 0; i < q->map.n_shards; i++) {
        const struct cluster_shard *s = &q->map.shards[i];
        struct mq_sm_cmd c = queue_cmd(q, MQ_SM_DECLARE);
        struct mq_sm_result res;

        c.passive = true;
        if (mq_call(q, s, &c, &res) != 0) {
            return EXIT_ERROR;
        }
        switch (res.status) {
            case MQ_SM_OK:
                printf("%s holds gen %" PRIu64 " ready %" PRIu64
                       " consumers %u\n",
                       s->name, res.gen, res.count,
                       (unsigned)res.consumer_count);
                break;
            case MQ_SM_MOVING:
                printf("%s moving\n", s->name);
                break;
            case MQ_SM_MOVED:
                printf("%s moved-away\n", s->name);
                break;
            case MQ_SM_NOT_FOUND:
                printf("%s none\n", s->name);
                break;
            default:
                printf("%s answered %d: %s\n", s->name, (int)res.status,
                       res.reply_text ? res.reply_text : "");
                break;
        }
        mq_sm_result_clear(&res);
    }
    return 0;
}

/* ---- move -------------------------------------------------------------- */

/* A directory command of @type on q->queue between @from and @to. */
static int dir_step(struct qctl *q, enum meta_sm_cmd_type type,
                    const char *from, const char *to, uint64_t gen,
                    struct meta_sm_result *mr)
{
    struct meta_sm_cmd mc;

    memset(&mc, 0, sizeof(mc));
    mc.type = type;
    mc.vhost = QUEUE_VHOST;
    mc.vhost_len = strlen(QUEUE_VHOST);
    mc.dest = q->queue;
    mc.dest_len = strlen(q->queue);
    mc.shard = from;
    mc.shard_len = from ? strlen(from) : 0;
    mc.target = to;
    mc.target_len = to ? strlen(to) : 0;
    mc.gen = gen;
    if (meta_call(q, &mc, mr) != 0) {
        return EXIT_ERROR;
    }
    if (mr->reply_code != 0) {
        fprintf(stderr, "ringmqctl: meta: queue '%s': %s\n", q->queue,
                mr->reply_text);
        return EXIT_ERROR;
    }
    return 0;
}

/* A queue without a directory entry (declared before the directory, on
 * the queue ring's shard) is recorded there first, if it exists. */
static int adopt(struct qctl *q, struct meta_sm_placement *pl)
{
    const struct cluster_shard *s = ring_shard(q);
    struct mq_sm_cmd c = queue_cmd(q, MQ_SM_DECLARE);
    struct meta_sm_result mr;
    struct mq_sm_result res;
    int rv;

    if (s == NULL) {
        return EXIT_ERROR;
    }
    c.passive = true;
    if (mq_call(q, s, &c, &res) != 0) {
        return EXIT_ERROR;
    }
    if (res.status != MQ_SM_OK) {
        fprintf(stderr, "ringmqctl: no queue '%s' (in vhost %s)\n", q->queue,
                QUEUE_VHOST);
        mq_sm_result_clear(&res);
        return EXIT_NEGATIVE;
    }
    mq_sm_result_clear(&res);
    rv = dir_step(q, META_SM_QUEUE_PLACE, s->name, NULL, 0, &mr);
    if (rv != 0) {
        return rv;
    }
    *pl = mr.placement;
    return 0;
}

/* One chunk of the export at @s's leader into *@chunk (malloc'ed). 0, or
 * 1: the queue is not frozen there, or EXIT_ERROR. */
static int export_chunk(struct qctl *q, const struct cluster_shard *s,
                        uint64_t cursor, void **chunk, size_t *len,
                        uint64_t *next, bool *last)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MqExport x = RINGMQ__MQ_EXPORT__INIT;
    Ringmq__RpcResponse *resp = NULL;
    char group[CLUSTER_NAME_MAX + 8];
    int rv = EXIT_ERROR;

    mq_group(s, group, sizeof(group));
    x.vhost = QUEUE_VHOST;
    x.queue = (char *)q->queue;
    x.cursor = cursor;
    x.max_bytes = EXPORT_CHUNK_BYTES;
    req.group = group;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MQ_EXPORT;
    req.mq_export = &x;
    if (ctl_call_leader(q->ctl, s, &req, q->deadline, &resp) != 0) {
        return EXIT_ERROR;
    }
    if (resp->code == RINGMQ__RPC_CODE__RPC_BAD_REQUEST) {
        rv = 1;
    } else if (ctl_check_code(resp) == 0) {
        if (resp->body_case == RINGMQ__RPC_RESPONSE__BODY_MQ_EXPORT) {
            *len = resp->mq_export->chunk.len;
            *chunk = malloc(*len > 0 ? *len : 1);
            memcpy(*chunk, resp->mq_export->chunk.data, *len);
            *next = resp->mq_export->next_cursor;
            *last = resp->mq_export->last;
            rv = 0;
        } else {
            fprintf(stderr, "ringmqctl: %s: bad export answer\n", group);
        }
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;
}

/* Steps 2 and 3: freeze at @s, copy every chunk to @t with @gen. *@moved:
 * @s had already handed the queue off (its tombstone), nothing copied. */
static int copy(struct qctl *q, const struct cluster_shard *s,
                const struct cluster_shard *t, uint64_t gen,
                uint64_t *chunks, bool *moved)
{
    struct mq_sm_result res;
    struct ctl_pace pace;
    uint64_t cursor = 0;
    bool last = false;

    ctl_pace_init(&pace, q->ctl->o->rate);
    *moved = false;
    *chunks = 0;
    if (mq_step(q, s, MQ_SM_MOVE_OUT, &res) != 0) {
        return EXIT_ERROR;
    }
    *moved = res.moved;
    if (*moved) {
        step_line(q, "handed off by %s already (an earlier run)", s->name);
        mq_sm_result_clear(&res);
        return 0;
    }
    step_line(q, "frozen at %s (%" PRIu64 " ready)", s->name, res.count);
    mq_sm_result_clear(&res);
    while (!last) {
        struct mq_sm_cmd c = queue_cmd(q, MQ_SM_MOVE_IN);
        void *chunk = NULL;
        size_t len = 0;
        uint64_t next = 0;
        int rv = export_chunk(q, s, cursor, &chunk, &len, &next, &last);

        if (rv == 1) {
            fprintf(stderr, "ringmqctl: %s: queue '%s' is not frozen there "
                            "(a move aborted meanwhile?)\n",
                    s->name, q->queue);
            return EXIT_ERROR;
        }
        if (rv != 0) {
            return rv;
        }
        c.body = chunk;
        c.body_len = len;
        c.place_gen = gen;
        rv = mq_call(q, t, &c, &res);
        free(chunk);
        if (rv != 0) {
            return rv;
        }
        if (res.status != MQ_SM_OK) {
            fprintf(stderr, "ringmqctl: %s: import of '%s' refused: %s\n",
                    t->name, q->queue, res.reply_text);
            mq_sm_result_clear(&res);
            return EXIT_ERROR;
        }
        mq_sm_result_clear(&res);
        ctl_pace(&pace, len);
        cursor = next;
        (*chunks)++;
    }
    step_line(q, "copied to %s (%" PRIu64 " chunk(s))", t->name, *chunks);
    return 0;
}

static int cmd_move(struct qctl *q, const char *target)
{
    const struct cluster_shard *s, *t = cluster_map_shard(&q->map, target);
    struct meta_sm_placement pl;
    struct meta_sm_result mr;
    struct mq_sm_result res;
    uint64_t chunks = 0, frozen_at;
    bool moved;
    int rv;

    if (t == NULL || t->state != CLUSTER_SHARD_SERVING) {
        fprintf(stderr, "ringmqctl: no serving shard '%s' in the map\n",
                target);
        return EXIT_USAGE;
    }
    rv = lookup(q, &pl);
    if (rv == 1) {
        rv = adopt(q, &pl);
    }
    if (rv != 0) {
        return rv;
    }
    if (pl.moving && strcmp(pl.target, t->name) != 0) {
        fprintf(stderr, "ringmqctl: queue '%s' is moving to %s: finish "
                        "that (queue move %s %s) or abort it first\n",
                q->queue, pl.target, q->queue, pl.target);
        return EXIT_ERROR;
    }
    if (!pl.moving && strcmp(pl.shard, t->name) == 0) {
        printf("queue %s is on %s\n", q->queue, t->name);
        return 0;
    }
    s = cluster_map_shard(&q->map, pl.shard);
    if (s == NULL) {
        fprintf(stderr, "ringmqctl: queue '%s' is on %s, which is not in "
                        "the map\n",
                q->queue, pl.shard);
        return EXIT_ERROR;
    }
    if (dir_step(q, META_SM_QUEUE_MOVE_BEGIN, s->name, t->name, pl.gen,
                 &mr) != 0) {
        return EXIT_ERROR;
    }
    step_line(q, "moving from %s to %s (gen %" PRIu64 " there)", s->name,
              t->name, mr.placement.move_gen);
    frozen_at = clock_mono_ms();
    if (copy(q, s, t, mr.placement.move_gen, &chunks, &moved) != 0) {
        return EXIT_ERROR;
    }
    if (mq_step(q, t, MQ_SM_MOVE_IN_END, &res) != 0) {
        return EXIT_ERROR;
    }
    step_line(q, "serving at %s (%" PRIu64 " ready)", t->name, res.count);
    mq_sm_result_clear(&res);
    if (mq_step(q, s, MQ_SM_MOVE_DONE, &res) != 0) {
        return EXIT_ERROR;
    }
    step_line(q, "handed off by %s", s->name);
    mq_sm_result_clear(&res);
    if (dir_step(q, META_SM_QUEUE_MOVE_COMMIT, NULL, t->name, 0, &mr) != 0) {
        return EXIT_ERROR;
    }
    /* the fence: from the freeze until every router follows the
     * directory (the commit's answer waits for them) */
    printf("queue %s moved from %s to %s (%" PRIu64 " chunk(s)%s; fenced "
           "%" PRIu64 " ms)\n",
           q->queue, s->name, t->name, chunks,
           moved ? ", copied by an earlier run" : "",
           clock_mono_ms() - frozen_at);
    return 0;
}

/* The refusal of an abort that came too late. */
static int finish_it(const struct qctl *q, const struct cluster_shard *t,
                     const char *why)
{
    fprintf(stderr, "ringmqctl: queue '%s' %s: finish the move (queue "
                    "move %s %s)\n",
            q->queue, why, q->queue, t->name);
    return EXIT_ERROR;
}

/* Take back a move T has not finished importing: drop T's partial copy,
 * unfreeze at S, clear the directory's mark. T first: once its import is
 * complete (MOVE_IN_END) it may serve the queue (a router whose view of
 * the directory is behind), so the move can only be finished; S second:
 * its tombstone says the same. */
static int cmd_abort(struct qctl *q)
{
    const struct cluster_shard *s, *t;
    struct meta_sm_placement pl;
    struct meta_sm_result mr;
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    int rv = lookup(q, &pl);

    if (rv == 1 || (rv == 0 && !pl.moving)) {
        printf("queue %s is not moving\n", q->queue);
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    s = cluster_map_shard(&q->map, pl.shard);
    t = cluster_map_shard(&q->map, pl.target);
    if (s == NULL || t == NULL) {
        fprintf(stderr, "ringmqctl: queue '%s': %s or %s not in the map\n",
                q->queue, pl.shard, pl.target);
        return EXIT_ERROR;
    }
    c = queue_cmd(q, MQ_SM_MOVE_ABORT);
    c.place_gen = pl.move_gen; /* names the move: its import at T */
    if (mq_call(q, t, &c, &res) != 0) {
        return EXIT_ERROR;
    }
    if (res.status != MQ_SM_OK) {
        fprintf(stderr, "ringmqctl: %s: queue '%s': %s (status %d)\n",
                t->name, q->queue, res.reply_text, (int)res.status);
        mq_sm_result_clear(&res);
        return EXIT_ERROR;
    }
    if (res.moved) {
        mq_sm_result_clear(&res);
        return finish_it(q, t, "was copied whole to its new shard");
    }
    step_line(q, "%s at %s", res.count ? "copy dropped" : "no copy",
              t->name);
    mq_sm_result_clear(&res);
    if (mq_step(q, s, MQ_SM_MOVE_ABORT, &res) != 0) {
        return EXIT_ERROR;
    }
    if (res.moved) {
        mq_sm_result_clear(&res);
        return finish_it(q, t, "was handed off by its old shard");
    }
    step_line(q, "%s at %s", res.count ? "unfrozen" : "not frozen", s->name);
    mq_sm_result_clear(&res);
    if (dir_step(q, META_SM_QUEUE_MOVE_ABORT, NULL, t->name, 0, &mr) != 0) {
        return EXIT_ERROR;
    }
    printf("queue %s stays on %s\n", q->queue, s->name);
    return 0;
}

int cmd_queue(struct ctl *ctl, const struct ctl_map *m)
{
    const struct opts *o = ctl->o;
    struct qctl q;
    int rv;

    if (o->n_args < 3) {
        return usage_error();
    }
    memset(&q, 0, sizeof(q));
    q.ctl = ctl;
    q.queue = o->args[2];
    q.deadline = clock_mono_ms() + (uint64_t)o->seconds * 1000;
    if (strlen(q.queue) == 0 || strlen(q.queue) > MQ_SM_NAME_MAX) {
        return usage_error();
    }
    cluster_map_init(&q.map);
    rv = ctl_live_fetch(ctl, &m->map, &q.map);
    if (rv != 0) {
        goto out;
    }
    ctl_live_meta_group(&q.map, &q.meta);
    if (strcmp(o->args[1], "where") == 0 && o->n_args == 3) {
        rv = cmd_where(&q);
    } else if (strcmp(o->args[1], "find") == 0 && o->n_args == 3) {
        rv = cmd_find(&q);
    } else if (strcmp(o->args[1], "move") == 0 && o->n_args == 4) {
        rv = cmd_move(&q, o->args[3]);
    } else if (strcmp(o->args[1], "abort") == 0 && o->n_args == 3) {
        rv = cmd_abort(&q);
    } else {
        rv = usage_error();
    }
out:
    cluster_map_clear(&q.map);
    return rv;
}
