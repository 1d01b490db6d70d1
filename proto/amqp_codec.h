/*
 * amqp_codec: what the AMQP 0-9-1 codec modules (amqp_frame, amqp_table,
 * amqp_method) share: their error codes, the mapping of those codes to the
 * spec's connection.close reply codes, and the big-endian reader/writer of
 * the spec's primitive domains (octet, short, long, longlong, shortstr,
 * longstr).
 *
 * Errors are negative AMQP_E* codes. A decode error means the peer sent
 * something the spec (or RabbitMQ) does not accept; the front-end answers it
 * with connection.close and amqp_codec_reply_code(rv), it never crashes or
 * over-reads. Encode errors are caller bugs (a value that does not fit its
 * field); the output buffer is then left as it was.
 */
#ifndef RINGMQ_AMQP_CODEC_H
#define RINGMQ_AMQP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum {
    AMQP_OK = 0,
    AMQP_EFRAME_END = -1,       /* frame-end octet is not 0xCE */
    AMQP_EFRAME_TYPE = -2,      /* frame type not 1, 2, 3 or 8 */
    AMQP_EFRAME_TOO_BIG = -3,   /* frame larger than the negotiated max */
    AMQP_EFRAME_HEARTBEAT = -4, /* heartbeat on a channel != 0 or with data */
    AMQP_EPROTOCOL_HEADER = -5, /* not "AMQP\0\0\9\1" */
    AMQP_ESYNTAX = -6,          /* truncated / trailing / reserved bits set */
    AMQP_ETABLE_TYPE = -7,      /* unknown field-value type octet */
    AMQP_ETABLE_DEPTH = -8,     /* tables/arrays nested too deep */
    AMQP_EUNKNOWN_METHOD = -9,  /* class id / method id not in our table */
    AMQP_ETOO_LONG = -10        /* encode: value does not fit its field */
};

/* Reply codes of the spec's "constants" section used by the codec. */
#define AMQP_REPLY_SUCCESS 200
#define AMQP_REPLY_FRAME_ERROR 501
#define AMQP_REPLY_SYNTAX_ERROR 502
#define AMQP_REPLY_COMMAND_INVALID 503
#define AMQP_REPLY_CHANNEL_ERROR 504
#define AMQP_REPLY_UNEXPECTED_FRAME 505
#define AMQP_REPLY_NOT_IMPLEMENTED 540

/* Static description of @rv (an AMQP_E* code). */
const char *amqp_codec_strerror(int rv);

/*
 * The connection.close reply code for a decode error @rv:
 * 501 FRAME_ERROR for the frame-level errors, 502 SYNTAX_ERROR for bad
 * method/header/table contents, 540 NOT_IMPLEMENTED for unknown class or
 * method ids. AMQP_EPROTOCOL_HEADER returns 0: the answer to a wrong
 * protocol header is our own protocol header followed by a close, not a
 * connection.close.
 */
int amqp_codec_reply_code(int rv);

/* A byte string: shortstr, longstr, table key, 'S'/'x' field values. It
 * never owns its bytes; each user says whom they belong to. */
struct amqp_bytes {
    const uint8_t *data;
    size_t len;
};

/* Bytes of a NUL-terminated C string (borrowed; NULL gives {NULL, 0}). */
struct amqp_bytes amqp_cstr(const char *s);

/* 1 if @b holds exactly the bytes of the C string @s. */
int amqp_bytes_eq(struct amqp_bytes b, const char *s);

/*
 * Reader over a borrowed byte range. Every get returns 0 or AMQP_ESYNTAX
 * when fewer bytes remain than the value needs (nothing is consumed then).
 * Strings point into the range.
 */
struct amqp_reader {
    const uint8_t *data;
    size_t len;
    size_t pos;
};

void amqp_reader_init(struct amqp_reader *r, const void *data, size_t len);
int amqp_get_u8(struct amqp_reader *r, uint8_t *v);
int amqp_get_u16(struct amqp_reader *r, uint16_t *v);
int amqp_get_u32(struct amqp_reader *r, uint32_t *v);
int amqp_get_u64(struct amqp_reader *r, uint64_t *v);
int amqp_get_bytes(struct amqp_reader *r, size_t n, struct amqp_bytes *v);
int amqp_get_shortstr(struct amqp_reader *r, struct amqp_bytes *v);
int amqp_get_longstr(struct amqp_reader *r, struct amqp_bytes *v);

/* Writers append to @out (allocation failure aborts, see common/buf.h). */
void amqp_put_u8(struct buf *out, uint8_t v);
void amqp_put_u16(struct buf *out, uint16_t v);
void amqp_put_u32(struct buf *out, uint32_t v);
void amqp_put_u64(struct buf *out, uint64_t v);
/* Patch a big-endian u32 at @off (already written) in @out. */
void amqp_patch_u32(struct buf *out, size_t off, uint32_t v);
/* Return AMQP_ETOO_LONG (appending nothing) when @s exceeds 255 bytes
 * (shortstr) or 2^32-1 bytes (longstr). */
int amqp_put_shortstr(struct buf *out, struct amqp_bytes s);
int amqp_put_longstr(struct buf *out, struct amqp_bytes s);

#endif
