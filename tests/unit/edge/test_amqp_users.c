/*
 * amqp_users: the users file of the AMQP edge (edge/amqp_users).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "edge/amqp_users.h"

static char path[64];

static int write_file(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/ringmq-users-%d", (int)getpid());
    return 0;
}

static int remove_file(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static void put(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int load(const char *text, struct amqp_server_config *cfg, char *err)
{
    put(text);
    return amqp_users_load(path, cfg, err, 256);
}

static void users_are_read_with_comments_and_crlf(void **state)
{
    struct amqp_server_config cfg = {0};
    char err[256] = "";

    (void)state;
    assert_int_equal(load("# accounts\n\napp:s3cret\r\nguest:guest\n"
                          "ops:pa:ss:word",
                          &cfg, err),
                     0);
    assert_int_equal(cfg.n_users, 3);
    assert_string_equal(cfg.users[0].name, "app");
    assert_string_equal(cfg.users[0].password, "s3cret");
    assert_false(cfg.users[0].loopback_only);
    /* guest keeps RabbitMQ's loopback_users rule */
    assert_true(cfg.users[1].loopback_only);
    assert_string_equal(cfg.users[2].password, "pa:ss:word");
}

static void bad_files_are_refused_and_leave_the_config(void **state)
{
    static const char *bad[] = {
        "nocolon\n", ":nopass\n", "a:1\na:2\n", "# only a comment\n", "",
    };
    struct amqp_server_config cfg = {0};
    char err[256];
    size_t i;

    (void)state;
    cfg.n_users = 7;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(load(bad[i], &cfg, err), -1);
        assert_non_null(strstr(err, path));
        assert_int_equal(cfg.n_users, 7);
    }
    assert_int_equal(amqp_users_load("/nonexistent/users", &cfg, err,
                                     sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "No such file"));
}

static void too_many_users_and_long_names_are_refused(void **state)
{
    struct amqp_server_config cfg = {0};
    char text[4096] = "";
    char line[300];
    char err[256];
    int i;

    (void)state;
    for (i = 0; i <= AMQP_SERVER_MAX_USERS; i++) {
        snprintf(line, sizeof(line), "u%d:p\n", i);
        strcat(text, line);
    }
    assert_int_equal(load(text, &cfg, err), -1);
    assert_non_null(strstr(err, "more than"));
    memset(line, 'x', 200);
    memcpy(line + 200, ":p\n", 4);
    assert_int_equal(load(line, &cfg, err), -1);
    assert_non_null(strstr(err, "longer than"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(users_are_read_with_comments_and_crlf,
                                        write_file, remove_file),
        cmocka_unit_test_setup_teardown(
            bad_files_are_refused_and_leave_the_config, write_file,
            remove_file),
        cmocka_unit_test_setup_teardown(
            too_many_users_and_long_names_are_refused, write_file,
            remove_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
