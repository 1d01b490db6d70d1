/*
 * meta_sm: see meta_sm.h.
 *
 * Exchanges and bindings are each kept in a list in creation order, which
 * is the same on every replica, so snapshots are byte-identical and the
 * digest hashes them. Derived indexes (rebuilt by restore, never in a
 * snapshot) make each command cost what it touches: exchanges by name,
 * bindings by their identity (bind and unbind find a duplicate or their
 * binding at once), and groups of bindings, each in creation order: from
 * one exchange (routing, auto-delete, exchange deletion), to one queue
 * (QUEUE_GONE) and to one exchange (its deletion). An auto-delete
 * exchange left without bindings from it is put on a candidate list when
 * its last one goes (or by restore), and a sweep looks at those only: the
 * exchanges an old sweep over all of them deleted (deleting one only
 * removes bindings, so it can only make more qualify: the set is the same
 * in any order).
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
#include "common/container_of.h"
#include "common/fnv.h"
#include "common/invariant.h"
#include "common/le.h"
#include "sm/dlist.h"
#include "sm/htable.h"

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
    struct hnode hn;           /* exchange table, by exch_hash() */
    struct mexch *prev, *next; /* creation order */
    struct mexch *cand_prev, *cand_next; /* auto-delete candidates */
    bool cand;
    struct mstr vhost;
    struct mstr name;
    enum meta_sm_exchange_type type;
    bool durable;
    bool auto_delete;
    bool internal;
    bool had_binding; /* auto-delete applies only after a first binding */
    struct mkvs args;
};

/* What a group of bindings has in common, with the vhost: its source
 * exchange, or its destination queue or exchange. */
enum group_kind { GROUP_FROM = 0, GROUP_TO_QUEUE, GROUP_TO_EXCHANGE };

/* The bindings of one group, in creation order: exists while it has
 * one. */
struct mgroup {
    struct hnode hn; /* group table, by group_hash() */
    uint8_t kind;    /* enum group_kind */
    struct mstr vhost;
    struct mstr name;
    struct mbind *first, *last;
    size_t n;
};

struct mbind {
    struct hnode hn;           /* binding table, by bind_hash(): identity */
    struct mbind *prev, *next; /* creation order */
    uint64_t seq;              /* rank in creation order */
    struct mgroup *from;       /* the bindings from its source */
    struct mbind *from_prev, *from_next;
    struct mgroup *to;         /* the bindings to its destination */
    struct mbind *to_prev, *to_next;
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
    struct htable exchanges;
    struct mexch *ex_first, *ex_last;
    struct mexch *cand_first, *cand_last;
    struct htable bindings;
    struct mbind *b_first, *b_last;
    uint64_t b_seq; /* bindings created so far, to rank them */
    struct htable groups;
    struct mdir dir;
    /* meta_sm_visits(): not state, and behind a pointer so that const
     * readers (routing) count too */
    uint64_t *visits;
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
    free(e);
}

static void bind_free(struct mbind *b)
{
    free(b->vhost.p);
    free(b->source.p);
    free(b->dest.p);
    free(b->key.p);
    kvs_free(&b->args);
    free(b);
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

static void visit(const struct meta_sm *sm)
{
    (*sm->visits)++;
}

/* Any good spread will do (table layouts are never serialized); each
 * string hashed alone so ("ab", "c") and ("a", "bc") differ. */
static uint64_t hash_more(uint64_t h, const void *p, size_t len)
{
    uint64_t x = fnv1a64(p, len);

    h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h ^ (h >> 29);
}

static uint64_t exch_hash(const char *vhost, size_t vlen, const char *name,
                          size_t nlen)
{
    return hash_more(hash_more(1, vhost, vlen), name, nlen);
}

static struct mexch *find_exchange(const struct meta_sm *sm, const char *vhost,
                                   size_t vlen, const char *name, size_t nlen)
{
    uint64_t h = exch_hash(vhost, vlen, name, nlen);
    struct hnode *n;

    for (n = ht_chain(&sm->exchanges, h); n != NULL; n = n->next) {
        struct mexch *e = container_of(n, struct mexch, hn);

        if (n->hash == h && mstr_eq(&e->vhost, vhost, vlen) &&
            mstr_eq(&e->name, name, nlen)) {
            return e;
        }
    }
    return NULL;
}

static void exch_link(struct meta_sm *sm, struct mexch *e)
{
    e->hn.hash = exch_hash(e->vhost.p, e->vhost.len, e->name.p, e->name.len);
    ht_insert(&sm->exchanges, &e->hn);
    DL_APPEND_VIA(sm->ex_first, sm->ex_last, e, prev, next);
}

static uint64_t group_hash(enum group_kind kind, const char *vhost,
                           size_t vlen, const char *name, size_t nlen)
{
    return hash_more(hash_more(16 + (uint64_t)kind, vhost, vlen), name,
                     nlen);
}

static struct mgroup *group_find(const struct meta_sm *sm,
                                 enum group_kind kind, const char *vhost,
                                 size_t vlen, const char *name, size_t nlen)
{
    uint64_t h = group_hash(kind, vhost, vlen, name, nlen);
    struct hnode *n;

    for (n = ht_chain(&sm->groups, h); n != NULL; n = n->next) {
        struct mgroup *g = container_of(n, struct mgroup, hn);

        if (n->hash == h && g->kind == kind && mstr_eq(&g->vhost, vhost, vlen) &&
            mstr_eq(&g->name, name, nlen)) {
            return g;
        }
    }
    return NULL;
}

static struct mgroup *group_get(struct meta_sm *sm, enum group_kind kind,
                                const struct mstr *vhost,
                                const struct mstr *name)
{
    struct mgroup *g =
        group_find(sm, kind, vhost->p, vhost->len, name->p, name->len);

    if (g == NULL) {
        g = xcalloc(1, sizeof(*g));
        g->kind = (uint8_t)kind;
        g->vhost = mstr_dup(vhost->p, vhost->len);
        g->name = mstr_dup(name->p, name->len);
        g->hn.hash = group_hash(kind, vhost->p, vhost->len, name->p,
                                name->len);
        ht_insert(&sm->groups, &g->hn);
    }
    return g;
}

static void group_put(struct meta_sm *sm, struct mgroup *g)
{
    if (g->n == 0) {
        ht_remove(&sm->groups, &g->hn);
        free(g->vhost.p);
        free(g->name.p);
        free(g);
    }
}

static uint64_t bind_hash(const char *vhost, size_t vlen, const char *source,
                          size_t slen, const char *dest, size_t dlen,
                          bool dest_is_exchange, const char *key, size_t klen,
                          const struct meta_sm_kv *args, size_t n_args)
{
    uint64_t h = hash_more(hash_more(2, vhost, vlen), source, slen);
    size_t i;

    h = hash_more(h ^ (dest_is_exchange ? 1 : 0), dest, dlen);
    h = hash_more(h, key, klen);
    for (i = 0; i < n_args; i++) {
        h = hash_more(h, args[i].key, args[i].key_len);
        h = hash_more(h, args[i].value, args[i].value_len);
    }
    return h;
}

/* The binding with @c's identity (vhost, source, destination, key,
 * arguments), or NULL. */
static struct mbind *find_binding(const struct meta_sm *sm,
                                  const struct meta_sm_cmd *c, uint64_t h);

/* Bindings a command builds are hashed from the command; a restored one
 * from its own fields, the same way. */
static uint64_t bind_hash_of(const struct mbind *b)
{
    struct meta_sm_kv *args =
        b->args.n ? xcalloc(b->args.n, sizeof(*args)) : NULL;
    uint64_t h;
    size_t i;

    for (i = 0; i < b->args.n; i++) {
        args[i].key = b->args.keys[i].p;
        args[i].key_len = b->args.keys[i].len;
        args[i].value = b->args.values[i].p;
        args[i].value_len = b->args.values[i].len;
    }
    h = bind_hash(b->vhost.p, b->vhost.len, b->source.p, b->source.len,
                  b->dest.p, b->dest.len, b->dest_is_exchange, b->key.p,
                  b->key.len, args, b->args.n);
    free(args);
    return h;
}

/* Last in creation order, in its groups; hn.hash set by the caller. */
static void bind_link(struct meta_sm *sm, struct mbind *b)
{
    struct mgroup *g;

    ht_insert(&sm->bindings, &b->hn);
    b->seq = sm->b_seq++;
    DL_APPEND_VIA(sm->b_first, sm->b_last, b, prev, next);
    g = group_get(sm, GROUP_FROM, &b->vhost, &b->source);
    b->from = g;
    DL_APPEND_VIA(g->first, g->last, b, from_prev, from_next);
    g->n++;
    g = group_get(sm, b->dest_is_exchange ? GROUP_TO_EXCHANGE
                                          : GROUP_TO_QUEUE,
                  &b->vhost, &b->dest);
    b->to = g;
    DL_APPEND_VIA(g->first, g->last, b, to_prev, to_next);
    g->n++;
}

static bool bindings_from(const struct meta_sm *sm, const struct mstr *vh,
                          const struct mstr *name)
{
    return group_find(sm, GROUP_FROM, vh->p, vh->len, name->p, name->len) !=
           NULL;
}

static bool auto_delete_due(const struct meta_sm *sm, const struct mexch *e)
{
    return e->auto_delete && e->had_binding &&
           !bindings_from(sm, &e->vhost, &e->name);
}

static void cand_add(struct meta_sm *sm, struct mexch *e)
{
    if (!e->cand) {
        DL_APPEND_VIA(sm->cand_first, sm->cand_last, e, cand_prev,
                      cand_next);
        e->cand = true;
    }
}

static void cand_remove(struct meta_sm *sm, struct mexch *e)
{
    if (e->cand) {
        DL_REMOVE_VIA(sm->cand_first, sm->cand_last, e, cand_prev,
                      cand_next);
        e->cand = false;
    }
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

static void state_init(struct meta_sm *sm)
{
    memset(sm, 0, sizeof(*sm));
    ht_init(&sm->exchanges, 0);
    ht_init(&sm->bindings, 0);
    ht_init(&sm->groups, 0);
    sm->dir.next_gen = 1;
    sm->visits = xcalloc(1, sizeof(*sm->visits));
}

struct meta_sm *meta_sm_new(void)
{
    struct meta_sm *sm = xmalloc(sizeof(struct meta_sm));

    state_init(sm);
    return sm;
}

/* Free everything @sm owns (not @sm). */
static void state_free(struct meta_sm *sm)
{
    struct mexch *e = sm->ex_first;
    struct mbind *b = sm->b_first;
    size_t i;

    while (e != NULL) {
        struct mexch *next = e->next;

        exch_free(e);
        e = next;
    }
    while (b != NULL) {
        struct mbind *next = b->next;

        bind_free(b);
        b = next;
    }
    /* groups are in no list but their table's */
    for (i = 0; sm->groups.b != NULL && i <= sm->groups.mask; i++) {
        struct hnode *n = sm->groups.b[i];

        while (n != NULL) {
            struct hnode *next = n->next;
            struct mgroup *g = container_of(n, struct mgroup, hn);

            free(g->vhost.p);
            free(g->name.p);
            free(g);
            n = next;
        }
    }
    ht_close(&sm->exchanges);
    ht_close(&sm->bindings);
    ht_close(&sm->groups);
    dir_clear(&sm->dir);
    free(sm->visits);
}

void meta_sm_free(struct meta_sm *sm)
{
    if (sm == NULL) {
        return;
    }
    state_free(sm);
    free(sm);
}

uint64_t meta_sm_visits(const struct meta_sm *sm)
{
    return *sm->visits;
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
    *exchanges = sm->exchanges.count;
    *bindings = sm->bindings.count;
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

static uint64_t bind_hash_cmd(const struct meta_sm_cmd *c)
{
    return bind_hash(c->vhost, c->vhost_len, c->exchange, c->exchange_len,
                     c->dest, c->dest_len, c->dest_is_exchange,
                     c->routing_key, c->routing_key_len, c->args, c->n_args);
}

static struct mbind *find_binding(const struct meta_sm *sm,
                                  const struct meta_sm_cmd *c, uint64_t h)
{
    struct hnode *n;

    for (n = ht_chain(&sm->bindings, h); n != NULL; n = n->next) {
        struct mbind *b = container_of(n, struct mbind, hn);

        if (n->hash != h) {
            continue; /* the table's load, not what the command touches */
        }
        visit(sm);
        if (bind_matches_cmd(b, c)) {
            return b;
        }
    }
    return NULL;
}

/* Its source exchange, if auto-delete and left without bindings from
 * it, becomes a candidate for the next sweep. */
static void remove_binding(struct meta_sm *sm, struct mbind *b)
{
    struct mgroup *from = b->from;
    struct mgroup *to = b->to;

    visit(sm);
    ht_remove(&sm->bindings, &b->hn);
    DL_REMOVE_VIA(sm->b_first, sm->b_last, b, prev, next);
    DL_REMOVE_VIA(from->first, from->last, b, from_prev, from_next);
    from->n--;
    DL_REMOVE_VIA(to->first, to->last, b, to_prev, to_next);
    to->n--;
    if (from->n == 0) {
        struct mexch *src = find_exchange(sm, b->vhost.p, b->vhost.len,
                                          b->source.p, b->source.len);

        if (src != NULL && src->auto_delete && src->had_binding) {
            cand_add(sm, src);
        }
    }
    group_put(sm, from);
    group_put(sm, to); /* another group: the kinds differ */
    bind_free(b);
}

/* Every binding of a group, which goes with its last one. */
static void remove_group(struct meta_sm *sm, enum group_kind kind,
                         const struct mstr *vhost, const struct mstr *name)
{
    struct mgroup *g =
        group_find(sm, kind, vhost->p, vhost->len, name->p, name->len);
    struct mbind *b = g != NULL ? g->first : NULL;

    while (b != NULL) {
        /* NULL after the last: the group is gone then */
        struct mbind *next = kind == GROUP_FROM ? b->from_next : b->to_next;

        remove_binding(sm, b);
        b = next;
    }
}

/* Only called for an exchange that had a binding once (auto-delete) or on
 * delete: drops every binding from or to it. */
static void remove_exchange(struct meta_sm *sm, struct mexch *e)
{
    remove_group(sm, GROUP_FROM, &e->vhost, &e->name);
    remove_group(sm, GROUP_TO_EXCHANGE, &e->vhost, &e->name);
    cand_remove(sm, e);
    ht_remove(&sm->exchanges, &e->hn);
    DL_REMOVE_VIA(sm->ex_first, sm->ex_last, e, prev, next);
    exch_free(e);
}

/* Auto-delete exchanges whose last binding as source went away: the
 * candidates, which removing one may add to. */
static void auto_delete_sweep(struct meta_sm *sm)
{
    struct mexch *e;

    while ((e = sm->cand_first) != NULL) {
        visit(sm);
        cand_remove(sm, e);
        if (auto_delete_due(sm, e)) {
            remove_exchange(sm, e);
        }
    }
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
    e = xcalloc(1, sizeof(*e));
    e->vhost = mstr_dup(c->vhost, c->vhost_len);
    e->name = mstr_dup(c->exchange, c->exchange_len);
    e->type = c->exchange_type;
    e->durable = c->durable;
    e->auto_delete = c->auto_delete;
    e->internal = c->internal;
    kvs_set(&e->args, c->args, c->n_args);
    exch_link(sm, e);
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
    if (c->if_unused && bindings_from(sm, &e->vhost, &e->name)) {
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
    uint64_t h;

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
    h = bind_hash_cmd(c);
    if (find_binding(sm, c, h) != NULL) {
        return;
    }
    src = find_exchange(sm, c->vhost, c->vhost_len, c->exchange,
                        c->exchange_len);
    if (src != NULL) {
        src->had_binding = true;
    }
    b = xcalloc(1, sizeof(*b));
    b->vhost = mstr_dup(c->vhost, c->vhost_len);
    b->source = mstr_dup(c->exchange, c->exchange_len);
    b->dest = mstr_dup(c->dest, c->dest_len);
    b->dest_is_exchange = c->dest_is_exchange;
    b->key = mstr_dup(c->routing_key, c->routing_key_len);
    kvs_set(&b->args, c->args, c->n_args);
    b->hn.hash = h;
    bind_link(sm, b);
    changed(sm, res);
}

static void unbind(struct meta_sm *sm, const struct meta_sm_cmd *c,
                   struct meta_sm_result *res)
{
    struct mbind *b;

    if (c->exchange_len == 0) {
        reply(res, 403,
              "ACCESS_REFUSED - operation not permitted on the default "
              "exchange");
        return;
    }
    b = find_binding(sm, c, bind_hash_cmd(c));
    if (b != NULL) {
        remove_binding(sm, b);
        auto_delete_sweep(sm);
        changed(sm, res);
    }
}

static void queue_gone(struct meta_sm *sm, const struct meta_sm_cmd *c,
                       struct meta_sm_result *res)
{
    struct mplace *e =
        dir_find(&sm->dir, c->vhost, c->vhost_len, c->dest, c->dest_len);
    struct mstr vhost = {(char *)(uintptr_t)c->vhost, c->vhost_len};
    struct mstr queue = {(char *)(uintptr_t)c->dest, c->dest_len};
    bool any = false;

    if (c->gen != 0 && e != NULL && e->gen != c->gen) {
        return; /* created again since: its bindings are the new queue's */
    }
    if (c->gen != 0 && e != NULL && e->target == NULL) {
        dir_remove(&sm->dir, e);
        any = true;
    }
    if (group_find(sm, GROUP_TO_QUEUE, c->vhost, c->vhost_len, c->dest,
                   c->dest_len) != NULL) {
        remove_group(sm, GROUP_TO_QUEUE, &vhost, &queue);
        any = true;
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
                       sm->dir.n + sm->exchanges.count +
                           sm->bindings.count)) {
        meta_sm_check(sm);
    }
}

static bool mstr_same(const struct mstr *a, const struct mstr *b)
{
    return mstr_eq(a, b->p, b->len);
}

static bool bind_same(const struct mbind *a, const struct mbind *b)
{
    size_t i;

    if (!mstr_same(&a->vhost, &b->vhost) ||
        !mstr_same(&a->source, &b->source) ||
        !mstr_same(&a->dest, &b->dest) ||
        a->dest_is_exchange != b->dest_is_exchange ||
        !mstr_same(&a->key, &b->key) || a->args.n != b->args.n) {
        return false;
    }
    for (i = 0; i < a->args.n; i++) {
        if (!mstr_same(&a->args.keys[i], &b->args.keys[i]) ||
            !mstr_same(&a->args.values[i], &b->args.values[i])) {
            return false;
        }
    }
    return true;
}

/* One group: its bindings point back to it, in creation order, and are
 * what it names; adds its length to @n. */
static void check_group(const struct mgroup *g, size_t *n)
{
    const struct mbind *b;
    size_t k = 0;

    INVARIANT(g->first != NULL && g->n > 0);
    for (b = g->first; b != NULL;
         b = g->kind == GROUP_FROM ? b->from_next : b->to_next) {
        const struct mbind *next =
            g->kind == GROUP_FROM ? b->from_next : b->to_next;

        INVARIANT((g->kind == GROUP_FROM ? b->from : b->to) == g);
        INVARIANT(mstr_eq(&b->vhost, g->vhost.p, g->vhost.len));
        INVARIANT(g->kind == GROUP_FROM
                      ? mstr_eq(&b->source, g->name.p, g->name.len)
                      : mstr_eq(&b->dest, g->name.p, g->name.len) &&
                            b->dest_is_exchange ==
                                (g->kind == GROUP_TO_EXCHANGE));
        INVARIANT(next == NULL || b->seq < next->seq);
        INVARIANT(next != NULL || g->last == b);
        k++;
    }
    INVARIANT(k == g->n);
    *n += k;
}

/* The derived indexes agree with a walk over every exchange and binding:
 * each is found by its name or identity, each binding is in its two
 * groups, every group in creation order, and every auto-delete exchange
 * left without bindings from it is a sweep's candidate. */
static void check_indexes(const struct meta_sm *sm)
{
    const struct mexch *e;
    const struct mbind *b;
    size_t n = 0, grouped = 0, cands = 0;
    size_t i;

    for (e = sm->ex_first; e != NULL; e = e->next) {
        INVARIANT(find_exchange(sm, e->vhost.p, e->vhost.len, e->name.p,
                                e->name.len) == e);
        INVARIANT(e->cand || !auto_delete_due(sm, e));
        cands += e->cand;
        n++;
    }
    INVARIANT(n == sm->exchanges.count);
    for (e = sm->cand_first; e != NULL; e = e->cand_next) {
        INVARIANT(e->cand);
        cands--;
    }
    INVARIANT(cands == 0);
    n = 0;
    for (b = sm->b_first; b != NULL; b = b->next) {
        const struct hnode *h;

        INVARIANT(b->next == NULL || b->seq < b->next->seq);
        INVARIANT(b->hn.hash == bind_hash_of(b));
        /* in its chain, after no other with its identity */
        for (h = ht_chain(&sm->bindings, b->hn.hash); h != &b->hn;
             h = h->next) {
            INVARIANT(h != NULL);
            INVARIANT(!bind_same(container_of(h, const struct mbind, hn), b));
        }
        INVARIANT(b->from == group_find(sm, GROUP_FROM, b->vhost.p,
                                        b->vhost.len, b->source.p,
                                        b->source.len));
        INVARIANT(b->to == group_find(sm,
                                      b->dest_is_exchange ? GROUP_TO_EXCHANGE
                                                          : GROUP_TO_QUEUE,
                                      b->vhost.p, b->vhost.len, b->dest.p,
                                      b->dest.len));
        n++;
    }
    INVARIANT(n == sm->bindings.count);
    for (i = 0; i <= sm->groups.mask; i++) {
        const struct hnode *h;

        for (h = sm->groups.b[i]; h != NULL; h = h->next) {
            check_group(container_of(h, const struct mgroup, hn), &grouped);
        }
    }
    INVARIANT(grouped == 2 * sm->bindings.count);
}

void meta_sm_check(const struct meta_sm *sm)
{
    const struct mdir *d = &sm->dir;
    const struct mplace *e, *prev = NULL;
    size_t n = 0;

    check_indexes(sm);
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

/* The queues a route found so far, each once: a set of their indexes in
 * the result, by name hash (open addressing, at most half full), so a
 * publish reaching k queues costs O(k), not O(k^2). */
struct route_acc {
    const struct meta_sm *sm;
    struct meta_sm_route_result *out;
    size_t cap;     /* of out->queues */
    uint32_t *slot; /* index + 1, 0 = free */
    size_t mask;
};

static void acc_grow(struct route_acc *a)
{
    size_t n = a->mask ? 2 * (a->mask + 1) : 16;
    size_t i;

    free(a->slot);
    a->slot = xcalloc(n, sizeof(*a->slot));
    a->mask = n - 1;
    for (i = 0; i < a->out->n_queues; i++) {
        size_t at = fnv1a64(a->out->queues[i].name, a->out->queues[i].len);

        while (a->slot[at & a->mask] != 0) {
            at++;
        }
        a->slot[at & a->mask] = (uint32_t)(i + 1);
    }
}

static void add_queue(struct route_acc *a, const char *name, size_t len)
{
    struct meta_sm_route_result *out = a->out;
    size_t at = fnv1a64(name, len);
    uint32_t k;

    if (2 * (out->n_queues + 1) > a->mask + 1) {
        acc_grow(a);
    }
    while ((k = a->slot[at & a->mask]) != 0) {
        visit(a->sm);
        if (out->queues[k - 1].len == len &&
            memcmp(out->queues[k - 1].name, name, len) == 0) {
            return;
        }
        at++;
    }
    if (out->n_queues == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 4;
        out->queues = xrealloc(out->queues, a->cap * sizeof(*out->queues));
    }
    a->slot[at & a->mask] = (uint32_t)(out->n_queues + 1);
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
    struct route_acc acc = {sm, out, 0, NULL, 0};
    struct mstr *todo;
    size_t n_todo = 1;
    size_t cap = 8;
    size_t at;

    meta_sm_route_result_init(out);
    if (exchange_len == 0) {
        add_queue(&acc, routing_key, routing_key_len);
        free(acc.slot);
        return 0;
    }
    if (meta_sm_exchange_info(sm, vhost, vhost_len, exchange, exchange_len,
                              NULL, NULL, NULL) != 0) {
        out->exchange_missing = true;
        return 0;
    }
    todo = xmalloc(cap * sizeof(*todo));
    todo[0].p = (char *)exchange;
    todo[0].len = exchange_len;
    for (at = 0; at < n_todo; at++) {
        enum meta_sm_exchange_type type;
        const struct mgroup *g;
        const struct mbind *b;

        if (meta_sm_exchange_info(sm, vhost, vhost_len, todo[at].p,
                                  todo[at].len, &type, NULL, NULL) != 0) {
            continue;
        }
        g = group_find(sm, GROUP_FROM, vhost, vhost_len, todo[at].p,
                       todo[at].len);
        for (b = g != NULL ? g->first : NULL; b != NULL; b = b->from_next) {
            size_t k;

            visit(sm);
            if (!binding_routes(b, type, routing_key, routing_key_len,
                                headers, n_headers)) {
                continue;
            }
            if (!b->dest_is_exchange) {
                add_queue(&acc, b->dest.p, b->dest.len);
                continue;
            }
            for (k = 0; k < n_todo; k++) {
                if (mstr_eq(&todo[k], b->dest.p, b->dest.len)) {
                    break;
                }
            }
            if (k == n_todo) {
                if (n_todo == cap) {
                    cap *= 2;
                    todo = xrealloc(todo, cap * sizeof(*todo));
                }
                todo[n_todo++] = b->dest;
            }
        }
    }
    free(todo);
    free(acc.slot);
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
    const struct mexch *e;
    const struct mbind *b;

    for (e = sm->ex_first; e != NULL; e = e->next) {
        len += 8 + e->vhost.len + e->name.len + 2 + kvs_size(&e->args);
    }
    for (b = sm->b_first; b != NULL; b = b->next) {
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
    p = le_put_u32(p, (uint32_t)sm->exchanges.count);
    for (e = sm->ex_first; e != NULL; e = e->next) {
        p = put_str(p, &e->vhost);
        p = put_str(p, &e->name);
        *p++ = (unsigned char)e->type;
        *p++ = (unsigned char)((e->durable ? 1 : 0) | (e->auto_delete ? 2 : 0) |
                               (e->internal ? 4 : 0) |
                               (e->had_binding ? 8 : 0));
        p = put_kvs(p, &e->args);
    }
    p = le_put_u32(p, (uint32_t)sm->bindings.count);
    for (b = sm->b_first; b != NULL; b = b->next) {
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

/* One exchange, appended; false if bad or a name seen twice. */
static bool get_exchange(struct le_reader *r, struct meta_sm *sm)
{
    struct mexch *e = xcalloc(1, sizeof(*e));
    uint8_t type;
    uint8_t flags;

    if (!get_str(r, &e->vhost, META_SM_NAME_MAX) ||
        !get_str(r, &e->name, META_SM_NAME_MAX) || !le_get_u8(r, &type) ||
        type >= META_SM_EXCHANGE_TYPE__COUNT || !le_get_u8(r, &flags) ||
        flags > 15 || !get_kvs(r, &e->args) ||
        find_exchange(sm, e->vhost.p, e->vhost.len, e->name.p,
                      e->name.len) != NULL) {
        exch_free(e);
        return false;
    }
    e->type = type;
    e->durable = flags & 1;
    e->auto_delete = flags & 2;
    e->internal = flags & 4;
    e->had_binding = flags & 8;
    exch_link(sm, e);
    return true;
}

/* One binding, appended; false if bad or its identity seen twice. */
static bool get_binding(struct le_reader *r, struct meta_sm *sm)
{
    struct mbind *b = xcalloc(1, sizeof(*b));
    const struct hnode *h;
    uint8_t is_ex;

    if (!get_str(r, &b->vhost, META_SM_NAME_MAX) ||
        !get_str(r, &b->source, META_SM_NAME_MAX) ||
        !get_str(r, &b->dest, META_SM_NAME_MAX) ||
        !get_str(r, &b->key, META_SM_NAME_MAX) || !le_get_u8(r, &is_ex) ||
        is_ex > 1 || !get_kvs(r, &b->args)) {
        goto err;
    }
    b->dest_is_exchange = is_ex;
    b->hn.hash = bind_hash_of(b);
    for (h = ht_chain(&sm->bindings, b->hn.hash); h != NULL; h = h->next) {
        if (bind_same(container_of(h, const struct mbind, hn), b)) {
            goto err;
        }
    }
    bind_link(sm, b);
    return true;

err:
    bind_free(b);
    return false;
}

int meta_sm_restore(struct meta_sm *sm, const void *buf, size_t len)
{
    struct le_reader r = {buf, len};
    struct meta_sm tmp;
    struct mexch *e;
    uint32_t magic;
    uint32_t ver;
    uint32_t n;
    uint32_t i;

    state_init(&tmp); /* next gen 1: what format 1 implies */
    if (!le_get_u32(&r, &magic) || magic != SNAP_MAGIC ||
        !le_get_u32(&r, &ver) ||
        (ver != SNAP_VERSION && ver != SNAP_VERSION_NO_DIR) ||
        !le_get_u64(&r, &tmp.version) || !le_get_u32(&r, &n) ||
        n > r.left / 10) {
        goto err;
    }
    for (i = 0; i < n; i++) {
        if (!get_exchange(&r, &tmp)) {
            goto err;
        }
    }
    if (!le_get_u32(&r, &n) || n > r.left / 17) {
        goto err;
    }
    for (i = 0; i < n; i++) {
        if (!get_binding(&r, &tmp)) {
            goto err;
        }
    }
    if ((ver == SNAP_VERSION && !get_dir(&r, &tmp.dir)) || r.left != 0) {
        goto err;
    }
    /* the next sweep looks at these, as a sweep over every exchange would
     * (commands never leave one: only a crafted snapshot could) */
    for (e = tmp.ex_first; e != NULL; e = e->next) {
        if (auto_delete_due(&tmp, e)) {
            cand_add(&tmp, e);
        }
    }
    state_free(sm);
    *sm = tmp;
    return 0;

err:
    state_free(&tmp);
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
