/*
 * watermark: is this process short of memory, or its disk short of space?
 * RabbitMQ blocks publishers (connection.blocked) above a memory high
 * watermark and below a free-disk limit instead of failing later; ringmq's
 * AMQP edge does the same with what this module says.
 *
 *   memory: the process's resident set (/proc/self/statm) above
 *           memory_limit bytes (0: 40% of physical memory, RabbitMQ's
 *           vm_memory_high_watermark default);
 *   disk:   free space of the file system holding @path below
 *           disk_free_limit bytes (0: 50 MB, RabbitMQ's default).
 *
 * Readings are cached for WATERMARK_RECHECK_MS: callers may ask on every
 * request. Errors reading /proc or statvfs count as "not exceeded" (a
 * broken probe must not stop publishers).
 */
#ifndef RINGMQ_WATERMARK_H
#define RINGMQ_WATERMARK_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WATERMARK_RECHECK_MS 500
#define WATERMARK_DISK_FREE_DEFAULT (50ull * 1000 * 1000)

struct watermark {
    uint64_t memory_limit;
    uint64_t disk_free_limit;
    char path[PATH_MAX];
    uint64_t checked_ms;
    bool exceeded;
    char why[128];
};

/* @path: a directory on the disk to watch ("" = no disk check). */
void watermark_init(struct watermark *w, uint64_t memory_limit,
                    uint64_t disk_free_limit, const char *path);

/* Exceeded now (@now_ms: a monotonic clock)? The reason in w->why. */
bool watermark_exceeded(struct watermark *w, uint64_t now_ms);

#endif
