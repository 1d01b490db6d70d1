/* test_forkdump: a forked child serializes the state as it was at the fork,
 * while the parent goes on changing it; failures and aborts are errors,
 * never a short state taken for whole. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "common/forkdump.h"

struct state {
    char text[64];
    int report_nice; /* produce the child's nice value as text */
    unsigned sleep_ms;
    int fail;
    size_t big; /* > 0: produce this many bytes of a pattern */
};

static int produce(void *data, void **buf, size_t *len)
{
    struct state *s = data;
    size_t i;

    if (s->sleep_ms > 0) {
        usleep(s->sleep_ms * 1000u);
    }
    if (s->fail) {
        return -1;
    }
    if (s->report_nice) {
        errno = 0;
        snprintf(s->text, sizeof s->text, "%d",
                 getpriority(PRIO_PROCESS, 0));
    }
    if (s->big > 0) {
        unsigned char *p = malloc(s->big);
        for (i = 0; i < s->big; i++) {
            p[i] = (unsigned char)(i * 7 + i / 4096);
        }
        *buf = p;
        *len = s->big;
        return 0;
    }
    *len = strlen(s->text);
    *buf = strdup(s->text);
    return 0;
}

static void test_state_at_fork(void **state)
{
    struct state s = {.text = "before", .sleep_ms = 100};
    struct forkdump d;
    void *out = NULL;
    size_t len = 0;

    (void)state;
    assert_int_equal(forkdump_start(&d, produce, &s), 0);
    /* the child sleeps, then reads its copy: our change is not in it */
    strcpy(s.text, "after, and longer");
    assert_int_equal(forkdump_collect(&d, 1024, NULL, &out, &len), 0);
    forkdump_finish(&d);
    assert_int_equal(len, 6);
    assert_memory_equal(out, "before", 6);
    free(out);
}

/* The child yields the CPU to its parent. */
static void test_child_is_niced(void **state)
{
    struct state s = {.report_nice = 1};
    struct forkdump d;
    void *out = NULL;
    size_t len = 0;
    char want[16];

    (void)state;
    assert_int_equal(forkdump_start(&d, produce, &s), 0);
    assert_int_equal(forkdump_collect(&d, 1024, NULL, &out, &len), 0);
    forkdump_finish(&d);
    snprintf(want, sizeof want, "%d", FORKDUMP_NICE);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len);
    free(out);
}

static void test_large(void **state)
{
    struct state s = {.big = (size_t)24 << 20}; /* past the pipe's size */
    struct forkdump d;
    unsigned char *out = NULL;
    size_t len = 0;
    size_t i;

    (void)state;
    assert_int_equal(forkdump_start(&d, produce, &s), 0);
    assert_int_equal(forkdump_collect(&d, s.big, NULL, (void **)&out, &len),
                     0);
    forkdump_finish(&d);
    assert_int_equal(len, s.big);
    for (i = 0; i < len; i++) {
        if (out[i] != (unsigned char)(i * 7 + i / 4096)) {
            fail_msg("byte %zu differs", i);
        }
    }
    free(out);
}

static void test_errors(void **state)
{
    struct state s = {.text = "x", .fail = 1};
    struct state big = {.big = 4096};
    struct forkdump d;
    void *out = (void *)&s;
    size_t len = 7;

    (void)state;
    /* the child's produce fails */
    assert_int_equal(forkdump_start(&d, produce, &s), 0);
    assert_int_equal(forkdump_collect(&d, 1024, NULL, &out, &len), -1);
    forkdump_finish(&d);
    assert_ptr_equal(out, &s);
    assert_int_equal(len, 7);
    /* more than the caller takes */
    assert_int_equal(forkdump_start(&d, produce, &big), 0);
    assert_int_equal(forkdump_collect(&d, 4095, NULL, &out, &len), -1);
    forkdump_finish(&d);
    /* never collected (the caller gave up): finish reaps */
    assert_int_equal(forkdump_start(&d, produce, &big), 0);
    forkdump_finish(&d);
}

/* Shutdown: abort kills a child still working, collect fails at once. */
static void test_abort(void **state)
{
    struct state s = {.text = "slow", .sleep_ms = 20000};
    struct forkdump d;
    void *out = NULL;
    size_t len = 0;
    uint64_t t0;

    (void)state;
    assert_int_equal(forkdump_start(&d, produce, &s), 0);
    t0 = clock_mono_ms();
    forkdump_abort(&d);
    assert_int_equal(forkdump_collect(&d, 1024, NULL, &out, &len), -1);
    forkdump_finish(&d);
    assert_true(clock_mono_ms() - t0 < 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_at_fork),
        cmocka_unit_test(test_child_is_niced),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
