/* meta_cmd: see meta_cmd.h. */
#include "tests/unit/lib/meta_cmd.h"

#include <string.h>

struct meta_sm_cmd meta_cmd(enum meta_sm_cmd_type type, const char *exchange,
                            const char *dest, const char *key)
{
    struct meta_sm_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = type;
    c.vhost = "/";
    c.vhost_len = 1;
    c.exchange = exchange;
    c.exchange_len = exchange ? strlen(exchange) : 0;
    c.exchange_type = META_SM_DIRECT;
    c.durable = true;
    c.dest = dest;
    c.dest_len = dest ? strlen(dest) : 0;
    c.routing_key = key;
    c.routing_key_len = key ? strlen(key) : 0;
    return c;
}
