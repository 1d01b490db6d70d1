/* cache_snap: see cache_snap.h. */
#include "sm/cache_snap.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/invariant.h"
#include "common/le.h"

void cache__snap_init(struct cache__snap *s, struct cache_item *oldest,
                      struct cache_item *newest, uint64_t count)
{
    memset(s, 0, sizeof(*s));
    INVARIANT((oldest == NULL) == (newest == NULL) &&
              (count == 0) == (oldest == NULL));
    s->cursor = oldest;
    s->last_order = newest != NULL ? newest->order : 0;
    s->items_left = count;
}

void cache__snap_close(struct cache__snap *s)
{
    size_t i;

    for (i = 0; i < s->n_heap; i++) {
        free(s->heap[i]);
    }
    free(s->heap);
    memset(s, 0, sizeof(*s));
}

static void heap_push(struct cache__snap *s, struct cache_item *it)
{
    size_t i;

    if (s->n_heap == s->cap_heap) {
        s->cap_heap = s->cap_heap != 0 ? 2 * s->cap_heap : 64;
        s->heap = xrealloc(s->heap, s->cap_heap * sizeof(*s->heap));
    }
    i = s->n_heap++;
    while (i > 0 && s->heap[(i - 1) / 2]->order > it->order) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = it;
}

static void heap_pop(struct cache__snap *s)
{
    struct cache_item *last = s->heap[--s->n_heap];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= s->n_heap) {
            break;
        }
        if (c + 1 < s->n_heap && s->heap[c + 1]->order < s->heap[c]->order) {
            c++;
        }
        if (last->order <= s->heap[c]->order) {
            break;
        }
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap > 0) {
        s->heap[i] = last;
    }
}

static void advance_cursor(struct cache__snap *s)
{
    struct cache_item *next = s->cursor->newer;

    s->cursor = next != NULL && next->order <= s->last_order ? next : NULL;
}

/* @it is no longer the live list's to give: @image (it, or its copy) is
 * written from the heap. */
static void save(struct cache__snap *s, struct cache_item *it,
                 struct cache_item *image)
{
    INVARIANT(cache__snap_pending(s, it));
    if (it == s->cursor) {
        advance_cursor(s);
    }
    heap_push(s, image);
}

void cache__snap_save(struct cache__snap *s, struct cache_item *it)
{
    save(s, it, it);
}

void cache__snap_save_copy(struct cache__snap *s, struct cache_item *it)
{
    size_t size = cache__item_size(it);
    struct cache_item *copy = xmalloc(size);

    memcpy(copy, it, size);
    save(s, it, copy);
}

/* The next record's item: the smaller order of both sources. */
static struct cache_item *next_item(const struct cache__snap *s, bool *saved)
{
    *saved = s->n_heap > 0 &&
             (s->cursor == NULL || s->heap[0]->order < s->cursor->order);
    return *saved ? s->heap[0] : s->cursor;
}

/* Bytes [s->rec_off, +room) of @it's record into @out; returns how many. */
static size_t write_record(const struct cache__snap *s,
                           const struct cache_item *it, unsigned char *out,
                           size_t room)
{
    unsigned char fixed[CACHE_SNAP_ITEM_FIXED];
    unsigned char *p = fixed;
    size_t data_len = (size_t)it->key_len + it->value_len;
    size_t off = s->rec_off;
    size_t n = 0;
    size_t k;

    *p++ = it->key_len;
    p = le_put_u32(p, it->flags);
    p = le_put_u32(p, it->value_len);
    p = le_put_u64(p, it->exp_ms);
    le_put_u64(p, it->cas);
    if (off < sizeof(fixed)) {
        k = sizeof(fixed) - off < room ? sizeof(fixed) - off : room;
        memcpy(out, fixed + off, k);
        n += k;
        off += k;
    }
    k = sizeof(fixed) + data_len - off;
    if (k > room - n) {
        k = room - n;
    }
    if (k > 0) {
        memcpy(out + n, it->data + (off - sizeof(fixed)), k);
        n += k;
    }
    return n;
}

size_t cache__snap_step(struct cache__snap *s, unsigned char *out,
                        size_t room)
{
    size_t n = 0;

    while (n < room && s->items_left > 0) {
        bool saved;
        struct cache_item *it = next_item(s, &saved);
        size_t rec_len;
        size_t k;

        INVARIANT(it != NULL);
        rec_len = CACHE_SNAP_ITEM_FIXED + (size_t)it->key_len + it->value_len;
        k = write_record(s, it, out + n, room - n);
        n += k;
        s->rec_off += k;
        if (s->rec_off < rec_len) {
            break; /* @room is full */
        }
        s->rec_off = 0;
        s->items_left--;
        if (saved) {
            heap_pop(s);
            free(it);
        } else {
            advance_cursor(s);
        }
    }
    INVARIANT(s->items_left > 0 || (s->cursor == NULL && s->n_heap == 0));
    return n;
}
