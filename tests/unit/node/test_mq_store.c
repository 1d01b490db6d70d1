/*
 * mq_store: bodies in segment files. Round trips across segments and
 * through the gathered tail, log replay rewriting the same bytes, reads
 * that refuse a corrupt, truncated or never-written record, sync (also
 * from a forked child), reclaim only once a snapshot covers the freeing
 * entry, and the restore reconciliation: an installed snapshot's ranges
 * missing (durably, across a reopen) until filled from a peer, files the
 * state no longer names unlinked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "node/mq_store.h"
#include "tests/unit/lib/rm_tree.h"
#include "tests/unit/lib/store_fixture.h"

struct fx {
    char root[64];
    char dir_a[96];
    char dir_b[96];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    snprintf(f->root, sizeof(f->root), "/tmp/test_mq_store.XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->dir_a, sizeof(f->dir_a), "%s/a", f->root);
    snprintf(f->dir_b, sizeof(f->dir_b), "%s/b", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    assert_int_equal(rm_tree(f->root), 0);
    free(f);
    return 0;
}

static long long file_size(const char *group_dir, uint32_t seg)
{
    char path[160];
    struct stat sb;

    store_fixture_seg_path(group_dir, seg, path, sizeof(path));
    if (stat(path, &sb) != 0) {
        return -1;
    }
    return (long long)sb.st_size;
}

static bool file_exists(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0;
}

/* Write @n records of @len into @seg from offset 0; returns the end. */
static uint32_t write_records(struct mq_store *st, uint32_t seg, uint32_t n,
                              uint32_t len)
{
    unsigned char body[4096];
    uint32_t off = 0, i;

    assert_true(len <= sizeof(body));
    for (i = 0; i < n; i++) {
        store_fixture_body(seg, i, body, len);
        assert_int_equal(mq_store_write(st, seg, off, body, len), 0);
        off += (uint32_t)MQ_STORE_REC_BYTES(len);
    }
    return off;
}

static void assert_records(struct mq_store *st, uint32_t seg, uint32_t n,
                           uint32_t len)
{
    unsigned char want[4096], got[4096];
    uint32_t off = 0, i;

    for (i = 0; i < n; i++) {
        store_fixture_body(seg, i, want, len);
        assert_int_equal(mq_store_read(st, seg, off, len, got), 0);
        assert_memory_equal(got, want, len);
        off += (uint32_t)MQ_STORE_REC_BYTES(len);
    }
}

static void test_round_trip(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    struct mq_store_stats stats;
    unsigned char big[600 << 10];
    unsigned char got[600 << 10];
    uint32_t end1, k;

    end1 = write_records(st, 1, 100, 1000);
    /* still gathered in memory, and readable from there */
    assert_int_equal(file_size(f->dir_a, 1), 0);
    assert_records(st, 1, 100, 1000);
    /* the next segment: seg 1's tail goes to its file */
    write_records(st, 2, 3, 17);
    assert_int_equal(file_size(f->dir_a, 1), end1);
    assert_records(st, 1, 100, 1000);
    assert_records(st, 2, 3, 17);
    /* a record larger than the tail goes straight to the file */
    for (k = 0; k < sizeof(big); k++) {
        big[k] = (unsigned char)(k * 13);
    }
    assert_int_equal(mq_store_write(st, 3, 0, big, sizeof(big)), 0);
    assert_int_equal(file_size(f->dir_a, 3), MQ_STORE_REC_BYTES(sizeof(big)));
    assert_int_equal(mq_store_read(st, 3, 0, sizeof(big), got), 0);
    assert_memory_equal(got, big, sizeof(big));
    /* an empty body */
    assert_int_equal(mq_store_write(st, 4, 0, "", 0), 0);
    assert_int_equal(mq_store_read(st, 4, 0, 0, got), 0);
    mq_store_close(st);

    st = store_fixture_open(f->dir_a);
    mq_store_stats(st, &stats);
    assert_int_equal(stats.segments, 4);
    assert_int_equal(stats.bytes, end1 + 3 * MQ_STORE_REC_BYTES(17) +
                                      MQ_STORE_REC_BYTES(sizeof(big)) +
                                      MQ_STORE_REC_BYTES(0));
    assert_records(st, 1, 100, 1000);
    assert_records(st, 2, 3, 17);
    assert_int_equal(mq_store_read(st, 4, 0, 0, got), 0);
    /* the right place, the wrong length: refused */
    assert_int_equal(mq_store_read(st, 2, 0, 16, got), -1);
    mq_store_close(st);
}

static void read_file(const char *group_dir, uint32_t seg, void *out,
                      size_t len)
{
    char path[160];
    int fd;

    store_fixture_seg_path(group_dir, seg, path, sizeof(path));
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, out, len, 0), (ssize_t)len);
    close(fd);
}

static void test_replay_rewrites_same_bytes(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    static unsigned char before[64 << 10], after[64 << 10];
    uint32_t end;

    end = write_records(st, 7, 50, 1000);
    assert_int_equal(mq_store_sync(st), 0);
    assert_int_equal(file_size(f->dir_a, 7), end);
    read_file(f->dir_a, 7, before, end);
    /* a restart's log replay writes every record again */
    write_records(st, 7, 50, 1000);
    assert_int_equal(mq_store_sync(st), 0);
    assert_int_equal(file_size(f->dir_a, 7), end);
    read_file(f->dir_a, 7, after, end);
    assert_memory_equal(before, after, end);
    assert_records(st, 7, 50, 1000);
    /* replaying one record in the middle of the gathered tail */
    write_records(st, 8, 10, 100);
    {
        unsigned char body[100];

        store_fixture_body(8, 0, body, 100);
        assert_int_equal(mq_store_write(st, 8, 0, body, 100), 0);
    }
    assert_records(st, 8, 10, 100);
    mq_store_close(st);
}

static void test_corrupt_truncated_hole(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    struct mq_store_stats stats;
    unsigned char body[1000], got[1000];
    char path[160];
    uint32_t rec = (uint32_t)MQ_STORE_REC_BYTES(1000);

    write_records(st, 1, 3, 1000);
    assert_int_equal(mq_store_sync(st), 0);
    /* a flipped body byte of the second record */
    store_fixture_flip(f->dir_a, 1, rec + MQ_STORE_REC_HDR + 500);
    store_fixture_body(1, 0, body, 1000);
    assert_int_equal(mq_store_read(st, 1, 0, 1000, got), 0);
    assert_int_equal(mq_store_read(st, 1, rec, 1000, got), -1);
    /* a file cut in the third record */
    store_fixture_seg_path(f->dir_a, 1, path, sizeof(path));
    assert_int_equal(truncate(path, 2 * rec + 100), 0);
    assert_int_equal(mq_store_read(st, 1, 2 * rec, 1000, got), -1);
    /* a hole: a record written at 4096 of a segment, nothing before */
    assert_int_equal(mq_store_write(st, 2, 4096, body, 1000), 0);
    assert_int_equal(mq_store_sync(st), 0);
    assert_int_equal(mq_store_read(st, 2, 4096, 1000, got), 0);
    assert_memory_equal(got, body, 1000);
    assert_int_equal(mq_store_read(st, 2, 0, 1000, got), -1);
    assert_int_equal(mq_store_read(st, 2, 0, 0, got), -1);
    assert_int_equal(mq_store_read(st, 2, 8, 0, got), -1);
    /* a segment that does not exist */
    assert_int_equal(mq_store_read(st, 9, 0, 0, got), -1);
    mq_store_stats(st, &stats);
    assert_int_equal(stats.read_errors, 6);
    mq_store_close(st);
}

static void test_sync(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    unsigned char disk[2 * 1008];
    unsigned char body[1000];
    uint32_t end;
    pid_t pid;
    int wstatus;

    end = write_records(st, 1, 2, 1000);
    assert_int_equal(file_size(f->dir_a, 1), 0);
    /* in a forked child, as a snapshot child does: the parent's tail is
     * not written by the parent */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(mq_store_sync(st) == 0 ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(WIFEXITED(wstatus));
    assert_int_equal(WEXITSTATUS(wstatus), 0);
    assert_int_equal(file_size(f->dir_a, 1), end);
    read_file(f->dir_a, 1, disk, end);
    store_fixture_body(1, 1, body, 1000);
    assert_memory_equal(disk + 1008 + MQ_STORE_REC_HDR, body, 1000);
    /* the parent goes on where it was */
    assert_records(st, 1, 2, 1000);
    assert_int_equal(mq_store_sync(st), 0);
    assert_int_equal(file_size(f->dir_a, 1), end);
    assert_records(st, 1, 2, 1000);
    mq_store_close(st);
}

static uint64_t fdatasyncs(struct mq_store *st)
{
    struct mq_store_stats stats;

    mq_store_stats(st, &stats);
    return stats.fdatasyncs;
}

/* A child's sync spares the parent's next one what it covered, and only
 * that: what the parent writes after the fork stays to be synced. */
static void test_child_sync_spares_the_parent(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    int go[2], wstatus;
    uint64_t before;
    pid_t pid;

    write_records(st, 1, 50, 1000);
    write_records(st, 2, 50, 1000); /* seg 1 to its file, seg 2 gathered */
    write_records(st, 3, 1, 100);   /* seg 2 to its file, seg 3 gathered */
    assert_int_equal(pipe(go), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char c;

        close(go[1]);
        /* the parent writes first: the child's copy is from the fork */
        if (read(go[0], &c, 1) != 1) {
            _exit(2);
        }
        _exit(mq_store_sync(st) == 0 ? 0 : 1);
    }
    close(go[0]);
    write_records(st, 4, 1, 100); /* seg 3 to its file, seg 4 gathered */
    assert_int_equal(write(go[1], "g", 1), 1);
    close(go[1]);
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(WIFEXITED(wstatus));
    assert_int_equal(WEXITSTATUS(wstatus), 0);
    /* the snapshot is stored: the parent hears of the child's sync */
    mq_store_reclaim(st, 0);
    before = fdatasyncs(st);
    assert_int_equal(mq_store_sync(st), 0);
    /* segs 1 and 2 were the child's; 3 was written again since (its
     * gathered bytes, by the parent) and 4 is new: 2, not 4 */
    assert_int_equal(fdatasyncs(st) - before, 2);
    /* nothing written since: nothing to sync */
    before = fdatasyncs(st);
    assert_int_equal(mq_store_sync(st), 0);
    assert_int_equal(fdatasyncs(st), before);
    assert_records(st, 1, 50, 1000);
    assert_records(st, 2, 50, 1000);
    mq_store_close(st);
}

static void test_reclaim_order(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    struct mq_store_stats stats;
    unsigned char got[100];

    write_records(st, 1, 5, 100);
    write_records(st, 2, 5, 100);
    write_records(st, 3, 5, 100);
    mq_store_freed(st, 1, 10);
    mq_store_freed(st, 2, 20);
    mq_store_reclaim(st, 9);
    assert_true(file_size(f->dir_a, 1) > 0);
    assert_true(file_size(f->dir_a, 2) > 0);
    mq_store_reclaim(st, 10);
    assert_int_equal(file_size(f->dir_a, 1), -1);
    assert_true(file_size(f->dir_a, 2) > 0);
    assert_int_equal(mq_store_read(st, 1, 0, 100, got), -1);
    assert_records(st, 2, 5, 100);
    mq_store_reclaim(st, 25);
    assert_int_equal(file_size(f->dir_a, 2), -1);
    assert_records(st, 3, 5, 100);
    mq_store_stats(st, &stats);
    assert_int_equal(stats.reclaimed, 2);
    assert_int_equal(stats.segments, 1);
    mq_store_close(st);
}

static void restore(struct mq_store *st, int installed, const uint32_t *segs,
                    const uint32_t *used, unsigned n)
{
    unsigned i;

    assert_int_equal(mq_store_begin_restore(st, installed), 0);
    for (i = 0; i < n; i++) {
        assert_int_equal(mq_store_expect(st, segs[i], used[i]), 0);
    }
    assert_int_equal(mq_store_end_restore(st), 0);
}

/* Copy every missing range of @dst from @src, in chunks of @chunk. */
static void fill_from(struct mq_store *dst, struct mq_store *src,
                      uint32_t chunk)
{
    unsigned char *buf = malloc(chunk);
    uint32_t seg, off, len, got;

    while (mq_store_next_missing(dst, &seg, &off, &len) == 0) {
        uint32_t want = len < chunk ? len : chunk;

        assert_int_equal(mq_store_read_raw(src, seg, off, buf, want, &got),
                         0);
        assert_true(got > 0 && got <= want);
        assert_int_equal(mq_store_fill(dst, seg, off, buf, got), 0);
    }
    free(buf);
}

static void test_installed_restore_missing_until_filled(void **state)
{
    struct fx *f = *state;
    struct mq_store *peer = store_fixture_open(f->dir_b);
    struct mq_store *st = store_fixture_open(f->dir_a);
    struct mq_store_stats stats;
    uint32_t segs[2] = {1, 2};
    uint32_t used[2];
    uint32_t seg, off, len;
    unsigned char got[1000];
    char missing[160];

    /* The leader wrote both segments; this replica holds other bytes in
     * seg 1 (a never-applied range reads as whatever is there) and no
     * seg 2. */
    used[0] = write_records(peer, 1, 40, 1000);
    used[1] = write_records(peer, 2, 20, 500);
    write_records(st, 1, 3, 1000);
    restore(st, 1, segs, used, 2);
    assert_int_equal(mq_store_read(st, 1, 0, 1000, got), -1);
    assert_int_equal(mq_store_read(st, 2, 0, 500, got), -1);
    assert_int_equal(mq_store_next_missing(st, &seg, &off, &len), 0);
    assert_int_equal(seg, 1);
    assert_int_equal(off, 0);
    assert_int_equal(len, used[0]);
    mq_store_stats(st, &stats);
    assert_int_equal(stats.missing_bytes, used[0] + used[1]);
    /* a peer that lacks it says so */
    {
        unsigned char buf[64];
        uint32_t n;

        assert_int_equal(mq_store_read_raw(st, 1, 0, buf, 64, &n), -1);
    }

    /* a restart before the fetch: still missing */
    mq_store_close(st);
    snprintf(missing, sizeof(missing), "%s/bodies/missing", f->dir_a);
    assert_true(file_exists(missing));
    st = store_fixture_open(f->dir_a);
    restore(st, 0, segs, used, 2);
    assert_int_equal(mq_store_read(st, 1, 0, 1000, got), -1);
    mq_store_stats(st, &stats);
    assert_int_equal(stats.missing_bytes, used[0] + used[1]);

    /* fetched in odd-sized chunks */
    fill_from(st, peer, 3000);
    mq_store_stats(st, &stats);
    assert_int_equal(stats.missing_bytes, 0);
    assert_records(st, 1, 40, 1000);
    assert_records(st, 2, 20, 500);
    assert_false(file_exists(missing));

    /* and after a restart from a local snapshot, present */
    mq_store_close(st);
    st = store_fixture_open(f->dir_a);
    restore(st, 0, segs, used, 2);
    assert_int_equal(mq_store_next_missing(st, &seg, &off, &len), -1);
    assert_records(st, 1, 40, 1000);
    assert_records(st, 2, 20, 500);
    mq_store_close(st);
    mq_store_close(peer);
}

static void test_missing_record_partial_and_corrupt(void **state)
{
    struct fx *f = *state;
    struct mq_store *peer = store_fixture_open(f->dir_b);
    struct mq_store *st = store_fixture_open(f->dir_a);
    uint32_t segs[2] = {1, 2};
    uint32_t used[2];
    unsigned char buf[16384];
    uint32_t seg, off, len, got;
    char missing[160];
    int fd;

    used[0] = write_records(peer, 1, 10, 1000);
    used[1] = write_records(peer, 2, 10, 1000);
    restore(st, 1, segs, used, 2);
    /* seg 1 filled whole (the record drops it), seg 2 only in part */
    assert_int_equal(mq_store_read_raw(peer, 1, 0, buf, used[0], &got), 0);
    assert_int_equal(mq_store_fill(st, 1, 0, buf, got), 0);
    assert_int_equal(mq_store_read_raw(peer, 2, 0, buf, 2016, &got), 0);
    assert_int_equal(mq_store_fill(st, 2, 0, buf, got), 0);
    mq_store_close(st);
    st = store_fixture_open(f->dir_a);
    restore(st, 0, segs, used, 2);
    assert_int_equal(mq_store_next_missing(st, &seg, &off, &len), 0);
    assert_int_equal(seg, 2);
    /* the record kept the whole range of seg 2: it may list more than
     * is missing, never less */
    assert_int_equal(off, 0);
    assert_int_equal(len, used[1]);
    assert_records(st, 1, 10, 1000);
    mq_store_close(st);

    /* a record that does not check: everything named is missing */
    snprintf(missing, sizeof(missing), "%s/bodies/missing", f->dir_a);
    fd = open(missing, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, 9), 1);
    close(fd);
    st = store_fixture_open(f->dir_a);
    restore(st, 0, segs, used, 2);
    assert_int_equal(mq_store_next_missing(st, &seg, &off, &len), 0);
    assert_int_equal(seg, 1);
    assert_int_equal(len, used[0]);
    mq_store_close(st);
    mq_store_close(peer);
}

static void test_restore_unlinks_unnamed(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    uint32_t segs[2] = {2, 5};
    uint32_t used[2];
    unsigned char got[100];

    write_records(st, 1, 2, 100);
    used[0] = write_records(st, 2, 2, 100);
    write_records(st, 3, 2, 100);
    used[1] = write_records(st, 5, 2, 100);
    write_records(st, 6, 2, 100);
    mq_store_freed(st, 2, 50);
    mq_store_close(st);

    st = store_fixture_open(f->dir_a);
    restore(st, 0, segs, used, 2);
    assert_int_equal(file_size(f->dir_a, 1), -1);
    assert_int_equal(file_size(f->dir_a, 3), -1);
    assert_true(file_size(f->dir_a, 2) > 0);
    assert_true(file_size(f->dir_a, 5) > 0);
    /* above the highest named: the log after the snapshot may write it */
    assert_true(file_size(f->dir_a, 6) > 0);
    assert_records(st, 2, 2, 100);
    assert_records(st, 5, 2, 100);
    assert_int_equal(mq_store_read(st, 1, 0, 100, got), -1);
    mq_store_close(st);
}

static void test_local_restore_short_file(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    uint32_t segs[1] = {1};
    uint32_t used[1];
    uint32_t seg, off, len;
    char path[160];

    used[0] = write_records(st, 1, 10, 100);
    mq_store_close(st);
    store_fixture_seg_path(f->dir_a, 1, path, sizeof(path));
    assert_int_equal(truncate(path, used[0] - 50), 0);
    st = store_fixture_open(f->dir_a);
    restore(st, 0, segs, used, 1);
    /* where records start is unknown past the cut: the whole segment */
    assert_int_equal(mq_store_next_missing(st, &seg, &off, &len), 0);
    assert_int_equal(seg, 1);
    assert_int_equal(off, 0);
    assert_int_equal(len, used[0]);
    mq_store_close(st);
}

static void test_read_raw_and_write_in_missing(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    uint32_t segs[1] = {1};
    uint32_t used[1];
    uint32_t rec = (uint32_t)MQ_STORE_REC_BYTES(100);
    unsigned char buf[4096], body[100];
    uint32_t got, seg, off, len;

    used[0] = write_records(st, 1, 10, 100);
    restore(st, 1, segs, used, 1);
    /* apply writes record 3 again (a replayed entry): present there */
    store_fixture_body(1, 3, body, 100);
    assert_int_equal(mq_store_write(st, 1, 3 * rec, body, 100), 0);
    assert_int_equal(mq_store_read(st, 1, 3 * rec, 100, buf), 0);
    assert_int_equal(mq_store_read(st, 1, 2 * rec, 100, buf), -1);
    assert_int_equal(mq_store_read_raw(st, 1, 3 * rec, buf, 4096, &got), 0);
    assert_int_equal(got, rec); /* stops where the missing range starts */
    assert_int_equal(mq_store_read_raw(st, 1, 0, buf, 4096, &got), -1);
    assert_int_equal(mq_store_next_missing(st, &seg, &off, &len), 0);
    assert_int_equal(off, 0);
    assert_int_equal(len, 3 * rec);
    assert_int_equal(mq_store_missing_at(st, 1, rec, &len), 0);
    assert_int_equal(len, 2 * rec);
    assert_int_equal(mq_store_missing_at(st, 1, 3 * rec, &len), -1);
    assert_int_equal(mq_store_missing_at(st, 1, 4 * rec, &len), 0);
    assert_int_equal(len, used[0] - 4 * rec);
    /* the end of the file ends what is served */
    write_records(st, 4, 2, 100);
    assert_int_equal(mq_store_read_raw(st, 4, rec, buf, 4096, &got), 0);
    assert_int_equal(got, rec);
    assert_int_equal(mq_store_read_raw(st, 4, 2 * rec, buf, 4096, &got), -1);
    mq_store_close(st);
}

static void test_check_records(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    uint32_t rec = (uint32_t)MQ_STORE_REC_BYTES(100);
    unsigned char buf[4096];
    uint32_t got, whole;
    uint64_t need;

    write_records(st, 1, 5, 100);
    assert_int_equal(mq_store_read_raw(st, 1, 0, buf, 4096, &got), 0);
    assert_int_equal(got, 5 * rec);
    assert_int_equal(mq_store_check_records(buf, got, &whole, &need), 0);
    assert_int_equal(whole, got);
    /* a record cut: the whole ones before it */
    assert_int_equal(mq_store_check_records(buf, 2 * rec + 40, &whole, &need),
                     0);
    assert_int_equal(whole, 2 * rec);
    /* the first record cut: how much it needs */
    assert_int_equal(mq_store_check_records(buf, 40, &whole, &need), 1);
    assert_int_equal(need, rec);
    assert_int_equal(mq_store_check_records(buf, 4, &whole, &need), 1);
    /* the third record corrupt: the two before */
    buf[2 * rec + 20] ^= 1;
    assert_int_equal(mq_store_check_records(buf, got, &whole, &need), 0);
    assert_int_equal(whole, 2 * rec);
    /* zeros are no record */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(mq_store_check_records(buf, 4096, &whole, &need), -1);
    mq_store_close(st);
}

/* Many writes as a state machine places them (a cursor that rolls to the
 * next segment), replays of earlier ones, reads of any of them, syncs and
 * reopens, in a fixed pseudo-random order: every read returns its body. */
#define RND_SEG_BYTES (64u << 10)
#define RND_RECORDS 3000

struct rnd_rec {
    uint32_t seg, off, len;
};

static uint32_t rnd_next(uint64_t *x)
{
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*x >> 33);
}

static void rnd_read(struct mq_store *st, const struct rnd_rec *r,
                     uint32_t i)
{
    static unsigned char want[RND_SEG_BYTES], got[RND_SEG_BYTES];

    store_fixture_body(r->seg, i, want, r->len);
    assert_int_equal(mq_store_read(st, r->seg, r->off, r->len, got), 0);
    assert_memory_equal(got, want, r->len);
}

static void test_random_ops(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    static struct rnd_rec recs[RND_RECORDS];
    static unsigned char body[RND_SEG_BYTES];
    uint32_t cur_seg = 1, cur_off = 0, n = 0, i;
    uint64_t x = 42;

    while (n < RND_RECORDS) {
        uint32_t op = rnd_next(&x) % 100;

        if (op < 70) {
            /* mostly small bodies, now and then one near a segment */
            uint32_t len = rnd_next(&x) % 10 == 0
                               ? rnd_next(&x) % (RND_SEG_BYTES - 16)
                               : rnd_next(&x) % 3000;
            uint64_t rec = MQ_STORE_REC_BYTES(len);

            if (cur_off > 0 && cur_off + rec > RND_SEG_BYTES) {
                cur_seg++;
                cur_off = 0;
            }
            recs[n] = (struct rnd_rec){cur_seg, cur_off, len};
            store_fixture_body(cur_seg, n, body, len);
            assert_int_equal(mq_store_write(st, cur_seg, cur_off, body, len),
                             0);
            cur_off += (uint32_t)rec;
            n++;
        } else if (op < 80 && n > 0) {
            /* a replay of a recent record */
            i = n - 1 - rnd_next(&x) % (n < 20 ? n : 20);
            store_fixture_body(recs[i].seg, i, body, recs[i].len);
            assert_int_equal(mq_store_write(st, recs[i].seg, recs[i].off,
                                            body, recs[i].len),
                             0);
        } else if (op < 97 && n > 0) {
            i = rnd_next(&x) % n;
            rnd_read(st, &recs[i], i);
        } else if (op < 99) {
            assert_int_equal(mq_store_sync(st), 0);
        } else {
            mq_store_close(st);
            st = store_fixture_open(f->dir_a);
        }
    }
    for (i = 0; i < n; i++) {
        rnd_read(st, &recs[i], i);
    }
    mq_store_close(st);
}

static void test_directory_made_by_the_first_file(void **state)
{
    struct fx *f = *state;
    struct mq_store *st = store_fixture_open(f->dir_a);
    uint32_t segs[1] = {1};
    uint32_t used[1] = {0};
    unsigned char got[100];

    /* a group directory stays empty until something is stored: raft
     * takes an empty one for a replica that lost its data */
    assert_false(file_exists(f->dir_a));
    restore(st, 0, segs, used, 1);
    assert_int_equal(mq_store_sync(st), 0);
    mq_store_reclaim(st, 100);
    assert_int_equal(mq_store_read(st, 1, 0, 100, got), -1);
    assert_false(file_exists(f->dir_a));
    write_records(st, 1, 2, 100);
    assert_int_equal(mq_store_sync(st), 0);
    assert_int_equal(file_size(f->dir_a, 1), 2 * MQ_STORE_REC_BYTES(100));
    mq_store_close(st);
    /* an installed snapshot's record of what is missing makes it too */
    st = store_fixture_open(f->dir_b);
    used[0] = 1000;
    restore(st, 1, segs, used, 1);
    assert_true(file_exists(f->dir_b));
    mq_store_close(st);
    st = store_fixture_open(f->dir_b);
    restore(st, 0, segs, used, 1);
    assert_int_equal(mq_store_read(st, 1, 0, 100, got), -1);
    {
        struct mq_store_stats stats;

        mq_store_stats(st, &stats);
        assert_int_equal(stats.missing_bytes, 1000);
    }
    mq_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_rewrites_same_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_truncated_hole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_sync_spares_the_parent,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_reclaim_order, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_installed_restore_missing_until_filled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_record_partial_and_corrupt,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_unlinks_unnamed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_local_restore_short_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_raw_and_write_in_missing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_made_by_the_first_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_ops, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
