/*
 * pb_arena: a protobuf-c allocator that unpacks into one reused block.
 *
 * protobuf-c's unpack allocates the message, every sub-message, every
 * repeated field and a copy of every bytes field one by one: a Raft batch
 * of N cache commands costs some 4N mallocs and as many frees on every
 * replica. Unpacking through an arena costs none once its block has grown
 * to the largest message seen (up to PB_ARENA_KEEP_MAX): allocations bump
 * a pointer, frees do nothing, pb_arena_reset() takes everything back.
 *
 * An arena allocates nothing until it is first used: pb_arena_init()
 * cannot fail, and an arena never used needs no pb_arena_close().
 *
 * Ownership: whatever was unpacked through the arena lives until the next
 * pb_arena_reset() or pb_arena_close(); never hand it to a *_free_unpacked
 * with another allocator (or NULL). Allocations that do not fit the block
 * are separate mallocs, freed at the reset, after which the block is grown
 * to hold them all next time (bounded by PB_ARENA_KEEP_MAX, so one huge
 * message does not pin its size for good).
 *
 * Errors: allocation failure aborts (xmalloc), as everywhere in ringmq;
 * a size no allocator could give (over SIZE_MAX / 2) gets NULL.
 * Threads: an arena belongs to one thread at a time.
 */
#ifndef RINGMQ_PB_ARENA_H
#define RINGMQ_PB_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* The largest block an arena keeps between resets: a batch of a few
 * hundred small commands, or of a hundred 1 KiB messages, fits. A node
 * keeps two arenas per group that applies and one per RPC client, so
 * hundreds of busy groups hold a few tens of MB at most. */
#define PB_ARENA_KEEP_MAX (128u * 1024)

struct pb_arena_spill;

struct pb_arena {
    ProtobufCAllocator allocator; /* what unpack takes */
    unsigned char *block;
    size_t size;  /* of block */
    size_t used;  /* of block */
    size_t spilled; /* bytes allocated outside block since the reset */
    struct pb_arena_spill *spills;
};

void pb_arena_init(struct pb_arena *a);
/* Frees everything. */
void pb_arena_close(struct pb_arena *a);
/* Takes back everything allocated since the last reset. */
void pb_arena_reset(struct pb_arena *a);
/* For protobuf_c_message_unpack and the generated *__unpack(). */
ProtobufCAllocator *pb_arena_allocator(struct pb_arena *a);

#endif
