/*
 * amqp_users: see amqp_users.h.
 */
#include "edge/amqp_users.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int parse_line(char *line, struct amqp_user *users, unsigned *n,
                      const char *path, unsigned lineno, char *err,
                      size_t errlen)
{
    size_t len = strcspn(line, "\r\n");
    char *colon;
    struct amqp_user *u;
    unsigned i;

    line[len] = '\0';
    if (len == 0 || line[0] == '#') {
        return 0;
    }
    colon = strchr(line, ':');
    if (colon == NULL || colon == line) {
        snprintf(err, errlen, "%s:%u: expected name:password", path, lineno);
        return -1;
    }
    *colon = '\0';
    if (strlen(line) >= sizeof(u->name) ||
        strlen(colon + 1) >= sizeof(u->password)) {
        snprintf(err, errlen, "%s:%u: name or password longer than %zu bytes",
                 path, lineno, sizeof(u->name) - 1);
        return -1;
    }
    for (i = 0; i < *n; i++) {
        if (strcmp(users[i].name, line) == 0) {
            snprintf(err, errlen, "%s:%u: user '%s' given twice", path,
                     lineno, line);
            return -1;
        }
    }
    if (*n == AMQP_SERVER_MAX_USERS) {
        snprintf(err, errlen, "%s:%u: more than %d users", path, lineno,
                 AMQP_SERVER_MAX_USERS);
        return -1;
    }
    u = &users[(*n)++];
    snprintf(u->name, sizeof(u->name), "%s", line);
    snprintf(u->password, sizeof(u->password), "%s", colon + 1);
    u->loopback_only = strcmp(u->name, "guest") == 0;
    return 0;
}

int amqp_users_load(const char *path, struct amqp_server_config *cfg,
                    char *err, size_t errlen)
{
    struct amqp_user users[AMQP_SERVER_MAX_USERS];
    char line[512];
    unsigned n = 0;
    unsigned lineno = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(err, errlen, "%s:%u: line too long", path, lineno);
            goto err;
        }
        if (parse_line(line, users, &n, path, lineno, err, errlen) != 0) {
            goto err;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto err;
    }
    if (n == 0) {
        snprintf(err, errlen, "%s: no users", path);
        goto err;
    }
    fclose(f);
    memcpy(cfg->users, users, sizeof(users));
    cfg->n_users = n;
    return 0;

err:
    fclose(f);
    return -1;
}
