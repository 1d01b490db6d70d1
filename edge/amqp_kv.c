/*
 * amqp_kv: AMQP field tables as meta_sm key/value pairs; contract in
 * amqp_kv.h.
 */
#include "edge/amqp_kv.h"

#include <stdlib.h>

/* Encoded (key, field value) pairs of @t for meta_sm (headers matching and
 * binding arguments): keys and values are copied into @store, which must
 * outlive the returned array (free() it). NULL when @t is empty. */
struct meta_sm_kv *edge_table_kv(const struct amqp_table *t,
                                 struct buf *store, size_t *n)
{
    struct meta_sm_kv *kv;
    size_t *koff;
    size_t *voff;
    size_t i;

    *n = 0;
    if (t == NULL || t->count == 0) {
        return NULL;
    }
    kv = xcalloc(t->count, sizeof(*kv));
    koff = xcalloc(t->count, sizeof(*koff));
    voff = xcalloc(t->count, sizeof(*voff));
    for (i = 0; i < t->count; i++) {
        struct amqp_table one = *t;
        size_t start = store->len;

        /* A one-entry table's encoding is u32 size, key, type, value. */
        one.count = 1;
        one.entries = &t->entries[i];
        if (amqp_table_encode(store, &one) != 0) {
            store->len = start;
            continue;
        }
        voff[*n] = start + 4 + 1 + t->entries[i].key.len;
        kv[*n].value_len = store->len - voff[*n];
        koff[*n] = start + 4 + 1;
        kv[*n].key_len = t->entries[i].key.len;
        (*n)++;
    }
    /* Pointers only now: appending may have moved the store. */
    for (i = 0; i < *n; i++) {
        kv[i].key = store->data + koff[i];
        kv[i].value = store->data + voff[i];
    }
    free(koff);
    free(voff);
    return kv;
}
