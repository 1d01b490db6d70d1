/* ctl_cache: see ctl_cache.h. Calls only ctl. */
#include "tools/ctl_cache.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "proto/cache_pb.h"
#include "sm/cache_op.h"

static const struct {
    const char *name;
    enum cache_op_type type;
    int nargs;  /* after the op name */
    bool value; /* args[1] is a value */
} op_table[] = {
    {"get", CACHE_OP_GET, 1, false},
    {"gets", CACHE_OP_GET, 1, false},
    {"set", CACHE_OP_SET, 2, true},
    {"add", CACHE_OP_ADD, 2, true},
    {"replace", CACHE_OP_REPLACE, 2, true},
    {"append", CACHE_OP_APPEND, 2, true},
    {"prepend", CACHE_OP_PREPEND, 2, true},
    {"cas", CACHE_OP_CAS, 3, true},
    {"incr", CACHE_OP_INCR, 2, false},
    {"decr", CACHE_OP_DECR, 2, false},
    {"delete", CACHE_OP_DELETE, 1, false},
    {"touch", CACHE_OP_TOUCH, 2, false},
    {"gat", CACHE_OP_GAT, 2, false},
    {"flush_all", CACHE_OP_FLUSH_ALL, -1, false}, /* 0 or 1 */
};

static int find_op(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(op_table) / sizeof(op_table[0]); i++) {
        if (strcmp(op_table[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void read_stdin(struct buf *b)
{
    char chunk[65536];
    size_t n;

    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
        buf_append(b, chunk, n);
    }
}

static int print_result(const Ringmq__CacheResult *pb)
{
    struct cache_result r;
    int rv = 0;

    if (cache_result_from_pb(pb, &r) != 0) {
        fprintf(stderr, "ringmqctl: unknown cache status %u\n", pb->status);
        return EXIT_ERROR;
    }
    switch (r.status) {
        case CACHE_HIT:
            printf("HIT flags=%" PRIu32 " cas=%" PRIu64 " bytes=%zu\n", r.flags,
                   r.cas, r.value_len);
            if (r.value_len) {
                fwrite(r.value, 1, r.value_len, stdout);
            }
            printf("\n");
            break;
        case CACHE_NUMBER:
            printf("NUMBER %" PRIu64 "\n", r.number);
            break;
        case CACHE_STORED:
        case CACHE_DELETED:
        case CACHE_TOUCHED:
        case CACHE_OK:
            printf("%s\n", cache_status_name(r.status));
            break;
        case CACHE_NOT_STORED:
        case CACHE_EXISTS:
        case CACHE_NOT_FOUND:
            printf("%s\n", cache_status_name(r.status));
            rv = EXIT_NEGATIVE;
            break;
        case CACHE_WRONG_OWNER:
            fprintf(stderr,
                    "ringmqctl: WRONG_OWNER: key not owned by this shard "
                    "(owner: %.*s)\n",
                    (int)r.value_len, r.value ? r.value : "");
            rv = EXIT_ERROR;
            break;
        default:
            fprintf(stderr, "ringmqctl: %s\n", cache_status_name(r.status));
            rv = EXIT_ERROR;
            break;
    }
    cache_result_clear(&r);
    return rv;
}

int cmd_cache(struct ctl *ctl, const char *const *args, int n)
{
    const struct opts *o = ctl->o;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__CacheOp pb;
    Ringmq__RpcResponse *resp;
    struct cache_op op;
    struct buf value;
    uint64_t u;
    int i = find_op(args[0]);
    int rv;

    if (i < 0) {
        fprintf(stderr, "ringmqctl: unknown command '%s' (try --help)\n",
                args[0]);
        return EXIT_USAGE;
    }
    if (op_table[i].nargs >= 0 ? n - 1 != op_table[i].nargs : n - 1 > 1) {
        fprintf(stderr,
                "ringmqctl: wrong number of arguments for %s "
                "(try --help)\n",
                args[0]);
        return EXIT_USAGE;
    }
    memset(&op, 0, sizeof(op));
    buf_init(&value);
    op.type = op_table[i].type;
    if (op.type != CACHE_OP_FLUSH_ALL) {
        op.key = args[1];
        op.key_len = strlen(args[1]);
        if (!cache_key_valid(op.key, op.key_len)) {
            fprintf(stderr, "ringmqctl: invalid key\n");
            return EXIT_USAGE;
        }
    }
    op.flags = o->flags;
    op.exptime = o->exptime;
    op.cas = o->cas;
    if (op_table[i].value) {
        if (strcmp(args[2], "-") == 0) {
            read_stdin(&value);
            op.value = value.data;
            op.value_len = value.len;
        } else {
            op.value = args[2];
            op.value_len = strlen(args[2]);
        }
    }
    switch (op.type) {
        case CACHE_OP_CAS:
            if (parse_num_u64(args[3], &op.cas) != 0) {
                goto bad_number;
            }
            break;
        case CACHE_OP_INCR:
        case CACHE_OP_DECR:
            if (parse_num_u64(args[2], &op.delta) != 0) {
                goto bad_number;
            }
            break;
        case CACHE_OP_TOUCH:
        case CACHE_OP_GAT:
            if (ctl_parse_i64(args[2], &op.exptime) != 0) {
                goto bad_number;
            }
            break;
        case CACHE_OP_FLUSH_ALL:
            if (n == 2) {
                if (parse_num_u64(args[1], &u) != 0 || u > INT64_MAX) {
                    goto bad_number;
                }
                op.exptime = (int64_t)u;
            }
            break;
        default:
            break;
    }
    cache_op_to_pb(&op, &pb);
    req.group = (char *)o->group;
    req.epoch = o->epoch;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    if (ctl_call(ctl, &req, true, &resp) != 0) {
        buf_free(&value);
        return EXIT_ERROR;
    }
    buf_free(&value);
    rv = ctl_check_code(resp);
    if (rv == 0) {
        if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE) {
            fprintf(stderr, "ringmqctl: reply without cache result\n");
            rv = EXIT_ERROR;
        } else {
            rv = print_result(resp->cache);
        }
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;

bad_number:
    buf_free(&value);
    fprintf(stderr, "ringmqctl: bad number for %s\n", args[0]);
    return EXIT_USAGE;
}
