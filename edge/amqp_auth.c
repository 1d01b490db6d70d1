/*
 * amqp_auth: checking a client's login; contract in amqp_auth.h.
 */
#include "edge/amqp_auth.h"

#include <string.h>

static bool check_user(const struct amqp_server_config *cfg, bool loopback,
                       struct amqp_bytes user, struct amqp_bytes pass)
{
    unsigned i;

    for (i = 0; i < cfg->n_users; i++) {
        const struct amqp_user *u = &cfg->users[i];

        if (user.len == strlen(u->name) && pass.len == strlen(u->password) &&
            memcmp(user.data, u->name, user.len) == 0 &&
            memcmp(pass.data, u->password, pass.len) == 0) {
            return !u->loopback_only || loopback;
        }
    }
    return false;
}

bool amqp_auth_check(const struct amqp_server_config *cfg, bool loopback,
                     const struct amqp_connection_start_ok *s)
{
    struct amqp_bytes user = {0};
    struct amqp_bytes pass = {0};

    if (amqp_bytes_eq(s->mechanism, "PLAIN")) {
        /* [authzid] NUL authcid NUL passwd */
        const uint8_t *p = s->response.data;
        const uint8_t *end = p + s->response.len;
        const uint8_t *nul1 = p ? memchr(p, 0, s->response.len) : NULL;
        const uint8_t *nul2;

        if (nul1 == NULL) {
            return false;
        }
        nul2 = memchr(nul1 + 1, 0, (size_t)(end - nul1 - 1));
        if (nul2 == NULL) {
            return false;
        }
        user.data = nul1 + 1;
        user.len = (size_t)(nul2 - nul1 - 1);
        pass.data = nul2 + 1;
        pass.len = (size_t)(end - nul2 - 1);
        return check_user(cfg, loopback, user, pass);
    }
    if (amqp_bytes_eq(s->mechanism, "AMQPLAIN")) {
        struct amqp_table *t = NULL;
        const struct amqp_field *l;
        const struct amqp_field *pw;
        bool ok = false;

        if (amqp_table_decode_entries(s->response.data, s->response.len, 0,
                                      &t) != 0) {
            return false;
        }
        l = amqp_table_get(t, "LOGIN");
        pw = amqp_table_get(t, "PASSWORD");
        if (l && pw && l->type == AMQP_FIELD_LONGSTR &&
            pw->type == AMQP_FIELD_LONGSTR) {
            ok = check_user(cfg, loopback, l->v.bytes, pw->v.bytes);
        }
        amqp_table_free(t);
        return ok;
    }
    return false;
}
