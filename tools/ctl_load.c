/* ctl_load: see ctl_load.h. Calls only ctl. */
#include "tools/ctl_load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/buf.h"
#include "proto/cache_pb.h"
#include "sm/cache_op.h"

/*
 * Pipelined writes (load) or reads (verify) of many keys, keeping
 * --concurrency calls in flight and following the leader across the --node
 * list: NOT_LEADER hints switch the target; connection failures, timeouts
 * and UNAVAILABLE (no leader yet, outcome unknown) move on to the next node
 * and retry the key after a short pause. A set of the same key and value is
 * idempotent, so retrying a write whose outcome is unknown is safe. Only
 * writes answered STORED go to the --acked file, one "<key> <size>" line
 * each, flushed at once (tests read it while the load runs).
 */

#define RETRY_MS 50

struct job {
    struct engine *e;
    uint64_t index;
    char key[CACHE_KEY_MAX + 1];
    size_t size;
    struct job *next; /* retry list */
};

struct engine {
    uv_loop_t *loop;
    const struct opts *o;
    bool verify;
    struct rpc_client *clients[MAX_NODES];
    char addrs[MAX_NODES][300];
    int n_clients;
    int target;
    uv_timer_t retry_timer;
    struct job *retry; /* jobs waiting for the retry timer */
    uint64_t next;     /* next key index to start */
    uint64_t total;
    unsigned inflight; /* jobs started and not finished */
    uint64_t deadline; /* uv_now() ms */
    bool stop;         /* fatal error or deadline: start nothing more */
    FILE *acked;
    char **vkeys; /* verify: keys and sizes from the acked file */
    size_t *vsizes;
    struct buf value; /* scratch for the expected value */
    /* counters */
    uint64_t ok, missing, wrong, failed, retries, redirects;
};

static void make_value(const char *key, size_t size, struct buf *out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; key[i]; i++) {
        h = (h ^ (uint8_t)key[i]) * 16777619u;
    }
    buf_reset(out);
    buf_reserve(out, size);
    for (i = 0; i < size; i++) {
        out->data[i] = alphabet[(h + i) % 36];
    }
    out->len = size;
}

static int engine_add_client(struct engine *e, const char *address)
{
    struct rpc_client_config cfg = {0};
    char err[256];
    int i;

    for (i = 0; i < e->n_clients; i++) {
        if (strcmp(e->addrs[i], address) == 0 ||
            strcmp(rpc_client_address(e->clients[i]), address) == 0) {
            return i;
        }
    }
    if (e->n_clients == MAX_NODES) {
        return -1;
    }
    cfg.address = address;
    cfg.call_timeout_ms = e->o->timeout_ms;
    cfg.connect_timeout_ms = e->o->timeout_ms;
    cfg.backoff_max_ms = 500;
    e->clients[i] = rpc_client_new(e->loop, &cfg, err, sizeof(err));
    if (e->clients[i] == NULL) {
        fprintf(stderr, "ringmqctl: %s\n", err);
        return -1;
    }
    snprintf(e->addrs[i], sizeof(e->addrs[i]), "%s", address);
    e->n_clients++;
    return i;
}

static void job_send(struct job *j);
static void engine_pump(struct engine *e);

static void on_retry_timer(uv_timer_t *t)
{
    struct engine *e = t->data;
    struct job *list = e->retry;
    struct job *next;

    e->retry = NULL;
    for (; list; list = next) {
        next = list->next;
        job_send(list);
    }
}

static void job_finish(struct job *j)
{
    struct engine *e = j->e;

    e->inflight--;
    free(j);
    engine_pump(e);
}

static void job_retry(struct job *j, bool rotate, int target_used)
{
    struct engine *e = j->e;

    e->retries++;
    if (rotate && target_used == e->target) {
        e->target = (e->target + 1) % e->n_clients;
    }
    j->next = e->retry;
    e->retry = j;
    if (!uv_is_active((uv_handle_t *)&e->retry_timer)) {
        uv_timer_start(&e->retry_timer, on_retry_timer, RETRY_MS, 0);
    }
}

struct job_call {
    struct job *j;
    int target;
};

static void on_job_done(void *data, int status, const Ringmq__RpcResponse *r)
{
    struct job_call *jc = data;
    struct job *j = jc->j;
    struct engine *e = j->e;
    int target = jc->target;
    int t;

    free(jc);
    if (status < 0 || rpc_outcome(r->code) == OUTCOME_UNAVAILABLE ||
        rpc_outcome(r->code) == OUTCOME_EXPIRED) {
        if (e->o->verbose) {
            fprintf(stderr, "ringmqctl: %s: %s: %s\n", j->key, e->addrs[target],
                    status < 0 ? uv_strerror(status) : r->error);
        }
        job_retry(j, true, target);
        return;
    }
    if (ctl_is_not_leader(r)) {
        t = r->leader_rpc && r->leader_rpc[0]
                ? engine_add_client(e, r->leader_rpc)
                : -1;
        e->redirects++;
        if (t >= 0 && t != target) {
            e->target = t;
            e->retries++;
            job_send(j); /* straight to the hinted leader */
        } else {
            job_retry(j, true, target); /* no usable hint: wait, rotate */
        }
        return;
    }
    if (rpc_outcome(r->code) != OUTCOME_OK ||
        r->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE) {
        fprintf(stderr, "ringmqctl: %s: %s: %s\n", j->key,
                ctl_code_name(r->code), r->error ? r->error : "");
        e->failed++;
        e->stop = true;
        job_finish(j);
        return;
    }
    if (!e->verify) {
        if (r->cache->status == CACHE_STORED) {
            e->ok++;
            fprintf(e->acked, "%s %zu\n", j->key, j->size);
            fflush(e->acked);
        } else {
            fprintf(stderr, "ringmqctl: %s: %s\n", j->key,
                    cache_status_name((enum cache_status)r->cache->status));
            e->failed++;
        }
    } else if (r->cache->status == CACHE_HIT) {
        make_value(j->key, j->size, &e->value);
        if (r->cache->value.len == j->size &&
            memcmp(r->cache->value.data, e->value.data, j->size) == 0) {
            e->ok++;
        } else {
            printf("WRONG %s (%zu bytes, expected %zu)\n", j->key,
                   r->cache->value.len, j->size);
            e->wrong++;
        }
    } else if (r->cache->status == CACHE_NOT_FOUND) {
        printf("MISSING %s\n", j->key);
        e->missing++;
    } else {
        fprintf(stderr, "ringmqctl: %s: %s\n", j->key,
                cache_status_name((enum cache_status)r->cache->status));
        e->failed++;
    }
    job_finish(j);
}

static void job_send(struct job *j)
{
    struct engine *e = j->e;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp pb;
    struct cache_op op;
    struct job_call *jc;
    int rv;

    if (e->stop || uv_now(e->loop) >= e->deadline) {
        e->stop = true;
        e->failed++;
        job_finish(j);
        return;
    }
    memset(&op, 0, sizeof(op));
    op.type = e->verify ? CACHE_OP_GET : CACHE_OP_SET;
    op.key = j->key;
    op.key_len = strlen(j->key);
    if (!e->verify) {
        make_value(j->key, j->size, &e->value);
        op.value = e->value.data;
        op.value_len = j->size;
    }
    cache_op_to_pb(&op, &pb);
    req.group = (char *)e->o->group;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    jc = xmalloc(sizeof(*jc));
    jc->j = j;
    jc->target = e->target;
    rv = rpc_client_call(e->clients[e->target], &req, 0, on_job_done, jc, NULL);
    if (rv != 0) {
        free(jc);
        fprintf(stderr, "ringmqctl: %s: %s\n", j->key, uv_strerror(rv));
        e->failed++;
        e->stop = true;
        job_finish(j);
    }
}

static void engine_pump(struct engine *e)
{
    struct job *j;

    while (!e->stop && e->next < e->total && e->inflight < e->o->concurrency) {
        j = xcalloc(1, sizeof(*j));
        j->e = e;
        j->index = e->next++;
        if (e->verify) {
            snprintf(j->key, sizeof(j->key), "%s", e->vkeys[j->index]);
            j->size = e->vsizes[j->index];
        } else {
            snprintf(j->key, sizeof(j->key), "%s%" PRIu64, e->o->prefix,
                     j->index);
            j->size = (size_t)e->o->value_size;
        }
        e->inflight++;
        job_send(j);
    }
}

static int read_acked(struct engine *e, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    size_t cap = 0;
    char key[CACHE_KEY_MAX + 1];
    unsigned long long size;
    int n;

    if (f == NULL) {
        fprintf(stderr, "ringmqctl: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        n = sscanf(line, "%250s %llu", key, &size);
        if (n < 1) {
            continue;
        }
        if (e->total == cap) {
            cap = cap ? cap * 2 : 1024;
            e->vkeys = xrealloc(e->vkeys, cap * sizeof(*e->vkeys));
            e->vsizes = xrealloc(e->vsizes, cap * sizeof(*e->vsizes));
        }
        e->vkeys[e->total] = xstrdup(key);
        e->vsizes[e->total] = n == 2 ? (size_t)size : e->o->value_size;
        e->total++;
    }
    fclose(f);
    return 0;
}

int cmd_load(struct ctl *ctl, bool verify)
{
    const struct opts *o = ctl->o;
    struct engine e;
    uint64_t t0;
    double secs;
    size_t i;
    int rv = 0;

    memset(&e, 0, sizeof(e));
    e.loop = &ctl->loop;
    e.o = o;
    e.verify = verify;
    buf_init(&e.value);
    if (o->acked == NULL) {
        fprintf(stderr, "ringmqctl: %s needs --acked FILE\n", o->args[0]);
        return EXIT_USAGE;
    }
    if (verify) {
        if (read_acked(&e, o->acked) != 0) {
            return EXIT_ERROR;
        }
    } else {
        if (o->count == 0) {
            fprintf(stderr, "ringmqctl: load needs --count N\n");
            return EXIT_USAGE;
        }
        if (strlen(o->prefix) + 20 > CACHE_KEY_MAX) {
            fprintf(stderr, "ringmqctl: --prefix too long\n");
            return EXIT_USAGE;
        }
        e.total = o->count;
        e.acked = fopen(o->acked, "w");
        if (e.acked == NULL) {
            fprintf(stderr, "ringmqctl: %s: %s\n", o->acked, strerror(errno));
            return EXIT_ERROR;
        }
    }
    for (i = 0; i < (size_t)o->n_addrs; i++) {
        if (engine_add_client(&e, o->addrs[i]) < 0) {
            rv = EXIT_USAGE;
            goto out;
        }
    }
    uv_timer_init(e.loop, &e.retry_timer);
    e.retry_timer.data = &e;
    uv_update_time(e.loop);
    t0 = uv_now(e.loop);
    e.deadline = o->seconds ? t0 + (uint64_t)o->seconds * 1000 : UINT64_MAX;
    engine_pump(&e);
    while (e.inflight > 0) {
        uv_run(e.loop, UV_RUN_ONCE);
    }
    secs = (double)(uv_now(e.loop) - t0) / 1000.0;
    if (verify) {
        printf("verify: %" PRIu64 " keys, %" PRIu64 " ok, %" PRIu64
               " missing, %" PRIu64 " wrong, %" PRIu64 " errors, %" PRIu64
               " retries, %" PRIu64 " redirects, %.2fs\n",
               e.total, e.ok, e.missing, e.wrong, e.failed, e.retries,
               e.redirects, secs);
        rv = e.failed ? EXIT_ERROR : (e.missing || e.wrong) ? EXIT_NEGATIVE : 0;
    } else {
        printf("load: %" PRIu64 " writes, %" PRIu64 " acked, %" PRIu64
               " failed, %" PRIu64 " retries, %" PRIu64
               " redirects, %.2fs, %.0f ops/s\n",
               e.total, e.ok, e.total - e.ok, e.retries, e.redirects, secs,
               secs > 0 ? (double)e.ok / secs : 0.0);
        rv = e.ok == e.total ? 0 : EXIT_ERROR;
    }
    uv_close((uv_handle_t *)&e.retry_timer, NULL);
out:
    for (i = 0; i < (size_t)e.n_clients; i++) {
        rpc_client_close(e.clients[i], NULL, NULL);
    }
    uv_run(e.loop, UV_RUN_DEFAULT);
    if (e.acked) {
        fclose(e.acked);
    }
    for (i = 0; i < e.total && e.vkeys; i++) {
        free(e.vkeys[i]);
    }
    free(e.vkeys);
    free(e.vsizes);
    buf_free(&e.value);
    return rv;
}
