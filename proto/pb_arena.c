/* pb_arena: see pb_arena.h. */
#include "proto/pb_arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/buf.h"
#include "common/invariant.h"

#define ARENA_ALIGN alignof(max_align_t)
/* The smallest block: a small command and its batch fit. */
#define ARENA_FIRST_SIZE 4096u

/* An allocation that did not fit the block, freed at the next reset. */
struct pb_arena_spill {
    struct pb_arena_spill *next;
    alignas(max_align_t) unsigned char data[];
};

static size_t round_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

static void *arena_alloc(void *data, size_t n)
{
    struct pb_arena *a = data;
    struct pb_arena_spill *s;

    if (n > SIZE_MAX / 2) {
        return NULL; /* unpack fails, as with malloc */
    }
    n = round_up(n > 0 ? n : 1); /* a pointer unpack can tell from NULL */
    if (n <= a->size - a->used) {
        void *p = a->block + a->used;

        a->used += n;
        return p;
    }
    s = xmalloc(sizeof(*s) + n);
    s->next = a->spills;
    a->spills = s;
    a->spilled += n;
    return s->data;
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* taken back at the reset */
}

void pb_arena_init(struct pb_arena *a)
{
    a->allocator.alloc = arena_alloc;
    a->allocator.free = arena_free;
    a->allocator.allocator_data = a;
    a->size = 0; /* the first reset after a use makes the block */
    a->block = NULL;
    a->used = 0;
    a->spilled = 0;
    a->spills = NULL;
}

void pb_arena_reset(struct pb_arena *a)
{
    size_t want = a->used + a->spilled;

    while (a->spills != NULL) {
        struct pb_arena_spill *s = a->spills;

        a->spills = s->next;
        free(s);
    }
    if (a->spilled > 0 && a->size < PB_ARENA_KEEP_MAX) {
        size_t size = a->size > 0 ? a->size : ARENA_FIRST_SIZE;

        while (size < want && size < PB_ARENA_KEEP_MAX) {
            size *= 2;
        }
        if (size > PB_ARENA_KEEP_MAX) {
            size = PB_ARENA_KEEP_MAX;
        }
        free(a->block);
        a->block = xmalloc(size);
        a->size = size;
    }
    a->used = 0;
    a->spilled = 0;
    INVARIANT(a->size <= PB_ARENA_KEEP_MAX);
}

void pb_arena_close(struct pb_arena *a)
{
    pb_arena_reset(a);
    free(a->block);
    a->block = NULL;
    a->size = 0;
}

ProtobufCAllocator *pb_arena_allocator(struct pb_arena *a)
{
    return &a->allocator;
}
