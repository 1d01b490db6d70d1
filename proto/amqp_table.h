/*
 * amqp_table: AMQP 0-9-1 field tables and field arrays.
 *
 * Wire format: a table is a long-uint byte count followed by entries
 * (shortstr key, one type octet, value); an array ('A') is a long-uint byte
 * count followed by (type octet, value) items. Value types are the ones
 * RabbitMQ sends and accepts (its "AMQP 0-9-1 errata" departs from the spec
 * table: 's' is a signed short, not a short string, 'l' a signed 64-bit
 * integer, there is no 'U'/'L', and 'x' is a byte array):
 *
 *   t bool (octet)      b int8     B uint8     s int16    u uint16
 *   I int32             i uint32   l int64     f float    d double
 *   D decimal (scale octet + 32-bit value)     T timestamp (uint64)
 *   S long string       x byte array (long)    V void (no value)
 *   F table             A array
 *
 * A decoded table is a tree owned by the caller: every node, key and string
 * of it lives in one arena that amqp_table_free() releases in one call; it
 * does not point into the input. Decoding is exact: encoding a decoded
 * table gives back the same bytes (a bool keeps its raw octet, floats keep
 * their bits, duplicate keys and key order are kept).
 *
 * Limits: nesting depth (tables and arrays inside values) is bounded by the
 * decoder's max_depth; sizes are bounded by the input (the caller's frame
 * bound). The tree takes at most ~48 bytes of memory per input byte (an
 * array of 'V' is the worst case).
 */
#ifndef RINGMQ_AMQP_TABLE_H
#define RINGMQ_AMQP_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "proto/amqp_codec.h"

/* Default max_depth: the outermost table is depth 1. RabbitMQ has no
 * bound; real clients nest 2 deep (client_properties.capabilities). */
#define AMQP_TABLE_DEPTH_DEFAULT 32

enum amqp_field_type {
    AMQP_FIELD_BOOL = 't',
    AMQP_FIELD_I8 = 'b',
    AMQP_FIELD_U8 = 'B',
    AMQP_FIELD_I16 = 's',
    AMQP_FIELD_U16 = 'u',
    AMQP_FIELD_I32 = 'I',
    AMQP_FIELD_U32 = 'i',
    AMQP_FIELD_I64 = 'l',
    AMQP_FIELD_FLOAT = 'f',
    AMQP_FIELD_DOUBLE = 'd',
    AMQP_FIELD_DECIMAL = 'D',
    AMQP_FIELD_LONGSTR = 'S',
    AMQP_FIELD_ARRAY = 'A',
    AMQP_FIELD_TIMESTAMP = 'T',
    AMQP_FIELD_TABLE = 'F',
    AMQP_FIELD_VOID = 'V',
    AMQP_FIELD_BYTES = 'x'
};

struct amqp_table;
struct amqp_array;

struct amqp_decimal {
    uint8_t scale;  /* decimal places */
    uint32_t value; /* raw 32 bits as on the wire */
};

/* One value. Strings, tables and arrays belong to the tree's arena. */
struct amqp_field {
    uint8_t type; /* enum amqp_field_type */
    union {
        uint8_t boolean; /* raw octet: 0 is false, anything else true */
        int8_t i8;
        uint8_t u8;
        int16_t i16;
        uint16_t u16;
        int32_t i32;
        uint32_t u32;
        int64_t i64;
        float f;
        double d;
        struct amqp_decimal decimal;
        uint64_t timestamp;
        struct amqp_bytes bytes; /* 'S' and 'x' */
        struct amqp_table *table;
        struct amqp_array *array;
    } v;
};

struct amqp_table_entry {
    struct amqp_bytes key;
    struct amqp_field value;
};

/* Fields are read-only for users except through the functions below. */
struct amqp_table {
    struct amqp_table_arena *arena; /* shared by the whole tree */
    size_t count;
    size_t cap;
    struct amqp_table_entry *entries;
};

struct amqp_array {
    struct amqp_table_arena *arena;
    size_t count;
    size_t cap;
    struct amqp_field *items;
};

/*
 * Decode a table from @r: a long-uint byte count and that many bytes of
 * entries (r->pos advances past them on success only). @max_depth: 0 means
 * AMQP_TABLE_DEPTH_DEFAULT. On success *out is a new tree owned by the
 * caller (amqp_table_free). Returns 0, AMQP_ESYNTAX (truncated: the count or
 * a value runs past the input or the table's own count), AMQP_ETABLE_TYPE
 * or AMQP_ETABLE_DEPTH; *out is then NULL and nothing is left allocated.
 */
int amqp_table_decode(struct amqp_reader *r,
                      unsigned max_depth,
                      struct amqp_table **out);

/* Same, for the entries alone: @data/@len (borrowed) is the whole content
 * of a table without its byte count. */
int amqp_table_decode_entries(const void *data,
                              size_t len,
                              unsigned max_depth,
                              struct amqp_table **out);

/* Release a tree created by amqp_table_decode*() or amqp_table_new().
 * Only for roots; NULL is a no-op. */
void amqp_table_free(struct amqp_table *t);

/*
 * Append @t's wire form (byte count + entries) to @out. NULL encodes the
 * empty table. Returns 0, or AMQP_ETOO_LONG (out unchanged) when a key
 * exceeds 255 bytes, a type is unknown, or a size exceeds 32 bits.
 */
int amqp_table_encode(struct buf *out, const struct amqp_table *t);

/* First entry whose key equals @key (RabbitMQ looks up the first too), or
 * NULL. Borrowed from the tree. */
const struct amqp_field *amqp_table_get(const struct amqp_table *t,
                                        const char *key);

/* Value of any integer type (b B s u I i l) in *v: 0, or -1 if @f is
 * another type (RabbitMQ accepts any of them for x-message-ttl etc.). */
int amqp_field_get_int(const struct amqp_field *f, int64_t *v);

/*
 * Building tables (for server-properties, queue arguments in replies, ...).
 * Allocation failure aborts. Keys and strings are copied into the tree.
 * The returned pointers belong to the tree and stay valid until the root is
 * freed; a returned field has its type set and a zeroed value to fill in.
 */
struct amqp_table *amqp_table_new(void);
struct amqp_field *amqp_table_add(struct amqp_table *t,
                                  const char *key,
                                  uint8_t type);
struct amqp_field *amqp_array_add(struct amqp_array *a, uint8_t type);
/* Copy @len bytes into @t's arena (for 'S'/'x' values). */
struct amqp_bytes amqp_table_copy_bytes(struct amqp_table *t,
                                        const void *data,
                                        size_t len);
void amqp_table_add_longstr(struct amqp_table *t,
                            const char *key,
                            const char *value);
void amqp_table_add_bool(struct amqp_table *t, const char *key, int value);
void amqp_table_add_i32(struct amqp_table *t, const char *key, int32_t v);
void amqp_table_add_i64(struct amqp_table *t, const char *key, int64_t v);
/* A nested empty table / array under @key. */
struct amqp_table *amqp_table_add_table(struct amqp_table *t, const char *key);
struct amqp_array *amqp_table_add_array(struct amqp_table *t, const char *key);

#endif
