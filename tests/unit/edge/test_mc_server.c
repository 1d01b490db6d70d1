/*
 * test_mc_server: the memcached edge over real sockets.
 *
 * The server and a fake backend run on a libuv loop in a second thread; the
 * test (main thread) is the client, with blocking sockets, so cmocka asserts
 * stay on the main thread. The fake backend is a tiny in-memory cache with
 * three modes:
 *
 *   SYNC   completes every call inside submit;
 *   ASYNC  completes calls from a 1 ms timer, firing the callbacks of each
 *          batch in reverse order (replies must still come out in order).
 *          Reads see the store when submitted, writes take effect when they
 *          complete (like a Raft commit), so a read dispatched alongside an
 *          earlier write of its key would read stale data; it also counts
 *          submits that conflict with a call not yet called back (same key
 *          and one of them a write, or a flush_all: ordering violations);
 *   HOLD   keeps calls until the test sets `release`, then acts as ASYNC;
 *          each increment of `steps` completes the calls held at one tick.
 *
 * Every submit is logged ("op key\n"), so tests can see what reached the
 * backend and in which order. Violations are counted across connections,
 * so tests run backend requests on one connection at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <uv.h>

#include "common/buf.h"
#include "sm/cache_op.h"
#include "edge/mc_server.h"

/* ---- fake backend ------------------------------------------------------ */

enum fake_mode { FAKE_SYNC, FAKE_ASYNC, FAKE_HOLD };

#define FAKE_ITEMS 64

struct fake_item {
    bool used;
    char key[CACHE_KEY_MAX];
    size_t klen;
    char *val;
    size_t vlen;
    uint32_t flags;
    uint64_t cas;
};

struct fake {
    enum fake_mode mode;
    int release; /* atomic: HOLD -> ASYNC */
    struct fake_item items[FAKE_ITEMS];
    uint64_t next_cas;
    struct cache_call **queue;
    size_t nqueue, capqueue;
    int pending_reads, pending_writes;
    int violations;   /* atomic */
    int held;         /* atomic: calls waiting */
    int max_inflight; /* atomic */
    int submitted;    /* atomic */
    int steps;        /* atomic: HOLD ticks to complete */
    /* The batch whose callbacks are firing: [0, nfiring) not called yet. */
    struct cache_call **firing;
    size_t nfiring;
    pthread_mutex_t mu; /* guards log */
    struct buf log;
};

static struct fake_item *fake_find(struct fake *f, const struct cache_op *op)
{
    int i;
    for (i = 0; i < FAKE_ITEMS; i++) {
        struct fake_item *it = &f->items[i];
        if (it->used && it->klen == op->key_len &&
            memcmp(it->key, op->key, op->key_len) == 0) {
            return it;
        }
    }
    return NULL;
}

static void fake_store(struct fake *f, struct fake_item *it,
                       const struct cache_op *op, const char *val,
                       size_t vlen, uint32_t flags)
{
    int i;
    if (it == NULL) {
        for (i = 0; i < FAKE_ITEMS && f->items[i].used; i++) {
        }
        assert_true(i < FAKE_ITEMS);
        it = &f->items[i];
        it->used = true;
        memcpy(it->key, op->key, op->key_len);
        it->klen = op->key_len;
        it->val = NULL;
    }
    {
        char *nv = xmemdup(val, vlen);
        free(it->val);
        it->val = nv;
    }
    it->vlen = vlen;
    it->flags = flags;
    it->cas = ++f->next_cas;
}

static void fake_unlink(struct fake_item *it)
{
    free(it->val);
    memset(it, 0, sizeof(*it));
}

static bool key_is(const struct cache_op *op, const char *s)
{
    return op->key_len == strlen(s) && memcmp(op->key, s, op->key_len) == 0;
}

static void fake_apply(struct fake *f, struct cache_call *call)
{
    const struct cache_op *op = &call->op;
    struct cache_result *res = &call->result;
    struct fake_item *it = op->key ? fake_find(f, op) : NULL;
    char tmp[32];
    int i;

    cache_result_init(res);
    call->outcome = OUTCOME_OK;
    if (key_is(op, "unavail")) {
        call->outcome = OUTCOME_UNAVAILABLE;
        return;
    }
    if (key_is(op, "notleader")) {
        call->outcome = OUTCOME_NOT_LEADER;
        return;
    }
    if (key_is(op, "closing")) {
        call->outcome = OUTCOME_CLOSING;
        return;
    }
    if (key_is(op, "busy")) {
        call->outcome = OUTCOME_BUSY;
        return;
    }
    /* refusals of the op by a router's backend, not by the cache */
    if (key_is(op, "refused")) {
        call->outcome = OUTCOME_BAD_REQUEST;
        return;
    }
    if (key_is(op, "2big")) {
        call->outcome = OUTCOME_TOO_LARGE;
        return;
    }
    if (key_is(op, "nomem") && op->type == CACHE_OP_SET) {
        res->status = CACHE_NO_MEMORY;
        return;
    }
    if (key_is(op, "toolarge") && op->type == CACHE_OP_SET) {
        res->status = CACHE_TOO_LARGE;
        return;
    }
    if (key_is(op, "stale") && op->type == CACHE_OP_INCR) {
        res->status = CACHE_STALE_RETRY; /* a router's retry came too late */
        return;
    }
    switch (op->type) {
    case CACHE_OP_GET:
    case CACHE_OP_GAT:
        if (it == NULL) {
            res->status = CACHE_NOT_FOUND;
            break;
        }
        res->status = CACHE_HIT;
        res->value = it->vlen ? xmemdup(it->val, it->vlen) : NULL;
        res->value_len = it->vlen;
        res->flags = it->flags;
        res->cas = it->cas;
        break;
    case CACHE_OP_SET:
        fake_store(f, it, op, op->value, op->value_len, op->flags);
        res->status = CACHE_STORED;
        break;
    case CACHE_OP_ADD:
    case CACHE_OP_REPLACE:
        if ((it != NULL) == (op->type == CACHE_OP_ADD)) {
            res->status = CACHE_NOT_STORED;
            break;
        }
        fake_store(f, it, op, op->value, op->value_len, op->flags);
        res->status = CACHE_STORED;
        break;
    case CACHE_OP_APPEND:
    case CACHE_OP_PREPEND: {
        struct buf b;
        if (it == NULL) {
            res->status = CACHE_NOT_STORED;
            break;
        }
        buf_init(&b);
        if (op->type == CACHE_OP_PREPEND) {
            buf_append(&b, op->value, op->value_len);
        }
        buf_append(&b, it->val, it->vlen);
        if (op->type == CACHE_OP_APPEND) {
            buf_append(&b, op->value, op->value_len);
        }
        fake_store(f, it, op, b.data, b.len, it->flags);
        buf_free(&b);
        res->status = CACHE_STORED;
        break;
    }
    case CACHE_OP_CAS:
        if (it == NULL) {
            res->status = CACHE_NOT_FOUND;
        } else if (it->cas != op->cas) {
            res->status = CACHE_EXISTS;
        } else {
            fake_store(f, it, op, op->value, op->value_len, op->flags);
            res->status = CACHE_STORED;
        }
        break;
    case CACHE_OP_INCR:
    case CACHE_OP_DECR: {
        uint64_t v = 0;
        size_t k;
        if (it == NULL) {
            res->status = CACHE_NOT_FOUND;
            break;
        }
        if (it->vlen == 0 || it->vlen > 20) {
            res->status = CACHE_NON_NUMERIC;
            break;
        }
        for (k = 0; k < it->vlen; k++) {
            if (it->val[k] < '0' || it->val[k] > '9') {
                break;
            }
            v = v * 10 + (uint64_t)(it->val[k] - '0');
        }
        if (k < it->vlen) {
            res->status = CACHE_NON_NUMERIC;
            break;
        }
        if (op->type == CACHE_OP_INCR) {
            v += op->delta;
        } else {
            v = op->delta > v ? 0 : v - op->delta;
        }
        snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
        fake_store(f, it, op, tmp, strlen(tmp), it->flags);
        res->status = CACHE_NUMBER;
        res->number = v;
        break;
    }
    case CACHE_OP_DELETE:
        if (it == NULL) {
            res->status = CACHE_NOT_FOUND;
        } else {
            fake_unlink(it);
            res->status = CACHE_DELETED;
        }
        break;
    case CACHE_OP_TOUCH:
        res->status = it ? CACHE_TOUCHED : CACHE_NOT_FOUND;
        break;
    case CACHE_OP_FLUSH_ALL:
        for (i = 0; i < FAKE_ITEMS; i++) {
            if (f->items[i].used) {
                fake_unlink(&f->items[i]);
            }
        }
        res->status = CACHE_OK;
        break;
    default:
        res->status = CACHE_BAD_REQUEST;
        break;
    }
}

static bool calls_conflict(const struct cache_call *a,
                           const struct cache_call *b)
{
    if (a->op.type == CACHE_OP_FLUSH_ALL || b->op.type == CACHE_OP_FLUSH_ALL) {
        return true;
    }
    if (!cache_op_is_write(a->op.type) && !cache_op_is_write(b->op.type)) {
        return false;
    }
    return a->op.key_len == b->op.key_len &&
           memcmp(a->op.key, b->op.key, a->op.key_len) == 0;
}

/* Is a call that has not called back yet in conflict with @call? */
static bool fake_conflicts(const struct fake *f, const struct cache_call *call)
{
    size_t i;
    for (i = 0; i < f->nqueue; i++) {
        if (calls_conflict(f->queue[i], call)) {
            return true;
        }
    }
    for (i = 0; i < f->nfiring; i++) {
        if (calls_conflict(f->firing[i], call)) {
            return true;
        }
    }
    return false;
}

/* What reached the backend so far, one "op key" line per call. */
static char *fake_log(struct fake *f)
{
    char *s;
    pthread_mutex_lock(&f->mu);
    s = xmalloc(f->log.len + 1);
    if (f->log.len > 0) {
        memcpy(s, f->log.data, f->log.len);
    }
    s[f->log.len] = '\0';
    pthread_mutex_unlock(&f->mu);
    return s;
}

static void fake_submit(void *data, struct cache_call *call)
{
    struct fake *f = data;
    bool write = cache_op_is_write(call->op.type);
    int inflight;

    pthread_mutex_lock(&f->mu);
    buf_printf(&f->log, "%s %.*s\n", cache_op_name(call->op.type),
               (int)call->op.key_len, call->op.key ? call->op.key : "");
    pthread_mutex_unlock(&f->mu);
    __atomic_add_fetch(&f->submitted, 1, __ATOMIC_SEQ_CST);
    if (f->mode == FAKE_SYNC) {
        fake_apply(f, call);
        call->cb(call);
        return;
    }
    if (fake_conflicts(f, call)) {
        __atomic_add_fetch(&f->violations, 1, __ATOMIC_SEQ_CST);
    }
    if (write) {
        f->pending_writes++;
    } else {
        f->pending_reads++;
        fake_apply(f, call); /* reads see the state at submit */
    }
    if (f->nqueue == f->capqueue) {
        f->capqueue = f->capqueue ? 2 * f->capqueue : 64;
        f->queue = xrealloc(f->queue, f->capqueue * sizeof(*f->queue));
    }
    f->queue[f->nqueue++] = call;
    __atomic_store_n(&f->held, (int)f->nqueue, __ATOMIC_SEQ_CST);
    inflight = (int)f->nqueue;
    if (inflight > __atomic_load_n(&f->max_inflight, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&f->max_inflight, inflight, __ATOMIC_SEQ_CST);
    }
}

/* Complete everything queued: writes applied in submit order, callbacks in
 * reverse order. Callbacks may submit more; those wait for the next tick. */
static void fake_complete_all(struct fake *f)
{
    struct cache_call **batch = f->queue;
    size_t n = f->nqueue;
    size_t i;

    if (n == 0) {
        return;
    }
    f->queue = NULL;
    f->nqueue = f->capqueue = 0;
    __atomic_store_n(&f->held, 0, __ATOMIC_SEQ_CST);
    for (i = 0; i < n; i++) {
        if (cache_op_is_write(batch[i]->op.type)) {
            fake_apply(f, batch[i]);
        }
    }
    f->firing = batch;
    for (i = n; i-- > 0;) {
        if (cache_op_is_write(batch[i]->op.type)) {
            f->pending_writes--;
        } else {
            f->pending_reads--;
        }
        f->nfiring = i;
        batch[i]->cb(batch[i]);
    }
    f->firing = NULL;
    f->nfiring = 0;
    free(batch);
}

static void fake_stats(void *data, struct buf *out)
{
    struct fake *f = data;
    int i, n = 0;
    for (i = 0; i < FAKE_ITEMS; i++) {
        n += f->items[i].used;
    }
    buf_printf(out, "STAT curr_items %d\r\n", n);
}

static void fake_free(struct fake *f)
{
    int i;
    for (i = 0; i < FAKE_ITEMS; i++) {
        free(f->items[i].val);
    }
    free(f->queue);
    buf_free(&f->log);
    pthread_mutex_destroy(&f->mu);
}

/* ---- fixture: loop thread ---------------------------------------------- */

struct fixture {
    uv_loop_t loop;
    uv_async_t stop;
    uv_timer_t timer;
    pthread_t thread;
    struct mc_server *server;
    struct fake fake;
    int port;
};

static void on_tick(uv_timer_t *t)
{
    struct fixture *fx = t->data;
    struct fake *f = &fx->fake;

    if (f->mode == FAKE_HOLD &&
        !__atomic_load_n(&f->release, __ATOMIC_SEQ_CST)) {
        if (f->nqueue == 0 ||
            __atomic_load_n(&f->steps, __ATOMIC_SEQ_CST) == 0) {
            return;
        }
        __atomic_sub_fetch(&f->steps, 1, __ATOMIC_SEQ_CST);
    }
    fake_complete_all(f);
}

static void on_server_closed(void *data)
{
    struct fixture *fx = data;

    fx->server = NULL;
    /* Calls still held complete now, after the server is gone: they must
     * land in orphaned requests without touching freed memory. */
    fake_complete_all(&fx->fake);
    uv_close((uv_handle_t *)&fx->timer, NULL);
    uv_close((uv_handle_t *)&fx->stop, NULL);
}

static void on_stop(uv_async_t *a)
{
    struct fixture *fx = a->data;
    mc_server_close(fx->server, on_server_closed, fx);
}

static void *loop_main(void *arg)
{
    struct fixture *fx = arg;
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    return NULL;
}

static struct fixture *start(enum fake_mode mode, uint32_t item_size_max,
                             unsigned max_connections)
{
    struct fixture *fx = xcalloc(1, sizeof(*fx));
    struct mc_server_config cfg = {0};
    struct mc_backend be = {0};
    char errmsg[256];

    fx->fake.mode = mode;
    pthread_mutex_init(&fx->fake.mu, NULL);
    buf_init(&fx->fake.log);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(uv_async_init(&fx->loop, &fx->stop, on_stop), 0);
    fx->stop.data = fx;
    assert_int_equal(uv_timer_init(&fx->loop, &fx->timer), 0);
    fx->timer.data = fx;
    assert_int_equal(uv_timer_start(&fx->timer, on_tick, 1, 1), 0);
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.item_size_max = item_size_max;
    cfg.max_connections = max_connections;
    be.data = &fx->fake;
    be.submit = fake_submit;
    be.stats = fake_stats;
    fx->server = mc_server_new(&fx->loop, &cfg, &be, errmsg, sizeof(errmsg));
    if (fx->server == NULL) {
        fail_msg("mc_server_new: %s", errmsg);
    }
    fx->port = mc_server_port(fx->server);
    assert_true(fx->port > 0);
    assert_int_equal(pthread_create(&fx->thread, NULL, loop_main, fx), 0);
    return fx;
}

static void stop(struct fixture *fx)
{
    uv_async_send(&fx->stop);
    assert_int_equal(pthread_join(fx->thread, NULL), 0);
    assert_null(fx->server);
    /* Every handle (listener, connections) was closed. */
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    assert_int_equal(fx->fake.nqueue, 0);
    assert_int_equal(fx->fake.pending_reads + fx->fake.pending_writes, 0);
    fake_free(&fx->fake);
    free(fx);
}

/* ---- client ------------------------------------------------------------ */

/* @rcvbuf > 0 pins the client's receive buffer (no autotuning), so a test
 * about server-side buffering does not measure the kernel's (tcp_rmem max is
 * 32 MiB on some machines). */
static int cl_connect_rcvbuf(int port, int rcvbuf)
{
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    if (rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int cl_connect(int port)
{
    return cl_connect_rcvbuf(port, 0);
}

static void cl_send(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void cl_sends(int fd, const char *s)
{
    cl_send(fd, s, strlen(s));
}

/* Read exactly @n bytes (or until EOF/timeout); returns a NUL-terminated
 * copy and the count in *@got. */
static char *cl_recv_n(int fd, size_t n, size_t *got)
{
    char *b = xmalloc(n + 1);
    size_t have = 0;
    while (have < n) {
        ssize_t r = recv(fd, b + have, n - have, 0);
        if (r <= 0) {
            break;
        }
        have += (size_t)r;
    }
    b[have] = '\0';
    *got = have;
    return b;
}

static void cl_expect_n(int fd, const char *want, size_t n)
{
    size_t got;
    char *b = cl_recv_n(fd, n, &got);
    if (got != n || memcmp(b, want, n) != 0) {
        print_error("want (%zu):\n%.*s\ngot (%zu):\n%.*s\n", n,
                    (int)(n > 2000 ? 2000 : n), want, got,
                    (int)(got > 2000 ? 2000 : got), b);
        free(b);
        fail();
    }
    free(b);
}

static void cl_expect(int fd, const char *want)
{
    cl_expect_n(fd, want, strlen(want));
}

/* The server closed the connection: EOF (or reset) with nothing before it. */
static void cl_expect_eof(int fd)
{
    char c;
    ssize_t r = recv(fd, &c, 1, 0);
    if (r != 0 && !(r < 0 && errno == ECONNRESET)) {
        fail_msg("expected EOF, got %zd (errno %d, byte 0x%02x)", r, errno,
                 r > 0 ? (unsigned char)c : 0);
    }
}

/* Read until the buffer ends with @suffix. */
static char *cl_recv_until(int fd, const char *suffix)
{
    struct buf b;
    size_t sl = strlen(suffix);
    buf_init(&b);
    for (;;) {
        char tmp[4096];
        ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        if (r <= 0) {
            break;
        }
        buf_append(&b, tmp, (size_t)r);
        if (b.len >= sl && memcmp(b.data + b.len - sl, suffix, sl) == 0) {
            break;
        }
    }
    buf_append(&b, "", 1);
    return b.data;
}

static long stat_value(const char *stats, const char *name)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof(pat), "STAT %s ", name);
    p = strstr(stats, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static long cl_stat(int fd, const char *name)
{
    char *s;
    long v;
    cl_sends(fd, "stats\r\n");
    s = cl_recv_until(fd, "END\r\n");
    v = stat_value(s, name);
    free(s);
    return v;
}

static void wait_for(int *var, int value)
{
    int i;
    for (i = 0; i < 5000; i++) {
        if (__atomic_load_n(var, __ATOMIC_SEQ_CST) == value) {
            return;
        }
        usleep(1000);
    }
    fail_msg("timed out waiting for %d (have %d)", value,
             __atomic_load_n(var, __ATOMIC_SEQ_CST));
}

/* ---- tests ------------------------------------------------------------- */

/* The replies of every command, as real memcached 1.6.18 gives them. */
static void run_basic_script(int port)
{
    int fd = cl_connect(port);

    cl_sends(fd, "set a 5 0 3\r\nabc\r\n");
    cl_expect(fd, "STORED\r\n");
    cl_sends(fd, "get a\r\n");
    cl_expect(fd, "VALUE a 5 3\r\nabc\r\nEND\r\n");
    cl_sends(fd, "gets a\r\n");
    cl_expect(fd, "VALUE a 5 3 1\r\nabc\r\nEND\r\n");
    cl_sends(fd, "get nope\r\n");
    cl_expect(fd, "END\r\n");
    cl_sends(fd, "add a 0 0 1\r\nx\r\nadd b 0 0 1\r\n7\r\n");
    cl_expect(fd, "NOT_STORED\r\nSTORED\r\n");
    cl_sends(fd, "replace zz 0 0 1\r\nx\r\nreplace b 0 0 1\r\n8\r\n");
    cl_expect(fd, "NOT_STORED\r\nSTORED\r\n");
    cl_sends(fd, "append a 0 0 2\r\nde\r\nprepend a 0 0 1\r\n_\r\n");
    cl_expect(fd, "STORED\r\nSTORED\r\n");
    cl_sends(fd, "gets a b\r\n");
    cl_expect(fd, "VALUE a 5 6 5\r\n_abcde\r\nVALUE b 0 1 3\r\n8\r\nEND\r\n");
    cl_sends(fd, "cas a 0 0 1 1\r\nx\r\ncas a 1 0 1 5\r\ny\r\n"
                 "cas zz 0 0 1 5\r\nx\r\n");
    cl_expect(fd, "EXISTS\r\nSTORED\r\nNOT_FOUND\r\n");
    cl_sends(fd, "incr b 10\r\ndecr b 100\r\nincr zz 1\r\nincr a 1\r\n");
    cl_expect(fd, "18\r\n0\r\nNOT_FOUND\r\n"
                  "CLIENT_ERROR cannot increment or decrement non-numeric "
                  "value\r\n");
    cl_sends(fd, "incr b x\r\n");
    cl_expect(fd, "CLIENT_ERROR invalid numeric delta argument\r\n");
    cl_sends(fd, "touch a 10\r\ntouch zz 10\r\n");
    cl_expect(fd, "TOUCHED\r\nNOT_FOUND\r\n");
    cl_sends(fd, "gat 100 a zz\r\ngats 100 a\r\n");
    cl_expect(fd, "VALUE a 1 1\r\ny\r\nEND\r\nVALUE a 1 1 6\r\ny\r\nEND\r\n");
    cl_sends(fd, "delete a\r\ndelete a\r\ndelete b 0\r\ndelete b 1\r\n");
    cl_expect(fd, "DELETED\r\nNOT_FOUND\r\nDELETED\r\n"
                  "CLIENT_ERROR bad command line format.  "
                  "Usage: delete <key> [noreply]\r\n");
    /* noreply: nothing at all, errors included. */
    cl_sends(fd, "set q 0 0 1 noreply\r\nq\r\nincr q x noreply\r\n"
                 "delete zz noreply\r\nset q 0 0 -1 noreply\r\nget q\r\n");
    cl_expect(fd, "VALUE q 0 1\r\nq\r\nEND\r\n");
    cl_sends(fd, "flush_all\r\nget q\r\nflush_all 0 noreply\r\n");
    cl_expect(fd, "OK\r\nEND\r\n");
    cl_sends(fd, "version\r\n");
    cl_expect(fd, "VERSION 1.6.18-ringmq-" RINGMQ_VERSION "\r\n");
    cl_sends(fd, "verbosity 1\r\nverbosity 1 noreply\r\nverbosity\r\n");
    cl_expect(fd, "OK\r\nERROR\r\n");
    cl_sends(fd, "bogus\r\n\r\nstats items\r\n");
    cl_expect(fd, "ERROR\r\nERROR\r\nERROR\r\n");
    cl_sends(fd, "set k 0 0 2\r\nabc\r\n");
    cl_expect(fd, "CLIENT_ERROR bad data chunk\r\nERROR\r\n");
    cl_sends(fd, "set k 0 0 4294967296\r\n");
    cl_expect(fd, "CLIENT_ERROR bad command line format\r\n");
    cl_sends(fd, "get k\x01z\r\n");
    cl_expect(fd, "CLIENT_ERROR bad command line format\r\n");
    /* Backend errors map to memcached's lines. */
    cl_sends(fd, "get unavail\r\nget a notleader\r\n");
    cl_expect(fd, "SERVER_ERROR temporarily unavailable\r\n"
                  "SERVER_ERROR not leader\r\n");
    /* a shard refusing writes to bound its memory (admission control) */
    cl_sends(fd, "set busy 0 0 1\r\nx\r\nget busy\r\n");
    cl_expect(fd, "SERVER_ERROR out of memory\r\n"
                  "SERVER_ERROR out of memory\r\n");
    cl_sends(fd, "set nomem 0 0 1\r\nx\r\nset toolarge 0 0 1\r\nx\r\n");
    cl_expect(fd, "SERVER_ERROR out of memory storing object\r\n"
                  "SERVER_ERROR object too large for cache\r\n");
    cl_sends(fd, "incr stale 1\r\n");
    cl_expect(fd, "SERVER_ERROR retry too late, outcome unknown\r\n");
    /* Outcomes without the cache's answer (sm/outcome.h): a refused or
     * oversized op gets memcached's line for such an op. */
    cl_sends(fd, "get closing\r\nset refused 0 0 1\r\nx\r\n"
                 "set 2big 0 0 1\r\nx\r\nget a refused\r\n");
    cl_expect(fd, "SERVER_ERROR temporarily unavailable\r\n"
                  "CLIENT_ERROR bad command line format\r\n"
                  "SERVER_ERROR object too large for cache\r\n"
                  "CLIENT_ERROR bad command line format\r\n");
    close(fd);
}

static void test_basic_sync(void **state)
{
    struct fixture *fx = start(FAKE_SYNC, 0, 0);
    (void)state;
    run_basic_script(fx->port);
    stop(fx);
}

static void test_basic_async(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    (void)state;
    run_basic_script(fx->port);
    assert_int_equal(fx->fake.violations, 0);
    stop(fx);
}

/* 300 mixed requests in one send, answered in order. */
static void run_pipeline(int port)
{
    struct buf in, want;
    int fd = cl_connect(port);
    int i;

    buf_init(&in);
    buf_init(&want);
    for (i = 0; i < 100; i++) {
        buf_printf(&in, "set k%d 0 0 %d\r\nv%d\r\n", i % 7,
                   (int)snprintf(NULL, 0, "v%d", i), i);
        buf_append_str(&want, "STORED\r\n");
        buf_printf(&in, "get k%d k%d\r\n", i % 7, (i + 1) % 7);
        buf_printf(&want, "VALUE k%d 0 %d\r\nv%d\r\n", i % 7,
                   (int)snprintf(NULL, 0, "v%d", i), i);
        if (i >= 6) {
            /* k(i+1)%7 was last written at i-6 */
            buf_printf(&want, "VALUE k%d 0 %d\r\nv%d\r\n", (i + 1) % 7,
                       (int)snprintf(NULL, 0, "v%d", i - 6), i - 6);
        }
        buf_append_str(&want, "END\r\n");
        buf_append_str(&in, "version\r\n");
        buf_append_str(&want, "VERSION 1.6.18-ringmq-" RINGMQ_VERSION "\r\n");
    }
    cl_send(fd, in.data, in.len);
    cl_expect_n(fd, want.data, want.len);
    buf_free(&in);
    buf_free(&want);
    close(fd);
}

static void test_pipeline(void **state)
{
    struct fixture *fx = start(FAKE_SYNC, 0, 0);
    (void)state;
    run_pipeline(fx->port);
    stop(fx);
    fx = start(FAKE_ASYNC, 0, 0);
    run_pipeline(fx->port);
    assert_int_equal(fx->fake.violations, 0);
    stop(fx);
}

/* Pipelined set/get on one key: every get sees the set before it, even with
 * writes visible only at completion and callbacks firing in reverse. */
static void test_read_your_write(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set k 0 0 1\r\na\r\nget k\r\nset k 0 0 1\r\nb\r\nget k\r\n"
                 "append k 0 0 1\r\nc\r\nincr n 1\r\nget k k\r\n"
                 "set n 0 0 1\r\n5\r\nincr n 1\r\nincr n 1\r\nget n\r\n");
    cl_expect(fd, "STORED\r\nVALUE k 0 1\r\na\r\nEND\r\n"
                  "STORED\r\nVALUE k 0 1\r\nb\r\nEND\r\n"
                  "STORED\r\nNOT_FOUND\r\n"
                  "VALUE k 0 2\r\nbc\r\nVALUE k 0 2\r\nbc\r\nEND\r\n"
                  "STORED\r\n6\r\n7\r\nVALUE n 0 1\r\n7\r\nEND\r\n");
    assert_int_equal(fx->fake.violations, 0);
    close(fd);
    stop(fx);
}

/* Multi-key get: misses omitted, hits in key order, although completions
 * come back reversed. */
static void test_multiget_order(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set k1 1 0 2\r\nv1\r\nset k3 3 0 2\r\nv3\r\n"
                 "set k5 5 0 2\r\nv5\r\n");
    cl_expect(fd, "STORED\r\nSTORED\r\nSTORED\r\n");
    cl_sends(fd, "get k5 kx k1 k3 k1\r\n");
    cl_expect(fd, "VALUE k5 5 2\r\nv5\r\nVALUE k1 1 2\r\nv1\r\n"
                  "VALUE k3 3 2\r\nv3\r\nVALUE k1 1 2\r\nv1\r\nEND\r\n");
    close(fd);
    stop(fx);
}

/* A script sent one byte per segment. */
static void test_byte_by_byte(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    const char *in = "set a 0 0 5\r\nhello\r\nget a\r\nincr a 1\r\n"
                     "delete a noreply\r\nget a\r\n";
    int fd = cl_connect(fx->port);
    size_t i;

    (void)state;
    for (i = 0; in[i]; i++) {
        cl_send(fd, in + i, 1);
        usleep(300);
    }
    cl_expect(fd, "STORED\r\nVALUE a 0 5\r\nhello\r\nEND\r\n"
                  "CLIENT_ERROR cannot increment or decrement non-numeric "
                  "value\r\nEND\r\n");
    close(fd);
    stop(fx);
}

/* The client goes away while its calls are in the backend; the calls
 * complete later into orphaned requests (ASan checks the memory). */
static void test_close_with_pending_calls(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);
    int fd2 = cl_connect(fx->port);
    int i;

    (void)state;
    cl_sends(fd, "get a b c\r\nset b 0 0 1\r\nx\r\nget b\r\n");
    wait_for(&fx->fake.held, 3); /* the get; set b waits for it */
    /* A reset, not a FIN: on EOF the server would (rightly) wait to answer
     * what was asked before closing. */
    {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(fd);
    for (i = 0; i < 5000 && cl_stat(fd2, "curr_connections") != 1; i++) {
        usleep(1000);
    }
    assert_int_equal(cl_stat(fd2, "curr_connections"), 1);
    __atomic_store_n(&fx->fake.release, 1, __ATOMIC_SEQ_CST);
    wait_for(&fx->fake.held, 0);
    /* The server still serves; the dead client's set never ran. */
    cl_sends(fd2, "get b\r\nset z 0 0 1\r\nz\r\n");
    cl_expect(fd2, "END\r\nSTORED\r\n");
    close(fd2);
    stop(fx);
}

/* mc_server_close with calls in the backend: they complete after the server
 * is freed. */
static void test_server_close_with_pending_calls(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\n");
    wait_for(&fx->fake.held, 2);
    stop(fx);
    cl_expect_eof(fd);
    close(fd);
}

static void test_quit(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set a 0 0 1\r\nx\r\nget a\r\nquit\r\nget a\r\n");
    cl_expect(fd, "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n");
    cl_expect_eof(fd);
    close(fd);
    stop(fx);
}

static void test_binary_protocol(void **state)
{
    struct fixture *fx = start(FAKE_SYNC, 0, 0);
    int fd = cl_connect(fx->port);
    static const char hdr[24] = "\x80\x0b"; /* binary "version" */

    (void)state;
    cl_send(fd, hdr, sizeof(hdr));
    cl_expect(fd, "SERVER_ERROR binary protocol is not supported\r\n");
    cl_expect_eof(fd);
    close(fd);
    stop(fx);
}

static void test_limits(void **state)
{
    struct fixture *fx = start(FAKE_SYNC, 100, 0);
    char big[300];
    char *x;
    int fd = cl_connect(fx->port);

    (void)state;
    memset(big, 'v', sizeof(big));
    /* Too large: SERVER_ERROR, data swallowed; a set also drops the old
     * value (memcached does), other stores do not. */
    cl_sends(fd, "set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\nset a 0 0 200\r\n");
    cl_send(fd, big, 200);
    cl_sends(fd, "\r\nadd b 0 0 200 noreply\r\n");
    cl_send(fd, big, 200);
    cl_sends(fd, "\r\nget a b\r\n");
    cl_expect(fd, "STORED\r\nSTORED\r\n"
                  "SERVER_ERROR object too large for cache\r\n"
                  "VALUE b 0 1\r\ny\r\nEND\r\n");
    /* 100 bytes is fine. */
    cl_sends(fd, "set c 0 0 100\r\n");
    cl_send(fd, big, 100);
    cl_sends(fd, "\r\n");
    cl_expect(fd, "STORED\r\n");
    assert_int_equal(cl_stat(fd, "store_too_large"), 2);
    close(fd);

    /* 3000 bytes without a newline: closed, as memcached does. */
    fd = cl_connect(fx->port);
    x = xmalloc(3000);
    memset(x, 'x', 3000);
    cl_send(fd, x, 3000);
    cl_expect_eof(fd);
    close(fd);
    free(x);

    /* A declared length far above the limit is swallowed as it arrives. */
    fd = cl_connect(fx->port);
    cl_sends(fd, "set a 0 0 2147483645\r\n");
    cl_expect(fd, "SERVER_ERROR object too large for cache\r\n");
    x = xcalloc(1, 1 << 20);
    {
        int i;
        for (i = 0; i < 16; i++) {
            cl_send(fd, x, 1 << 20);
        }
    }
    free(x);
    cl_sends(fd, "\r\n");
    close(fd);
    stop(fx);
}

static void test_stats(void **state)
{
    struct fixture *fx = start(FAKE_SYNC, 0, 0);
    int fd = cl_connect(fx->port);
    char *s;

    (void)state;
    cl_sends(fd, "set a 0 0 1\r\nx\r\nget a b\r\ndelete b\r\nincr a 1\r\n");
    cl_expect(fd, "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nNOT_FOUND\r\n"
                  "CLIENT_ERROR cannot increment or decrement non-numeric "
                  "value\r\n");
    cl_sends(fd, "stats\r\n");
    s = cl_recv_until(fd, "END\r\n");
    assert_true(strncmp(s, "STAT pid ", 9) == 0);
    assert_int_equal(stat_value(s, "pid"), (long)getpid());
    assert_true(stat_value(s, "uptime") >= 0);
    assert_true(stat_value(s, "time") > 1600000000);
    assert_non_null(strstr(s, "STAT version 1.6.18-ringmq-"));
    assert_int_equal(stat_value(s, "curr_connections"), 1);
    assert_int_equal(stat_value(s, "total_connections"), 1);
    assert_int_equal(stat_value(s, "cmd_get"), 2);
    assert_int_equal(stat_value(s, "cmd_set"), 1);
    assert_int_equal(stat_value(s, "get_hits"), 1);
    assert_int_equal(stat_value(s, "get_misses"), 1);
    assert_int_equal(stat_value(s, "delete_misses"), 1);
    assert_int_equal(stat_value(s, "delete_hits"), 0);
    assert_int_equal(stat_value(s, "incr_hits"), 0);
    assert_int_equal(stat_value(s, "incr_misses"), 1);
    assert_true(stat_value(s, "bytes_read") > 40);
    assert_true(stat_value(s, "bytes_written") > 40);
    assert_int_equal(stat_value(s, "threads"), 1);
    /* Backend lines come last, before END. */
    assert_non_null(strstr(s, "STAT curr_items 1\r\nEND\r\n"));
    free(s);
    cl_sends(fd, "stats reset\r\nstats foo\r\n");
    cl_expect(fd, "RESET\r\nERROR\r\n");
    assert_int_equal(cl_stat(fd, "cmd_get"), 0);
    close(fd);
    stop(fx);
}

static void test_max_connections(void **state)
{
    struct fixture *fx = start(FAKE_SYNC, 0, 2);
    int a = cl_connect(fx->port);
    int b = cl_connect(fx->port);
    int c, d;

    (void)state;
    cl_sends(a, "version\r\n");
    cl_sends(b, "version\r\n");
    cl_expect(a, "VERSION 1.6.18-ringmq-" RINGMQ_VERSION "\r\n");
    cl_expect(b, "VERSION 1.6.18-ringmq-" RINGMQ_VERSION "\r\n");
    c = cl_connect(fx->port);
    cl_expect(c, "ERROR Too many open connections\r\n");
    cl_expect_eof(c);
    close(c);
    close(a);
    usleep(50 * 1000);
    d = cl_connect(fx->port);
    cl_sends(d, "version\r\n");
    cl_expect(d, "VERSION 1.6.18-ringmq-" RINGMQ_VERSION "\r\n");
    assert_int_equal(cl_stat(d, "rejected_connections"), 1);
    close(b);
    close(d);
    stop(fx);
}

/* The client sends 200 gets of a 512 KiB value and reads nothing for a
 * while: the server must stop (not buffer 100 MiB), then finish when the
 * client reads. */
static void test_backpressure(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    int fd = cl_connect_rcvbuf(fx->port, 64 * 1024);
    size_t vlen = 512 * 1024;
    char *v = xmalloc(vlen);
    struct buf want;
    int i;

    (void)state;
    memset(v, 'b', vlen);
    cl_sends(fd, "set big 0 0 524288\r\n");
    cl_send(fd, v, vlen);
    cl_sends(fd, "\r\n");
    cl_expect(fd, "STORED\r\n");
    buf_init(&want);
    buf_append_str(&want, "VALUE big 0 524288\r\n");
    buf_append(&want, v, vlen);
    buf_append_str(&want, "\r\nEND\r\n");
    for (i = 0; i < 200; i++) {
        cl_sends(fd, "get big\r\n");
    }
    usleep(200 * 1000);
    /* Dispatch stopped well short of 200 calls. */
    assert_true(__atomic_load_n(&fx->fake.submitted, __ATOMIC_SEQ_CST) <
                100);
    assert_true(__atomic_load_n(&fx->fake.max_inflight, __ATOMIC_SEQ_CST) <=
                64);
    for (i = 0; i < 200; i++) {
        cl_expect_n(fd, want.data, want.len);
    }
    buf_free(&want);
    free(v);
    close(fd);
    stop(fx);
}

/* Many small pipelined requests in hold mode: at most the in-flight bound
 * reaches the backend. */
static void test_inflight_bound(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);
    struct buf in, want;
    int i;

    (void)state;
    buf_init(&in);
    buf_init(&want);
    for (i = 0; i < 5000; i++) {
        buf_append_str(&in, "get a\r\n");
        buf_append_str(&want, "END\r\n");
    }
    cl_send(fd, in.data, in.len);
    wait_for(&fx->fake.held, 64);
    usleep(50 * 1000);
    assert_int_equal(__atomic_load_n(&fx->fake.held, __ATOMIC_SEQ_CST), 64);
    __atomic_store_n(&fx->fake.release, 1, __ATOMIC_SEQ_CST);
    cl_expect_n(fd, want.data, want.len);
    buf_free(&in);
    buf_free(&want);
    close(fd);
    stop(fx);
}

/* ---- per-key dispatch --------------------------------------------------- */

/* Nothing more arrives within @ms. */
static void cl_expect_quiet(int fd, int ms)
{
    char c;
    ssize_t r;
    usleep((useconds_t)ms * 1000);
    r = recv(fd, &c, 1, MSG_DONTWAIT);
    if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        fail_msg("expected nothing, recv gave %zd (errno %d, byte 0x%02x)", r,
                 errno, r > 0 ? (unsigned char)c : 0);
    }
}

/* The backend's log is exactly @want, and stays so for a while. */
static void expect_log(struct fixture *fx, const char *want)
{
    char *got;
    int i;
    for (i = 0; i < 5000; i++) {
        got = fake_log(&fx->fake);
        if (strcmp(got, want) == 0) {
            free(got);
            break;
        }
        free(got);
        usleep(1000);
    }
    usleep(50 * 1000);
    got = fake_log(&fx->fake);
    if (strcmp(got, want) != 0) {
        print_error("backend log: want\n%s\ngot\n%s\n", want, got);
        free(got);
        fail();
    }
    free(got);
}

/* Complete what the held backend has now (one tick). */
static void step(struct fixture *fx)
{
    __atomic_add_fetch(&fx->fake.steps, 1, __ATOMIC_SEQ_CST);
    wait_for(&fx->fake.steps, 0);
}

static void release(struct fixture *fx)
{
    __atomic_store_n(&fx->fake.release, 1, __ATOMIC_SEQ_CST);
}

/* A held set k1 does not hold back reads of other keys, nor a write of
 * another key, but holds back a get k1; replies stay in request order. */
static void test_unrelated_write_does_not_block(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set k1 0 0 1\r\na\r\nget k2\r\nget k1\r\n"
                 "set k3 0 0 1\r\nc\r\nget k2\r\n");
    expect_log(fx, "set k1\nget k2\nset k3\nget k2\n");
    assert_int_equal(__atomic_load_n(&fx->fake.held, __ATOMIC_SEQ_CST), 4);
    cl_expect_quiet(fd, 20); /* the head (set k1) is held */
    step(fx);
    /* The get k1 goes once the set completed, not before. */
    expect_log(fx, "set k1\nget k2\nset k3\nget k2\nget k1\n");
    cl_expect(fd, "STORED\r\nEND\r\n");
    cl_expect_quiet(fd, 20); /* get k1 is held, and the rest waits */
    release(fx);
    cl_expect(fd, "VALUE k1 0 1\r\na\r\nEND\r\nSTORED\r\nEND\r\n");
    assert_int_equal(fx->fake.violations, 0);
    close(fd);
    stop(fx);
}

/* set k; get k; set k; get k: each waits for the one before it, so the get
 * sees the first set only and the second get the second set. */
static void test_get_holds_back_later_set(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set k 0 0 1\r\na\r\nget k\r\nset k 0 0 1\r\nb\r\nget k\r\n"
                 "version\r\n");
    expect_log(fx, "set k\n");
    step(fx);
    expect_log(fx, "set k\nget k\n"); /* the second set waits for the get */
    step(fx);
    expect_log(fx, "set k\nget k\nset k\n");
    step(fx);
    expect_log(fx, "set k\nget k\nset k\nget k\n");
    release(fx);
    cl_expect(fd, "STORED\r\nVALUE k 0 1\r\na\r\nEND\r\n"
                  "STORED\r\nVALUE k 0 1\r\nb\r\nEND\r\n"
                  "VERSION 1.6.18-ringmq-" RINGMQ_VERSION "\r\n");
    assert_int_equal(fx->fake.violations, 0);
    close(fd);
    stop(fx);
}

/* flush_all waits for everything before it and holds back everything
 * after it. */
static void test_flush_all_barrier(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set a 0 0 1\r\n1\r\nget b\r\nflush_all\r\nget a\r\n"
                 "set d 0 0 1\r\n2\r\nget e\r\nversion\r\n");
    expect_log(fx, "set a\nget b\n");
    step(fx);
    expect_log(fx, "set a\nget b\nflush_all \n");
    step(fx);
    expect_log(fx, "set a\nget b\nflush_all \nget a\nset d\nget e\n");
    release(fx);
    cl_expect(fd, "STORED\r\nEND\r\nOK\r\nEND\r\nSTORED\r\nEND\r\n"
                  "VERSION 1.6.18-ringmq-" RINGMQ_VERSION "\r\n");
    assert_int_equal(fx->fake.violations, 0);
    close(fd);
    stop(fx);
}

/* A multi-get one of whose keys has a pending write waits for it; a later
 * get of another of its keys does not wait for the multi-get. */
static void test_multiget_waits_for_write(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set k2 0 0 1\r\nx\r\nget k1 k2 k3\r\nget k1\r\n");
    expect_log(fx, "set k2\nget k1\n");
    step(fx);
    expect_log(fx, "set k2\nget k1\nget k1\nget k2\nget k3\n");
    release(fx);
    cl_expect(fd, "STORED\r\nVALUE k2 0 1\r\nx\r\nEND\r\nEND\r\n");
    assert_int_equal(fx->fake.violations, 0);
    close(fd);
    stop(fx);
}

/* A request held back by a conflict holds back the later requests that
 * conflict with it, even when nothing in the backend does. */
static void test_skipped_request_not_overtaken(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    /* "get x k" waits for set x; "set k" must wait for "get x k" (which
     * must not see it), although no call on k is in the backend. */
    cl_sends(fd, "set x 0 0 1\r\n1\r\nget x k\r\nset k 0 0 1\r\nb\r\n"
                 "get y\r\n");
    expect_log(fx, "set x\nget y\n");
    step(fx);
    expect_log(fx, "set x\nget y\nget x\nget k\n");
    step(fx);
    expect_log(fx, "set x\nget y\nget x\nget k\nset k\n");
    step(fx);
    cl_expect(fd, "STORED\r\nVALUE x 0 1\r\n1\r\nEND\r\nSTORED\r\nEND\r\n");
    /* Two writes of k then a read: the read waits for both, not just for
     * the one in the backend. */
    cl_sends(fd, "set k 0 0 1\r\nc\r\nset k 0 0 1\r\nd\r\nget k\r\n");
    expect_log(fx, "set x\nget y\nget x\nget k\nset k\nset k\n");
    step(fx);
    expect_log(fx, "set x\nget y\nget x\nget k\nset k\nset k\nset k\n");
    step(fx);
    expect_log(fx,
               "set x\nget y\nget x\nget k\nset k\nset k\nset k\nget k\n");
    release(fx);
    cl_expect(fd, "STORED\r\nSTORED\r\nVALUE k 0 1\r\nd\r\nEND\r\n");
    assert_int_equal(fx->fake.violations, 0);
    close(fd);
    stop(fx);
}

/* Requests dispatched past one held back by a conflict cannot be rendered
 * before it, so they must leave it room in the in-flight bound: here the
 * 2-key get keeps 2 of the 64, and the gets after it take the rest (61)
 * instead of all 63, which would leave it no room once the set renders. */
static void test_inflight_bound_with_skipped(void **state)
{
    struct fixture *fx = start(FAKE_HOLD, 0, 0);
    int fd = cl_connect(fx->port);
    struct buf in, want;
    int i;

    (void)state;
    buf_init(&in);
    buf_init(&want);
    buf_append_str(&in, "set k 0 0 1\r\nv\r\nget k z\r\n");
    buf_append_str(&want, "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    for (i = 0; i < 200; i++) {
        buf_append_str(&in, "get a\r\n");
        buf_append_str(&want, "END\r\n");
    }
    cl_send(fd, in.data, in.len);
    wait_for(&fx->fake.held, 62);
    usleep(50 * 1000);
    assert_int_equal(__atomic_load_n(&fx->fake.held, __ATOMIC_SEQ_CST), 62);
    release(fx);
    cl_expect_n(fd, want.data, want.len);
    assert_int_equal(fx->fake.violations, 0);
    buf_free(&in);
    buf_free(&want);
    close(fd);
    stop(fx);
}

/* "stats" pipelined behind requests in the backend counts them all. */
static void test_stats_pipelined(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    int fd = cl_connect(fx->port);
    const char *head = "STORED\r\nVALUE s 0 1\r\nx\r\nEND\r\nSTORED\r\n"
                       "VALUE u 0 1\r\ny\r\nEND\r\nSTAT pid ";
    struct buf b;

    (void)state;
    cl_sends(fd, "set s 0 0 1\r\nx\r\nget s t\r\nset u 0 0 1\r\ny\r\n"
                 "get u\r\nstats\r\n");
    buf_init(&b);
    for (;;) {
        char tmp[4096];
        ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        assert_true(r > 0);
        buf_append(&b, tmp, (size_t)r);
        if (b.len > 5 && memcmp(b.data + b.len - 5, "END\r\n", 5) == 0 &&
            memmem(b.data, b.len, "STAT pid", 8) != NULL) {
            break;
        }
    }
    buf_append(&b, "", 1);
    assert_true(strncmp(b.data, head, strlen(head)) == 0);
    assert_int_equal(stat_value(b.data, "cmd_get"), 3);
    assert_int_equal(stat_value(b.data, "cmd_set"), 2);
    assert_int_equal(stat_value(b.data, "get_hits"), 2);
    assert_int_equal(stat_value(b.data, "get_misses"), 1);
    assert_int_equal(fx->fake.violations, 0);
    buf_free(&b);
    close(fd);
    stop(fx);
}

/* Half-close: the replies to what was sent still arrive, then EOF. */
static void test_half_close(void **state)
{
    struct fixture *fx = start(FAKE_ASYNC, 0, 0);
    int fd = cl_connect(fx->port);

    (void)state;
    cl_sends(fd, "set a 0 0 1\r\nx\r\nget a\r\n");
    shutdown(fd, SHUT_WR);
    cl_expect(fd, "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n");
    cl_expect_eof(fd);
    close(fd);
    stop(fx);
}

static void test_bad_config(void **state)
{
    uv_loop_t loop;
    struct mc_server_config cfg = {0};
    struct mc_backend be = {0};
    struct fake f;
    char errmsg[256];

    (void)state;
    memset(&f, 0, sizeof(f));
    be.data = &f;
    be.submit = fake_submit;
    assert_int_equal(uv_loop_init(&loop), 0);
    cfg.host = "not an address";
    assert_null(mc_server_new(&loop, &cfg, &be, errmsg, sizeof(errmsg)));
    assert_non_null(strstr(errmsg, "bad address"));
    /* Port in use: the error path closes the listener asynchronously. */
    {
        struct mc_server *s;
        cfg.host = "127.0.0.1";
        s = mc_server_new(&loop, &cfg, &be, errmsg, sizeof(errmsg));
        assert_non_null(s);
        cfg.port = mc_server_port(s);
        assert_null(mc_server_new(&loop, &cfg, &be, errmsg, sizeof(errmsg)));
        assert_non_null(strstr(errmsg, "listen"));
        mc_server_close(s, NULL, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_sync),
        cmocka_unit_test(test_basic_async),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_read_your_write),
        cmocka_unit_test(test_multiget_order),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_close_with_pending_calls),
        cmocka_unit_test(test_server_close_with_pending_calls),
        cmocka_unit_test(test_quit),
        cmocka_unit_test(test_binary_protocol),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_inflight_bound),
        cmocka_unit_test(test_unrelated_write_does_not_block),
        cmocka_unit_test(test_get_holds_back_later_set),
        cmocka_unit_test(test_flush_all_barrier),
        cmocka_unit_test(test_multiget_waits_for_write),
        cmocka_unit_test(test_skipped_request_not_overtaken),
        cmocka_unit_test(test_inflight_bound_with_skipped),
        cmocka_unit_test(test_stats_pipelined),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
