/*
 * lz: lz4 compression of whole buffers for snapshots and large RPC
 * payloads, in one of two formats:
 *
 *   - "RLZ4" (lz_compress): the magic, an 8-byte little-endian raw length,
 *     then one lz4 block. Whole buffers only, at most LZ4_MAX_INPUT_SIZE
 *     (~2 GiB);
 *   - an LZ4 frame (lz_frame_*, lz4frame.h): written a piece at a time, so
 *     that a large input never has to be in memory at once. Independent
 *     blocks, the content size in the header and the content checksum on,
 *     after a small skippable frame (also of the LZ4 frame format: the
 *     lz4 tool reads the whole) so that raft 0.15, which decompresses
 *     snapshot files that start with the frame magic as it loads them,
 *     leaves ours alone (lz.c says why that matters).
 *
 * lz_decompress reads either, and a frame with no skippable one before it. Ownership: outputs come from the given
 * allocator (NULL = malloc) and belong to the caller. The allocator must be
 * malloc-compatible (free() releases its blocks): raft_malloc with raft's
 * default heap is. Errors: -1 (allocation failure, corrupt or truncated
 * input, raw length above @max_raw); inputs are never trusted.
 */
#ifndef RINGMQ_LZ_H
#define RINGMQ_LZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LZ_HEADER_SIZE 12

int lz_compress(const void *in, size_t len, void *(*alloc)(size_t),
                void **out, size_t *out_len);
/* Either format, told apart by its magic. A frame (after one skippable
 * frame at most) is refused unless its header gives its content size (so
 * an empty frame, whose size reads as unknown, is refused too), that size
 * is at most @max_raw, and exactly that many bytes decode, the checksums
 * hold and no byte follows it. */
int lz_decompress(const void *in, size_t len, size_t max_raw,
                  void *(*alloc)(size_t), void **out, size_t *out_len);
/* true if @in starts with the "RLZ4" magic (not a frame: rpc_frame
 * payloads are RLZ4 only). */
bool lz_is_compressed(const void *in, size_t len);
/* true if @in starts with the LZ4 frame magic or a skippable frame's. */
bool lz_is_frame(const void *in, size_t len);

/*
 * An LZ4 frame of a known size, compressed a piece at a time into one
 * growing output buffer:
 *
 *   lz_frame_begin(&f, total, realloc, free)
 *   lz_frame_update(&f, piece, n)      the pieces in order, summing to total
 *   lz_frame_end(&f, &out, &out_len)   out: the frame, from @grow
 *
 * @grow is realloc-like (raft_realloc, realloc) and @release frees what it
 * returns (raft_free, free). The output grows geometrically; the pieces are
 * read, not kept. A frame that began (0) is closed by exactly one
 * lz_frame_end, which releases everything on failure, or lz_frame_abort.
 * After a failed update, only lz_frame_abort. Not thread-safe: one thread
 * at a time per frame (any thread).
 */
struct lz_frame {
    void *cctx; /* LZ4F_cctx */
    void *(*grow)(void *, size_t);
    void (*release)(void *);
    unsigned char *out;
    size_t len, cap;
    uint64_t total, fed; /* bytes promised, bytes given */
};

/* @total > 0 (an empty content size reads as unknown). 0 or -1 (nothing
 * is held then). */
int lz_frame_begin(struct lz_frame *f, uint64_t total,
                   void *(*grow)(void *, size_t), void (*release)(void *));
/* -1: allocation or library failure, or more bytes than promised. */
int lz_frame_update(struct lz_frame *f, const void *in, size_t n);
/* -1 if the bytes given fall short of @total (or the library fails). */
int lz_frame_end(struct lz_frame *f, void **out, size_t *out_len);
void lz_frame_abort(struct lz_frame *f);

#endif
