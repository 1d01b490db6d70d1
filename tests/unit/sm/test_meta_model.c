/*
 * Model-based random test of sm/meta_sm: seeded random streams of meta
 * commands go to several replicas and to a small reference model written
 * here from the contract (meta_sm.h, RabbitMQ's exchange and binding
 * rules). After every step each replica's answer (reply code, changed,
 * version, the directory entry) must be the model's; then every replica's
 * counts, exchange lookups, directory entries (and their creation order)
 * and the routes of random publishes must be the model's, and all replicas'
 * digests and snapshot bytes must be equal.
 *
 * Replicas: meta_sm has no local settings, so three alike, and one that
 * is, at random points, replaced by a fresh machine restored from a
 * snapshot of another replica, which then continues with the stream.
 *
 * Covered: EXCHANGE_DECLARE (create, equal and inequivalent redeclares,
 * passive, pre-declared names, the reserved amq. prefix), EXCHANGE_DELETE
 * (if-unused, pre-declared refused, missing is fine), BIND/UNBIND to queues
 * and exchanges (the default exchange refused, missing exchanges, repeats),
 * auto-delete exchanges, QUEUE_GONE with and without a gen, and the queue
 * directory: QUEUE_PLACE (create, re-place with replace_gen), MOVE_BEGIN,
 * MOVE_COMMIT, MOVE_ABORT, FORGET, with stale and repeated arguments and
 * bad shard names. Routing: direct, fanout, topic (with '*', '#', empty
 * keys and empty words), headers (x-match all, any, all-with-x,
 * any-with-x, void values), exchange-to-exchange bindings with cycles, the
 * default exchange, two vhosts. Left out: exchange arguments (kept, never
 * compared: always none here), unknown exchange types (503), names over
 * 255 bytes (502).
 *
 * The model is plain arrays in creation order (exchanges, bindings,
 * directory entries); routes are the closure of the exchanges reachable by
 * matching bindings, compared as sets.
 *
 * RINGMQ_TEST_SEED, RINGMQ_MODEL_SEEDS, RINGMQ_MODEL_STEPS: see model_run.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model_run.h"
#include "sm/meta_sm.h"

#define N_REPLICAS 4
#define RESTORED (N_REPLICAS - 1)
#define MAX_EX 32
#define MAX_BIND 4096
#define MAX_DIR 16

/* ------------------------------------------------------------ vocabulary */

static const char *const vhosts[] = {"/", "v"};
#define N_VHOSTS 2

/* user exchanges first, then pre-declared ones, then a reserved name */
static const char *const exchanges[] = {
    "e1", "e2", "e3", "e4", "e5", "",
    "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match",
    "amq.mine",
};
#define N_EXNAMES 12
#define N_USER_EX 5

static const struct {
    const char *name;
    enum meta_sm_exchange_type type;
} predeclared[] = {
    {"", META_SM_DIRECT},           {"amq.direct", META_SM_DIRECT},
    {"amq.fanout", META_SM_FANOUT}, {"amq.topic", META_SM_TOPIC},
    {"amq.headers", META_SM_HEADERS}, {"amq.match", META_SM_HEADERS},
};
#define N_PRE 6

static const char *const queues[] = {"q1", "q2", "q3", "q4"};
#define N_QNAMES 4

static const char *const keys[] = {
    "", "a", "b", "a.b", "a.b.c", "b.a", "a..b", ".", "c.a.b", "a.c",
};
#define N_KEYS 10

static const char *const topic_keys[] = {
    "#", "*", "a.#", "#.b", "a.*", "*.b", "a.b", "", "#.#", "*.*",
    "a.#.c", "#.a.#", "a", "*.#", "..",
};
#define N_TOPIC_KEYS 15

static const char *const shards[] = {"s1", "s2", "s3"};
#define N_SHARDS 3

/* Field values as encoded in an AMQP field table. */
#define LONGSTR(s) "S\0\0\0\1" s
static const struct meta_sm_kv hv_1 = {"h1", 2, LONGSTR("1"), 6};
static const struct meta_sm_kv hv_2 = {"h1", 2, LONGSTR("2"), 6};
static const struct meta_sm_kv hv_h2 = {"h2", 2, LONGSTR("1"), 6};
static const struct meta_sm_kv hv_x = {"x-h", 3, LONGSTR("1"), 6};

#define XMATCH(mode) {"x-match", 7, "S\0\0\0" mode, 0}

/* Binding argument sets, all different (bindings compare them byte-wise).
 * The value lengths of x-match are filled in at start. */
static struct meta_sm_kv argsets[][4] = {
    {{0}},
    {XMATCH("\3all"), {"h1", 2, LONGSTR("1"), 6}},
    {XMATCH("\3any"), {"h1", 2, LONGSTR("2"), 6}, {"h2", 2, LONGSTR("1"), 6}},
    {XMATCH("\3all"), {"h1", 2, LONGSTR("1"), 6}, {"h2", 2, "V", 1}},
    {XMATCH("\12all-with-x"), {"x-h", 3, LONGSTR("1"), 6}},
    {XMATCH("\12any-with-x"), {"x-h", 3, LONGSTR("1"), 6},
     {"h2", 2, LONGSTR("2"), 6}},
    {XMATCH("\3any"), {"x-h", 3, LONGSTR("1"), 6}},
    {{"h2", 2, "V", 1}}, /* no x-match: all */
    {XMATCH("\3all")},
};
static const size_t argset_n[] = {0, 2, 3, 3, 2, 3, 2, 1, 1};
#define N_ARGSETS 9

static void argsets_init(void)
{
    for (int i = 0; i < N_ARGSETS; i++) {
        for (size_t k = 0; k < argset_n[i]; k++) {
            struct meta_sm_kv *kv = &argsets[i][k];
            if (kv->key_len == 7 && memcmp(kv->key, "x-match", 7) == 0) {
                kv->value_len = 5 + (size_t)((const char *)kv->value)[4];
            }
        }
    }
}

/* ------------------------------------------------------------------ model */

struct m_ex {
    int vhost, name; /* indexes into the vocabularies */
    enum meta_sm_exchange_type type;
    bool durable, auto_delete, internal, had_binding;
};

struct m_bind {
    int vhost, source, dest;
    bool dest_is_exchange;
    const char *key;
    int args;
};

struct m_place {
    int vhost, queue;
    int shard;
    uint64_t gen;
    bool moving;
    int target;
    uint64_t move_gen;
};

struct model {
    struct m_ex ex[MAX_EX];
    int n_ex;
    struct m_bind b[MAX_BIND];
    int n_b;
    struct m_place d[MAX_DIR];
    int n_d;
    uint64_t next_gen;
    uint64_t version;
};

static int pre_index(int name)
{
    for (int i = 0; i < N_PRE; i++) {
        if (strcmp(predeclared[i].name, exchanges[name]) == 0) {
            return i;
        }
    }
    return -1;
}

static int find_ex(const struct model *m, int vhost, int name)
{
    for (int i = 0; i < m->n_ex; i++) {
        if (m->ex[i].vhost == vhost && m->ex[i].name == name) {
            return i;
        }
    }
    return -1;
}

/* Whether an exchange exists and its type. */
static bool ex_type(const struct model *m, int vhost, int name,
                    enum meta_sm_exchange_type *type)
{
    int pre = pre_index(name);
    int i;

    if (pre >= 0) {
        *type = predeclared[pre].type;
        return true;
    }
    i = find_ex(m, vhost, name);
    if (i >= 0) {
        *type = m->ex[i].type;
    }
    return i >= 0;
}

static void remove_bind(struct model *m, int i)
{
    memmove(&m->b[i], &m->b[i + 1], (size_t)(m->n_b - i - 1) * sizeof(m->b[0]));
    m->n_b--;
}

static bool has_source_bindings(const struct model *m, int vhost, int name)
{
    for (int i = 0; i < m->n_b; i++) {
        if (m->b[i].vhost == vhost && m->b[i].source == name) {
            return true;
        }
    }
    return false;
}

/* An exchange goes with every binding from or to it. */
static void remove_ex(struct model *m, int i)
{
    int vhost = m->ex[i].vhost, name = m->ex[i].name;

    for (int k = m->n_b - 1; k >= 0; k--) {
        if (m->b[k].vhost == vhost &&
            (m->b[k].source == name ||
             (m->b[k].dest_is_exchange && m->b[k].dest == name))) {
            remove_bind(m, k);
        }
    }
    memmove(&m->ex[i], &m->ex[i + 1],
            (size_t)(m->n_ex - i - 1) * sizeof(m->ex[0]));
    m->n_ex--;
}

/* Auto-delete exchanges that had a binding and have none as source now;
 * removing one can empty another. */
static void auto_delete(struct model *m)
{
    bool again = true;

    while (again) {
        again = false;
        for (int i = 0; i < m->n_ex; i++) {
            if (m->ex[i].auto_delete && m->ex[i].had_binding &&
                !has_source_bindings(m, m->ex[i].vhost, m->ex[i].name)) {
                remove_ex(m, i);
                again = true;
                break;
            }
        }
    }
}

static int find_place(const struct model *m, int vhost, int queue)
{
    for (int i = 0; i < m->n_d; i++) {
        if (m->d[i].vhost == vhost && m->d[i].queue == queue) {
            return i;
        }
    }
    return -1;
}

/* What a command is, in model terms. shard/target: -1 a bad name. */
struct step {
    struct meta_sm_cmd cmd;
    int vhost, ex, dest, shard, target, args;
    const char *key;
};

struct m_answer {
    uint16_t code;
    bool changed;
    bool has_place;
    int place; /* index of the entry after the command, -1: none */
};

static void change(struct model *m, struct m_answer *a)
{
    m->version++;
    a->changed = true;
}

static void m_exchange_declare(struct model *m, const struct step *s,
                               struct m_answer *a)
{
    const struct meta_sm_cmd *c = &s->cmd;
    int pre = pre_index(s->ex);
    int i;

    if (pre >= 0) {
        if (!c->passive && (predeclared[pre].type != c->exchange_type ||
                            !c->durable || c->auto_delete || c->internal)) {
            a->code = 406;
        }
        return;
    }
    i = find_ex(m, s->vhost, s->ex);
    if (c->passive) {
        a->code = i < 0 ? 404 : 0;
        return;
    }
    if (i >= 0) {
        const struct m_ex *e = &m->ex[i];
        if (e->type != c->exchange_type || e->durable != c->durable ||
            e->auto_delete != c->auto_delete || e->internal != c->internal) {
            a->code = 406;
        }
        return;
    }
    if (strncmp(exchanges[s->ex], "amq.", 4) == 0) {
        a->code = 403;
        return;
    }
    assert_true(m->n_ex < MAX_EX);
    m->ex[m->n_ex++] = (struct m_ex){s->vhost, s->ex, c->exchange_type,
                                     c->durable, c->auto_delete, c->internal,
                                     false};
    change(m, a);
}

static void m_exchange_delete(struct model *m, const struct step *s,
                              struct m_answer *a)
{
    int i;

    if (pre_index(s->ex) >= 0) {
        a->code = 403;
        return;
    }
    i = find_ex(m, s->vhost, s->ex);
    if (i < 0) {
        return; /* RabbitMQ 3: deleting a missing exchange is fine */
    }
    if (s->cmd.if_unused && has_source_bindings(m, s->vhost, s->ex)) {
        a->code = 406;
        return;
    }
    remove_ex(m, i);
    auto_delete(m);
    change(m, a);
}

static int find_bind(const struct model *m, const struct step *s)
{
    for (int i = 0; i < m->n_b; i++) {
        const struct m_bind *b = &m->b[i];
        if (b->vhost == s->vhost && b->source == s->ex &&
            b->dest == s->dest &&
            b->dest_is_exchange == s->cmd.dest_is_exchange &&
            strcmp(b->key, s->key) == 0 && b->args == s->args) {
            return i;
        }
    }
    return -1;
}

static void m_bind(struct model *m, const struct step *s, struct m_answer *a)
{
    const struct meta_sm_cmd *c = &s->cmd;
    enum meta_sm_exchange_type t;
    int src;

    if (exchanges[s->ex][0] == '\0' ||
        (c->dest_is_exchange && exchanges[s->dest][0] == '\0')) {
        a->code = 403;
        return;
    }
    if (!ex_type(m, s->vhost, s->ex, &t) ||
        (c->dest_is_exchange && !ex_type(m, s->vhost, s->dest, &t))) {
        a->code = 404;
        return;
    }
    if (find_bind(m, s) >= 0) {
        return; /* already bound: nothing to do */
    }
    src = find_ex(m, s->vhost, s->ex);
    if (src >= 0) {
        m->ex[src].had_binding = true;
    }
    assert_true(m->n_b < MAX_BIND);
    m->b[m->n_b++] = (struct m_bind){s->vhost, s->ex, s->dest,
                                     c->dest_is_exchange, s->key, s->args};
    change(m, a);
}

static void m_unbind(struct model *m, const struct step *s,
                     struct m_answer *a)
{
    int i;

    if (exchanges[s->ex][0] == '\0') {
        a->code = 403;
        return;
    }
    i = find_bind(m, s);
    if (i >= 0) {
        remove_bind(m, i);
        auto_delete(m);
        change(m, a);
    }
}

static void m_queue_gone(struct model *m, const struct step *s,
                         struct m_answer *a)
{
    uint64_t gen = s->cmd.gen;
    int e = find_place(m, s->vhost, s->dest);
    bool any = false;

    if (gen != 0 && e >= 0 && m->d[e].gen != gen) {
        return; /* the queue was created again: its bindings stay */
    }
    if (gen != 0 && e >= 0 && !m->d[e].moving) {
        memmove(&m->d[e], &m->d[e + 1],
                (size_t)(m->n_d - e - 1) * sizeof(m->d[0]));
        m->n_d--;
        any = true;
    }
    for (int i = m->n_b - 1; i >= 0; i--) {
        if (!m->b[i].dest_is_exchange && m->b[i].vhost == s->vhost &&
            m->b[i].dest == s->dest) {
            remove_bind(m, i);
            any = true;
        }
    }
    if (any) {
        auto_delete(m);
        change(m, a);
    }
}

static void m_directory(struct model *m, const struct step *s,
                        struct m_answer *a)
{
    int e = find_place(m, s->vhost, s->dest);
    struct m_place *p = e >= 0 ? &m->d[e] : NULL;
    uint64_t gen = s->cmd.gen;

    switch (s->cmd.type) {
        case META_SM_QUEUE_PLACE:
            if (s->shard < 0) {
                a->code = 502;
            } else if (p == NULL) {
                assert_true(m->n_d < MAX_DIR);
                m->d[m->n_d++] = (struct m_place){s->vhost, s->dest, s->shard,
                                                  m->next_gen++, false, 0, 0};
                change(m, a);
            } else if (gen != 0 && gen == p->gen && !p->moving) {
                p->gen = m->next_gen++; /* same shard, a fresh gen */
                change(m, a);
            }
            break;
        case META_SM_QUEUE_MOVE_BEGIN:
            if (s->shard < 0 || s->target < 0) {
                a->code = 502;
            } else if (p == NULL || p->shard != s->shard || p->gen != gen ||
                       p->shard == s->target ||
                       (p->moving && p->target != s->target)) {
                a->code = 406;
            } else if (!p->moving) {
                p->moving = true;
                p->target = s->target;
                p->move_gen = m->next_gen++;
                change(m, a);
            }
            break;
        case META_SM_QUEUE_MOVE_COMMIT:
            if (s->target < 0) {
                a->code = 502;
            } else if (p != NULL && p->moving && p->target == s->target) {
                p->shard = s->target;
                p->gen = p->move_gen;
                p->moving = false;
                p->move_gen = 0;
                change(m, a);
            } else if (p == NULL || p->moving || p->shard != s->target) {
                a->code = 406;
            }
            break;
        case META_SM_QUEUE_MOVE_ABORT:
            if (s->target < 0) {
                a->code = 502;
            } else if (p != NULL && p->moving && p->target == s->target) {
                p->moving = false;
                p->move_gen = 0;
                change(m, a);
            }
            break;
        case META_SM_QUEUE_FORGET:
            if (s->shard < 0) {
                a->code = 502;
            } else if (p != NULL && !p->moving && p->gen == gen &&
                       p->shard == s->shard) {
                memmove(&m->d[e], &m->d[e + 1],
                        (size_t)(m->n_d - e - 1) * sizeof(m->d[0]));
                m->n_d--;
                change(m, a);
            }
            break;
        default:
            fail();
    }
}

static void m_apply(struct model *m, const struct step *s, struct m_answer *a)
{
    memset(a, 0, sizeof(*a));
    switch (s->cmd.type) {
        case META_SM_EXCHANGE_DECLARE:
            m_exchange_declare(m, s, a);
            break;
        case META_SM_EXCHANGE_DELETE:
            m_exchange_delete(m, s, a);
            break;
        case META_SM_BIND:
            m_bind(m, s, a);
            break;
        case META_SM_UNBIND:
            m_unbind(m, s, a);
            break;
        case META_SM_QUEUE_GONE:
            m_queue_gone(m, s, a);
            break;
        default:
            m_directory(m, s, a);
            break;
    }
    if (s->cmd.type >= META_SM_QUEUE_GONE) {
        a->has_place = true;
        a->place = find_place(m, s->vhost, s->dest);
    }
}

/* ---------------------------------------------------------------- routes */

/* Words of a key: "" has none, otherwise dots separate n + 1 words. */
static int split_words(const char *key, const char *w[], size_t wl[])
{
    int n = 0;
    const char *p = key;

    if (*key == '\0') {
        return 0;
    }
    for (;;) {
        const char *dot = strchr(p, '.');
        w[n] = p;
        wl[n] = dot != NULL ? (size_t)(dot - p) : strlen(p);
        n++;
        if (dot == NULL) {
            return n;
        }
        p = dot + 1;
    }
}

static bool word_is(const char *w, size_t len, const char *s)
{
    return len == strlen(s) && memcmp(w, s, len) == 0;
}

static bool topic_words(const char **pw, const size_t *pl, int np,
                        const char **kw, const size_t *kl, int nk)
{
    if (np == 0) {
        return nk == 0;
    }
    if (word_is(pw[0], pl[0], "#")) {
        for (int skip = 0; skip <= nk; skip++) {
            if (topic_words(pw + 1, pl + 1, np - 1, kw + skip, kl + skip,
                            nk - skip)) {
                return true;
            }
        }
        return false;
    }
    if (nk == 0) {
        return false;
    }
    if (!word_is(pw[0], pl[0], "*") &&
        (pl[0] != kl[0] || memcmp(pw[0], kw[0], pl[0]) != 0)) {
        return false;
    }
    return topic_words(pw + 1, pl + 1, np - 1, kw + 1, kl + 1, nk - 1);
}

static bool topic(const char *pattern, const char *key)
{
    const char *pw[64], *kw[64];
    size_t pl[64], kl[64];
    int np = split_words(pattern, pw, pl);
    int nk = split_words(key, kw, kl);

    return topic_words(pw, pl, np, kw, kl, nk);
}

static bool kv_key_is(const struct meta_sm_kv *kv, const char *s)
{
    return kv->key_len == strlen(s) && memcmp(kv->key, s, kv->key_len) == 0;
}

static bool headers(int args, const struct meta_sm_kv *h, size_t nh)
{
    const char *mode = "all";
    size_t tested = 0, matched = 0;

    for (size_t i = 0; i < argset_n[args]; i++) {
        const struct meta_sm_kv *kv = &argsets[args][i];
        if (kv_key_is(kv, "x-match")) {
            mode = (const char *)kv->value + 5;
        }
    }
    for (size_t i = 0; i < argset_n[args]; i++) {
        const struct meta_sm_kv *kv = &argsets[args][i];
        bool hit = false;

        if (kv_key_is(kv, "x-match") ||
            (strncmp(kv->key, "x-", 2) == 0 && strstr(mode, "-with-x") == NULL)) {
            continue;
        }
        tested++;
        for (size_t k = 0; k < nh; k++) {
            if (h[k].key_len == kv->key_len &&
                memcmp(h[k].key, kv->key, kv->key_len) == 0) {
                hit = (kv->value_len == 1 &&
                       ((const char *)kv->value)[0] == 'V') ||
                      (h[k].value_len == kv->value_len &&
                       memcmp(h[k].value, kv->value, kv->value_len) == 0);
                break;
            }
        }
        matched += hit;
    }
    return strncmp(mode, "any", 3) == 0 ? matched > 0 : matched == tested;
}

static bool binding_routes(const struct m_bind *b,
                           enum meta_sm_exchange_type type, const char *key,
                           const struct meta_sm_kv *h, size_t nh)
{
    switch (type) {
        case META_SM_DIRECT:
            return strcmp(b->key, key) == 0;
        case META_SM_FANOUT:
            return true;
        case META_SM_TOPIC:
            return topic(b->key, key);
        case META_SM_HEADERS:
            return headers(b->args, h, nh);
        default:
            return false;
    }
}

/* The queues a publish reaches, as a bit set of queue names; -1 when the
 * exchange is missing, -2 for the default exchange (the routing key). */
static int m_route(const struct model *m, int vhost, int ex, const char *key,
                   const struct meta_sm_kv *h, size_t nh)
{
    bool reach[N_EXNAMES] = {false};
    enum meta_sm_exchange_type t;
    bool grew = true;
    int out = 0;

    if (exchanges[ex][0] == '\0') {
        return -2;
    }
    if (!ex_type(m, vhost, ex, &t)) {
        return -1;
    }
    reach[ex] = true;
    while (grew) { /* the exchanges reachable through matching bindings */
        grew = false;
        for (int i = 0; i < m->n_b; i++) {
            const struct m_bind *b = &m->b[i];
            if (b->vhost == vhost && reach[b->source] &&
                ex_type(m, vhost, b->source, &t) &&
                binding_routes(b, t, key, h, nh)) {
                if (b->dest_is_exchange && !reach[b->dest]) {
                    reach[b->dest] = grew = true;
                } else if (!b->dest_is_exchange) {
                    out |= 1 << b->dest;
                }
            }
        }
    }
    return out;
}

/* ------------------------------------------------------------- generator */

static void gen_step(struct model_rng *rng, const struct model *m,
                     struct step *s, uint64_t *seen_gens)
{
    static const enum meta_sm_cmd_type mix[] = {
        META_SM_EXCHANGE_DECLARE, META_SM_EXCHANGE_DECLARE,
        META_SM_EXCHANGE_DECLARE, META_SM_EXCHANGE_DELETE,
        META_SM_BIND, META_SM_BIND, META_SM_BIND, META_SM_BIND, META_SM_BIND,
        META_SM_UNBIND, META_SM_UNBIND, META_SM_QUEUE_GONE,
        META_SM_QUEUE_PLACE, META_SM_QUEUE_PLACE, META_SM_QUEUE_MOVE_BEGIN,
        META_SM_QUEUE_MOVE_BEGIN, META_SM_QUEUE_MOVE_COMMIT,
        META_SM_QUEUE_MOVE_ABORT, META_SM_QUEUE_FORGET,
    };
    struct meta_sm_cmd *c = &s->cmd;
    int e;

    memset(s, 0, sizeof(*s));
    c->type = mix[model_below(rng, sizeof(mix) / sizeof(mix[0]))];
    s->vhost = (int)model_below(rng, N_VHOSTS);
    /* user exchanges mostly */
    s->ex = model_percent(rng, 75) ? (int)model_below(rng, N_USER_EX)
                                   : (int)model_below(rng, N_EXNAMES);
    s->dest = (int)model_below(rng, N_QNAMES);
    s->key = "";
    c->vhost = vhosts[s->vhost];
    c->vhost_len = strlen(c->vhost);
    c->exchange = exchanges[s->ex];
    c->exchange_len = strlen(c->exchange);

    switch (c->type) {
        case META_SM_EXCHANGE_DECLARE:
            /* mostly each exchange's own definition */
            c->exchange_type =
                (enum meta_sm_exchange_type)(s->ex % META_SM_EXCHANGE_TYPE__COUNT);
            c->durable = s->ex % 2 == 0;
            c->auto_delete = s->ex == 2 || s->ex == 4;
            c->internal = s->ex == 3;
            if (pre_index(s->ex) >= 0) {
                c->exchange_type = predeclared[pre_index(s->ex)].type;
                c->durable = true;
                c->auto_delete = c->internal = false;
            }
            if (model_percent(rng, 15)) {
                c->exchange_type = (enum meta_sm_exchange_type)model_below(
                    rng, META_SM_EXCHANGE_TYPE__COUNT);
                c->durable = model_percent(rng, 50);
                c->auto_delete = model_percent(rng, 20);
                c->internal = model_percent(rng, 20);
            }
            c->passive = model_percent(rng, 10);
            break;
        case META_SM_EXCHANGE_DELETE:
            c->if_unused = model_percent(rng, 40);
            break;
        case META_SM_BIND:
        case META_SM_UNBIND:
            c->dest_is_exchange = model_percent(rng, 30);
            if (c->dest_is_exchange) {
                s->dest = model_percent(rng, 85)
                              ? (int)model_below(rng, N_USER_EX)
                              : (int)model_below(rng, N_EXNAMES);
            }
            /* an existing binding, sometimes, so unbind finds it */
            if (c->type == META_SM_UNBIND && m->n_b > 0 &&
                model_percent(rng, 70)) {
                const struct m_bind *b = &m->b[model_below(rng, (uint64_t)m->n_b)];
                s->vhost = b->vhost;
                s->ex = b->source;
                s->dest = b->dest;
                c->dest_is_exchange = b->dest_is_exchange;
                s->key = b->key;
                s->args = b->args;
                c->vhost = vhosts[s->vhost];
                c->vhost_len = strlen(c->vhost);
                c->exchange = exchanges[s->ex];
                c->exchange_len = strlen(c->exchange);
                break;
            }
            s->key = model_percent(rng, 50)
                         ? keys[model_below(rng, N_KEYS)]
                         : topic_keys[model_below(rng, N_TOPIC_KEYS)];
            s->args = model_percent(rng, 50)
                          ? 0
                          : (int)model_below(rng, N_ARGSETS);
            break;
        case META_SM_QUEUE_GONE:
            e = find_place(m, s->vhost, s->dest);
            c->gen = model_percent(rng, 30)   ? 0
                     : e >= 0 && model_percent(rng, 70) ? m->d[e].gen
                     : model_below(rng, m->next_gen + 1);
            break;
        default: {
            /* directory commands: mostly what the entry says */
            const struct m_place *p = NULL;

            e = find_place(m, s->vhost, s->dest);
            p = e >= 0 ? &m->d[e] : NULL;
            s->shard = p != NULL && model_percent(rng, 75)
                           ? p->shard
                           : (int)model_below(rng, N_SHARDS);
            s->target = p != NULL && p->moving && model_percent(rng, 70)
                            ? p->target
                            : (int)model_below(rng, N_SHARDS);
            c->gen = p != NULL && model_percent(rng, 75)
                         ? p->gen
                         : model_below(rng, *seen_gens + 2);
            if (c->type == META_SM_QUEUE_PLACE && model_percent(rng, 40)) {
                c->gen = 0;
            }
            if (model_percent(rng, 3)) {
                s->shard = -1;
            }
            if (model_percent(rng, 3)) {
                s->target = -1;
            }
            break;
        }
    }
    c->dest = c->dest_is_exchange ? exchanges[s->dest] : queues[s->dest];
    c->dest_len = strlen(c->dest);
    c->routing_key = s->key;
    c->routing_key_len = strlen(s->key);
    c->args = s->args > 0 ? argsets[s->args] : NULL;
    c->n_args = argset_n[s->args];
    /* bad shard names: empty or with a NUL */
    c->shard = s->shard >= 0 ? shards[s->shard] : "s\0x";
    c->shard_len = s->shard >= 0 ? strlen(c->shard)
                                 : (model_percent(rng, 50) ? 0 : 3);
    c->target = s->target >= 0 ? shards[s->target] : "t\0x";
    c->target_len = s->target >= 0 ? strlen(c->target)
                                   : (model_percent(rng, 50) ? 0 : 3);
    if (m->next_gen > *seen_gens) {
        *seen_gens = m->next_gen;
    }
}

/* ---------------------------------------------------------------- checks */

static struct model_where where;

static void check_placement(const struct model *m, int place,
                            const struct meta_sm_placement *got,
                            const char *what, int replica)
{
    if (place < 0) {
        MODEL_CHECK(&where, got->gen == 0,
                    "replica %d: %s: an entry, the model has none", replica,
                    what);
        return;
    }
    const struct m_place *p = &m->d[place];
    MODEL_CHECK(&where,
                got->gen == p->gen && strcmp(got->shard, shards[p->shard]) == 0 &&
                    got->moving == p->moving &&
                    strcmp(got->target, p->moving ? shards[p->target] : "") ==
                        0 &&
                    got->move_gen == p->move_gen,
                "replica %d: %s: entry %s gen %" PRIu64 " moving %d to '%s' "
                "gen %" PRIu64 ", model %s %" PRIu64 " %d %s %" PRIu64,
                replica, what, got->shard, got->gen, got->moving, got->target,
                got->move_gen, shards[p->shard], p->gen, p->moving,
                shards[p->target], p->move_gen);
}

struct each_ctx {
    const struct model *m;
    int i;
    int replica;
};

static int check_entry(void *data, const char *vhost, size_t vhost_len,
                       const char *queue, size_t queue_len,
                       const struct meta_sm_placement *p)
{
    struct each_ctx *x = data;
    const struct m_place *want;

    MODEL_CHECK(&where, x->i < x->m->n_d,
                "replica %d: more directory entries than the model",
                x->replica);
    want = &x->m->d[x->i];
    MODEL_CHECK(&where,
                vhost_len == strlen(vhosts[want->vhost]) &&
                    memcmp(vhost, vhosts[want->vhost], vhost_len) == 0 &&
                    queue_len == strlen(queues[want->queue]) &&
                    memcmp(queue, queues[want->queue], queue_len) == 0,
                "replica %d: directory entry %d is %.*s, model %s",
                x->replica, x->i, (int)queue_len, queue, queues[want->queue]);
    check_placement(x->m, x->i, p, "directory order", x->replica);
    x->i++;
    return 0;
}

static void check_route(const struct meta_sm *sm, const struct model *m,
                        struct model_rng *rng, int replica)
{
    static const struct meta_sm_kv *const hsets[][3] = {
        {NULL}, {&hv_1}, {&hv_2}, {&hv_1, &hv_h2}, {&hv_x}, {&hv_2, &hv_x},
        {&hv_h2}, {&hv_1, &hv_h2, &hv_x},
    };
    static const size_t hset_n[] = {0, 1, 1, 2, 1, 2, 1, 3};
    struct meta_sm_kv h[3];
    int vhost = (int)model_below(rng, N_VHOSTS);
    int ex = (int)model_below(rng, N_EXNAMES);
    const char *key = model_percent(rng, 70)
                          ? keys[model_below(rng, N_KEYS)]
                          : topic_keys[model_below(rng, N_TOPIC_KEYS)];
    int hs = (int)model_below(rng, 8);
    struct meta_sm_route_result r;
    int want, got = 0;

    for (size_t i = 0; i < hset_n[hs]; i++) {
        h[i] = *hsets[hs][i];
    }
    want = m_route(m, vhost, ex, key, h, hset_n[hs]);
    meta_sm_route(sm, vhosts[vhost], strlen(vhosts[vhost]), exchanges[ex],
                  strlen(exchanges[ex]), key, strlen(key), h, hset_n[hs], &r);
    if (want == -1) {
        MODEL_CHECK(&where, r.exchange_missing && r.n_queues == 0,
                    "replica %d: route via missing %s/%s", replica,
                    vhosts[vhost], exchanges[ex]);
    } else if (want == -2) {
        MODEL_CHECK(&where,
                    r.n_queues == 1 && r.queues[0].len == strlen(key) &&
                        memcmp(r.queues[0].name, key, strlen(key)) == 0,
                    "replica %d: the default exchange must give '%s'",
                    replica, key);
    } else {
        for (size_t i = 0; i < r.n_queues; i++) {
            int q = -1;
            for (int k = 0; k < N_QNAMES; k++) {
                if (r.queues[i].len == strlen(queues[k]) &&
                    memcmp(r.queues[i].name, queues[k], r.queues[i].len) == 0) {
                    q = k;
                }
            }
            MODEL_CHECK(&where, q >= 0 && !(got & (1 << q)),
                        "replica %d: route gave an unknown or repeated queue",
                        replica);
            got |= 1 << q;
        }
        MODEL_CHECK(&where, !r.exchange_missing && got == want,
                    "replica %d: route %s/%s key '%s' headers %d: queues "
                    "0x%x, model 0x%x",
                    replica, vhosts[vhost], exchanges[ex], key, hs, got, want);
    }
    meta_sm_route_result_clear(&r);
}

static void check_state(struct meta_sm *const *r, const struct model *m,
                        struct model_rng *rng)
{
    void *s0;
    size_t n0;

    assert_int_equal(meta_sm_snapshot(r[0], malloc, &s0, &n0), 0);
    for (int i = 0; i < N_REPLICAS; i++) {
        uint64_t n_ex, n_b;
        struct each_ctx x = {m, 0, i};
        void *s;
        size_t n;

        meta_sm_counts(r[i], &n_ex, &n_b);
        MODEL_CHECK(&where,
                    n_ex == (uint64_t)m->n_ex && n_b == (uint64_t)m->n_b &&
                        meta_sm_version(r[i]) == m->version &&
                        meta_sm_queue_count(r[i]) == (uint64_t)m->n_d &&
                        meta_sm_queue_next_gen(r[i]) == m->next_gen,
                    "replica %d: %" PRIu64 " exchanges %" PRIu64
                    " bindings version %" PRIu64 ", model %d %d %" PRIu64,
                    i, n_ex, n_b, meta_sm_version(r[i]), m->n_ex, m->n_b,
                    m->version);
        for (int v = 0; v < N_VHOSTS; v++) {
            for (int e = 0; e < N_EXNAMES; e++) {
                enum meta_sm_exchange_type t, want_t;
                bool durable, internal;
                bool want = ex_type(m, v, e, &want_t);
                int k = find_ex(m, v, e);
                int rc = meta_sm_exchange_info(r[i], vhosts[v],
                                               strlen(vhosts[v]), exchanges[e],
                                               strlen(exchanges[e]), &t,
                                               &durable, &internal);

                MODEL_CHECK(&where,
                            (rc == 0) == want &&
                                (rc != 0 ||
                                 (t == want_t &&
                                  durable == (k < 0 || m->ex[k].durable) &&
                                  internal == (k >= 0 && m->ex[k].internal))),
                            "replica %d: exchange %s/%s differs from the "
                            "model",
                            i, vhosts[v], exchanges[e]);
            }
            for (int q = 0; q < N_QNAMES; q++) {
                struct meta_sm_placement p;
                int rc = meta_sm_queue_lookup(r[i], vhosts[v],
                                              strlen(vhosts[v]), queues[q],
                                              strlen(queues[q]), &p);
                int want = find_place(m, v, q);

                MODEL_CHECK(&where, (rc == 0) == (want >= 0),
                            "replica %d: entry %s/%s exists %d, model %d", i,
                            vhosts[v], queues[q], rc == 0, want >= 0);
                check_placement(m, want, &p, "lookup", i);
            }
        }
        assert_int_equal(meta_sm_queue_each(r[i], check_entry, &x), 0);
        MODEL_CHECK(&where, x.i == m->n_d,
                    "replica %d: %d directory entries, model %d", i, x.i,
                    m->n_d);
        for (int k = 0; k < 3; k++) {
            check_route(r[i], m, rng, i);
        }
        /* every step: the indexes (by name, identity, source and
         * destination, auto-delete candidates) agree with a walk over
         * every exchange and binding */
        meta_sm_check(r[i]);
        assert_int_equal(meta_sm_snapshot(r[i], malloc, &s, &n), 0);
        MODEL_CHECK(&where, n == n0 && memcmp(s, s0, n) == 0,
                    "replica %d: snapshot bytes differ from replica 0", i);
        free(s);
        MODEL_CHECK(&where, meta_sm_digest(r[i]) == meta_sm_digest(r[0]),
                    "replica %d: digest differs from replica 0", i);
    }
    free(s0);
}

static void replace_by_restore(struct meta_sm **r, int from)
{
    struct meta_sm *fresh = meta_sm_new();
    void *snap;
    size_t len;

    assert_non_null(fresh);
    assert_int_equal(meta_sm_snapshot(r[from], malloc, &snap, &len), 0);
    MODEL_CHECK(&where, meta_sm_restore(fresh, snap, len) == 0,
                "restore of replica %d's snapshot failed", from);
    free(snap);
    meta_sm_free(r[RESTORED]);
    r[RESTORED] = fresh;
}

static void run_seed(uint64_t seed, unsigned long steps)
{
    struct meta_sm *r[N_REPLICAS];
    struct model m;
    struct model_rng rng = {seed};
    struct step s;
    struct m_answer want;
    uint64_t seen_gens = 1;
    unsigned long restore_at = 1 + (unsigned long)model_below(&rng, steps);

    memset(&m, 0, sizeof(m));
    where.seed = seed;
    for (int i = 0; i < N_REPLICAS; i++) {
        r[i] = meta_sm_new();
        assert_non_null(r[i]);
    }
    m.next_gen = meta_sm_queue_next_gen(r[0]);
    m.version = meta_sm_version(r[0]);
    for (where.step = 1; where.step <= steps; where.step++) {
        gen_step(&rng, &m, &s, &seen_gens);
        if (where.step == restore_at || model_below(&rng, 1000) < 5) {
            replace_by_restore(r, (int)model_below(&rng, RESTORED));
        }
        m_apply(&m, &s, &want);
        for (int i = 0; i < N_REPLICAS; i++) {
            struct meta_sm_result got;

            meta_sm_apply(r[i], &s.cmd, &got);
            MODEL_CHECK(&where,
                        got.reply_code == want.code &&
                            got.changed == want.changed &&
                            got.version == m.version,
                        "replica %d: type %d code %u changed %d version %" PRIu64
                        ", model %u %d %" PRIu64,
                        i, (int)s.cmd.type, got.reply_code, got.changed,
                        got.version, want.code, want.changed, m.version);
            if (want.has_place) {
                check_placement(&m, want.place, &got.placement, "result", i);
            }
        }
        check_state(r, &m, &rng);
    }
    for (int i = 0; i < N_REPLICAS; i++) {
        meta_sm_free(r[i]);
    }
}

static void test_meta_model(void **state)
{
    unsigned long steps = model_env("RINGMQ_MODEL_STEPS", 2000);
    uint64_t first, last;

    (void)state;
    argsets_init();
    model_seeds(8, &first, &last);
    for (uint64_t seed = first; seed <= last; seed++) {
        run_seed(seed, steps);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meta_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
