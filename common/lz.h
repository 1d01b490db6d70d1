/*
 * lz: lz4 block compression of whole buffers with a small self-describing
 * header, for snapshots and large RPC payloads.
 *
 * Format: "RLZ4" magic, 8-byte little-endian raw length, then one lz4 block.
 * Ownership: outputs come from the given allocator (NULL = malloc) and belong
 * to the caller. The allocator must be malloc-compatible (free() releases its
 * blocks): raft_malloc with raft's default heap is. Errors: -1 (allocation failure, corrupt or truncated input,
 * raw length above @max_raw); inputs are never trusted.
 */
#ifndef RINGMQ_LZ_H
#define RINGMQ_LZ_H

#include <stdbool.h>
#include <stddef.h>

#define LZ_HEADER_SIZE 12

int lz_compress(const void *in, size_t len, void *(*alloc)(size_t),
                void **out, size_t *out_len);
int lz_decompress(const void *in, size_t len, size_t max_raw,
                  void *(*alloc)(size_t), void **out, size_t *out_len);
/* true if @in starts with the lz header magic. */
bool lz_is_compressed(const void *in, size_t len);

#endif
