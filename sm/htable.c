/*
 * htable: see htable.h.
 */
#include "sm/htable.h"

#include <stdlib.h>

#include "common/buf.h"

int ht_init(struct htable *t, size_t hint)
{
    size_t n = 16;

    while (n < hint && n < ((size_t)1 << 40)) {
        n <<= 1;
    }
    t->b = xcalloc(n, sizeof(*t->b));
    t->mask = n - 1;
    t->count = 0;
    return 0;
}

void ht_close(struct htable *t)
{
    free(t->b);
    t->b = NULL;
}

static void ht_grow(struct htable *t)
{
    size_t n = (t->mask + 1) * 2;
    struct hnode **nb = xcalloc(n, sizeof(*nb));
    size_t i;

    for (i = 0; i <= t->mask; i++) {
        struct hnode *e = t->b[i];

        while (e != NULL) {
            struct hnode *next = e->next;

            e->next = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->b);
    t->b = nb;
    t->mask = n - 1;
}

void ht_insert(struct htable *t, struct hnode *e)
{
    if (t->count >= t->mask + 1) {
        ht_grow(t);
    }
    e->next = t->b[e->hash & t->mask];
    t->b[e->hash & t->mask] = e;
    t->count++;
}

void ht_remove(struct htable *t, struct hnode *e)
{
    struct hnode **pp = &t->b[e->hash & t->mask];

    while (*pp != e) {
        pp = &(*pp)->next;
    }
    *pp = e->next;
    e->next = NULL;
    t->count--;
}
