/*
 * mc_server: see mc_server.h.
 *
 * One struct mc_conn per client. Bytes flow like this:
 *
 *   uv read -> conn->in --mc_parse_next--> struct mc_req queue (arrival order)
 *                                              |
 *            dispatch per key: a request goes  |  once no earlier undone
 *            request conflicts with it         v  (conn_dispatch)
 *                                      backend->submit(call) ... call->cb
 *                                              |
 *   uv write <- conn->wbuf <- conn->out <- replies rendered from the queue
 *                                          head, in order, as heads finish
 *
 * Dispatch. A request is "undone" from parsing until its last call calls
 * back (dispatched or not). A backend request is dispatched as soon as no
 * earlier undone request of the connection conflicts with it, and the
 * bounds below allow it. Two requests conflict when they share a key (by
 * the 64-bit key hashes computed at parse time; a collision only adds a
 * wait) and at least one of them writes (anything but get/gets: gat, touch,
 * incr ... write too); flush_all conflicts with every backend request.
 * Requests that need no backend (version, verbosity, stats, parse errors
 * ...) are done when parsed and conflict with nothing. Undispatched
 * requests count as undone, so a request held back by a conflict also holds
 * back the later requests that conflict with it: per key (and around a
 * flush_all), the backend sees this connection's requests in request
 * order, each one only after the conflicting ones before it completed.
 * Replies are still rendered strictly in request order, and counted into
 * the stats as they are rendered, so "stats" counts everything before it.
 *
 * Lifetimes. A request owns its cache_calls and a copy of its key and value
 * bytes (the input buffer moves). A connection is freed only when its handle
 * is closed and every call it submitted has called back: a closed
 * connection's in-flight requests are orphaned and freed by their last
 * callback. mc_server_close() detaches connections from the server, so
 * callbacks arriving after the server is gone never touch it.
 *
 * Backpressure: parsing stops while a connection holds MC_PENDING_HIGH
 * queued calls, and reading stops while that is so or its unsent output
 * exceeds MC_OUT_HIGH; both resume as replies drain. Dispatch stops while
 * the unsent output exceeds MC_OUT_HIGH, and at most MC_INFLIGHT_CALLS_MAX
 * calls are dispatched and not yet rendered at once, whether still in the
 * backend or completed behind a slower head of line (a bigger multi-get
 * goes alone; a request that does not fit stops dispatch behind it, and
 * requests held back by a conflict keep room for themselves, see
 * conn_dispatch()), so the replies a connection can pile up are bounded by
 * about MC_OUT_HIGH + MC_INFLIGHT_CALLS_MAX values. With the parser's own bounds (line length,
 * item size, swallowing too-large data) a connection holds at most about
 * item_size_max + MC_READ_CHUNK of input.
 *
 * End of input: on EOF the requests already received are still answered,
 * then the connection closes (memcached closes at once and drops them); a
 * read error or reset closes at once.
 */
#include "edge/mc_server.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/container_of.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/tcp_listen.h"
#include "proto/mc_parse.h"

#define MC_OUT_HIGH (4u * 1024 * 1024)
#define MC_PENDING_HIGH 1024u
#define MC_INFLIGHT_CALLS_MAX 64u
#define MC_READ_CHUNK (64u * 1024)
#define MC_WBUF_KEEP (64u * 1024) /* larger write buffers are released */
#define MC_MAX_CONNECTIONS_DEFAULT 4096u
/* What we answer to "version": the memcached release whose text protocol we
 * follow (clients parse major.minor.patch), then our own. */
#define MC_VERSION "1.6.18-ringmq-" RINGMQ_VERSION

struct mc_stats {
    uint64_t total_connections;
    uint64_t rejected_connections;
    uint64_t cmd_get;
    uint64_t cmd_set;
    uint64_t cmd_flush;
    uint64_t cmd_touch;
    uint64_t get_hits;
    uint64_t get_misses;
    uint64_t delete_misses;
    uint64_t delete_hits;
    uint64_t incr_misses;
    uint64_t incr_hits;
    uint64_t decr_misses;
    uint64_t decr_hits;
    uint64_t cas_misses;
    uint64_t cas_hits;
    uint64_t cas_badval;
    uint64_t touch_hits;
    uint64_t touch_misses;
    uint64_t store_too_large;
    uint64_t store_no_memory;
    uint64_t bytes_read;
    uint64_t bytes_written;
};

struct mc_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct mc_backend backend;
    uint32_t item_size_max;
    unsigned max_connections;
    unsigned curr_connections;
    unsigned handles; /* listener + connections whose handle is not closed */
    struct mc_conn *conns;
    struct mc_stats stats;
    uint64_t started_ms;
    int port;
    bool closing;
    void (*close_cb)(void *data);
    void *close_data;
};

struct mc_req {
    struct mc_req *next;
    struct mc_conn *conn;
    enum mc_cmd cmd;
    const char *error; /* reply instead of the calls' results */
    bool noreply;
    bool close_after;  /* quit, or a parse error that closes */
    bool backend;      /* has calls to submit */
    bool is_write;     /* its calls change the keys they name */
    bool barrier;      /* flush_all: conflicts with every backend request */
    bool dispatched;
    bool done;
    bool orphan; /* its connection closed while calls were in flight */
    bool too_large;
    size_t ncalls;
    size_t pending; /* calls submitted and not yet called back */
    struct cache_call *calls; /* in the same allocation */
    /* key_hash(calls[i].op.key) for each keyed call, computed once when
     * parsed; what conn_dispatch() compares (see "Dispatch" above). */
    uint64_t *hashes; /* in the same allocation, ncalls entries */
};

struct mc_conn {
    uv_tcp_t tcp;
    struct mc_server *server; /* NULL once the handle closed */
    struct mc_conn *prev, *next;
    struct mc_parser parser;
    struct buf in;   /* received, not yet parsed */
    struct buf out;  /* replies not yet handed to uv_write */
    struct buf wbuf; /* the bytes of the write in flight */
    uv_write_t wreq;
    struct mc_req *head, *tail;
    size_t undispatched;  /* queued backend requests not yet dispatched */
    size_t weight;        /* calls (or 1) of the queued requests */
    size_t backend_calls; /* submitted calls that have not called back */
    size_t unrendered_calls; /* submitted calls whose request is not yet
                                rendered: completed replies wait here for
                                the head of the queue, so they bound memory
                                too, not just the calls in the backend */
    bool reading;
    bool writing;
    bool input_closed; /* quit or close parsed: parse and read no more */
    bool eof;          /* the client sent all it will send */
    bool closing;      /* uv_close called */
    bool handle_closed;
    bool in_pump;
    bool pump_again;
};

static void conn_pump(struct mc_conn *c);
static void conn_close(struct mc_conn *c);

/* ---- requests ---------------------------------------------------------- */

static void req_free(struct mc_req *r)
{
    size_t i;

    for (i = 0; i < r->ncalls; i++) {
        cache_result_clear(&r->calls[i].result);
    }
    free(r);
}

static enum cache_op_type store_op(enum mc_cmd cmd)
{
    switch (cmd) {
    case MC_CMD_ADD:
        return CACHE_OP_ADD;
    case MC_CMD_REPLACE:
        return CACHE_OP_REPLACE;
    case MC_CMD_APPEND:
        return CACHE_OP_APPEND;
    case MC_CMD_PREPEND:
        return CACHE_OP_PREPEND;
    case MC_CMD_CAS:
        return CACHE_OP_CAS;
    default:
        return CACHE_OP_SET;
    }
}

static void on_call_done(struct cache_call *call);

/* 64-bit key hash for conflict checks: FNV-1a, then the murmur3 finalizer
 * so that the low bits (the key set's slot index) mix every byte. Equal keys
 * hash equal; a collision only makes a request wait for one it does not
 * really conflict with. */
static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Build the request for @m, copying keys and value out of the input buffer
 * into the request's own allocation. */
static struct mc_req *req_new(struct mc_conn *c, const struct mc_request *m)
{
    size_t ncalls = 0;
    size_t bytes = 0;
    size_t i;
    struct mc_req *r;
    char *p;

    switch (m->cmd) {
    case MC_CMD_GET:
    case MC_CMD_GETS:
    case MC_CMD_GAT:
    case MC_CMD_GATS:
        ncalls = m->error ? 0 : m->nkeys;
        break;
    case MC_CMD_SET:
        /* memcached unlinks the old item when a set is too large, so the
         * client cannot read a value it believes overwritten. */
        ncalls = (m->error == NULL || m->too_large) ? 1 : 0;
        break;
    case MC_CMD_ADD:
    case MC_CMD_REPLACE:
    case MC_CMD_APPEND:
    case MC_CMD_PREPEND:
    case MC_CMD_CAS:
    case MC_CMD_INCR:
    case MC_CMD_DECR:
    case MC_CMD_DELETE:
    case MC_CMD_TOUCH:
    case MC_CMD_FLUSH_ALL:
        ncalls = m->error ? 0 : 1;
        break;
    default:
        break;
    }
    for (i = 0; i < ncalls && i < m->nkeys; i++) {
        bytes += m->keys[i].len;
    }
    if (ncalls > 0 && m->error == NULL) {
        bytes += m->value_len;
    }

    r = xcalloc(1, sizeof(*r) + ncalls * sizeof(struct cache_call) +
                       ncalls * sizeof(uint64_t) + bytes);
    r->conn = c;
    r->cmd = m->cmd;
    r->error = m->error;
    r->noreply = m->noreply;
    r->too_large = m->too_large;
    r->ncalls = ncalls;
    r->calls = (struct cache_call *)(r + 1);
    r->hashes = (uint64_t *)(r->calls + ncalls);
    p = (char *)(r->hashes + ncalls);

    for (i = 0; i < ncalls; i++) {
        struct cache_call *call = &r->calls[i];
        struct cache_op *op = &call->op;

        cache_result_init(&call->result);
        call->cb = on_call_done;
        call->data = r;
        if (i < m->nkeys) {
            memcpy(p, m->keys[i].data, m->keys[i].len);
            op->key = p;
            op->key_len = m->keys[i].len;
            p += m->keys[i].len;
            r->hashes[i] = key_hash(op->key, op->key_len);
        }
        switch (m->cmd) {
        case MC_CMD_GET:
        case MC_CMD_GETS:
            op->type = CACHE_OP_GET;
            break;
        case MC_CMD_GAT:
        case MC_CMD_GATS:
            op->type = CACHE_OP_GAT;
            op->exptime = m->exptime;
            break;
        case MC_CMD_INCR:
        case MC_CMD_DECR:
            op->type = m->cmd == MC_CMD_INCR ? CACHE_OP_INCR : CACHE_OP_DECR;
            op->delta = m->delta;
            break;
        case MC_CMD_DELETE:
            op->type = CACHE_OP_DELETE;
            break;
        case MC_CMD_TOUCH:
            op->type = CACHE_OP_TOUCH;
            op->exptime = m->exptime;
            break;
        case MC_CMD_FLUSH_ALL:
            op->type = CACHE_OP_FLUSH_ALL;
            op->exptime = m->exptime;
            break;
        default: /* stores */
            if (m->too_large) {
                op->type = CACHE_OP_DELETE;
                break;
            }
            op->type = store_op(m->cmd);
            op->flags = m->flags;
            op->exptime = m->exptime;
            op->cas = m->cas;
            if (m->value_len > 0) {
                memcpy(p, m->value, m->value_len);
            }
            op->value = p;
            op->value_len = m->value_len;
            p += m->value_len;
            break;
        }
    }
    r->backend = ncalls > 0;
    r->is_write = ncalls > 0 && cache_op_is_write(r->calls[0].op.type);
    r->barrier = ncalls > 0 && r->calls[0].op.type == CACHE_OP_FLUSH_ALL;
    r->done = !r->backend;
    return r;
}

static void conn_enqueue(struct mc_conn *c, struct mc_req *r)
{
    if (c->tail) {
        c->tail->next = r;
    } else {
        c->head = r;
    }
    c->tail = r;
    c->undispatched += r->backend;
    c->weight += r->ncalls ? r->ncalls : 1;
}

static struct mc_req *conn_dequeue(struct mc_conn *c)
{
    struct mc_req *r = c->head;

    c->head = r->next;
    if (c->head == NULL) {
        c->tail = NULL;
    }
    c->weight -= r->ncalls ? r->ncalls : 1;
    r->next = NULL;
    return r;
}

/* ---- replies ----------------------------------------------------------- */

static const char *status_line(enum cache_status st)
{
    switch (st) {
    case CACHE_STORED:
        return "STORED";
    case CACHE_NOT_STORED:
        return "NOT_STORED";
    case CACHE_EXISTS:
        return "EXISTS";
    case CACHE_NOT_FOUND:
        return "NOT_FOUND";
    case CACHE_DELETED:
        return "DELETED";
    case CACHE_TOUCHED:
        return "TOUCHED";
    case CACHE_OK:
        return "OK";
    case CACHE_TOO_LARGE:
        return "SERVER_ERROR object too large for cache";
    case CACHE_NO_MEMORY:
        return "SERVER_ERROR out of memory storing object";
    case CACHE_NON_NUMERIC:
        return "CLIENT_ERROR cannot increment or decrement non-numeric value";
    case CACHE_BAD_REQUEST:
        return "CLIENT_ERROR bad command line format";
    case CACHE_WRONG_OWNER:
    case CACHE_MOVING:
        /* the router's retries at the owner ran out of time */
        return "SERVER_ERROR temporarily unavailable";
    case CACHE_STALE_RETRY:
        /* a router's retry came too late for the shard to remember */
        return "SERVER_ERROR retry too late, outcome unknown";
    default:
        return "SERVER_ERROR unexpected backend result";
    }
}

/* The cache's answer to @call as memcached would give it: its result when
 * the backend says OUTCOME_OK; an op too large or malformed for the backend
 * gets memcached's own answer to such an op; any other failure has no
 * answer (CACHE_STATUS__COUNT). */
static enum cache_status answer_of(const struct cache_call *call)
{
    switch (call->outcome) {
    case OUTCOME_OK:
        return call->result.status;
    case OUTCOME_TOO_LARGE:
        return CACHE_TOO_LARGE;
    case OUTCOME_BAD_REQUEST:
        return CACHE_BAD_REQUEST;
    default:
        return CACHE_STATUS__COUNT;
    }
}

static const char *call_line(const struct cache_call *call)
{
    enum cache_status s = answer_of(call);

    if (s != CACHE_STATUS__COUNT) {
        return status_line(s);
    }
    switch (call->outcome) {
    case OUTCOME_NOT_LEADER:
        return "SERVER_ERROR not leader";
    case OUTCOME_BUSY:
        /* the shard's leader refused it to bound its memory (admission
         * control): memcached's answer when it has none to spare */
        return "SERVER_ERROR out of memory";
    default:
        return "SERVER_ERROR temporarily unavailable";
    }
}

static void count_result(struct mc_stats *st, const struct mc_req *r)
{
    size_t i;

    if (r->error) {
        st->store_too_large += r->too_large;
        return;
    }
    for (i = 0; i < r->ncalls; i++) {
        const struct cache_call *call = &r->calls[i];
        enum cache_status s = answer_of(call);
        bool hit = s == CACHE_HIT;

        switch (call->op.type) {
        case CACHE_OP_GET:
            st->cmd_get++;
            *(hit ? &st->get_hits : &st->get_misses) += 1;
            break;
        case CACHE_OP_GAT:
            st->cmd_get++;
            st->cmd_touch++;
            *(hit ? &st->get_hits : &st->get_misses) += 1;
            *(hit ? &st->touch_hits : &st->touch_misses) += 1;
            break;
        case CACHE_OP_TOUCH:
            st->cmd_touch++;
            *(s == CACHE_TOUCHED ? &st->touch_hits : &st->touch_misses) += 1;
            break;
        case CACHE_OP_DELETE:
            *(s == CACHE_DELETED ? &st->delete_hits : &st->delete_misses) += 1;
            break;
        case CACHE_OP_INCR:
            *(s == CACHE_NUMBER ? &st->incr_hits : &st->incr_misses) += 1;
            break;
        case CACHE_OP_DECR:
            *(s == CACHE_NUMBER ? &st->decr_hits : &st->decr_misses) += 1;
            break;
        case CACHE_OP_CAS:
            st->cmd_set++;
            if (s == CACHE_STORED) {
                st->cas_hits++;
            } else if (s == CACHE_EXISTS) {
                st->cas_badval++;
            } else if (s == CACHE_NOT_FOUND) {
                st->cas_misses++;
            }
            break;
        case CACHE_OP_FLUSH_ALL:
            st->cmd_flush++;
            break;
        default:
            st->cmd_set++;
            break;
        }
        if (s == CACHE_TOO_LARGE) {
            st->store_too_large++;
        } else if (s == CACHE_NO_MEMORY) {
            st->store_no_memory++;
        }
    }
}

static void render_stats(struct mc_conn *c)
{
    struct mc_server *s = c->server;
    const struct mc_stats *st = &s->stats;
    struct buf *o = &c->out;
    struct rusage ru;
    uint64_t now_ms = clock_wall_ms();

    memset(&ru, 0, sizeof(ru));
    getrusage(RUSAGE_SELF, &ru);
    buf_printf(o, "STAT pid %ld\r\n", (long)getpid());
    buf_printf(o, "STAT uptime %llu\r\n",
               (unsigned long long)((clock_mono_ms() - s->started_ms) / 1000));
    buf_printf(o, "STAT time %llu\r\n", (unsigned long long)(now_ms / 1000));
    buf_printf(o, "STAT version %s\r\n", MC_VERSION);
    buf_printf(o, "STAT pointer_size %d\r\n", (int)(8 * sizeof(void *)));
    buf_printf(o, "STAT rusage_user %ld.%06ld\r\n", (long)ru.ru_utime.tv_sec,
               (long)ru.ru_utime.tv_usec);
    buf_printf(o, "STAT rusage_system %ld.%06ld\r\n",
               (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    buf_printf(o, "STAT max_connections %u\r\n", s->max_connections);
    buf_printf(o, "STAT curr_connections %u\r\n", s->curr_connections);
#define STAT_U64(name)                                                        \
    buf_printf(o, "STAT " #name " %llu\r\n", (unsigned long long)st->name)
    STAT_U64(total_connections);
    STAT_U64(rejected_connections);
    STAT_U64(cmd_get);
    STAT_U64(cmd_set);
    STAT_U64(cmd_flush);
    STAT_U64(cmd_touch);
    STAT_U64(get_hits);
    STAT_U64(get_misses);
    STAT_U64(delete_misses);
    STAT_U64(delete_hits);
    STAT_U64(incr_misses);
    STAT_U64(incr_hits);
    STAT_U64(decr_misses);
    STAT_U64(decr_hits);
    STAT_U64(cas_misses);
    STAT_U64(cas_hits);
    STAT_U64(cas_badval);
    STAT_U64(touch_hits);
    STAT_U64(touch_misses);
    STAT_U64(store_too_large);
    STAT_U64(store_no_memory);
    STAT_U64(bytes_read);
    STAT_U64(bytes_written);
#undef STAT_U64
    buf_printf(o, "STAT threads 1\r\n");
    if (s->backend.stats) {
        s->backend.stats(s->backend.data, o);
    }
    buf_append_str(o, "END\r\n");
}

/* A get line: VALUE lines for the hits in key order, then END. If any key
 * failed with an error, only the first error is sent (as memcached does for
 * a bad key: partial VALUEs are dropped). */
static void render_get(struct mc_conn *c, const struct mc_req *r)
{
    bool with_cas = r->cmd == MC_CMD_GETS || r->cmd == MC_CMD_GATS;
    size_t i;

    for (i = 0; i < r->ncalls; i++) {
        enum cache_status s = answer_of(&r->calls[i]);
        if (s != CACHE_HIT && s != CACHE_NOT_FOUND) {
            buf_printf(&c->out, "%s\r\n", call_line(&r->calls[i]));
            return;
        }
    }
    for (i = 0; i < r->ncalls; i++) {
        const struct cache_call *call = &r->calls[i];
        const struct cache_result *res = &call->result;
        if (res->status != CACHE_HIT) {
            continue;
        }
        buf_reserve(&c->out, call->op.key_len + res->value_len + 64);
        buf_printf(&c->out, "VALUE %.*s %u %zu", (int)call->op.key_len,
                   call->op.key, res->flags, res->value_len);
        if (with_cas) {
            buf_printf(&c->out, " %llu", (unsigned long long)res->cas);
        }
        buf_append(&c->out, "\r\n", 2);
        buf_append(&c->out, res->value, res->value_len);
        buf_append(&c->out, "\r\n", 2);
    }
    buf_append_str(&c->out, "END\r\n");
}

static void render(struct mc_conn *c, const struct mc_req *r)
{
    struct mc_server *s = c->server;
    const struct cache_result *res;

    count_result(&s->stats, r);
    if (r->noreply) {
        return;
    }
    if (r->error) {
        buf_printf(&c->out, "%s\r\n", r->error);
        return;
    }
    switch (r->cmd) {
    case MC_CMD_NONE:
    case MC_CMD_QUIT:
        return;
    case MC_CMD_VERSION:
        buf_append_str(&c->out, "VERSION " MC_VERSION "\r\n");
        return;
    case MC_CMD_VERBOSITY:
        buf_append_str(&c->out, "OK\r\n");
        return;
    case MC_CMD_STATS:
        render_stats(c);
        return;
    case MC_CMD_STATS_RESET:
        memset(&s->stats, 0, sizeof(s->stats));
        buf_append_str(&c->out, "RESET\r\n");
        return;
    case MC_CMD_GET:
    case MC_CMD_GETS:
    case MC_CMD_GAT:
    case MC_CMD_GATS:
        render_get(c, r);
        return;
    default:
        break;
    }
    res = &r->calls[0].result;
    if (answer_of(&r->calls[0]) == CACHE_NUMBER) {
        buf_printf(&c->out, "%llu\r\n", (unsigned long long)res->number);
    } else {
        buf_printf(&c->out, "%s\r\n", call_line(&r->calls[0]));
    }
}

/* ---- connection -------------------------------------------------------- */

static void conn_free(struct mc_conn *c)
{
    mc_parser_free(&c->parser);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wbuf);
    free(c);
}

static void on_call_done(struct cache_call *call)
{
    struct mc_req *r = call->data;
    struct mc_conn *c = r->conn;

    c->backend_calls--;
    r->pending--;
    if (r->pending > 0) {
        return;
    }
    if (r->orphan) {
        req_free(r);
        if (c->handle_closed && c->backend_calls == 0) {
            conn_free(c);
        }
        return;
    }
    r->done = true;
    conn_pump(c);
}

static void req_submit(struct mc_conn *c, struct mc_req *r)
{
    const struct mc_backend *b = &c->server->backend;
    size_t i;

    r->dispatched = true;
    /* Count every call before the first submit: a backend may complete
     * synchronously, and the request must not look finished early. */
    r->pending = r->ncalls;
    c->backend_calls += r->ncalls;
    c->unrendered_calls += r->ncalls;
    c->undispatched--;
    for (i = 0; i < r->ncalls; i++) {
        b->submit(b->data, &r->calls[i]);
    }
}

/* The keys of the undone requests a dispatch pass has walked past, with
 * whether one of them reads and/or writes each key (by key hash). Lives on
 * the stack of one pass; conn_dispatch() inserts fewer than
 * MC_INFLIGHT_CALLS_MAX keys (see there), so it stays under a quarter full.
 */
#define MC_KEYSET_SLOTS 256u /* a power of two */
#define MC_KEYSET_MAX (MC_KEYSET_SLOTS / 2)
#define MC_KEY_READ 1u
#define MC_KEY_WRITE 2u

struct keyset {
    size_t n;                          /* slots in use; 0: mode[] unset */
    uint8_t mode[MC_KEYSET_SLOTS];     /* MC_KEY_* bits, 0 = free */
    uint64_t hash[MC_KEYSET_SLOTS];
};

_Static_assert(MC_INFLIGHT_CALLS_MAX <= MC_KEYSET_MAX,
               "a dispatch pass inserts < MC_INFLIGHT_CALLS_MAX keys");

static unsigned keyset_get(const struct keyset *ks, uint64_t h)
{
    size_t i = (size_t)h & (MC_KEYSET_SLOTS - 1);

    while (ks->mode[i] != 0) {
        if (ks->hash[i] == h) {
            return ks->mode[i];
        }
        i = (i + 1) & (MC_KEYSET_SLOTS - 1);
    }
    return 0;
}

/* Does @r conflict with a key in @ks: a write with any use of one of its
 * keys, a read with a write? */
static bool keyset_conflicts(const struct keyset *ks, const struct mc_req *r)
{
    unsigned clash = r->is_write ? MC_KEY_READ | MC_KEY_WRITE : MC_KEY_WRITE;
    size_t i;

    if (ks->n == 0) {
        return false;
    }
    for (i = 0; i < r->ncalls; i++) {
        if (keyset_get(ks, r->hashes[i]) & clash) {
            return true;
        }
    }
    return false;
}

/* Record @r's keys; false (nothing recorded) if they might not fit. */
static bool keyset_add(struct keyset *ks, const struct mc_req *r)
{
    unsigned m = r->is_write ? MC_KEY_WRITE : MC_KEY_READ;
    size_t i;

    if (ks->n + r->ncalls > MC_KEYSET_MAX) {
        return false;
    }
    if (ks->n == 0) {
        memset(ks->mode, 0, sizeof(ks->mode));
    }
    for (i = 0; i < r->ncalls; i++) {
        uint64_t h = r->hashes[i];
        size_t j = (size_t)h & (MC_KEYSET_SLOTS - 1);

        while (ks->mode[j] != 0 && ks->hash[j] != h) {
            j = (j + 1) & (MC_KEYSET_SLOTS - 1);
        }
        if (ks->mode[j] == 0) {
            ks->hash[j] = h;
            ks->n++;
        }
        ks->mode[j] |= (uint8_t)m;
    }
    return true;
}

/*
 * One dispatch pass (see "Dispatch" at the top of the file): walk the queue
 * in request order, collecting the keys of undone requests, and submit each
 * undispatched request that conflicts with none of the undone requests
 * before it and fits the bounds.
 *
 * Bounds. "Used" is c->unrendered_calls plus the calls of the requests this
 * pass skipped for a conflict ("reserved"). A request is submitted only if
 * used is 0 or used + its calls <= MC_INFLIGHT_CALLS_MAX, and the first one
 * that does not fit ends the pass. Reserving matters: the calls of requests
 * dispatched past a skipped one cannot be rendered before it, so without
 * the reservation they could hold the whole in-flight budget and the
 * skipped request would never fit (a deadlock). With it, the calls
 * dispatched after the first undispatched request U plus U's own calls
 * never exceed MC_INFLIGHT_CALLS_MAX (or U goes alone), so once everything
 * before U is rendered, U can go.
 *
 * Cost. The walk stops at the last undispatched request, at an undone
 * flush_all, or as soon as used reaches MC_INFLIGHT_CALLS_MAX (nothing
 * after could fit). So the keys recorded are those of dispatched,
 * unrendered calls plus reserved calls, fewer than MC_INFLIGHT_CALLS_MAX
 * together, and the keys looked up are those of candidates that fit, at
 * most MC_INFLIGHT_CALLS_MAX per pass (a bigger multi-get only fits when
 * used is 0, i.e. nothing undone is before it, and is not looked up). A
 * pass is thus O(requests walked) pointer steps plus O(MC_INFLIGHT_CALLS_MAX)
 * hash probes; with a full queue (MC_PENDING_HIGH = 1024 requests, e.g. a
 * long run of "version" lines between blocked writes) that is at most ~1024
 * steps and ~128 probes per pass, and a pass runs once per pump (a read, a
 * finished request, a finished write). Passes that cannot dispatch anything
 * (nothing undispatched, output over MC_OUT_HIGH, budget full) return at
 * once.
 */
static void conn_dispatch(struct mc_conn *c)
{
    struct keyset ks;
    struct mc_req *r;
    size_t left = c->undispatched;
    size_t reserved = 0;
    bool undone_before = false;

    if (left == 0 || c->closing ||
        c->out.len + c->wbuf.len >= MC_OUT_HIGH ||
        c->unrendered_calls >= MC_INFLIGHT_CALLS_MAX) {
        return;
    }
    ks.n = 0;
    for (r = c->head; r != NULL && left > 0 && !c->closing; r = r->next) {
        if (!r->backend || r->done) {
            continue; /* no conflicts: nothing to do, or finished */
        }
        if (!r->dispatched) {
            size_t used = c->unrendered_calls + reserved;

            left--;
            if (used > 0 && used + r->ncalls > MC_INFLIGHT_CALLS_MAX) {
                break;
            }
            if (r->barrier ? undone_before : keyset_conflicts(&ks, r)) {
                reserved += r->ncalls;
            } else {
                req_submit(c, r);
                if (r->done) {
                    continue; /* completed inside submit */
                }
            }
        }
        /* r is undone: it holds back what conflicts with it. */
        if (r->barrier || left == 0 ||
            c->unrendered_calls + reserved >= MC_INFLIGHT_CALLS_MAX ||
            !keyset_add(&ks, r)) {
            break;
        }
        undone_before = true;
    }
}

/* Render finished requests at the head of the queue. */
static bool conn_flush(struct mc_conn *c)
{
    bool progress = false;

    while (c->head && c->head->done && !c->closing) {
        struct mc_req *r = conn_dequeue(c);
        bool close_after = r->close_after;
        if (r->dispatched) {
            c->unrendered_calls -= r->ncalls;
        }
        render(c, r);
        req_free(r);
        progress = true;
        if (close_after) {
            /* Nothing after quit was parsed; drain the output and close. */
            c->input_closed = true;
            break;
        }
    }
    return progress;
}

static void on_read_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    struct mc_conn *c = h->data;
    size_t want = MC_READ_CHUNK;
    size_t need = mc_parse_need(&c->parser);

    (void)hint;
    /* Make room for a whole pending data block in one go. */
    if (need > c->in.len && need - c->in.len > want) {
        want = need - c->in.len;
    }
    buf_reserve(&c->in, want);
    out->base = c->in.data + c->in.len;
    out->len = c->in.cap - c->in.len;
}

/* Parse what is buffered into requests, while the queue has room. */
static bool conn_parse(struct mc_conn *c)
{
    size_t off = 0;
    bool progress = false;

    while (!c->input_closed && c->weight < MC_PENDING_HIGH) {
        struct mc_request m;
        size_t used;
        enum mc_parse_status st = mc_parse_next(
            &c->parser, c->in.data + off, c->in.len - off, &m, &used);
        struct mc_req *r;

        off += used;
        if (st == MC_PARSE_AGAIN) {
            break;
        }
        if (st == MC_PARSE_CLOSE) {
            struct mc_request e;
            memset(&e, 0, sizeof(e));
            e.error = m.error;
            r = req_new(c, &e);
            r->cmd = MC_CMD_QUIT;
            r->close_after = true;
            c->input_closed = true;
        } else {
            r = req_new(c, &m);
            if (m.cmd == MC_CMD_QUIT) {
                r->close_after = true;
                c->input_closed = true;
            }
        }
        conn_enqueue(c, r);
        progress = true;
    }
    buf_consume(&c->in, off);
    /* Give back the room a large value needed once it is parsed. */
    if (c->input_closed || (c->in.len == 0 && c->in.cap > 2 * MC_READ_CHUNK)) {
        buf_free(&c->in);
    }
    return progress;
}

static void on_write(uv_write_t *w, int status)
{
    struct mc_conn *c = container_of(w, struct mc_conn, wreq);

    c->writing = false;
    if (c->server && !c->closing) {
        c->server->stats.bytes_written += c->wbuf.len;
    }
    if (c->wbuf.cap > MC_WBUF_KEEP) {
        buf_free(&c->wbuf);
    } else {
        buf_reset(&c->wbuf);
    }
    if (c->closing) {
        return;
    }
    if (status < 0) {
        log_debug("mc: write failed: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    conn_pump(c);
}

static void conn_write(struct mc_conn *c)
{
    struct buf tmp;
    uv_buf_t b;
    int rc;

    if (c->writing || c->closing || c->out.len == 0) {
        return;
    }
    tmp = c->wbuf;
    c->wbuf = c->out;
    c->out = tmp;
    b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) {
        log_debug("mc: write failed: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    c->writing = true;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

static void conn_update_reading(struct mc_conn *c)
{
    bool want = !c->input_closed && !c->eof && !c->closing &&
                c->weight < MC_PENDING_HIGH &&
                c->out.len + c->wbuf.len < MC_OUT_HIGH;

    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_read_alloc, on_read) ==
            0) {
            c->reading = true;
        }
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* The one place a connection makes progress. Re-entrant calls (a backend
 * completing synchronously inside submit) only ask for another round. */
static void conn_pump(struct mc_conn *c)
{
    bool progress;

    if (c->in_pump) {
        c->pump_again = true;
        return;
    }
    c->in_pump = true;
    do {
        c->pump_again = false;
        progress = false;
        if (c->closing) {
            break;
        }
        if (c->in.len > 0) {
            progress |= conn_parse(c);
        }
        conn_dispatch(c);
        progress |= conn_flush(c);
    } while (c->pump_again || progress);
    c->in_pump = false;

    if (c->closing) {
        return;
    }
    conn_write(c);
    if (c->closing) {
        return;
    }
    conn_update_reading(c);
    if ((c->input_closed || c->eof) && c->head == NULL && !c->writing &&
        c->out.len == 0) {
        conn_close(c);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct mc_conn *c = stream->data;

    (void)b;
    if (nread == 0 || c->closing) {
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF) {
            log_debug("mc: read failed: %s", uv_strerror((int)nread));
            conn_close(c);
            return;
        }
        /* Half-close: answer what was asked, then close. */
        uv_read_stop(stream);
        c->reading = false;
        c->eof = true;
        conn_pump(c);
        return;
    }
    c->in.len += (size_t)nread;
    c->server->stats.bytes_read += (uint64_t)nread;
    conn_pump(c);
}

static void server_maybe_free(struct mc_server *s)
{
    void (*cb)(void *data);
    void *data;

    if (!s->closing || s->handles > 0) {
        return;
    }
    cb = s->close_cb;
    data = s->close_data;
    free(s);
    if (cb) {
        cb(data);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct mc_conn *c = h->data;
    struct mc_server *s = c->server;

    c->handle_closed = true;
    c->server = NULL;
    if (c->backend_calls == 0) {
        conn_free(c);
    }
    s->handles--;
    server_maybe_free(s);
}

static void conn_close(struct mc_conn *c)
{
    struct mc_server *s = c->server;
    struct mc_req *r;

    if (c->closing) {
        return;
    }
    c->closing = true;
    c->input_closed = true;
    /* Requests with calls in a backend stay allocated until their last
     * callback; everything else goes now. */
    while (c->head) {
        r = conn_dequeue(c);
        if (r->dispatched && !r->done) {
            r->orphan = true;
        } else {
            req_free(r);
        }
    }
    c->undispatched = 0;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    s->curr_connections--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct mc_server *s = listener->data;
    struct mc_conn *c;

    if (status < 0) {
        log_warn("mc: accept failed: %s", uv_strerror(status));
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->server = s;
    mc_parser_init(&c->parser, s->item_size_max);
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        conn_free(c);
        return;
    }
    c->tcp.data = c;
    s->handles++;
    c->next = s->conns;
    if (s->conns) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->curr_connections++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    s->stats.total_connections++;
    if (s->curr_connections > s->max_connections) {
        /* memcached's words; best effort, the socket is new and empty. */
        static const char msg[] = "ERROR Too many open connections\r\n";
        uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg) - 1);
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        s->stats.rejected_connections++;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_update_reading(c);
}

/* ---- server ------------------------------------------------------------ */

static void on_listener_closed(uv_handle_t *h)
{
    struct mc_server *s = h->data;

    s->handles--;
    server_maybe_free(s);
}

struct mc_server *mc_server_new(uv_loop_t *loop,
                                const struct mc_server_config *cfg,
                                const struct mc_backend *backend,
                                char *errmsg, size_t errlen)
{
    struct mc_server *s;
    char sub[192];
    const char *host = cfg->host ? cfg->host : "0.0.0.0";
    int rc;

    if (backend == NULL || backend->submit == NULL) {
        snprintf(errmsg, errlen, "mc_server: no backend");
        return NULL;
    }
    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(errmsg, errlen, "mc_server: bad port %d", cfg->port);
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->backend = *backend;
    s->item_size_max =
        cfg->item_size_max ? cfg->item_size_max : CACHE_ITEM_SIZE_MAX_DEFAULT;
    s->max_connections =
        cfg->max_connections ? cfg->max_connections : MC_MAX_CONNECTIONS_DEFAULT;
    s->started_ms = clock_mono_ms();

    rc = uv_tcp_init(loop, &s->listener);
    if (rc != 0) {
        snprintf(errmsg, errlen, "mc_server: tcp init: %s", uv_strerror(rc));
        goto err_after_alloc;
    }
    s->listener.data = s;
    s->handles = 1;
    if (tcp_listen(&s->listener, host, cfg->port, 1024, on_connection,
                   &s->port, sub, sizeof(sub)) != 0) {
        snprintf(errmsg, errlen, "mc_server: %s", sub);
        goto err_after_init;
    }
    return s;

err_after_init:
    /* The handle is known to the loop: the server is freed by the close
     * callback, when the loop next runs. */
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    return NULL;
err_after_alloc:
    free(s);
    return NULL;
}

int mc_server_port(const struct mc_server *s)
{
    return s->port;
}

void mc_server_close(struct mc_server *s, void (*cb)(void *data), void *data)
{
    s->closing = true;
    s->close_cb = cb;
    s->close_data = data;
    while (s->conns) {
        conn_close(s->conns);
    }
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}
