/*
 * meta_sm: see meta_sm.h.
 *
 * Exchanges and bindings are kept in two arrays in creation order: the meta
 * state is small (what applications declare, not what they publish) and is
 * scanned linearly; an index per exchange is the first thing to add if a
 * deployment declares thousands. Creation order is the same on every
 * replica, so snapshots are byte-identical and the digest hashes them.
 *
 * The queue directory is a chained hash table for lookups plus a doubly
 * linked list in creation order: the list, not the table, decides the
 * order of snapshots and of meta_sm_queue_each, so the table's layout may
 * differ between replicas (it depends on growth history) without showing.
 */
#include "sm/meta_sm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/fnv.h"
#include "common/invariant.h"
#include "common/le.h"

struct mstr {
    char *p;
    size_t len;
};

struct mkvs {
    struct mstr *keys;
    struct mstr *values;
    size_t n;
};

struct mexch {
    struct mstr vhost;
    struct mstr name;
    enum meta_sm_exchange_type type;
    bool durable;
    bool auto_delete;
    bool internal;
    bool had_binding; /* auto-delete applies only after a first binding */
    struct mkvs args;
};

struct mbind {
    struct mstr vhost;
    struct mstr source;
    struct mstr dest;
    bool dest_is_exchange;
    struct mstr key;
    struct mkvs args;
};

/* One directory entry; allocated with its key (vhost then queue). */
struct mplace {
    struct mplace *hnext;       /* hash chain */
    struct mplace *prev, *next; /* creation order */
    uint64_t hash;
    uint64_t gen;
    uint64_t move_gen; /* 0 unless moving */
    char *target;      /* NULL unless moving: moves are rare, names short */
    char shard[META_SM_SHARD_MAX + 1];
    uint16_t vhost_len;
    uint16_t queue_len;
    char key[];
};

struct mdir {
    struct mplace **buckets;
    size_t n_buckets; /* 0 or a power of two */
    size_t n;
    struct mplace *head, *tail;
    uint64_t next_gen;
};

struct meta_sm {
    uint64_t version;
    struct mexch *ex;
    size_t n_ex, cap_ex;
    struct mbind *bind;
    size_t n_bind, cap_bind;
    struct mdir dir;
};

static const char *const type_names[META_SM_EXCHANGE_TYPE__COUNT] = {
    "direct", "fanout", "topic", "headers"};

/* The exchanges every vhost has without declaring them. */
static const struct {
    const char *name;
    enum meta_sm_exchange_type type;
} predeclared[] = {
    {"", META_SM_DIRECT},           {"amq.direct", META_SM_DIRECT},
    {"amq.fanout", META_SM_FANOUT}, {"amq.topic", META_SM_TOPIC},
    {"amq.headers", META_SM_HEADERS}, {"amq.match", META_SM_HEADERS},
};
#define N_PREDECLARED (sizeof(predeclared) / sizeof(predeclared[0]))

int meta_sm_exchange_type_parse(const char *s, size_t len)
{
    int i;

    for (i = 0; i < META_SM_EXCHANGE_TYPE__COUNT; i++) {
        if (strlen(type_names[i]) == len && memcmp(type_names[i], s, len) == 0) {
            return i;
        }
    }
    return -1;
}

const char *meta_sm_exchange_type_name(enum meta_sm_exchange_type t)
{
    return (unsigned)t < META_SM_EXCHANGE_TYPE__COUNT ? type_names[t] : "?";
}

/* ---- small helpers ---------------------------------------------------- */

static struct mstr mstr_dup(const char *p, size_t len)
{
    struct mstr s = {xmalloc(len + 1), len};

    if (len > 0) {
        memcpy(s.p, p, len);
    }
    s.p[len] = '\0';
    return s;
}

static bool mstr_eq(const struct mstr *s, const char *p, size_t len)
{
    return s->len == len && (len == 0 || memcmp(s->p, p, len) == 0);
}

static void kvs_set(struct mkvs *kv, const struct meta_sm_kv *args, size_t n)
{
    size_t i;

    kv->n = n;
    kv->keys = n ? xcalloc(n, sizeof(*kv->keys)) : NULL;
    kv->values = n ? xcalloc(n, sizeof(*kv->values)) : NULL;
    for (i = 0; i < n; i++) {
        kv->keys[i] = mstr_dup(args[i].key, args[i].key_len);
        kv->values[i] = mstr_dup(args[i].value, args[i].value_len);
    }
}

static bool kvs_eq(const struct mkvs *kv, const struct meta_sm_kv *args,
                   size_t n)
{
    size_t i;

    if (kv->n != n) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (!mstr_eq(&kv->keys[i], args[i].key, args[i].key_len) ||
            !mstr_eq(&kv->values[i], args[i].value, args[i].value_len)) {
            return false;
        }
    }
    return true;
}

static void kvs_free(struct mkvs *kv)
{
    size_t i;

    for (i = 0; i < kv->n; i++) {
        free(kv->keys[i].p);
        free(kv->values[i].p);
    }
    free(kv->keys);
    free(kv->values);
    memset(kv, 0, sizeof(*kv));
}

static void exch_free(struct mexch *e)
{
    free(e->vhost.p);
    free(e->name.p);
    kvs_free(&e->args);
}

static void bind_free(struct mbind *b)
{
    free(b->vhost.p);
    free(b->source.p);
    free(b->dest.p);
    free(b->key.p);
    kvs_free(&b->args);
}

static int predeclared_index(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < N_PREDECLARED; i++) {
        if (strlen(predeclared[i].name) == len &&
            memcmp(predeclared[i].name, name, len) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static struct mexch *find_exchange(const struct meta_sm *sm, const char *vhost,
                                   size_t vlen, const char *name, size_t nlen)
{
    size_t i;

    for (i = 0; i < sm->n_ex; i++) {
        if (mstr_eq(&sm->ex[i].vhost, vhost, vlen) &&
            mstr_eq(&sm->ex[i].name, name, nlen)) {
            return &sm->ex[i];
        }
    }
    return NULL;
}

/* ---- the queue directory ---------------------------------------------- */

/* Any good spread will do (the table's layout is never serialized); each
 * half hashed alone so ("ab", "c") and ("a", "bc") differ. */
static uint64_t dir_hash(const char *vhost, size_t vlen, const char *queue,
                         size_t qlen)
{
    uint64_t h = fnv1a64(vhost, vlen) ^
                 (fnv1a64(queue, qlen) * 0x9e3779b97f4a7c15ULL);

    return h ^ (h >> 29);
}

/* memcmp/memcpy with a NULL pointer are undefined even for 0 bytes, and
 * commands may carry NULL for an empty name. */
static bool mem_eq(const char *a, const char *b, size_t len)
{
    return len == 0 || memcmp(a, b, len) == 0;
}

static void mem_copy(char *dst, const char *src, size_t len)
{
    if (len > 0) {
        memcpy(dst, src, len);
    }
}

static struct mplace **dir_bucket(const struct mdir *d, uint64_t hash)
{
    return &d->buckets[hash & (d->n_buckets - 1)];
}

static struct mplace *dir_find(const struct mdir *d, const char *vhost,
                               size_t vlen, const char *queue, size_t qlen)
{
    uint64_t h;
    struct mplace *e;

    if (d->n == 0 || vlen > META_SM_NAME_MAX || qlen > META_SM_NAME_MAX) {
        return NULL;
    }
    h = dir_hash(vhost, vlen, queue, qlen);
    for (e = *dir_bucket(d, h); e != NULL; e = e->hnext) {
        if (e->hash == h && e->vhost_len == vlen && e->queue_len == qlen &&
            mem_eq(e->key, vhost, vlen) &&
            mem_eq(e->key + vlen, queue, qlen)) {
            return e;
        }
    }
    return NULL;
}

/* Rehash into @n buckets, walking the creation list. */
static void dir_resize(struct mdir *d, size_t n)
{
    struct mplace *e;

    free(d->buckets);
    d->buckets = xcalloc(n, sizeof(*d->buckets));
    d->n_buckets = n;
    for (e = d->head; e != NULL; e = e->next) {
        struct mplace **b = dir_bucket(d, e->hash);
        e->hnext = *b;
        *b = e;
    }
}

static void set_name(char *dst, const char *p, size_t len)
{
    mem_copy(dst, p, len);
    dst[len] = '\0';
}

/* Appends an entry not present yet (callers looked). */
static struct mplace *dir_add(struct mdir *d, const char *vhost, size_t vlen,
                              const char *queue, size_t qlen,
                              const char *shard, size_t slen, uint64_t gen)
{
    struct mplace *e = xcalloc(1, sizeof(*e) + vlen + qlen);
    struct mplace **b;

    if (d->n >= d->n_buckets) { /* load factor at most 1 */
        dir_resize(d, d->n_buckets ? 2 * d->n_buckets : 64);
    }
    e->hash = dir_hash(vhost, vlen, queue, qlen);
    e->gen = gen;
    set_name(e->shard, shard, slen);
    e->vhost_len = (uint16_t)vlen;
    e->queue_len = (uint16_t)qlen;
    mem_copy(e->key, vhost, vlen);
    mem_copy(e->key + vlen, queue, qlen);
    b = dir_bucket(d, e->hash);
    e->hnext = *b;
    *b = e;
    e->prev = d->tail;
    if (d->tail != NULL) {
        d->tail->next = e;
    } else {
        d->head = e;
    }
    d->tail = e;
    d->n++;
    return e;
}

static void place_free(struct mplace *e)
{
    free(e->target);
    free(e);
}

static void dir_remove(struct mdir *d, struct mplace *e)
{
    struct mplace **b = dir_bucket(d, e->hash);

    while (*b != e) {
        b = &(*b)->hnext;
    }
    *b = e->hnext;
    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        d->head = e->next;
    }
    if (e->next != NULL) {
        e->next->prev = e->prev;
    } else {
        d->tail = e->prev;
    }
    d->n--;
    place_free(e);
}

/* Empties the directory and starts the gens again at 1. */
static void dir_clear(struct mdir *d)
{
    struct mplace *e = d->head;

    while (e != NULL) {
        struct mplace *next = e->next;
        place_free(e);
        e = next;
    }
    free(d->buckets);
    memset(d, 0, sizeof(*d));
    d->next_gen = 1;
}

static void set_target(struct mplace *e, const char *p, size_t len,
                       uint64_t move_gen)
{
    free(e->target);
    e->target = NULL;
    if (p != NULL) {
        e->target = xmalloc(len + 1);
        set_name(e->target, p, len);
    }
    e->move_gen = move_gen;
}

static void placement_fill(const struct mplace *e, struct meta_sm_placement *p)
{
    memset(p, 0, sizeof(*p));
    if (e == NULL) {
        return;
    }
    memcpy(p->shard, e->shard, sizeof(p->shard));
    p->gen = e->gen;
    if (e->target != NULL) {
        p->moving = true;
        strcpy(p->target, e->target); /* at most 63 bytes, checked */
        p->move_gen = e->move_gen;
    }
}

/* Shard names are NUL-terminated here, so a name with a NUL could not be
 * told from its prefix: refused like an empty or too long one. */
static bool shard_name_ok(const char *p, size_t len)
{
    return len > 0 && len <= META_SM_SHARD_MAX &&
           memchr(p, '\0', len) == NULL;
}

static bool name_is(const char *stored, const char *p, size_t len)
{
    return strlen(stored) == len && mem_eq(stored, p, len);
}

int meta_sm_queue_lookup(const struct meta_sm *sm, const char *vhost,
                         size_t vhost_len, const char *queue, size_t queue_len,
                         struct meta_sm_placement *out)
{
    const struct mplace *e =
        dir_find(&sm->dir, vhost, vhost_len, queue, queue_len);

    if (out != NULL) {
        placement_fill(e, out);
    }
    return e != NULL ? 0 : -1;
}

uint64_t meta_sm_queue_count(const struct meta_sm *sm)
{
    return sm->dir.n;
}

uint64_t meta_sm_queue_next_gen(const struct meta_sm *sm)
{
    return sm->dir.next_gen;
}

int meta_sm_queue_each(const struct meta_sm *sm,
                       int (*fn)(void *data, const char *vhost,
                                 size_t vhost_len, const char *queue,
                                 size_t queue_len,
                                 const struct meta_sm_placement *p),
                       void *data)
{
    const struct mplace *e;
    struct meta_sm_placement p;
    int rv;

    for (e = sm->dir.head; e != NULL; e = e->next) {
        placement_fill(e, &p);
        rv = fn(data, e->key, e->vhost_len, e->key + e->vhost_len,
                e->queue_len, &p);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* ---- lifecycle -------------------------------------------------------- */

struct meta_sm *meta_sm_new(void)
{
    struct meta_sm *sm = xcalloc(1, sizeof(struct meta_sm));

    sm->dir.next_gen = 1;
    return sm;
}

static void clear_all(struct meta_sm *sm)
{
    size_t i;

    for (i = 0; i < sm->n_ex; i++) {
        exch_free(&sm->ex[i]);
    }
    for (i = 0; i < sm->n_bind; i++) {
        bind_free(&sm->bind[i]);
    }
    free(sm->ex);
    free(sm->bind);
    sm->ex = NULL;
    sm->bind = NULL;
    sm->n_ex = sm->cap_ex = sm->n_bind = sm->cap_bind = 0;
    dir_clear(&sm->dir);
}

void meta_sm_free(struct meta_sm *sm)
{
    if (sm == NULL) {
        return;
    }
    clear_all(sm);
    free(sm);
}

uint64_t meta_sm_version(const struct meta_sm *sm)
{
    return sm->version;
}

int meta_sm_exchange_info(const struct meta_sm *sm, const char *vhost,
                          size_t vhost_len, const char *exchange,
                          size_t exchange_len,
                          enum meta_sm_exchange_type *type, bool *durable,
                          bool *internal)
{
    int pre = predeclared_index(exchange, exchange_len);
    const struct mexch *e;

    if (pre >= 0) {
        if (type) {
            *type = predeclared[pre].type;
        }
        if (durable) {
            *durable = true;
        }
        if (internal) {
            *internal = false;
        }
        return 0;
    }
    e = find_exchange(sm, vhost, vhost_len, exchange, exchange_len);
    if (e == NULL) {
        return -1;
    }
    if (type) {
        *type = e->type;
    }
    if (durable) {
        *durable = e->durable;
    }
    if (internal) {
        *internal = e->internal;
    }
    return 0;
}

void meta_sm_counts(const struct meta_sm *sm, uint64_t *exchanges,
                    uint64_t *bindings)
{
    *exchanges = sm->n_ex;
    *bindings = sm->n_bind;
}

/* ---- commands --------------------------------------------------------- */

static void reply(struct meta_sm_result *res, uint16_t code, const char *text)
{
    res->reply_code = code;
    res->reply_text = text;
}

static void changed(struct meta_sm *sm, struct meta_sm_result *res)
{
    sm->version++;
    res->changed = true;
}

static bool bind_matches_cmd(const struct mbind *b,
                             const struct meta_sm_cmd *c)
{
    return mstr_eq(&b->vhost, c->vhost, c->vhost_len) &&
           mstr_eq(&b->source, c->exchange, c->exchange_len) &&
           mstr_eq(&b->dest, c->dest, c->dest_len) &&
           b->dest_is_exchange == c->dest_is_exchange &&
           mstr_eq(&b->key, c->routing_key, c->routing_key_len) &&
           kvs_eq(&b->args, c->args, c->n_args);
}

static void remove_binding(struct meta_sm *sm, size_t i)
{
    bind_free(&sm->bind[i]);
    memmove(&sm->bind[i], &sm->bind[i + 1],
            (sm->n_bind - i - 1) * sizeof(*sm->bind));
    sm->n_bind--;
}

static bool has_bindings_from(const struct meta_sm *sm, const struct mstr *vh,
                              const struct mstr *name)
{
    size_t i;

    for (i = 0; i < sm->n_bind; i++) {
        if (mstr_eq(&sm->bind[i].vhost, vh->p, vh->len) &&
            mstr_eq(&sm->bind[i].source, name->p, name->len)) {
            return true;
        }
    }
    return false;
}

static void remove_exchange(struct meta_sm *sm, struct mexch *e);

/* Auto-delete exchanges whose last binding as source went away. */
static void auto_delete_sweep(struct meta_sm *sm)
{
    size_t i = 0;

    while (i < sm->n_ex) {
        struct mexch *e = &sm->ex[i];
        if (e->auto_delete && e->had_binding &&
            !has_bindings_from(sm, &e->vhost, &e->name)) {
            remove_exchange(sm, e);
            i = 0; /* bindings to it went too: look again */
        } else {
            i++;
        }
    }
}

/* Only called for an exchange that had a binding once (auto-delete) or on
 * delete: drops every binding from or to it. */
static void remove_exchange(struct meta_sm *sm, struct mexch *e)
{
    size_t i = 0;
    size_t at = (size_t)(e - sm->ex);

    while (i < sm->n_bind) {
        struct mbind *b = &sm->bind[i];
        if (mstr_eq(&b->vhost, e->vhost.p, e->vhost.len) &&
            (mstr_eq(&b->source, e->name.p, e->name.len) ||
             (b->dest_is_exchange &&
              mstr_eq(&b->dest, e->name.p, e->name.len)))) {
            remove_binding(sm, i);
        } else {
            i++;
        }
    }
    exch_free(e);
    memmove(&sm->ex[at], &sm->ex[at + 1], (sm->n_ex - at - 1) * sizeof(*e));
    sm->n_ex--;
}

static void exchange_declare(struct meta_sm *sm, const struct meta_sm_cmd *c,
                             struct meta_sm_result *res)
{
    int pre = predeclared_index(c->exchange, c->exchange_len);
    struct mexch *e;

    if (pre >= 0) {
        if (!c->passive && (predeclared[pre].type != c->exchange_type ||
                            !c->durable || c->auto_delete || c->internal)) {
            reply(res, 406,
                  "PRECONDITION_FAILED - inequivalent arg for a "
                  "pre-declared exchange");
        }
        return;
    }
    e = find_exchange(sm, c->vhost, c->vhost_len, c->exchange,
                      c->exchange_len);
    if (c->passive) {
        if (e == NULL) {
            reply(res, 404, "NOT_FOUND - no exchange");
        }
        return;
    }
    if (e != NULL) {
        if (e->type != c->exchange_type) {
            reply(res, 406, "PRECONDITION_FAILED - inequivalent arg 'type'");
        } else if (e->durable != c->durable) {
            reply(res, 406,
                  "PRECONDITION_FAILED - inequivalent arg 'durable'");
        } else if (e->auto_delete != c->auto_delete) {
            reply(res, 406,
                  "PRECONDITION_FAILED - inequivalent arg 'auto_delete'");
        } else if (e->internal != c->internal) {
            reply(res, 406,
                  "PRECONDITION_FAILED - inequivalent arg 'internal'");
        }
        return;
    }
    if (c->exchange_len >= 4 && memcmp(c->exchange, "amq.", 4) == 0) {
        reply(res, 403,
              "ACCESS_REFUSED - exchange name contains reserved prefix "
              "'amq.*'");
        return;
    }
    if ((unsigned)c->exchange_type >= META_SM_EXCHANGE_TYPE__COUNT) {
        reply(res, 503, "COMMAND_INVALID - unknown exchange type");
        return;
    }
    if (sm->n_ex == sm->cap_ex) {
        sm->cap_ex = sm->cap_ex ? 2 * sm->cap_ex : 8;
        sm->ex = xrealloc(sm->ex, sm->cap_ex * sizeof(*sm->ex));
    }
    e = &sm->ex[sm->n_ex++];
    memset(e, 0, sizeof(*e));
    e->vhost = mstr_dup(c->vhost, c->vhost_len);
    e->name = mstr_dup(c->exchange, c->exchange_len);
    e->type = c->exchange_type;
    e->durable = c->durable;
    e->auto_delete = c->auto_delete;
    e->internal = c->internal;
    kvs_set(&e->args, c->args, c->n_args);
    changed(sm, res);
}

static void exchange_delete(struct meta_sm *sm, const struct meta_sm_cmd *c,
                            struct meta_sm_result *res)
{
    struct mexch *e;

    if (predeclared_index(c->exchange, c->exchange_len) >= 0) {
        reply(res, 403,
              "ACCESS_REFUSED - operation not permitted on a pre-declared "
              "exchange");
        return;
    }
    e = find_exchange(sm, c->vhost, c->vhost_len, c->exchange,
                      c->exchange_len);
    if (e == NULL) {
        return; /* RabbitMQ 3.x: deleting a missing exchange is ok */
    }
    if (c->if_unused && has_bindings_from(sm, &e->vhost, &e->name)) {
        reply(res, 406, "PRECONDITION_FAILED - exchange in use");
        return;
    }
    remove_exchange(sm, e);
    auto_delete_sweep(sm);
    changed(sm, res);
}

static void bind(struct meta_sm *sm, const struct meta_sm_cmd *c,
                 struct meta_sm_result *res)
{
    struct mbind *b;
    struct mexch *src;
    size_t i;

    if (c->exchange_len == 0 ||
        (c->dest_is_exchange && c->dest_len == 0)) {
        reply(res, 403,
              "ACCESS_REFUSED - operation not permitted on the default "
              "exchange");
        return;
    }
    if (meta_sm_exchange_info(sm, c->vhost, c->vhost_len, c->exchange,
                              c->exchange_len, NULL, NULL, NULL) != 0 ||
        (c->dest_is_exchange &&
         meta_sm_exchange_info(sm, c->vhost, c->vhost_len, c->dest,
                               c->dest_len, NULL, NULL, NULL) != 0)) {
        reply(res, 404, "NOT_FOUND - no exchange");
        return;
    }
    for (i = 0; i < sm->n_bind; i++) {
        if (bind_matches_cmd(&sm->bind[i], c)) {
            return;
        }
    }
    if (sm->n_bind == sm->cap_bind) {
        sm->cap_bind = sm->cap_bind ? 2 * sm->cap_bind : 16;
        sm->bind = xrealloc(sm->bind, sm->cap_bind * sizeof(*sm->bind));
    }
    src = find_exchange(sm, c->vhost, c->vhost_len, c->exchange,
                        c->exchange_len);
    if (src != NULL) {
        src->had_binding = true;
    }
    b = &sm->bind[sm->n_bind++];
    memset(b, 0, sizeof(*b));
    b->vhost = mstr_dup(c->vhost, c->vhost_len);
    b->source = mstr_dup(c->exchange, c->exchange_len);
    b->dest = mstr_dup(c->dest, c->dest_len);
    b->dest_is_exchange = c->dest_is_exchange;
    b->key = mstr_dup(c->routing_key, c->routing_key_len);
    kvs_set(&b->args, c->args, c->n_args);
    changed(sm, res);
}

static void unbind(struct meta_sm *sm, const struct meta_sm_cmd *c,
                   struct meta_sm_result *res)
{
    size_t i;

    if (c->exchange_len == 0) {
        reply(res, 403,
              "ACCESS_REFUSED - operation not permitted on the default "
              "exchange");
        return;
    }
    for (i = 0; i < sm->n_bind; i++) {
        if (bind_matches_cmd(&sm->bind[i], c)) {
            remove_binding(sm, i);
            auto_delete_sweep(sm);
            changed(sm, res);
            return;
        }
    }
}

static void queue_gone(struct meta_sm *sm, const struct meta_sm_cmd *c,
                       struct meta_sm_result *res)
{
    struct mplace *e =
        dir_find(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len);
    size_t i = 0;
    bool any = false;

    if (c->gen != 0 && e != NULL && e->gen != c->gen) {
        return; /* created again since: its bindings are the new queue's */
    }
    if (c->gen != 0 && e != NULL && e->target == NULL) {
        dir_remove(&sm->dir, e);
        any = true;
    }
    while (i < sm->n_bind) {
        struct mbind *b = &sm->bind[i];
        if (!b->dest_is_exchange && mstr_eq(&b->vhost, c->vhost, c->vhost_len) &&
            mstr_eq(&b->dest, c->dest, c->dest_len)) {
            remove_binding(sm, i);
            any = true;
        } else {
            i++;
        }
    }
    if (any) {
        auto_delete_sweep(sm);
        changed(sm, res);
    }
}

static void queue_place(struct meta_sm *sm, const struct meta_sm_cmd *c,
                        struct meta_sm_result *res)
{
    struct mplace *e =
        dir_find(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len);

    if (!shard_name_ok(c->shard, c->shard_len)) {
        reply(res, 502, "SYNTAX_ERROR - bad shard name");
        return;
    }
    if (e == NULL) {
        dir_add(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len,
                c->shard, c->shard_len, sm->dir.next_gen++);
        changed(sm, res);
    } else if (c->gen != 0 && c->gen == e->gen && e->target == NULL) {
        /* The shard refused this gen (below its create floor, i.e. the
         * queue was deleted there after this entry was made): same shard,
         * a gen above the floor. A move in progress owns the entry. */
        e->gen = sm->dir.next_gen++;
        changed(sm, res);
    }
}

static void move_begin(struct meta_sm *sm, const struct meta_sm_cmd *c,
                       struct meta_sm_result *res)
{
    struct mplace *e =
        dir_find(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len);

    if (!shard_name_ok(c->shard, c->shard_len) ||
        !shard_name_ok(c->target, c->target_len)) {
        reply(res, 502, "SYNTAX_ERROR - bad shard name");
    } else if (e == NULL) {
        reply(res, 406, "PRECONDITION_FAILED - queue not in the directory");
    } else if (!name_is(e->shard, c->shard, c->shard_len) ||
               e->gen != c->gen) {
        reply(res, 406, "PRECONDITION_FAILED - placement changed");
    } else if (name_is(e->shard, c->target, c->target_len)) {
        reply(res, 406, "PRECONDITION_FAILED - queue already on that shard");
    } else if (e->target != NULL) {
        if (!name_is(e->target, c->target, c->target_len)) {
            reply(res, 406,
                  "PRECONDITION_FAILED - queue moving to another shard");
        }
        /* else a rerun: the placement answers the same move_gen */
    } else {
        set_target(e, c->target, c->target_len, sm->dir.next_gen++);
        changed(sm, res);
    }
}

static void move_commit(struct meta_sm *sm, const struct meta_sm_cmd *c,
                        struct meta_sm_result *res)
{
    struct mplace *e =
        dir_find(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len);

    if (!shard_name_ok(c->target, c->target_len)) {
        reply(res, 502, "SYNTAX_ERROR - bad shard name");
    } else if (e != NULL && e->target != NULL &&
               name_is(e->target, c->target, c->target_len)) {
        set_name(e->shard, c->target, c->target_len);
        e->gen = e->move_gen;
        set_target(e, NULL, 0, 0);
        changed(sm, res);
    } else if (e == NULL || e->target != NULL ||
               !name_is(e->shard, c->target, c->target_len)) {
        reply(res, 406,
              "PRECONDITION_FAILED - queue not moving to that shard");
    }
    /* else committed before: a rerun */
}

static void move_abort(struct meta_sm *sm, const struct meta_sm_cmd *c,
                       struct meta_sm_result *res)
{
    struct mplace *e =
        dir_find(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len);

    if (!shard_name_ok(c->target, c->target_len)) {
        reply(res, 502, "SYNTAX_ERROR - bad shard name");
    } else if (e != NULL && e->target != NULL &&
               name_is(e->target, c->target, c->target_len)) {
        set_target(e, NULL, 0, 0);
        changed(sm, res);
    }
}

static void queue_forget(struct meta_sm *sm, const struct meta_sm_cmd *c,
                         struct meta_sm_result *res)
{
    struct mplace *e =
        dir_find(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len);

    if (!shard_name_ok(c->shard, c->shard_len)) {
        reply(res, 502, "SYNTAX_ERROR - bad shard name");
    } else if (e != NULL && e->target == NULL && e->gen == c->gen &&
               name_is(e->shard, c->shard, c->shard_len)) {
        dir_remove(&sm->dir, e);
        changed(sm, res);
    }
}

/* Commands whose result carries the queue's entry. */
static bool names_a_queue(enum meta_sm_cmd_type t)
{
    return t == META_SM_QUEUE_GONE || t == META_SM_QUEUE_PLACE ||
           t == META_SM_QUEUE_MOVE_BEGIN || t == META_SM_QUEUE_MOVE_COMMIT ||
           t == META_SM_QUEUE_MOVE_ABORT || t == META_SM_QUEUE_FORGET;
}

static void apply_one(struct meta_sm *sm, const struct meta_sm_cmd *cmd,
                      struct meta_sm_result *res)
{
    memset(res, 0, sizeof(*res));
    res->reply_text = "";
    if (cmd->vhost_len > META_SM_NAME_MAX ||
        cmd->exchange_len > META_SM_NAME_MAX ||
        cmd->dest_len > META_SM_NAME_MAX ||
        cmd->routing_key_len > META_SM_NAME_MAX) {
        reply(res, 502, "SYNTAX_ERROR - name longer than 255 bytes");
    } else {
        switch (cmd->type) {
            case META_SM_EXCHANGE_DECLARE:
                exchange_declare(sm, cmd, res);
                break;
            case META_SM_EXCHANGE_DELETE:
                exchange_delete(sm, cmd, res);
                break;
            case META_SM_BIND:
                bind(sm, cmd, res);
                break;
            case META_SM_UNBIND:
                unbind(sm, cmd, res);
                break;
            case META_SM_QUEUE_GONE:
                queue_gone(sm, cmd, res);
                break;
            case META_SM_QUEUE_PLACE:
                queue_place(sm, cmd, res);
                break;
            case META_SM_QUEUE_MOVE_BEGIN:
                move_begin(sm, cmd, res);
                break;
            case META_SM_QUEUE_MOVE_COMMIT:
                move_commit(sm, cmd, res);
                break;
            case META_SM_QUEUE_MOVE_ABORT:
                move_abort(sm, cmd, res);
                break;
            case META_SM_QUEUE_FORGET:
                queue_forget(sm, cmd, res);
                break;
            default:
                reply(res, 540, "NOT_IMPLEMENTED - unknown meta command");
                break;
        }
        if (names_a_queue(cmd->type)) {
            meta_sm_queue_lookup(sm, cmd->vhost, cmd->vhost_len, cmd->dest,
                                 cmd->dest_len, &res->placement);
        }
    }
    res->version = sm->version;
}

void meta_sm_apply(struct meta_sm *sm, const struct meta_sm_cmd *cmd,
                   struct meta_sm_result *res)
{
    uint64_t version = sm->version;

    apply_one(sm, cmd, res);
    INVARIANT(sm->version >= version && sm->version - version <= 1);
    if (deep_check_due(sm->version,
                       sm->dir.n + sm->n_ex + sm->n_bind)) {
        meta_sm_check(sm);
    }
}

void meta_sm_check(const struct meta_sm *sm)
{
    const struct mdir *d = &sm->dir;
    const struct mplace *e, *prev = NULL;
    size_t n = 0;

    INVARIANT(sm->n_ex <= sm->cap_ex && sm->n_bind <= sm->cap_bind);
    for (e = d->head; e != NULL; prev = e, e = e->next) {
        const struct mplace *h;

        INVARIANT(e->prev == prev);
        INVARIANT(e->gen > 0 && e->gen < d->next_gen);
        INVARIANT((e->target != NULL) == (e->move_gen != 0));
        INVARIANT(e->move_gen == 0 ||
                  (e->move_gen > e->gen && e->move_gen < d->next_gen));
        for (h = *dir_bucket(d, e->hash); h != NULL && h != e; h = h->hnext) {
        }
        INVARIANT(h == e); /* in its hash chain */
        n++;
    }
    INVARIANT(prev == d->tail && n == d->n);
}

/* ---- routing ---------------------------------------------------------- */

/* Words of a '.'-separated key: [*p, *p + *len) of the word at @pos. */
static bool next_word(const char *s, size_t len, size_t *pos, const char **w,
                      size_t *wlen)
{
    const char *dot;

    if (*pos > len) {
        return false;
    }
    *w = s + *pos;
    dot = memchr(*w, '.', len - *pos);
    *wlen = dot ? (size_t)(dot - *w) : len - *pos;
    *pos += *wlen + 1; /* past the dot; len + 1 after the last word */
    return true;
}

/* RabbitMQ's topic rules: '*' is exactly one word, '#' zero or more; ""
 * has no words (so "*" does not match it), "." has two empty ones. Backtracking on '#' only, bounded by the 255-byte keys. */
static bool topic_match(const char *pat, size_t plen, size_t ppos,
                        const char *key, size_t klen, size_t kpos)
{
    const char *pw;
    const char *kw;
    size_t pwl;
    size_t kwl;

    for (;;) {
        if (!next_word(pat, plen, &ppos, &pw, &pwl)) {
            return kpos > klen; /* pattern done: key must be done too */
        }
        if (pwl == 1 && pw[0] == '#') {
            size_t k = kpos;
            /* '#' takes zero words, then one more each round */
            for (;;) {
                if (topic_match(pat, plen, ppos, key, klen, k)) {
                    return true;
                }
                if (!next_word(key, klen, &k, &kw, &kwl)) {
                    return false;
                }
            }
        }
        if (!next_word(key, klen, &kpos, &kw, &kwl)) {
            return false;
        }
        if (!(pwl == 1 && pw[0] == '*') &&
            (pwl != kwl || memcmp(pw, kw, pwl) != 0)) {
            return false;
        }
    }
}

static const struct meta_sm_kv *find_header(const struct meta_sm_kv *h,
                                            size_t n, const struct mstr *key)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (mstr_eq(key, h[i].key, h[i].key_len)) {
            return &h[i];
        }
    }
    return NULL;
}

/* x-match over encoded field values; 'V' (void) in a binding means "the
 * header is present". */
static bool headers_match(const struct mkvs *args,
                          const struct meta_sm_kv *h, size_t n)
{
    bool any = false;
    bool with_x = false;
    size_t i;
    size_t tested = 0;
    size_t matched = 0;

    for (i = 0; i < args->n; i++) {
        const struct mstr *k = &args->keys[i];
        const struct mstr *v = &args->values[i];
        if (mstr_eq(k, "x-match", 7)) {
            /* a longstr: 'S' + 4-byte length + text */
            const char *t = v->len > 5 ? v->p + 5 : "";
            size_t tl = v->len > 5 ? v->len - 5 : 0;
            any = (tl == 3 && memcmp(t, "any", 3) == 0) ||
                  (tl == 10 && memcmp(t, "any-with-x", 10) == 0);
            with_x = tl == 10 && memcmp(t + 3, "-with-x", 7) == 0;
        }
    }
    for (i = 0; i < args->n; i++) {
        const struct mstr *k = &args->keys[i];
        const struct mstr *v = &args->values[i];
        const struct meta_sm_kv *f;

        if (k->len >= 2 && memcmp(k->p, "x-", 2) == 0 && !with_x) {
            continue;
        }
        if (mstr_eq(k, "x-match", 7)) {
            continue;
        }
        tested++;
        f = find_header(h, n, k);
        if (f != NULL && ((v->len == 1 && v->p[0] == 'V') ||
                          mstr_eq(v, f->value, f->value_len))) {
            matched++;
        }
    }
    return any ? matched > 0 : matched == tested;
}

static bool binding_routes(const struct mbind *b,
                           enum meta_sm_exchange_type type, const char *rk,
                           size_t rklen, const struct meta_sm_kv *h, size_t n)
{
    switch (type) {
        case META_SM_FANOUT:
            return true;
        case META_SM_DIRECT:
            return mstr_eq(&b->key, rk, rklen);
        case META_SM_TOPIC:
            /* Start past the end of an empty key: zero words. */
            return topic_match(b->key.p, b->key.len, b->key.len == 0 ? 1 : 0,
                               rk, rklen, rklen == 0 ? 1 : 0);
        case META_SM_HEADERS:
            return headers_match(&b->args, h, n);
        default:
            return false;
    }
}

static void add_queue(struct meta_sm_route_result *out, const char *name,
                      size_t len)
{
    size_t i;

    for (i = 0; i < out->n_queues; i++) {
        if (out->queues[i].len == len &&
            memcmp(out->queues[i].name, name, len) == 0) {
            return;
        }
    }
    out->queues = xrealloc(out->queues,
                           (out->n_queues + 1) * sizeof(*out->queues));
    out->queues[out->n_queues].name = mstr_dup(name, len).p;
    out->queues[out->n_queues].len = len;
    out->n_queues++;
}

void meta_sm_route_result_init(struct meta_sm_route_result *r)
{
    memset(r, 0, sizeof(*r));
}

void meta_sm_route_result_clear(struct meta_sm_route_result *r)
{
    size_t i;

    for (i = 0; i < r->n_queues; i++) {
        free((char *)r->queues[i].name);
    }
    free(r->queues);
    meta_sm_route_result_init(r);
}

int meta_sm_route(const struct meta_sm *sm, const char *vhost,
                  size_t vhost_len, const char *exchange, size_t exchange_len,
                  const char *routing_key, size_t routing_key_len,
                  const struct meta_sm_kv *headers, size_t n_headers,
                  struct meta_sm_route_result *out)
{
    /* exchanges to visit (a worklist of names), each once */
    struct mstr *todo;
    size_t n_todo = 1;
    size_t at;
    size_t i;

    meta_sm_route_result_init(out);
    if (exchange_len == 0) {
        add_queue(out, routing_key, routing_key_len);
        return 0;
    }
    if (meta_sm_exchange_info(sm, vhost, vhost_len, exchange, exchange_len,
                              NULL, NULL, NULL) != 0) {
        out->exchange_missing = true;
        return 0;
    }
    todo = xcalloc(sm->n_ex + N_PREDECLARED + 1, sizeof(*todo));
    todo[0].p = (char *)exchange;
    todo[0].len = exchange_len;
    for (at = 0; at < n_todo; at++) {
        enum meta_sm_exchange_type type;

        if (meta_sm_exchange_info(sm, vhost, vhost_len, todo[at].p,
                                  todo[at].len, &type, NULL, NULL) != 0) {
            continue;
        }
        for (i = 0; i < sm->n_bind; i++) {
            const struct mbind *b = &sm->bind[i];
            size_t k;

            if (!mstr_eq(&b->vhost, vhost, vhost_len) ||
                !mstr_eq(&b->source, todo[at].p, todo[at].len) ||
                !binding_routes(b, type, routing_key, routing_key_len,
                                headers, n_headers)) {
                continue;
            }
            if (!b->dest_is_exchange) {
                add_queue(out, b->dest.p, b->dest.len);
                continue;
            }
            for (k = 0; k < n_todo; k++) {
                if (mstr_eq(&todo[k], b->dest.p, b->dest.len)) {
                    break;
                }
            }
            if (k == n_todo) {
                todo[n_todo++] = b->dest;
            }
        }
    }
    free(todo);
    return 0;
}

/* ---- snapshots -------------------------------------------------------- */

#define SNAP_MAGIC 0x4d455441u /* "META" */
/* 1: exchanges and bindings; 2: then the queue directory. */
#define SNAP_VERSION 2u
#define SNAP_VERSION_NO_DIR 1u
/* Fixed bytes of a directory entry: four name lengths and two gens. */
#define SNAP_PLACE_FIXED (4 * 4 + 2 * 8)

static size_t kvs_size(const struct mkvs *kv)
{
    size_t n = 4;
    size_t i;

    for (i = 0; i < kv->n; i++) {
        n += 8 + kv->keys[i].len + kv->values[i].len;
    }
    return n;
}

static unsigned char *put_str(unsigned char *p, const struct mstr *s)
{
    p = le_put_u32(p, (uint32_t)s->len);
    if (s->len > 0) {
        memcpy(p, s->p, s->len);
    }
    return p + s->len;
}

static unsigned char *put_raw(unsigned char *p, const char *s, size_t len)
{
    struct mstr m = {(char *)(uintptr_t)s, len};

    return put_str(p, &m);
}

static unsigned char *put_kvs(unsigned char *p, const struct mkvs *kv)
{
    size_t i;

    p = le_put_u32(p, (uint32_t)kv->n);
    for (i = 0; i < kv->n; i++) {
        p = put_str(p, &kv->keys[i]);
        p = put_str(p, &kv->values[i]);
    }
    return p;
}

/* The directory section (format 2): next_gen, count, then each entry in
 * creation order: vhost, queue, shard, gen, target ("" unless moving),
 * move_gen. */
static size_t dir_size(const struct mdir *d)
{
    size_t len = 8 + 4;
    const struct mplace *e;

    for (e = d->head; e != NULL; e = e->next) {
        len += SNAP_PLACE_FIXED + e->vhost_len + e->queue_len +
               strlen(e->shard) + (e->target ? strlen(e->target) : 0);
    }
    return len;
}

static unsigned char *put_dir(unsigned char *p, const struct mdir *d)
{
    const struct mplace *e;

    p = le_put_u64(p, d->next_gen);
    p = le_put_u32(p, (uint32_t)d->n);
    for (e = d->head; e != NULL; e = e->next) {
        p = put_raw(p, e->key, e->vhost_len);
        p = put_raw(p, e->key + e->vhost_len, e->queue_len);
        p = put_raw(p, e->shard, strlen(e->shard));
        p = le_put_u64(p, e->gen);
        p = put_raw(p, e->target ? e->target : "",
                    e->target ? strlen(e->target) : 0);
        p = le_put_u64(p, e->move_gen);
    }
    return p;
}

int meta_sm_snapshot(const struct meta_sm *sm, void *(*alloc)(size_t),
                     void **out, size_t *out_len)
{
    size_t len = 4 + 4 + 8 + 4 + 4;
    unsigned char *buf;
    unsigned char *p;
    size_t i;

    for (i = 0; i < sm->n_ex; i++) {
        const struct mexch *e = &sm->ex[i];
        len += 8 + e->vhost.len + e->name.len + 2 + kvs_size(&e->args);
    }
    for (i = 0; i < sm->n_bind; i++) {
        const struct mbind *b = &sm->bind[i];
        len += 16 + b->vhost.len + b->source.len + b->dest.len + b->key.len +
               1 + kvs_size(&b->args);
    }
    len += dir_size(&sm->dir);
    buf = alloc(len);
    if (buf == NULL) {
        return -1;
    }
    p = le_put_u32(buf, SNAP_MAGIC);
    p = le_put_u32(p, SNAP_VERSION);
    p = le_put_u64(p, sm->version);
    p = le_put_u32(p, (uint32_t)sm->n_ex);
    for (i = 0; i < sm->n_ex; i++) {
        const struct mexch *e = &sm->ex[i];
        p = put_str(p, &e->vhost);
        p = put_str(p, &e->name);
        *p++ = (unsigned char)e->type;
        *p++ = (unsigned char)((e->durable ? 1 : 0) | (e->auto_delete ? 2 : 0) |
                               (e->internal ? 4 : 0) |
                               (e->had_binding ? 8 : 0));
        p = put_kvs(p, &e->args);
    }
    p = le_put_u32(p, (uint32_t)sm->n_bind);
    for (i = 0; i < sm->n_bind; i++) {
        const struct mbind *b = &sm->bind[i];
        p = put_str(p, &b->vhost);
        p = put_str(p, &b->source);
        p = put_str(p, &b->dest);
        p = put_str(p, &b->key);
        *p++ = b->dest_is_exchange ? 1 : 0;
        p = put_kvs(p, &b->args);
    }
    p = put_dir(p, &sm->dir);
    *out = buf;
    *out_len = (size_t)(p - buf);
    return 0;
}

/* A length-prefixed string of at most @max bytes, borrowed from @r. */
static bool get_raw(struct le_reader *r, const char **s, size_t *len,
                    size_t max)
{
    const unsigned char *p;
    uint32_t n;

    if (!le_get_u32(r, &n) || n > max || !le_get_bytes(r, &p, n)) {
        return false;
    }
    *s = (const char *)p;
    *len = n;
    return true;
}

/* get_raw, copied. */
static bool get_str(struct le_reader *r, struct mstr *s, size_t max)
{
    const char *p;
    size_t len;

    if (!get_raw(r, &p, &len, max)) {
        return false;
    }
    *s = mstr_dup(p, len);
    return true;
}

static bool get_kvs(struct le_reader *r, struct mkvs *kv)
{
    uint32_t n;
    uint32_t i;

    /* each pair takes at least 8 bytes: bound n by the input first */
    if (!le_get_u32(r, &n) || n > r->left / 8) {
        return false;
    }
    kv->keys = n ? xcalloc(n, sizeof(*kv->keys)) : NULL;
    kv->values = n ? xcalloc(n, sizeof(*kv->values)) : NULL;
    for (i = 0; i < n; i++) {
        kv->n = i;
        if (!get_str(r, &kv->keys[i], UINT32_MAX)) {
            return false;
        }
        if (!get_str(r, &kv->values[i], UINT32_MAX)) {
            free(kv->keys[i].p);
            return false;
        }
    }
    kv->n = n;
    return true;
}

/* One entry, checked against what the commands can produce: valid names,
 * 0 < gen < move_gen < next_gen while moving, a key seen once. */
static bool get_place(struct le_reader *r, struct mdir *d)
{
    const char *vhost, *queue, *shard, *target;
    size_t vlen, qlen, slen, tlen;
    uint64_t gen, move_gen;
    struct mplace *e;

    if (!get_raw(r, &vhost, &vlen, META_SM_NAME_MAX) ||
        !get_raw(r, &queue, &qlen, META_SM_NAME_MAX) ||
        !get_raw(r, &shard, &slen, META_SM_SHARD_MAX) ||
        !shard_name_ok(shard, slen) || !le_get_u64(r, &gen) || gen == 0 ||
        gen >= d->next_gen ||
        !get_raw(r, &target, &tlen, META_SM_SHARD_MAX) ||
        !le_get_u64(r, &move_gen) ||
        dir_find(d, vhost, vlen, queue, qlen) != NULL) {
        return false;
    }
    if (tlen == 0 ? move_gen != 0
                  : !shard_name_ok(target, tlen) ||
                        (tlen == slen && memcmp(target, shard, slen) == 0) ||
                        move_gen <= gen || move_gen >= d->next_gen) {
        return false;
    }
    e = dir_add(d, vhost, vlen, queue, qlen, shard, slen, gen);
    if (tlen > 0) {
        set_target(e, target, tlen, move_gen);
    }
    return true;
}

static bool get_dir(struct le_reader *r, struct mdir *d)
{
    size_t buckets = 64;
    uint32_t n;
    uint32_t i;

    if (!le_get_u64(r, &d->next_gen) || d->next_gen == 0 ||
        !le_get_u32(r, &n) || n > r->left / SNAP_PLACE_FIXED) {
        return false;
    }
    while (buckets < n) {
        buckets *= 2;
    }
    if (n > 0) {
        dir_resize(d, buckets); /* once, not at every doubling */
    }
    for (i = 0; i < n; i++) {
        if (!get_place(r, d)) {
            return false;
        }
    }
    return true;
}

int meta_sm_restore(struct meta_sm *sm, const void *buf, size_t len)
{
    struct le_reader r = {buf, len};
    struct meta_sm tmp = {0};
    uint32_t magic;
    uint32_t ver;
    uint32_t n;
    uint32_t i;

    tmp.dir.next_gen = 1; /* what format 1 implies */
    if (!le_get_u32(&r, &magic) || magic != SNAP_MAGIC ||
        !le_get_u32(&r, &ver) ||
        (ver != SNAP_VERSION && ver != SNAP_VERSION_NO_DIR) ||
        !le_get_u64(&r, &tmp.version) || !le_get_u32(&r, &n) ||
        n > r.left / 10) {
        return -1;
    }
    tmp.ex = n ? xcalloc(n, sizeof(*tmp.ex)) : NULL;
    tmp.cap_ex = n;
    for (i = 0; i < n; i++) {
        struct mexch *e = &tmp.ex[i];
        uint8_t type;
        uint8_t flags;

        tmp.n_ex = i + 1;
        if (!get_str(&r, &e->vhost, META_SM_NAME_MAX) ||
            !get_str(&r, &e->name, META_SM_NAME_MAX) ||
            !le_get_u8(&r, &type) || type >= META_SM_EXCHANGE_TYPE__COUNT ||
            !le_get_u8(&r, &flags) || flags > 15 ||
            !get_kvs(&r, &e->args)) {
            goto err;
        }
        e->type = type;
        e->durable = flags & 1;
        e->auto_delete = flags & 2;
        e->internal = flags & 4;
        e->had_binding = flags & 8;
    }
    if (!le_get_u32(&r, &n) || n > r.left / 17) {
        goto err;
    }
    tmp.bind = n ? xcalloc(n, sizeof(*tmp.bind)) : NULL;
    tmp.cap_bind = n;
    for (i = 0; i < n; i++) {
        struct mbind *b = &tmp.bind[i];
        uint8_t is_ex;

        tmp.n_bind = i + 1;
        if (!get_str(&r, &b->vhost, META_SM_NAME_MAX) ||
            !get_str(&r, &b->source, META_SM_NAME_MAX) ||
            !get_str(&r, &b->dest, META_SM_NAME_MAX) ||
            !get_str(&r, &b->key, META_SM_NAME_MAX) ||
            !le_get_u8(&r, &is_ex) || is_ex > 1 || !get_kvs(&r, &b->args)) {
            goto err;
        }
        b->dest_is_exchange = is_ex;
    }
    if ((ver == SNAP_VERSION && !get_dir(&r, &tmp.dir)) || r.left != 0) {
        goto err;
    }
    clear_all(sm);
    *sm = tmp;
    return 0;

err:
    clear_all(&tmp);
    return -1;
}

uint64_t meta_sm_digest(const struct meta_sm *sm)
{
    void *buf;
    size_t len;
    uint64_t h;

    if (meta_sm_snapshot(sm, xmalloc, &buf, &len) != 0) {
        return 0;
    }
    h = fnv1a64(buf, len); /* over the snapshot */
    free(buf);
    return h;
}
