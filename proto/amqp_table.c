/*
 * amqp_table: field table / field array codec and builder (amqp_table.h).
 *
 * A tree lives in one arena: a list of chunks that only grows and is
 * released as a whole, so a decoded table costs a handful of mallocs and
 * one free however many entries it has. Growing an entry array copies it
 * to a larger block and abandons the old one (at most doubles memory).
 */
#include "proto/amqp_table.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MIN 512
#define CHUNK_MAX (64 * 1024)

struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t cap;
    alignas(max_align_t) unsigned char data[];
};

struct amqp_table_arena {
    struct arena_chunk *head;
    size_t next_cap; /* size of the next regular chunk */
};

static void *arena_alloc(struct amqp_table_arena *a, size_t n)
{
    struct arena_chunk *c = a->head;
    size_t align = alignof(max_align_t);
    void *p;

    n = (n + align - 1) & ~(align - 1);
    if (c == NULL || c->cap - c->used < n) {
        int one_off = n > a->next_cap;
        size_t cap = one_off ? n : a->next_cap;

        c = xmalloc(sizeof(*c) + cap);
        c->used = 0;
        c->cap = cap;
        if (one_off && a->head != NULL) {
            /* A big block goes behind the head so the head's free space
             * stays usable for the small ones that follow. */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
            if (!one_off && a->next_cap < CHUNK_MAX) {
                a->next_cap *= 2;
            }
        }
    }
    p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static struct amqp_table *table_alloc(struct amqp_table_arena *a)
{
    struct amqp_table *t = arena_alloc(a, sizeof(*t));

    t->arena = a;
    return t;
}

static struct amqp_array *array_alloc(struct amqp_table_arena *a)
{
    struct amqp_array *arr = arena_alloc(a, sizeof(*arr));

    arr->arena = a;
    return arr;
}

/* Make room for one more element in *items (count/cap in elements). */
static void grow(struct amqp_table_arena *a,
                 void **items,
                 size_t count,
                 size_t *cap,
                 size_t elem)
{
    void *n;
    size_t ncap;

    if (count < *cap) {
        return;
    }
    ncap = *cap ? *cap * 2 : 4;
    n = arena_alloc(a, ncap * elem);
    if (count > 0) {
        memcpy(n, *items, count * elem);
    }
    *items = n;
    *cap = ncap;
}

static struct amqp_table_entry *table_push(struct amqp_table *t)
{
    grow(t->arena, (void **)&t->entries, t->count, &t->cap,
         sizeof(*t->entries));
    return &t->entries[t->count++];
}

static struct amqp_field *array_push(struct amqp_array *arr)
{
    grow(arr->arena, (void **)&arr->items, arr->count, &arr->cap,
         sizeof(*arr->items));
    return &arr->items[arr->count++];
}

static struct amqp_bytes arena_bytes(struct amqp_table_arena *a,
                                     const void *data,
                                     size_t len)
{
    struct amqp_bytes b = {NULL, len};

    if (len > 0) {
        uint8_t *p = arena_alloc(a, len);
        memcpy(p, data, len);
        b.data = p;
    }
    return b;
}

static struct amqp_table_arena *arena_new(void)
{
    struct amqp_table_arena *a = xmalloc(sizeof(*a));

    a->head = NULL;
    a->next_cap = CHUNK_MIN;
    return a;
}

static void arena_free(struct amqp_table_arena *a)
{
    struct arena_chunk *c, *next;

    for (c = a->head; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

/* ---- decoding ---------------------------------------------------------- */

static int decode_entries(struct amqp_table_arena *a,
                          struct amqp_reader *r,
                          unsigned depth,
                          unsigned max_depth,
                          struct amqp_table *t);
static int decode_items(struct amqp_table_arena *a,
                        struct amqp_reader *r,
                        unsigned depth,
                        unsigned max_depth,
                        struct amqp_array *arr);

/* Decode one value of type @type from @r; @depth is the depth of the
 * container it sits in. */
static int decode_value(struct amqp_table_arena *a,
                        struct amqp_reader *r,
                        uint8_t type,
                        unsigned depth,
                        unsigned max_depth,
                        struct amqp_field *f)
{
    struct amqp_reader sub;
    struct amqp_bytes b;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    int rv = 0;

    f->type = type;
    switch (type) {
        case AMQP_FIELD_BOOL:
        case AMQP_FIELD_I8:
        case AMQP_FIELD_U8:
            rv = amqp_get_u8(r, &u8);
            f->v.u8 = u8; /* same octet for all three views */
            break;
        case AMQP_FIELD_I16:
        case AMQP_FIELD_U16:
            rv = amqp_get_u16(r, &u16);
            f->v.u16 = u16;
            break;
        case AMQP_FIELD_I32:
        case AMQP_FIELD_U32:
            rv = amqp_get_u32(r, &u32);
            f->v.u32 = u32;
            break;
        case AMQP_FIELD_FLOAT:
            rv = amqp_get_u32(r, &u32);
            memcpy(&f->v.f, &u32, sizeof(f->v.f));
            break;
        case AMQP_FIELD_I64:
        case AMQP_FIELD_TIMESTAMP:
            rv = amqp_get_u64(r, &u64);
            f->v.timestamp = u64;
            break;
        case AMQP_FIELD_DOUBLE:
            rv = amqp_get_u64(r, &u64);
            memcpy(&f->v.d, &u64, sizeof(f->v.d));
            break;
        case AMQP_FIELD_DECIMAL:
            if ((rv = amqp_get_u8(r, &u8)) != 0 ||
                (rv = amqp_get_u32(r, &u32)) != 0) {
                break;
            }
            f->v.decimal.scale = u8;
            f->v.decimal.value = u32;
            break;
        case AMQP_FIELD_LONGSTR:
        case AMQP_FIELD_BYTES:
            if ((rv = amqp_get_longstr(r, &b)) == 0) {
                f->v.bytes = arena_bytes(a, b.data, b.len);
            }
            break;
        case AMQP_FIELD_VOID:
            break;
        case AMQP_FIELD_TABLE:
        case AMQP_FIELD_ARRAY:
            if (depth + 1 > max_depth) {
                return AMQP_ETABLE_DEPTH;
            }
            if ((rv = amqp_get_longstr(r, &b)) != 0) {
                break;
            }
            amqp_reader_init(&sub, b.data, b.len);
            if (type == AMQP_FIELD_TABLE) {
                f->v.table = table_alloc(a);
                rv = decode_entries(a, &sub, depth + 1, max_depth, f->v.table);
            } else {
                f->v.array = array_alloc(a);
                rv = decode_items(a, &sub, depth + 1, max_depth, f->v.array);
            }
            break;
        default:
            return AMQP_ETABLE_TYPE;
    }
    return rv;
}

/* Entries until @r is exhausted; a value that runs past it is truncated. */
static int decode_entries(struct amqp_table_arena *a,
                          struct amqp_reader *r,
                          unsigned depth,
                          unsigned max_depth,
                          struct amqp_table *t)
{
    while (r->pos < r->len) {
        struct amqp_table_entry *e;
        struct amqp_bytes key;
        uint8_t type;
        int rv;

        if ((rv = amqp_get_shortstr(r, &key)) != 0 ||
            (rv = amqp_get_u8(r, &type)) != 0) {
            return rv;
        }
        e = table_push(t);
        e->key = arena_bytes(a, key.data, key.len);
        rv = decode_value(a, r, type, depth, max_depth, &e->value);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int decode_items(struct amqp_table_arena *a,
                        struct amqp_reader *r,
                        unsigned depth,
                        unsigned max_depth,
                        struct amqp_array *arr)
{
    while (r->pos < r->len) {
        uint8_t type;
        int rv;

        if ((rv = amqp_get_u8(r, &type)) != 0) {
            return rv;
        }
        rv = decode_value(a, r, type, depth, max_depth, array_push(arr));
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int amqp_table_decode_entries(const void *data,
                              size_t len,
                              unsigned max_depth,
                              struct amqp_table **out)
{
    struct amqp_table_arena *a;
    struct amqp_reader r;
    struct amqp_table *t;
    int rv;

    *out = NULL;
    if (max_depth == 0) {
        max_depth = AMQP_TABLE_DEPTH_DEFAULT;
    }
    a = arena_new();
    t = table_alloc(a);
    amqp_reader_init(&r, data, len);
    rv = decode_entries(a, &r, 1, max_depth, t);
    if (rv != 0) {
        goto err_after_arena;
    }
    *out = t;
    return 0;

err_after_arena:
    arena_free(a);
    return rv;
}

int amqp_table_decode(struct amqp_reader *r,
                      unsigned max_depth,
                      struct amqp_table **out)
{
    struct amqp_bytes content;
    size_t start = r->pos;
    int rv;

    *out = NULL;
    if ((rv = amqp_get_longstr(r, &content)) != 0) {
        return rv;
    }
    rv = amqp_table_decode_entries(content.data, content.len, max_depth, out);
    if (rv != 0) {
        r->pos = start;
    }
    return rv;
}

void amqp_table_free(struct amqp_table *t)
{
    if (t != NULL) {
        arena_free(t->arena);
    }
}

/* ---- encoding ---------------------------------------------------------- */

static int encode_entries(struct buf *out, const struct amqp_table *t);
static int encode_items(struct buf *out, const struct amqp_array *arr);

/* A long-uint byte count, then whatever @fn writes; the count is patched. */
static int encode_counted(struct buf *out,
                          const void *obj,
                          int (*fn)(struct buf *, const void *))
{
    size_t start = out->len;
    size_t n;
    int rv;

    amqp_put_u32(out, 0);
    if (obj != NULL && (rv = fn(out, obj)) != 0) {
        return rv;
    }
    n = out->len - start - 4;
    if (n > UINT32_MAX) {
        return AMQP_ETOO_LONG;
    }
    amqp_patch_u32(out, start, (uint32_t)n);
    return 0;
}

static int entries_fn(struct buf *out, const void *t)
{
    return encode_entries(out, t);
}

static int items_fn(struct buf *out, const void *arr)
{
    return encode_items(out, arr);
}

static int encode_value(struct buf *out, const struct amqp_field *f)
{
    uint32_t u32;
    uint64_t u64;

    amqp_put_u8(out, f->type);
    switch (f->type) {
        case AMQP_FIELD_BOOL:
        case AMQP_FIELD_I8:
        case AMQP_FIELD_U8:
            amqp_put_u8(out, f->v.u8);
            return 0;
        case AMQP_FIELD_I16:
        case AMQP_FIELD_U16:
            amqp_put_u16(out, f->v.u16);
            return 0;
        case AMQP_FIELD_I32:
        case AMQP_FIELD_U32:
            amqp_put_u32(out, f->v.u32);
            return 0;
        case AMQP_FIELD_FLOAT:
            memcpy(&u32, &f->v.f, sizeof(u32));
            amqp_put_u32(out, u32);
            return 0;
        case AMQP_FIELD_I64:
        case AMQP_FIELD_TIMESTAMP:
            amqp_put_u64(out, f->v.timestamp);
            return 0;
        case AMQP_FIELD_DOUBLE:
            memcpy(&u64, &f->v.d, sizeof(u64));
            amqp_put_u64(out, u64);
            return 0;
        case AMQP_FIELD_DECIMAL:
            amqp_put_u8(out, f->v.decimal.scale);
            amqp_put_u32(out, f->v.decimal.value);
            return 0;
        case AMQP_FIELD_LONGSTR:
        case AMQP_FIELD_BYTES:
            return amqp_put_longstr(out, f->v.bytes);
        case AMQP_FIELD_VOID:
            return 0;
        case AMQP_FIELD_TABLE:
            return encode_counted(out, f->v.table, entries_fn);
        case AMQP_FIELD_ARRAY:
            return encode_counted(out, f->v.array, items_fn);
        default:
            return AMQP_ETOO_LONG;
    }
}

static int encode_entries(struct buf *out, const struct amqp_table *t)
{
    size_t i;
    int rv;

    for (i = 0; i < t->count; i++) {
        if ((rv = amqp_put_shortstr(out, t->entries[i].key)) != 0 ||
            (rv = encode_value(out, &t->entries[i].value)) != 0) {
            return rv;
        }
    }
    return 0;
}

static int encode_items(struct buf *out, const struct amqp_array *arr)
{
    size_t i;
    int rv;

    for (i = 0; i < arr->count; i++) {
        if ((rv = encode_value(out, &arr->items[i])) != 0) {
            return rv;
        }
    }
    return 0;
}

int amqp_table_encode(struct buf *out, const struct amqp_table *t)
{
    size_t start = out->len;
    int rv = encode_counted(out, t, entries_fn);

    if (rv != 0) {
        out->len = start;
    }
    return rv;
}

/* ---- lookup and building ---------------------------------------------- */

const struct amqp_field *amqp_table_get(const struct amqp_table *t,
                                        const char *key)
{
    size_t i;

    if (t == NULL) {
        return NULL;
    }
    for (i = 0; i < t->count; i++) {
        if (amqp_bytes_eq(t->entries[i].key, key)) {
            return &t->entries[i].value;
        }
    }
    return NULL;
}

int amqp_field_get_int(const struct amqp_field *f, int64_t *v)
{
    switch (f->type) {
        case AMQP_FIELD_I8:
            *v = f->v.i8;
            return 0;
        case AMQP_FIELD_U8:
            *v = f->v.u8;
            return 0;
        case AMQP_FIELD_I16:
            *v = f->v.i16;
            return 0;
        case AMQP_FIELD_U16:
            *v = f->v.u16;
            return 0;
        case AMQP_FIELD_I32:
            *v = f->v.i32;
            return 0;
        case AMQP_FIELD_U32:
            *v = f->v.u32;
            return 0;
        case AMQP_FIELD_I64:
            *v = f->v.i64;
            return 0;
        default:
            return -1;
    }
}

struct amqp_table *amqp_table_new(void)
{
    return table_alloc(arena_new());
}

struct amqp_field *amqp_table_add(struct amqp_table *t,
                                  const char *key,
                                  uint8_t type)
{
    struct amqp_table_entry *e = table_push(t);

    e->key = arena_bytes(t->arena, key, strlen(key));
    e->value.type = type;
    if (type == AMQP_FIELD_TABLE) {
        e->value.v.table = table_alloc(t->arena);
    } else if (type == AMQP_FIELD_ARRAY) {
        e->value.v.array = array_alloc(t->arena);
    }
    return &e->value;
}

struct amqp_field *amqp_array_add(struct amqp_array *a, uint8_t type)
{
    struct amqp_field *f = array_push(a);

    f->type = type;
    if (type == AMQP_FIELD_TABLE) {
        f->v.table = table_alloc(a->arena);
    } else if (type == AMQP_FIELD_ARRAY) {
        f->v.array = array_alloc(a->arena);
    }
    return f;
}

struct amqp_bytes amqp_table_copy_bytes(struct amqp_table *t,
                                        const void *data,
                                        size_t len)
{
    return arena_bytes(t->arena, data, len);
}

void amqp_table_add_longstr(struct amqp_table *t,
                            const char *key,
                            const char *value)
{
    struct amqp_field *f = amqp_table_add(t, key, AMQP_FIELD_LONGSTR);

    f->v.bytes = arena_bytes(t->arena, value, strlen(value));
}

void amqp_table_add_bool(struct amqp_table *t, const char *key, int value)
{
    amqp_table_add(t, key, AMQP_FIELD_BOOL)->v.boolean = value ? 1 : 0;
}

void amqp_table_add_i32(struct amqp_table *t, const char *key, int32_t v)
{
    amqp_table_add(t, key, AMQP_FIELD_I32)->v.i32 = v;
}

void amqp_table_add_i64(struct amqp_table *t, const char *key, int64_t v)
{
    amqp_table_add(t, key, AMQP_FIELD_I64)->v.i64 = v;
}

struct amqp_table *amqp_table_add_table(struct amqp_table *t, const char *key)
{
    return amqp_table_add(t, key, AMQP_FIELD_TABLE)->v.table;
}

struct amqp_array *amqp_table_add_array(struct amqp_table *t, const char *key)
{
    return amqp_table_add(t, key, AMQP_FIELD_ARRAY)->v.array;
}
