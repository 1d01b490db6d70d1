/*
 * amqp_frame: AMQP 0-9-1 protocol header and general frame format.
 *
 * A connection starts with the client's 8-octet protocol header
 * "AMQP" 0 0 9 1; after that both peers exchange frames:
 *
 *   +------+---------+-------------+----------------+-----------+
 *   | type | channel | size        | payload        | frame-end |
 *   | 1    | 2 (BE)  | 4 (BE)      | size octets    | 0xCE      |
 *   +------+---------+-------------+----------------+-----------+
 *
 *   type  1 method, 2 content header, 3 content body, 8 heartbeat.
 *
 * frame_max, as negotiated by connection.tune/tune-ok, bounds the whole
 * frame: header (7) + payload + end octet (1).
 *
 * The decoder is resumable: feed it bytes as they arrive, it yields whole
 * frames. It checks the size against frame_max as soon as the 7 header
 * octets are in, so an oversize frame is refused before its payload is
 * buffered, and it buffers at most one frame. Errors (amqp_codec.h) are
 * sticky: the byte stream can no longer be trusted, the connection gets
 * connection.close with amqp_codec_reply_code(rv) (501 FRAME_ERROR for all
 * of them) and is closed. Fuzzed by tests/fuzz/fuzz_amqp_frame.c.
 */
#ifndef RINGMQ_AMQP_FRAME_H
#define RINGMQ_AMQP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "proto/amqp_codec.h"

#define AMQP_PROTOCOL_HEADER "AMQP\x00\x00\x09\x01"
#define AMQP_PROTOCOL_HEADER_SIZE 8
#define AMQP_FRAME_HEADER_SIZE 7 /* type + channel + size */
#define AMQP_FRAME_OVERHEAD 8    /* header + end octet */
#define AMQP_FRAME_END 0xCE
/* Spec: every peer accepts frames of at least this size, also before tune. */
#define AMQP_FRAME_MIN_SIZE 4096
/* RabbitMQ's default frame_max (offered in connection.tune). */
#define AMQP_FRAME_MAX_DEFAULT 131072

enum amqp_frame_type {
    AMQP_FRAME_METHOD = 1,
    AMQP_FRAME_HEADER = 2,
    AMQP_FRAME_BODY = 3,
    AMQP_FRAME_HEARTBEAT = 8
};

/*
 * Check the protocol header at the start of a connection. @data/@len: bytes
 * received so far (borrowed).
 * Returns 0 when the first 8 bytes are "AMQP\0\0\9\1" (consume 8 bytes),
 * 1 when fewer than 8 bytes are in and they are a prefix of it (wait), or
 * AMQP_EPROTOCOL_HEADER as soon as a byte differs: the spec then wants the
 * server to write its own protocol header (AMQP_PROTOCOL_HEADER) and close.
 */
int amqp_frame_check_protocol_header(const void *data, size_t len);

/* One decoded frame. */
struct amqp_frame {
    uint8_t type; /* enum amqp_frame_type */
    uint16_t channel;
    const uint8_t *payload; /* borrowed, see amqp_frame_decoder_feed() */
    size_t size;
};

/* Resumable decoder. Fields are private; embed it by value. */
struct amqp_frame_decoder {
    size_t frame_max;
    uint8_t hdr[AMQP_FRAME_HEADER_SIZE]; /* header octets gathered so far */
    size_t hdr_len;
    struct buf body; /* payload + end octet that straddle feeds */
    int error;       /* sticky */
};

/* @frame_max: largest accepted frame, overhead included; 0 means
 * AMQP_FRAME_MAX_DEFAULT. Cannot fail. */
void amqp_frame_decoder_init(struct amqp_frame_decoder *d, size_t frame_max);

/* Change the bound (after tune-ok); applies from the next frame header on.
 * 0 means AMQP_FRAME_MAX_DEFAULT. */
void amqp_frame_decoder_set_max(struct amqp_frame_decoder *d, size_t frame_max);

/* Releases the decoder's buffer; it may be re-initialised afterwards. */
void amqp_frame_decoder_close(struct amqp_frame_decoder *d);

/*
 * Consumes bytes of @data (borrowed for the call) until one frame is complete
 * or the input is exhausted; *consumed is set to the bytes used.
 *
 * Returns 1 with *frame set when a frame completed; feed the rest (@data +
 * *consumed) with further calls. frame->payload points into @data or into
 * the decoder and stays valid until the next call on @d or
 * amqp_frame_decoder_close(), and only while @data is alive.
 * Returns 0 when all input was consumed without completing a frame.
 * Returns AMQP_EFRAME_TOO_BIG, AMQP_EFRAME_TYPE, AMQP_EFRAME_END or
 * AMQP_EFRAME_HEARTBEAT on a bad frame; every later call returns the same.
 */
int amqp_frame_decoder_feed(struct amqp_frame_decoder *d,
                            const void *data,
                            size_t len,
                            size_t *consumed,
                            struct amqp_frame *frame);

/*
 * Encoding. Each function appends whole frames to @out. @payload is copied.
 * Returns 0, or AMQP_EFRAME_TOO_BIG (nothing appended) when the frame would
 * exceed @frame_max (0 = no bound besides the 32-bit size field).
 */
int amqp_frame_encode(struct buf *out,
                      uint8_t type,
                      uint16_t channel,
                      const void *payload,
                      size_t len,
                      size_t frame_max);

/* Append a heartbeat frame (channel 0, no payload). */
void amqp_frame_encode_heartbeat(struct buf *out);

/*
 * In-place encoding, for payloads written straight into @out:
 * amqp_frame_begin() appends a frame header with a placeholder size and
 * returns its offset; the caller appends the payload; amqp_frame_finish()
 * patches the size and appends the end octet. If the payload is too big
 * for @frame_max (0 = only the 32-bit bound) it truncates @out back to the
 * offset and returns AMQP_EFRAME_TOO_BIG.
 */
size_t amqp_frame_begin(struct buf *out, uint8_t type, uint16_t channel);
int amqp_frame_finish(struct buf *out, size_t start, size_t frame_max);

/*
 * Append @len bytes of @body (copied) as content body frames of at most
 * @frame_max bytes each (0 = AMQP_FRAME_MAX_DEFAULT; must exceed
 * AMQP_FRAME_OVERHEAD). An empty body gives no frame, as the spec wants.
 */
void amqp_frame_encode_body(struct buf *out,
                            uint16_t channel,
                            const void *body,
                            size_t len,
                            size_t frame_max);

#endif
