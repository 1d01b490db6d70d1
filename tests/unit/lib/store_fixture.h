/*
 * store_fixture: helpers of the body-store tests (node/mq_store,
 * node/mq_fetch): a store opened or the test failed, bodies that say where
 * they belong, a segment file's path and a byte of it flipped.
 *
 * Header only, included after <cmocka.h>: the tests' library
 * (the .c files of tests/unit/lib) does not link node/.
 */
#ifndef RINGMQ_TEST_STORE_FIXTURE_H
#define RINGMQ_TEST_STORE_FIXTURE_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "node/mq_store.h"

static inline struct mq_store *store_fixture_open(const char *group_dir)
{
    char err[256];
    struct mq_store *st = mq_store_open(group_dir, err, sizeof(err));

    if (st == NULL) {
        fail_msg("open %s: %s", group_dir, err);
    }
    return st;
}

/* Body @i of segment @seg, @len bytes: each one different. */
static inline void store_fixture_body(uint32_t seg, uint32_t i,
                                      unsigned char *out, uint32_t len)
{
    uint32_t k;

    for (k = 0; k < len; k++) {
        out[k] = (unsigned char)(seg * 31 + i * 7 + k);
    }
}

static inline void store_fixture_seg_path(const char *group_dir, uint32_t seg,
                                          char *out, size_t len)
{
    snprintf(out, len, "%s/bodies/%016x", group_dir, seg);
}

/* Flip a bit of the byte at @off of segment @seg's file. */
static inline void store_fixture_flip(const char *group_dir, uint32_t seg,
                                      off_t off)
{
    char path[256];
    unsigned char b;
    int fd;

    store_fixture_seg_path(group_dir, seg, path, sizeof(path));
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

#endif
