/*
 * rpc_frame: framing of the internal RPC (router/ringmqctl <-> node).
 *
 * Wire format of one frame:
 *
 *   +----------------+-------+---------------------------------+
 *   | length (4, BE) | flags | payload (length - 1 bytes)      |
 *   +----------------+-------+---------------------------------+
 *
 *   length   bytes that follow the length field (flags + payload), >= 1 and
 *            <= the decoder's max_frame.
 *   flags    bit 0 (RPC_FRAME_FLAG_LZ4): payload is common/lz output of
 *            the packed message: what the encoder writes (an lz4 block with
 *            the "RLZ4" header) or an LZ4 frame, both of which the decoder
 *            reads (lz_decompress). Other bits must be zero.
 *   payload  a packed Ringmq__RpcRequest (client -> node) or
 *            Ringmq__RpcResponse (node -> client).
 *
 * The encoder compresses payloads of at least @compress_min bytes when that
 * makes them smaller. The decoder is resumable: feed it bytes as they arrive,
 * it yields complete frames. It buffers at most one frame (bounded by
 * max_frame) and a decompressed payload (bounded by max_frame too).
 *
 * Errors are negative RPC_FRAME_E* codes. Every decoder error means the byte
 * stream can no longer be trusted: the caller closes the connection (and
 * logs rpc_frame_strerror()). The decoder never crashes or over-reads on any
 * input; this is fuzzed (tests/fuzz/fuzz_rpc_frame.c).
 */
#ifndef RINGMQ_RPC_FRAME_H
#define RINGMQ_RPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "rpc.pb-c.h"
#include "sm/outcome.h"

#define RPC_FRAME_HEADER_SIZE 5 /* length + flags */
#define RPC_FRAME_FLAG_LZ4 0x01u
#define RPC_FRAME_MAX_DEFAULT ((size_t)64 << 20)          /* 64 MiB */
#define RPC_FRAME_COMPRESS_MIN_DEFAULT ((size_t)16 << 10) /* 16 KiB */
#define RPC_FRAME_COMPRESS_NEVER SIZE_MAX

/* Conventional TCP port of a node's RPC listener (ringmqctl's default). */
#define RPC_PORT_DEFAULT 7100

enum {
    RPC_FRAME_OK = 0,
    RPC_FRAME_ETOOBIG = -1, /* length (or decompressed size) above max */
    RPC_FRAME_EFLAGS = -2,  /* unknown flag bits, or zero-length frame */
    RPC_FRAME_ELZ4 = -3,    /* compressed payload is corrupt */
    RPC_FRAME_EPROTO = -4   /* payload is not a valid protobuf message */
};

/* Static description of @rv (an RPC_FRAME_E* code). */
const char *rpc_frame_strerror(int rv);

/*
 * Encoding. Each function appends exactly one frame to @out (which keeps
 * growing; allocation failure aborts, see common/buf.h). @msg is borrowed for
 * the duration of the call. @compress_min: payloads of at least this many
 * bytes are lz4-compressed if that saves space; 0 means
 * RPC_FRAME_COMPRESS_MIN_DEFAULT, RPC_FRAME_COMPRESS_NEVER disables it.
 *
 * Returns 0, or RPC_FRAME_ETOOBIG if the frame would exceed @max_frame
 * (0 = RPC_FRAME_MAX_DEFAULT) even after compression; @out is then left
 * unchanged.
 */
int rpc_frame_encode(struct buf *out,
                     const ProtobufCMessage *msg,
                     size_t compress_min,
                     size_t max_frame);
int rpc_frame_encode_request(struct buf *out,
                             const Ringmq__RpcRequest *req,
                             size_t compress_min,
                             size_t max_frame);
int rpc_frame_encode_response(struct buf *out,
                              const Ringmq__RpcResponse *resp,
                              size_t compress_min,
                              size_t max_frame);

/*
 * The same for a message packed already: the payload is @packed[@len]
 * followed by @more[@more_len] (may be 0), more fields of that message
 * (protobuf merges concatenated encodings; a later scalar wins). Both are
 * borrowed for the call. Returns 0 or RPC_FRAME_ETOOBIG (nothing appended).
 */
int rpc_frame_encode_packed(struct buf *out,
                            const void *packed,
                            size_t len,
                            const void *more,
                            size_t more_len,
                            size_t compress_min,
                            size_t max_frame);

/* One decoded frame: the (decompressed) packed message. */
struct rpc_frame {
    uint8_t flags;          /* as received (RPC_FRAME_FLAG_LZ4 or 0) */
    const uint8_t *payload; /* borrowed, see rpc_frame_decoder_feed() */
    size_t len;
};

/* Resumable decoder. Fields are private; embed it by value. */
struct rpc_frame_decoder {
    size_t max_frame;
    uint8_t hdr[RPC_FRAME_HEADER_SIZE]; /* header bytes gathered so far */
    size_t hdr_len;
    struct buf body; /* partial payload that straddles feeds */
    size_t body_len; /* payload length of the current frame */
    void *raw;       /* decompressed payload of the last frame (malloc) */
    int error;       /* sticky: once failed, always failed */
};

/* @max_frame: largest accepted length field and decompressed payload;
 * 0 = RPC_FRAME_MAX_DEFAULT. Cannot fail. */
void rpc_frame_decoder_init(struct rpc_frame_decoder *d, size_t max_frame);

/* Releases the decoder's buffers; it may be re-initialised afterwards. */
void rpc_frame_decoder_close(struct rpc_frame_decoder *d);

/*
 * Consumes bytes of @data (borrowed for the call) until one frame is complete
 * or the input is exhausted. *consumed is set to the number of bytes used.
 *
 * Returns 1 with *frame set when a frame completed: feed the rest of the
 * input (@data + *consumed) with further calls. frame->payload points either
 * into @data or into the decoder; it stays valid until the next call on @d or
 * rpc_frame_decoder_close(), and only while @data is alive.
 * Returns 0 when all input was consumed without completing a frame.
 * Returns a negative RPC_FRAME_E* code on a bad frame; the decoder then stays
 * failed (every later call returns the same code).
 */
int rpc_frame_decoder_feed(struct rpc_frame_decoder *d,
                           const void *data,
                           size_t len,
                           size_t *consumed,
                           struct rpc_frame *frame);

/*
 * Unpack a decoded frame's payload. On success *out is a new message owned by
 * the caller, to be released with ringmq__rpc_request__free_unpacked(*out,
 * NULL) (resp.: ringmq__rpc_response__free_unpacked); it does not reference
 * the frame. A response may be unpacked through @alloc instead (an arena,
 * proto/pb_arena.h: released with it; NULL = malloc). Returns 0 or
 * RPC_FRAME_EPROTO.
 */
int rpc_frame_unpack_request(const struct rpc_frame *frame,
                             Ringmq__RpcRequest **out);
int rpc_frame_unpack_response(const struct rpc_frame *frame,
                              ProtobufCAllocator *alloc,
                              Ringmq__RpcResponse **out);

/* RpcCode is sm/outcome.h on the wire (same numbers, asserted in
 * rpc_frame.c). A code from a peer outside the vocabulary reads as
 * UNAVAILABLE: the outcome is not known. */
static inline Ringmq__RpcCode rpc_code(enum outcome o)
{
    return (Ringmq__RpcCode)o;
}

static inline enum outcome rpc_outcome(Ringmq__RpcCode code)
{
    return (unsigned)code < OUTCOME__COUNT ? (enum outcome)code
                                            : OUTCOME_UNAVAILABLE;
}

#endif
