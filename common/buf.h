/*
 * buf: a growable byte buffer.
 *
 * The buffer owns its bytes. Allocation failure aborts the process (like
 * Redis' zmalloc): a cache node that cannot allocate a few KiB cannot do
 * anything useful, and the memory limit (-m) keeps the state machine well
 * below that point.
 */
#ifndef RINGMQ_BUF_H
#define RINGMQ_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);            /* releases the bytes; b reusable */
void buf_reserve(struct buf *b, size_t extra); /* room for @extra more */
void buf_append(struct buf *b, const void *data, size_t len);
void buf_append_str(struct buf *b, const char *s);
/* Append @v little-endian (the byte order of our snapshots, common/le.h). */
void buf_put_le32(struct buf *b, uint32_t v);
void buf_put_le64(struct buf *b, uint64_t v);
void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drop the first @n bytes (consumed input). */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b); /* len = 0, keeps the allocation */

/* xmalloc family: abort on out-of-memory. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
void *xmemdup(const void *p, size_t n);

#endif
