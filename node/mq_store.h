/*
 * mq_store: the message bodies of one queue-group replica, in segment files
 * beside its Raft data (DIR/bodies/<seg as 16 hex digits>), so that a
 * backlog costs the state machine an index entry per message and its
 * snapshots no body bytes (docs/bodies.md).
 *
 * Where a body goes is decided by the replicated state (sm/mq_sm.h: each
 * message's ref is (seg, off, len), from the state's own cursor), so every
 * replica that applied the same log holds the same bytes at the same place:
 * a replica that lacks a range can copy it from any peer that has it.
 * The store itself decides nothing.
 *
 * Record at (seg, off): u32 body length (LE), u32 crc32 (zlib, LE) of the
 * length's 4 bytes followed by the body, the body, zero padding up to the
 * next multiple of MQ_STORE_REC_ALIGN, where the next record starts
 * (the sizes are sm/mq_segs.h's, which the state reserves by). The crc
 * covers the length so that a hole (zeros) never checks, not even as an
 * empty body.
 *
 * Writes of the segment being appended to are gathered in memory (one
 * write system call per MQ_STORE_TAIL_BYTES, not per message) and reach
 * the file before any read or sync that needs them; a read of a record
 * still gathered is served from memory.
 *
 * Durability: writes go to the page cache (the Raft log already holds every
 * body until a snapshot); mq_store_sync() makes everything written so far
 * durable and is called before a snapshot that names it is stored.
 * A segment the state freed (its last message and outbox entry gone) is
 * unlinked only once a snapshot at or after the freeing entry is stored
 * (mq_store_freed + mq_store_reclaim): a restart restores the newest
 * snapshot and replays the log after it, which never names it again.
 *
 * Missing ranges: after a snapshot is installed from the leader
 * (InstallSnapshot), this replica has not written the bytes the snapshot's
 * messages name. mq_store_begin_restore/expect/end_restore record, durably
 * (DIR/bodies/missing, replaced atomically), what must be fetched; reads of
 * a missing range fail (the caller leaves that delivery out of its answer
 * and the edge returns it); node/mq_fetch copies missing ranges from peers
 * (mq_store_read_raw on their side, mq_store_fill here). Filled bytes are
 * written through to the disk (O_DSYNC-like) so the record can drop a range
 * as soon as it is complete; until then a restart fetches it again.
 *
 * Errors: -1 with the detail logged; a write or sync failure at apply is
 * fatal to the caller (a replica that did not store what the others did
 * would diverge): the caller aborts.
 * Threads: everything on the loop thread, except mq_store_sync(), which may
 * run in a forked snapshot child (it only writes, fdatasyncs and fsyncs
 * descriptors it inherited, and stores one word in a page it shares with
 * the parent: no allocation, no logging).
 */
#ifndef RINGMQ_MQ_STORE_H
#define RINGMQ_MQ_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sm/mq_segs.h"

#define MQ_STORE_REC_HDR MQ_SEGS_REC_HDR
#define MQ_STORE_REC_ALIGN MQ_SEGS_REC_ALIGN
/* What a body of @len takes in a segment, header and padding included. */
#define MQ_STORE_REC_BYTES(len)                                              \
    ((((uint64_t)(len) + MQ_STORE_REC_HDR + MQ_STORE_REC_ALIGN - 1) /       \
      MQ_STORE_REC_ALIGN) *                                                  \
     MQ_STORE_REC_ALIGN)
/* Gathered tail of the segment being appended to. */
#define MQ_STORE_TAIL_BYTES ((size_t)256 << 10)

struct mq_store;

/* Open GROUP_DIR/bodies, its segment files and its record of missing
 * ranges. The directory (and GROUP_DIR) is created when the first file
 * goes in, not here: a group directory must stay empty until the Raft
 * group has checked it (raft/ident.c: an empty one is a lost replica).
 * Returns NULL and fills @err on failure. */
struct mq_store *mq_store_open(const char *group_dir, char *err,
                               size_t errlen);
/* Writes what is gathered (not synced) and closes. NULL is fine. */
void mq_store_close(struct mq_store *st);

/* Store @body at (@seg, @off): the record header, the body and its
 * padding. Writing the same record again (log replay) rewrites the same
 * bytes; a record written inside a missing range is no longer missing
 * there. 0 or -1. */
int mq_store_write(struct mq_store *st, uint32_t seg, uint32_t off,
                   const void *body, uint32_t len);

/* Read the body of @len bytes at (@seg, @off) into @out (@len bytes),
 * checking the header's length and crc. 0, or -1 if the range is missing
 * or does not check (never a partial or wrong body; counted in
 * read_errors when it does not check). */
int mq_store_read(struct mq_store *st, uint32_t seg, uint32_t off,
                  uint32_t len, void *out);

/* Make every write so far durable: the gathered tail written, every
 * segment written since the last sync fdatasync'd, the directory fsync'd
 * if a segment file was created. 0 or -1 (errno set). Safe in a forked
 * child (see above): it tells the parent, through a page they share, up
 * to which write it made everything durable, and the parent's next
 * mq_store_reclaim or sync stops counting those segments as written
 * since (so a sync does not fdatasync every segment the process wrote
 * since its own last one: each costs a disk cache flush). */
int mq_store_sync(struct mq_store *st);

/* @seg was freed by the entry at raft index @index. */
void mq_store_freed(struct mq_store *st, uint32_t seg, uint64_t index);
/* A snapshot at raft index @snapshot_index is stored: unlink every freed
 * segment with index <= @snapshot_index. */
void mq_store_reclaim(struct mq_store *st, uint64_t snapshot_index);

/* After a restore: the state names exactly these segments, each with
 * @used = the end of the last record placed in it (for the cursor's
 * segment, the cursor's offset). The caller names every segment of the
 * state's table and the cursor's segment (even unused), between
 * begin_restore and end_restore.
 * @installed: the snapshot came from the leader, so local bytes of these
 * ranges are not to be trusted: every [0, used) becomes missing until
 * filled. Otherwise (a local snapshot at start) the ranges recorded
 * missing stay missing, and a segment whose file is shorter than @used
 * becomes missing whole.
 * end_restore unlinks the files of segments not named and below the
 * highest one named (freed before the snapshot: nothing after it writes
 * there), forgets freed segments the state names, and replaces the record
 * of missing ranges (fsync'd) before it returns. 0 or -1. */
int mq_store_begin_restore(struct mq_store *st, int installed);
int mq_store_expect(struct mq_store *st, uint32_t seg, uint32_t used);
int mq_store_end_restore(struct mq_store *st);

/* Missing ranges, for the fetcher: the first one not yet filled
 * (0 = found, -1 = none). */
int mq_store_next_missing(const struct mq_store *st, uint32_t *seg,
                          uint32_t *off, uint32_t *len);
/* Is the byte at (@seg, @off) missing? 0 with *@len = the bytes missing
 * from there to the end of its range, or -1. */
int mq_store_missing_at(const struct mq_store *st, uint32_t seg, uint32_t off,
                        uint32_t *len);
/* Serve a peer's fetch: up to @max bytes of segment @seg from @off as
 * stored (records as they are), stopping before a range missing here and
 * at the end of the file. 0 with *@got >= 1, or -1 if this replica does
 * not have the byte at @off. */
int mq_store_read_raw(struct mq_store *st, uint32_t seg, uint32_t off,
                      void *out, uint32_t max, uint32_t *got);
/* Put fetched bytes in place (written through to the disk); a missing
 * range complete is no longer missing, and the durable record says so.
 * 0 or -1. */
int mq_store_fill(struct mq_store *st, uint32_t seg, uint32_t off,
                  const void *bytes, uint32_t len);

/* How much of @bytes (@len, starting at a record boundary) is whole
 * records that check: *@whole. Returns 0 when at least one record is whole
 * and checks, 1 when the first record does not fit in @len (*@need = the
 * bytes it takes), -1 when the first record does not check. */
int mq_store_check_records(const void *bytes, uint32_t len, uint32_t *whole,
                           uint64_t *need);

struct mq_store_stats {
    uint64_t segments;      /* files */
    uint64_t bytes;         /* their sizes */
    uint64_t missing_bytes; /* to fetch */
    uint64_t reclaimed;     /* segments unlinked */
    uint64_t read_errors;   /* reads that failed their check */
    uint64_t fdatasyncs;    /* of segments, by syncs in this process */
};
void mq_store_stats(const struct mq_store *st, struct mq_store_stats *out);

#endif
