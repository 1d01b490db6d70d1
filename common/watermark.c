/*
 * watermark: see watermark.h.
 */
#include "common/watermark.h"

#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

static uint64_t physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    long size = sysconf(_SC_PAGESIZE);

    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

static uint64_t resident_bytes(void)
{
    unsigned long long total = 0;
    unsigned long long resident = 0;
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL) {
        return 0;
    }
    if (fscanf(f, "%llu %llu", &total, &resident) != 2) {
        resident = 0;
    }
    fclose(f);
    return page > 0 ? resident * (uint64_t)page : 0;
}

void watermark_init(struct watermark *w, uint64_t memory_limit,
                    uint64_t disk_free_limit, const char *path)
{
    memset(w, 0, sizeof(*w));
    w->memory_limit = memory_limit ? memory_limit : physical_memory() / 5 * 2;
    w->disk_free_limit =
        disk_free_limit ? disk_free_limit : WATERMARK_DISK_FREE_DEFAULT;
    snprintf(w->path, sizeof(w->path), "%s", path ? path : "");
}

bool watermark_exceeded(struct watermark *w, uint64_t now_ms)
{
    struct statvfs vfs;
    uint64_t rss;

    if (w->checked_ms != 0 && now_ms - w->checked_ms < WATERMARK_RECHECK_MS) {
        return w->exceeded;
    }
    w->checked_ms = now_ms ? now_ms : 1;
    w->exceeded = false;
    w->why[0] = '\0';
    rss = resident_bytes();
    if (w->memory_limit > 0 && rss > w->memory_limit) {
        w->exceeded = true;
        snprintf(w->why, sizeof(w->why),
                 "memory: resident %llu bytes above the limit %llu",
                 (unsigned long long)rss, (unsigned long long)w->memory_limit);
        return true;
    }
    if (w->path[0] != '\0' && statvfs(w->path, &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;

        if (avail < w->disk_free_limit) {
            w->exceeded = true;
            snprintf(w->why, sizeof(w->why),
                     "disk: %llu bytes free, below the limit %llu",
                     (unsigned long long)avail,
                     (unsigned long long)w->disk_free_limit);
        }
    }
    return w->exceeded;
}
