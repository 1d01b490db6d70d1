/*
 * lincheck: see lincheck.h.
 */
#include "lincheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the search */

struct entry {
    int op;       /* index into the placed-ops array */
    bool is_call;
    struct entry *match; /* call <-> return */
    struct entry *prev;
    struct entry *next;
    uint64_t time;
};

struct frame {
    struct entry *call;
    int64_t state;
};

struct cache {
    uint64_t *keys;  /* slots * (words + 1): bits..., state */
    bool *used;
    size_t slots;
    size_t count;
    size_t words;
};

static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h;
}

static uint64_t key_hash(const uint64_t *bits, size_t words, int64_t state)
{
    uint64_t h = (uint64_t)state;
    size_t i;

    for (i = 0; i < words; i++) {
        h = mix(h, bits[i]);
    }
    return h;
}

static int cache_grow(struct cache *c);

/* Insert; 1 if new, 0 if seen, -1 out of memory. */
static int cache_add(struct cache *c, const uint64_t *bits, int64_t state)
{
    size_t stride = c->words + 1;
    size_t i;

    if (2 * (c->count + 1) > c->slots && cache_grow(c) != 0) {
        return -1;
    }
    i = key_hash(bits, c->words, state) & (c->slots - 1);
    for (;; i = (i + 1) & (c->slots - 1)) {
        uint64_t *k = c->keys + i * stride;

        if (!c->used[i]) {
            memcpy(k, bits, c->words * sizeof(*bits));
            k[c->words] = (uint64_t)state;
            c->used[i] = true;
            c->count++;
            return 1;
        }
        if (k[c->words] == (uint64_t)state &&
            memcmp(k, bits, c->words * sizeof(*bits)) == 0) {
            return 0;
        }
    }
}

static int cache_grow(struct cache *c)
{
    struct cache bigger = *c;
    size_t stride = c->words + 1;
    size_t i;

    bigger.slots = c->slots ? 2 * c->slots : 1024;
    bigger.count = 0;
    bigger.keys = malloc(bigger.slots * stride * sizeof(uint64_t));
    bigger.used = calloc(bigger.slots, sizeof(bool));
    if (bigger.keys == NULL || bigger.used == NULL) {
        free(bigger.keys);
        free(bigger.used);
        return -1;
    }
    for (i = 0; i < c->slots; i++) {
        if (c->used[i]) {
            const uint64_t *k = c->keys + i * stride;

            (void)cache_add(&bigger, k, (int64_t)k[c->words]);
        }
    }
    free(c->keys);
    free(c->used);
    *c = bigger;
    return 0;
}

/* The model: may @op go now on @state, and what is the state after? */
static bool step(const struct lc_op *op, int64_t state, int64_t *next)
{
    switch (op->f) {
    case LC_READ:
        *next = state;
        return op->value == state;
    case LC_WRITE:
        *next = op->value;
        return true;
    case LC_CAS:
        if (op->outcome == LC_OK) {
            *next = op->value;
            return state == op->expect;
        }
        if (op->outcome == LC_FAIL) {
            *next = state;
            return state != op->expect;
        }
        /* unknown: if it happened here, it did what the value says */
        *next = state == op->expect ? op->value : state;
        return true;
    }
    return false;
}

static void lift(struct entry *e)
{
    struct entry *r = e->match;

    e->prev->next = e->next;
    e->next->prev = e->prev;
    r->prev->next = r->next;
    r->next->prev = r->prev;
}

static void unlift(struct entry *e)
{
    struct entry *r = e->match;

    r->prev->next = r;
    r->next->prev = r;
    e->prev->next = e;
    e->next->prev = e;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a;
    const struct entry *y = b;

    if (x->time != y->time) {
        return x->time < y->time ? -1 : 1;
    }
    /* a call before a return at the same instant: they overlap */
    return (int)y->is_call - (int)x->is_call;
}

int lc_check(const struct lc_op *in, size_t n_in, struct lc_result *res)
{
    const struct lc_op **ops = NULL;
    struct entry *ents = NULL;
    struct entry head;
    struct entry tail;
    struct frame *stack = NULL;
    uint64_t *bits = NULL;
    struct cache cache = {0};
    size_t n = 0;
    size_t depth = 0;
    size_t words;
    size_t i;
    int64_t state = LC_NIL;
    struct entry *e;
    int rv = -1;

    memset(res, 0, sizeof(*res));
    ops = calloc(n_in ? n_in : 1, sizeof(*ops));
    if (ops == NULL) {
        goto out;
    }
    for (i = 0; i < n_in; i++) {
        const struct lc_op *o = &in[i];

        if (o->outcome == LC_FAIL && o->f != LC_CAS) {
            continue; /* did not happen */
        }
        if (o->outcome == LC_INFO && o->f == LC_READ) {
            continue; /* an unknown answer constrains nothing */
        }
        ops[n++] = o;
    }
    if (n > LC_MAX_OPS) {
        goto out;
    }
    res->ops_checked = n;
    words = (n + 63) / 64;
    cache.words = words;
    ents = calloc(2 * n + 1, sizeof(*ents));
    stack = calloc(n + 1, sizeof(*stack));
    bits = calloc(words + 1, sizeof(*bits));
    if (ents == NULL || stack == NULL || bits == NULL) {
        goto out;
    }
    for (i = 0; i < n; i++) {
        ents[2 * i].op = (int)i;
        ents[2 * i].is_call = true;
        ents[2 * i].time = ops[i]->call;
        ents[2 * i + 1].op = (int)i;
        ents[2 * i + 1].is_call = false;
        ents[2 * i + 1].time =
            ops[i]->outcome == LC_INFO ? UINT64_MAX : ops[i]->ret;
    }
    qsort(ents, 2 * n, sizeof(*ents), cmp_entry);
    /* re-pair calls and returns after sorting */
    {
        struct entry **call_of = calloc(n + 1, sizeof(*call_of));

        if (call_of == NULL) {
            goto out;
        }
        for (i = 0; i < 2 * n; i++) {
            if (ents[i].is_call) {
                call_of[ents[i].op] = &ents[i];
            }
        }
        for (i = 0; i < 2 * n; i++) {
            if (!ents[i].is_call) {
                ents[i].match = call_of[ents[i].op];
                call_of[ents[i].op]->match = &ents[i];
            }
        }
        free(call_of);
    }
    head.prev = NULL;
    tail.next = NULL;
    head.next = n ? &ents[0] : &tail;
    tail.prev = n ? &ents[2 * n - 1] : &head;
    for (i = 0; i < 2 * n; i++) {
        ents[i].prev = i ? &ents[i - 1] : &head;
        ents[i].next = i + 1 < 2 * n ? &ents[i + 1] : &tail;
    }

    e = head.next;
    while (head.next != &tail) {
        res->states++;
        if (e->is_call) {
            int64_t next;

            if (step(ops[e->op], state, &next)) {
                int added;

                bits[e->op / 64] |= 1ULL << (e->op % 64);
                added = cache_add(&cache, bits, next);
                if (added < 0) {
                    goto out;
                }
                if (added) {
                    stack[depth].call = e;
                    stack[depth].state = state;
                    depth++;
                    if (depth > res->longest_prefix) {
                        res->longest_prefix = depth;
                    }
                    state = next;
                    lift(e);
                    e = head.next;
                    continue;
                }
                bits[e->op / 64] &= ~(1ULL << (e->op % 64));
            }
            e = e->next;
            continue;
        }
        /* a return whose operation is not placed: undo the last choice */
        if (depth == res->longest_prefix) {
            res->stuck_op = (size_t)(ops[e->op] - in);
        }
        if (depth == 0) {
            rv = 0;
            goto out;
        }
        depth--;
        e = stack[depth].call;
        state = stack[depth].state;
        bits[e->op / 64] &= ~(1ULL << (e->op % 64));
        unlift(e);
        e = e->next;
    }
    res->linearizable = true;
    rv = 1;
out:
    free(cache.keys);
    free(cache.used);
    free(bits);
    free(stack);
    free(ents);
    free(ops);
    return rv;
}

/* ----------------------------------------------------------- Jepsen logs */

static int parse_value(const char *s, int64_t *v)
{
    char *end;

    while (*s == ' ') {
        s++;
    }
    if (strncmp(s, "nil", 3) == 0) {
        *v = LC_NIL;
        return 0;
    }
    *v = strtoll(s, &end, 10);
    return end == s ? -1 : 0;
}

int lc_parse_jepsen_log(const char *text, struct lc_op **out, size_t *n,
                        char *err, size_t errlen)
{
    struct lc_op *ops = NULL;
    size_t cap = 0;
    size_t count = 0;
    long pending[1024];
    uint64_t line = 0;
    const char *p = text;
    size_t i;

    for (i = 0; i < sizeof(pending) / sizeof(pending[0]); i++) {
        pending[i] = -1;
    }
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char buf[512];
        char *fields[4];
        char *dash;
        char *save = NULL;
        int nf = 0;
        long proc;
        char *tok;

        line++;
        if (len >= sizeof(buf)) {
            len = sizeof(buf) - 1;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        p = eol ? eol + 1 : p + len;
        dash = strstr(buf, "jepsen.util - ");
        if (dash == NULL) {
            continue; /* not an event line */
        }
        /* process, type, function separated by tabs or spaces; the value
         * is the rest of the line ("[1 2]" has a space in it) */
        tok = strtok_r(dash + 14, " \t", &save);
        while (tok != NULL) {
            fields[nf++] = tok;
            if (nf == 3) {
                break;
            }
            tok = strtok_r(NULL, " \t", &save);
        }
        if (nf == 3 && save != NULL) {
            while (*save == ' ' || *save == '\t') {
                save++;
            }
            if (*save != '\0') {
                fields[nf++] = save;
            }
        }
        if (nf < 3) {
            snprintf(err, errlen, "line %llu: not an event",
                     (unsigned long long)line);
            goto fail;
        }
        proc = strtol(fields[0], NULL, 10);
        if (proc < 0 || proc >= (long)(sizeof(pending) / sizeof(pending[0]))) {
            snprintf(err, errlen, "line %llu: process %ld out of range",
                     (unsigned long long)line, proc);
            goto fail;
        }
        if (strcmp(fields[1], ":invoke") == 0) {
            struct lc_op *o;

            if (count == cap) {
                struct lc_op *bigger;

                cap = cap ? 2 * cap : 256;
                bigger = realloc(ops, cap * sizeof(*ops));
                if (bigger == NULL) {
                    snprintf(err, errlen, "out of memory");
                    goto fail;
                }
                ops = bigger;
            }
            o = &ops[count];
            memset(o, 0, sizeof(*o));
            o->process = (int)proc;
            o->call = line;
            o->outcome = LC_INFO; /* until it completes */
            o->value = LC_NIL;
            if (strcmp(fields[2], ":read") == 0) {
                o->f = LC_READ;
            } else if (strcmp(fields[2], ":write") == 0) {
                o->f = LC_WRITE;
                if (nf < 4 || parse_value(fields[3], &o->value) != 0) {
                    snprintf(err, errlen, "line %llu: bad write value",
                             (unsigned long long)line);
                    goto fail;
                }
            } else if (strcmp(fields[2], ":cas") == 0) {
                char *sp;

                o->f = LC_CAS;
                if (nf < 4 || fields[3][0] != '[' ||
                    parse_value(fields[3] + 1, &o->expect) != 0 ||
                    (sp = strchr(fields[3], ' ')) == NULL ||
                    parse_value(sp + 1, &o->value) != 0) {
                    snprintf(err, errlen, "line %llu: bad cas value",
                             (unsigned long long)line);
                    goto fail;
                }
            } else {
                snprintf(err, errlen, "line %llu: unknown function %s",
                         (unsigned long long)line, fields[2]);
                goto fail;
            }
            pending[proc] = (long)count++;
            continue;
        }
        if (pending[proc] < 0) {
            snprintf(err, errlen, "line %llu: completion without invoke",
                     (unsigned long long)line);
            goto fail;
        }
        {
            struct lc_op *o = &ops[pending[proc]];

            pending[proc] = -1;
            o->ret = line;
            if (strcmp(fields[1], ":ok") == 0) {
                o->outcome = LC_OK;
                if (o->f == LC_READ &&
                    (nf < 4 || parse_value(fields[3], &o->value) != 0)) {
                    snprintf(err, errlen, "line %llu: bad read value",
                             (unsigned long long)line);
                    goto fail;
                }
            } else if (strcmp(fields[1], ":fail") == 0) {
                o->outcome = LC_FAIL;
            } else {
                o->outcome = LC_INFO;
            }
        }
    }
    *out = ops;
    *n = count;
    return 0;
fail:
    free(ops);
    return -1;
}
