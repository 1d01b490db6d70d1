/* cache_op: see cache_op.h. */
#include "sm/cache_op.h"

#include <stdlib.h>
#include <string.h>

bool cache_op_is_write(enum cache_op_type type)
{
    return type != CACHE_OP_GET && type != CACHE_OP_EXPORT;
}

bool cache_key_valid(const char *key, size_t len)
{
    size_t i;

    if (len == 0 || len > CACHE_KEY_MAX) {
        return false;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= ' ' || c == 0x7f) {
            return false;
        }
    }
    return true;
}

bool cache_op_has_key(enum cache_op_type type)
{
    return type != CACHE_OP_FLUSH_ALL && type != CACHE_OP_CONFIG &&
           type != CACHE_OP_RING && type != CACHE_OP_MOVE &&
           type != CACHE_OP_EXPORT;
}

bool cache_op_config_valid(const struct cache_op_config *c)
{
    return (c->mem_limit == 0 || (c->mem_limit >= CACHE_MEM_LIMIT_MIN &&
                                  c->mem_limit <= CACHE_MEM_LIMIT_MAX)) &&
           (c->item_size_max == 0 ||
            (c->item_size_max >= CACHE_ITEM_SIZE_MIN &&
             c->item_size_max <= CACHE_ITEM_SIZE_MAX)) &&
           (c->mem_limit != 0 || c->item_size_max != 0);
}

const char *cache_op_name(enum cache_op_type type)
{
    static const char *names[CACHE_OP__COUNT] = {
        "get",  "set",  "add",    "replace", "append", "prepend", "cas",
        "incr", "decr", "delete", "touch",   "gat",    "flush_all", "config",
        "ring", "move", "export",
    };
    return (unsigned)type < CACHE_OP__COUNT ? names[type] : "?";
}

const char *cache_status_name(enum cache_status status)
{
    static const char *names[CACHE_STATUS__COUNT] = {
        "STORED",    "NOT_STORED", "EXISTS",      "NOT_FOUND",
        "DELETED",   "TOUCHED",    "HIT",         "NUMBER",
        "OK",        "TOO_LARGE",  "NO_MEMORY",   "NON_NUMERIC",
        "BAD_REQUEST", "WRONG_OWNER", "MOVING",      "STALE_RETRY",
    };
    return (unsigned)status < CACHE_STATUS__COUNT ? names[status] : "?";
}

void cache_result_init(struct cache_result *r)
{
    memset(r, 0, sizeof(*r));
}

void cache_result_clear(struct cache_result *r)
{
    free(r->value);
    cache_result_init(r);
}
