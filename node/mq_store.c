/* mq_store: see mq_store.h. */
#include "node/mq_store.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <zlib.h>

#include "common/buf.h"
#include "common/le.h"
#include "common/log.h"
#include "common/mkdir_p.h"
#include "node/mq_ranges.h"

#define SEG_NAME_LEN 16
#define MISSING_FILE "missing"
#define MISSING_TMP "missing.tmp"

struct seg_file {
    uint32_t seg;
    int fd;
    uint64_t size;      /* bytes in the file (what was written to it) */
    bool dirty;         /* written since the last sync */
    uint64_t dirty_gen; /* st->gen of the last write */
};

/* Shared with forked children: the generation up to which a child's sync
 * made everything durable, so the parent need not sync it again. */
struct sync_share {
    uint64_t synced_gen; /* __atomic */
};

struct freed_seg {
    uint32_t seg;
    uint64_t index;
};

struct mq_store {
    char *dir;
    int dirfd;
    bool dir_dirty; /* a segment file created since the last sync */
    uint64_t dir_gen;

    /* Every write takes the next generation; a sync covers those up to
     * the one it started at. */
    uint64_t gen;
    struct sync_share *share; /* NULL if it could not be mapped */
    uint64_t absorbed;        /* share->synced_gen last applied */
    uint64_t fdatasyncs;

    struct seg_file *segs; /* sorted by seg */
    size_t n_segs, cap_segs;

    /* The gathered tail: bytes for [tail_off, tail_off + tail_len) of
     * segment tail_seg, not yet written to its file. */
    unsigned char *tail;
    uint32_t tail_seg;
    uint64_t tail_off;
    size_t tail_len;

    struct mq_ranges missing;
    /* The record on disk could not be read: at the next restore, every
     * named range is missing. */
    bool missing_unknown;

    struct freed_seg *freed;
    size_t n_freed, cap_freed;

    bool restoring;
    bool restore_installed;
    struct mq_range *expected; /* (seg, 0, used), used may be 0 */
    size_t n_expected, cap_expected;

    uint64_t reclaimed;
    uint64_t read_errors;
};

/* ---- records ------------------------------------------------------------ */

static uint32_t record_crc(uint32_t len, const void *body)
{
    unsigned char l[4];
    uLong crc;

    le_put_u32(l, len);
    crc = crc32(0L, l, sizeof(l));
    /* zlib takes uInt lengths: a body is at most UINT32_MAX bytes */
    crc = crc32(crc, body, (uInt)len);
    return (uint32_t)crc;
}

static void record_header(unsigned char hdr[MQ_STORE_REC_HDR], const void *body,
                          uint32_t len)
{
    le_put_u32(le_put_u32(hdr, len), record_crc(len, body));
}

/* Does the record @hdr + @body of @len check? */
static bool record_checks(const unsigned char hdr[MQ_STORE_REC_HDR],
                          const void *body, uint32_t len)
{
    return le_load_u32(hdr) == len &&
           le_load_u32(hdr + 4) == record_crc(len, body);
}

int mq_store_check_records(const void *bytes, uint32_t len, uint32_t *whole,
                           uint64_t *need)
{
    const unsigned char *p = bytes;
    uint64_t at = 0;

    *whole = 0;
    *need = 0;
    while (at + MQ_STORE_REC_HDR <= len) {
        uint32_t body_len = le_load_u32(p + at);
        uint64_t rec = MQ_STORE_REC_BYTES(body_len);

        if (at + rec > len) {
            /* A record is never longer than a raft entry carries: a length
             * beyond that is garbage, but the caller's bound decides. */
            if (at == 0) {
                *need = rec;
                return 1;
            }
            break;
        }
        if (!record_checks(p + at, p + at + MQ_STORE_REC_HDR, body_len)) {
            if (at == 0) {
                return -1;
            }
            break;
        }
        at += rec;
    }
    if (at == 0) {
        *need = MQ_STORE_REC_HDR;
        return 1;
    }
    *whole = (uint32_t)at;
    return 0;
}

/* ---- segment files ---------------------------------------------------- */

static void seg_name(char name[SEG_NAME_LEN + 1], uint32_t seg)
{
    snprintf(name, SEG_NAME_LEN + 1, "%016" PRIx32, seg);
}

/* A segment file's name -> its number; -1 for anything else. */
static int seg_parse(const char *name, uint32_t *seg)
{
    uint64_t v = 0;
    size_t i;

    if (strlen(name) != SEG_NAME_LEN) {
        return -1;
    }
    for (i = 0; i < SEG_NAME_LEN; i++) {
        char c = name[i];
        unsigned d;

        if (c >= '0' && c <= '9') {
            d = (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            d = (unsigned)(c - 'a' + 10);
        } else {
            return -1;
        }
        if (v > (UINT32_MAX >> 4)) {
            return -1;
        }
        v = v << 4 | d;
    }
    *seg = (uint32_t)v;
    return 0;
}

/* Index of @seg in st->segs, or where it would go (*found false). */
static size_t seg_find(const struct mq_store *st, uint32_t seg, bool *found)
{
    size_t lo = 0, hi = st->n_segs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (st->segs[mid].seg < seg) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = lo < st->n_segs && st->segs[lo].seg == seg;
    return lo;
}

static struct seg_file *seg_lookup(struct mq_store *st, uint32_t seg)
{
    bool found;
    size_t i = seg_find(st, seg, &found);

    return found ? &st->segs[i] : NULL;
}

static struct seg_file *seg_insert(struct mq_store *st, uint32_t seg, int fd,
                                   uint64_t size)
{
    bool found;
    size_t i = seg_find(st, seg, &found);

    assert(!found);
    if (st->n_segs == st->cap_segs) {
        st->cap_segs = st->cap_segs ? 2 * st->cap_segs : 16;
        st->segs = xrealloc(st->segs, st->cap_segs * sizeof(*st->segs));
    }
    memmove(&st->segs[i + 1], &st->segs[i],
            (st->n_segs - i) * sizeof(*st->segs));
    st->n_segs++;
    st->segs[i] = (struct seg_file){.seg = seg, .fd = fd, .size = size};
    return &st->segs[i];
}

/* Create DIR/bodies when the first file goes in, not at open: a group
 * directory a replica lost must look empty to raft/ident.c until the
 * group has started. */
static int dir_ensure(struct mq_store *st)
{
    char err[256];
    char *slash;
    int parent;

    if (st->dirfd >= 0) {
        return 0;
    }
    if (mkdir_p(st->dir, err, sizeof(err)) != 0) {
        log_error("mq_store: %s", err);
        return -1;
    }
    st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->dirfd < 0) {
        goto err;
    }
    /* the new directory's entry in the group directory, durably */
    slash = strrchr(st->dir, '/');
    *slash = '\0';
    parent = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    *slash = '/';
    if (parent < 0 || fsync(parent) != 0) {
        if (parent >= 0) {
            close(parent);
        }
        goto err;
    }
    close(parent);
    return 0;
err:
    log_error("mq_store %s: %s", st->dir, strerror(errno));
    return -1;
}

/* The file of @seg, created if @create. NULL if absent (or on error,
 * logged). */
static struct seg_file *seg_get(struct mq_store *st, uint32_t seg,
                                bool create)
{
    struct seg_file *sf = seg_lookup(st, seg);
    char name[SEG_NAME_LEN + 1];
    int fd;

    if (sf != NULL || !create) {
        return sf;
    }
    if (dir_ensure(st) != 0) {
        return NULL;
    }
    seg_name(name, seg);
    fd = openat(st->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error("mq_store %s: cannot create segment %s: %s", st->dir, name,
                  strerror(errno));
        return NULL;
    }
    st->dir_dirty = true;
    st->dir_gen = ++st->gen;
    return seg_insert(st, seg, fd, 0);
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Read up to @len bytes at @off: how many (short at the end of the file),
 * or -1. */
static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    unsigned char *p = buf;
    size_t got = 0;

    while (got < len) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static void seg_dirty(struct mq_store *st, struct seg_file *sf)
{
    sf->dirty = true;
    sf->dirty_gen = ++st->gen;
}

static void seg_wrote(struct mq_store *st, struct seg_file *sf, uint64_t end)
{
    seg_dirty(st, sf);
    if (end > sf->size) {
        sf->size = end;
    }
}

/* ---- the gathered tail ------------------------------------------------ */

/* Write the gathered tail to its file. Also from a forked child: no
 * allocation, no logging there (the caller logs). */
static int tail_flush(struct mq_store *st)
{
    struct seg_file *sf;

    if (st->tail_len == 0) {
        return 0;
    }
    sf = seg_lookup(st, st->tail_seg);
    assert(sf != NULL); /* created when the tail started */
    if (pwrite_all(sf->fd, st->tail, st->tail_len, st->tail_off) != 0) {
        return -1;
    }
    seg_wrote(st, sf, st->tail_off + st->tail_len);
    st->tail_off += st->tail_len;
    st->tail_len = 0;
    return 0;
}

static bool tail_overlaps(const struct mq_store *st, uint32_t seg,
                          uint64_t off, uint64_t len)
{
    return st->tail_len > 0 && st->tail_seg == seg &&
           off < st->tail_off + st->tail_len && st->tail_off < off + len;
}

/* ---- the record of missing ranges ------------------------------------ */

static int fsync_dir(struct mq_store *st)
{
    if (st->dirfd >= 0 && fsync(st->dirfd) != 0) {
        log_error("mq_store %s: fsync: %s", st->dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Replace DIR/bodies/missing with the ranges missing now (none: no file),
 * durably: a restart must never trust a range this replica lacks. */
static int missing_save(struct mq_store *st)
{
    unsigned char *buf = NULL;
    size_t len;
    int fd = -1;

    if (st->missing.n == 0) {
        if (st->dirfd < 0) {
            return 0; /* no directory, no record */
        }
        if (unlinkat(st->dirfd, MISSING_FILE, 0) != 0 && errno != ENOENT) {
            log_error("mq_store %s: unlink %s: %s", st->dir, MISSING_FILE,
                      strerror(errno));
            return -1;
        }
        return fsync_dir(st);
    }
    if (dir_ensure(st) != 0) {
        return -1;
    }
    mq_ranges_encode(&st->missing, &buf, &len);
    fd = openat(st->dirfd, MISSING_TMP,
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || pwrite_all(fd, buf, len, 0) != 0 || fsync(fd) != 0) {
        goto err;
    }
    close(fd);
    fd = -1;
    if (renameat(st->dirfd, MISSING_TMP, st->dirfd, MISSING_FILE) != 0) {
        goto err;
    }
    free(buf);
    return fsync_dir(st);
err:
    log_error("mq_store %s: cannot write %s: %s", st->dir, MISSING_FILE,
              strerror(errno));
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    return -1;
}

/* Read the record of missing ranges, if any. A record that does not check
 * makes every range missing at the next restore. */
static int missing_load(struct mq_store *st)
{
    unsigned char *buf = NULL;
    struct stat sb;
    int fd = openat(st->dirfd, MISSING_FILE, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return errno == ENOENT ? 0 : -1;
    }
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return -1;
    }
    /* a record of a few ranges; anything huge is not one */
    if (sb.st_size > (64 << 20)) {
        goto bad;
    }
    buf = xmalloc((size_t)sb.st_size + 1);
    if (pread_full(fd, buf, (size_t)sb.st_size, 0) != sb.st_size ||
        mq_ranges_decode(&st->missing, buf, (size_t)sb.st_size) != 0) {
        goto bad;
    }
    free(buf);
    close(fd);
    return 0;
bad:
    log_warn("mq_store %s: %s does not check: every range is missing at "
             "the next restore",
             st->dir, MISSING_FILE);
    st->missing_unknown = true;
    free(buf);
    close(fd);
    return 0;
}

/* ---- open / close ---------------------------------------------------- */

static int load_segments(struct mq_store *st)
{
    int fd = dup(st->dirfd);
    DIR *d;
    struct dirent *de;

    if (fd < 0 || (d = fdopendir(fd)) == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat sb;
        uint32_t seg;
        int sfd;

        if (seg_parse(de->d_name, &seg) != 0) {
            continue;
        }
        sfd = openat(st->dirfd, de->d_name, O_RDWR | O_CLOEXEC);
        if (sfd < 0 || fstat(sfd, &sb) != 0) {
            if (sfd >= 0) {
                close(sfd);
            }
            closedir(d);
            return -1;
        }
        seg_insert(st, seg, sfd, (uint64_t)sb.st_size);
    }
    closedir(d);
    return 0;
}

struct mq_store *mq_store_open(const char *group_dir, char *err,
                               size_t errlen)
{
    struct mq_store *st = xcalloc(1, sizeof(*st));
    size_t n = strlen(group_dir) + sizeof("/bodies");

    st->dirfd = -1;
    st->dir = xmalloc(n);
    snprintf(st->dir, n, "%s/bodies", group_dir);
    st->tail = xmalloc(MQ_STORE_TAIL_BYTES);
    st->share = mmap(NULL, sizeof(*st->share), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (st->share == MAP_FAILED) {
        st->share = NULL; /* a child's sync is then repeated by the parent */
    }
    st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->dirfd < 0 && errno == ENOENT) {
        return st; /* nothing stored yet: dir_ensure creates it */
    }
    if (st->dirfd < 0 || load_segments(st) != 0 || missing_load(st) != 0) {
        snprintf(err, errlen, "%s: %s", st->dir, strerror(errno));
        goto err;
    }
    return st;
err:
    mq_store_close(st);
    return NULL;
}

void mq_store_close(struct mq_store *st)
{
    size_t i;

    if (st == NULL) {
        return;
    }
    if (tail_flush(st) != 0) {
        log_error("mq_store %s: write at close: %s", st->dir, strerror(errno));
    }
    for (i = 0; i < st->n_segs; i++) {
        close(st->segs[i].fd);
    }
    if (st->dirfd >= 0) {
        close(st->dirfd);
    }
    if (st->share != NULL) {
        munmap(st->share, sizeof(*st->share));
    }
    free(st->segs);
    free(st->tail);
    mq_ranges_clear(&st->missing);
    free(st->freed);
    free(st->expected);
    free(st->dir);
    free(st);
}

/* ---- write / read ------------------------------------------------------ */

/* Write the record directly (larger than the tail). */
static int write_direct(struct mq_store *st, struct seg_file *sf,
                        uint64_t off, const unsigned char *hdr,
                        const void *body, uint32_t len)
{
    static const unsigned char zeros[MQ_STORE_REC_ALIGN];
    uint64_t rec = MQ_STORE_REC_BYTES(len);
    struct iovec iov[3] = {
        {(void *)hdr, MQ_STORE_REC_HDR},
        {(void *)body, len},
        {(void *)zeros, (size_t)(rec - MQ_STORE_REC_HDR - len)},
    };
    uint64_t done = 0;
    int i = 0;

    while (done < rec) {
        ssize_t n = pwritev(sf->fd, &iov[i], 3 - i, (off_t)(off + done));

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        done += (uint64_t)n;
        while (i < 3 && (size_t)n >= iov[i].iov_len) {
            n -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (i < 3) {
            iov[i].iov_base = (unsigned char *)iov[i].iov_base + n;
            iov[i].iov_len -= (size_t)n;
        }
    }
    seg_wrote(st, sf, off + rec);
    return 0;
}

int mq_store_write(struct mq_store *st, uint32_t seg, uint32_t off,
                   const void *body, uint32_t len)
{
    unsigned char hdr[MQ_STORE_REC_HDR];
    uint64_t rec = MQ_STORE_REC_BYTES(len);
    struct seg_file *sf;
    unsigned char *p;

    assert(off % MQ_STORE_REC_ALIGN == 0);
    record_header(hdr, body, len);
    sf = seg_get(st, seg, true);
    if (sf == NULL) {
        return -1;
    }
    if (st->missing.n > 0) {
        mq_ranges_subtract(&st->missing, seg, off, rec);
    }
    /* Appends to the gathered tail, or starts a new one there. */
    if (!(st->tail_len > 0 && st->tail_seg == seg &&
          st->tail_off + st->tail_len == off &&
          st->tail_len + rec <= MQ_STORE_TAIL_BYTES)) {
        if (tail_flush(st) != 0) {
            goto err;
        }
        if (rec > MQ_STORE_TAIL_BYTES) {
            if (write_direct(st, sf, off, hdr, body, len) != 0) {
                goto err;
            }
            return 0;
        }
        st->tail_seg = seg;
        st->tail_off = off;
    }
    p = st->tail + st->tail_len;
    memcpy(p, hdr, MQ_STORE_REC_HDR);
    memcpy(p + MQ_STORE_REC_HDR, body, len);
    memset(p + MQ_STORE_REC_HDR + len, 0, rec - MQ_STORE_REC_HDR - len);
    st->tail_len += rec;
    /* a sync from now on must write and sync it */
    seg_dirty(st, sf);
    return 0;
err:
    log_error("mq_store %s: write of segment %" PRIu32 " at %" PRIu32
              ": %s",
              st->dir, seg, off, strerror(errno));
    return -1;
}

int mq_store_read(struct mq_store *st, uint32_t seg, uint32_t off,
                  uint32_t len, void *out)
{
    uint64_t need = MQ_STORE_REC_HDR + (uint64_t)len;
    unsigned char hdr[MQ_STORE_REC_HDR];
    struct seg_file *sf;
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {out, len}};
    ssize_t n;

    if (mq_ranges_overlap(&st->missing, seg, off, need)) {
        return -1;
    }
    if (tail_overlaps(st, seg, off, need)) {
        if (off >= st->tail_off &&
            off + need <= st->tail_off + st->tail_len) {
            const unsigned char *p = st->tail + (off - st->tail_off);

            memcpy(hdr, p, sizeof(hdr));
            memcpy(out, p + MQ_STORE_REC_HDR, len);
            goto check;
        }
        if (tail_flush(st) != 0) {
            log_error("mq_store %s: write: %s", st->dir, strerror(errno));
            return -1;
        }
    }
    sf = seg_lookup(st, seg);
    if (sf == NULL) {
        st->read_errors++;
        return -1;
    }
    do {
        n = preadv(sf->fd, iov, 2, (off_t)off);
    } while (n < 0 && errno == EINTR);
    if (n < 0 || (uint64_t)n != need) {
        /* a short read at the end of the file is retried by nobody: a
         * record is written whole before it is read */
        st->read_errors++;
        return -1;
    }
check:
    if (!record_checks(hdr, out, len)) {
        st->read_errors++;
        return -1;
    }
    return 0;
}

/* ---- sync ------------------------------------------------------------- */

/* Forget the dirt a forked child's sync covered (its generation). */
static void absorb_child_sync(struct mq_store *st)
{
    uint64_t g;
    size_t i;

    if (st->share == NULL) {
        return;
    }
    g = __atomic_load_n(&st->share->synced_gen, __ATOMIC_ACQUIRE);
    if (g <= st->absorbed) {
        return;
    }
    st->absorbed = g;
    for (i = 0; i < st->n_segs; i++) {
        if (st->segs[i].dirty && st->segs[i].dirty_gen <= g) {
            st->segs[i].dirty = false;
        }
    }
    if (st->dir_dirty && st->dir_gen <= g) {
        st->dir_dirty = false;
    }
}

int mq_store_sync(struct mq_store *st)
{
    /* what this sync covers: every write so far, gathered ones included */
    uint64_t covers = st->gen;
    size_t i;

    /* No logging or allocation: this may run in a forked child. */
    absorb_child_sync(st);
    if (tail_flush(st) != 0) {
        return -1;
    }
    for (i = 0; i < st->n_segs; i++) {
        struct seg_file *sf = &st->segs[i];

        if (sf->dirty) {
            if (fdatasync(sf->fd) != 0) {
                return -1;
            }
            sf->dirty = false;
            st->fdatasyncs++;
        }
    }
    if (st->dir_dirty) {
        if (st->dirfd >= 0 && fsync(st->dirfd) != 0) {
            return -1;
        }
        st->dir_dirty = false;
    }
    /* A parent learns it here (a child's flags die with it). Generations
     * after the fork are the parent's own and were never the child's. */
    if (st->share != NULL &&
        __atomic_load_n(&st->share->synced_gen, __ATOMIC_RELAXED) < covers) {
        __atomic_store_n(&st->share->synced_gen, covers, __ATOMIC_RELEASE);
    }
    return 0;
}

/* ---- freed segments ---------------------------------------------------- */

void mq_store_freed(struct mq_store *st, uint32_t seg, uint64_t index)
{
    struct freed_seg f = {seg, index};

    if (st->n_freed == st->cap_freed) {
        st->cap_freed = st->cap_freed ? 2 * st->cap_freed : 8;
        st->freed = xrealloc(st->freed, st->cap_freed * sizeof(*st->freed));
    }
    st->freed[st->n_freed++] = f;
}

/* Close and unlink @seg's file, and forget everything about it. */
static void seg_remove(struct mq_store *st, uint32_t seg)
{
    char name[SEG_NAME_LEN + 1];
    bool found;
    size_t i = seg_find(st, seg, &found);

    if (st->tail_len > 0 && st->tail_seg == seg) {
        st->tail_len = 0; /* nobody will read it */
    }
    mq_ranges_drop_seg(&st->missing, seg);
    if (!found) {
        return;
    }
    close(st->segs[i].fd);
    memmove(&st->segs[i], &st->segs[i + 1],
            (st->n_segs - i - 1) * sizeof(*st->segs));
    st->n_segs--;
    seg_name(name, seg);
    if (unlinkat(st->dirfd, name, 0) != 0 && errno != ENOENT) {
        log_warn("mq_store %s: unlink %s: %s", st->dir, name,
                 strerror(errno));
        return;
    }
    st->reclaimed++;
}

void mq_store_reclaim(struct mq_store *st, uint64_t snapshot_index)
{
    size_t i = 0;

    /* a snapshot was stored: its sync, if a child ran it, is done */
    absorb_child_sync(st);
    while (i < st->n_freed) {
        if (st->freed[i].index <= snapshot_index) {
            seg_remove(st, st->freed[i].seg);
            st->freed[i] = st->freed[--st->n_freed];
        } else {
            i++;
        }
    }
}

/* ---- restore ----------------------------------------------------------- */

int mq_store_begin_restore(struct mq_store *st, int installed)
{
    /* Bytes gathered were applied, hence committed: they are right where
     * they are whatever the restore brings. */
    if (tail_flush(st) != 0) {
        log_error("mq_store %s: write: %s", st->dir, strerror(errno));
        return -1;
    }
    st->restoring = true;
    st->restore_installed = installed != 0;
    st->n_expected = 0;
    return 0;
}

int mq_store_expect(struct mq_store *st, uint32_t seg, uint32_t used)
{
    if (!st->restoring) {
        return -1;
    }
    if (st->n_expected == st->cap_expected) {
        st->cap_expected = st->cap_expected ? 2 * st->cap_expected : 8;
        st->expected = xrealloc(st->expected,
                                st->cap_expected * sizeof(*st->expected));
    }
    st->expected[st->n_expected++] = (struct mq_range){seg, 0, used};
    return 0;
}

static int expected_cmp(const void *a, const void *b)
{
    const struct mq_range *x = a, *y = b;

    return x->seg < y->seg ? -1 : x->seg > y->seg;
}

static const struct mq_range *expected_find(const struct mq_store *st,
                                            uint32_t seg)
{
    struct mq_range key = {seg, 0, 0};

    if (st->n_expected == 0) {
        return NULL;
    }
    return bsearch(&key, st->expected, st->n_expected, sizeof(key),
                   expected_cmp);
}

/* The ranges missing once the restore is done, from the ranges named. */
static void restore_missing(struct mq_store *st, struct mq_ranges *out)
{
    bool distrust = st->restore_installed || st->missing_unknown;
    size_t i, j;

    for (i = 0; i < st->n_expected; i++) {
        const struct mq_range *e = &st->expected[i];
        struct seg_file *sf = seg_lookup(st, e->seg);

        if (distrust || sf == NULL || sf->size < e->len) {
            mq_ranges_add(out, e->seg, 0, e->len);
            continue;
        }
        /* what was missing before stays missing, within what is used */
        for (j = 0; j < st->missing.n; j++) {
            const struct mq_range *m = &st->missing.v[j];

            if (m->seg == e->seg && m->off < e->len) {
                mq_ranges_add(out, m->seg, m->off,
                              m->len < e->len - m->off ? m->len
                                                       : e->len - m->off);
            }
        }
    }
}

int mq_store_end_restore(struct mq_store *st)
{
    struct mq_ranges missing = {0};
    uint32_t highest;
    size_t i;

    if (!st->restoring) {
        return -1;
    }
    st->restoring = false;
    if (st->n_expected > 1) {
        qsort(st->expected, st->n_expected, sizeof(*st->expected),
              expected_cmp);
    }
    for (i = 1; i < st->n_expected; i++) {
        if (st->expected[i].seg == st->expected[i - 1].seg) {
            log_error("mq_store %s: segment %" PRIu32 " named twice",
                      st->dir, st->expected[i].seg);
            return -1;
        }
    }
    restore_missing(st, &missing);
    mq_ranges_clear(&st->missing);
    st->missing = missing;
    st->missing_unknown = false;

    /* Segments below the highest named that the state does not name were
     * freed before the snapshot; the log after it never writes there. */
    highest = st->n_expected > 0 ? st->expected[st->n_expected - 1].seg : 0;
    i = 0;
    while (i < st->n_segs) {
        uint32_t seg = st->segs[i].seg;

        if (st->n_expected > 0 && seg < highest &&
            expected_find(st, seg) == NULL) {
            seg_remove(st, seg);
        } else {
            i++;
        }
    }
    i = 0;
    while (i < st->n_freed) {
        if (expected_find(st, st->freed[i].seg) != NULL ||
            seg_lookup(st, st->freed[i].seg) == NULL) {
            st->freed[i] = st->freed[--st->n_freed];
        } else {
            i++;
        }
    }
    return missing_save(st);
}

/* ---- fetch: both sides ------------------------------------------------ */

int mq_store_next_missing(const struct mq_store *st, uint32_t *seg,
                          uint32_t *off, uint32_t *len)
{
    if (st->missing.n == 0) {
        return -1;
    }
    *seg = st->missing.v[0].seg;
    *off = st->missing.v[0].off;
    *len = st->missing.v[0].len;
    return 0;
}

int mq_store_missing_at(const struct mq_store *st, uint32_t seg, uint32_t off,
                        uint32_t *len)
{
    const struct mq_range *m = mq_ranges_from(&st->missing, seg, off);

    if (m == NULL || m->off > off) {
        return -1;
    }
    *len = m->off + m->len - off;
    return 0;
}

int mq_store_read_raw(struct mq_store *st, uint32_t seg, uint32_t off,
                      void *out, uint32_t max, uint32_t *got)
{
    const struct mq_range *m = mq_ranges_from(&st->missing, seg, off);
    struct seg_file *sf;
    uint64_t end = (uint64_t)off + max;
    ssize_t n;

    *got = 0;
    if (max == 0 || (m != NULL && m->off <= off)) {
        return -1;
    }
    if (m != NULL && m->off < end) {
        end = m->off;
    }
    if (tail_overlaps(st, seg, off, end - off) && tail_flush(st) != 0) {
        log_error("mq_store %s: write: %s", st->dir, strerror(errno));
        return -1;
    }
    sf = seg_lookup(st, seg);
    if (sf == NULL || sf->size <= off) {
        return -1;
    }
    if (end > sf->size) {
        end = sf->size;
    }
    n = pread_full(sf->fd, out, (size_t)(end - off), off);
    if (n <= 0) {
        return -1;
    }
    *got = (uint32_t)n;
    return 0;
}

int mq_store_fill(struct mq_store *st, uint32_t seg, uint32_t off,
                  const void *bytes, uint32_t len)
{
    struct iovec iov = {(void *)bytes, len};
    uint64_t done = 0;
    struct seg_file *sf;
    bool created = seg_lookup(st, seg) == NULL;

    /* what is gathered there is not older than what comes: written first */
    if (tail_overlaps(st, seg, off, len) && tail_flush(st) != 0) {
        log_error("mq_store %s: write: %s", st->dir, strerror(errno));
        return -1;
    }
    sf = seg_get(st, seg, true);
    if (sf == NULL) {
        return -1;
    }
    /* Written through, so the record of missing ranges may drop it at
     * once: no sync needed before it is trusted after a restart. */
    while (done < len) {
        ssize_t n = pwritev2(sf->fd, &iov, 1, (off_t)(off + done), RWF_DSYNC);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            log_error("mq_store %s: fill of segment %" PRIu32 ": %s", st->dir,
                      seg, strerror(errno));
            return -1;
        }
        done += (uint64_t)n;
        iov.iov_base = (unsigned char *)bytes + done;
        iov.iov_len = len - done;
    }
    seg_wrote(st, sf, (uint64_t)off + len);
    if (created && fsync_dir(st) != 0) {
        return -1;
    }
    if (mq_ranges_subtract(&st->missing, seg, off, len) > 0) {
        return missing_save(st);
    }
    return 0;
}

/* ---- stats ------------------------------------------------------------- */

void mq_store_stats(const struct mq_store *st, struct mq_store_stats *out)
{
    size_t i;

    memset(out, 0, sizeof(*out));
    out->segments = st->n_segs;
    for (i = 0; i < st->n_segs; i++) {
        out->bytes += st->segs[i].size;
    }
    out->missing_bytes = mq_ranges_bytes(&st->missing);
    out->reclaimed = st->reclaimed;
    out->fdatasyncs = st->fdatasyncs;
    out->read_errors = st->read_errors;
}
