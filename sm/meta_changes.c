/*
 * meta_changes: see meta_changes.h.
 *
 * The ring keeps each change encoded once, as it will travel: an answer
 * is the format octet followed by the records it holds, copied. A record:
 *
 *   u64 version, u8 type, u8 exchange type, u8 flags (FLAG_*),
 *   str vhost, exchange, dest, routing key, shard, target, u64 gen,
 *   u32 argument count, then per argument str key, str value
 *
 * where str is a u32 length and the bytes, all little-endian (common/le.h).
 */
#include "sm/meta_changes.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/invariant.h"
#include "common/le.h"

#define FORMAT 1u

enum {
    FLAG_PASSIVE = 1,
    FLAG_DURABLE = 2,
    FLAG_AUTO_DELETE = 4,
    FLAG_INTERNAL = 8,
    FLAG_IF_UNUSED = 16,
    FLAG_DEST_IS_EXCHANGE = 32,
};

struct change {
    uint64_t version;
    unsigned char *rec;
    size_t len;
};

struct meta_changes {
    struct change *ring;
    size_t max, max_bytes;
    size_t first; /* index of the oldest */
    size_t n;
    size_t bytes;
};

struct meta_changes *meta_changes_new(size_t max_changes, size_t max_bytes)
{
    struct meta_changes *ch = xcalloc(1, sizeof(*ch));

    INVARIANT(max_changes > 0 && max_bytes > 0);
    ch->ring = xcalloc(max_changes, sizeof(*ch->ring));
    ch->max = max_changes;
    ch->max_bytes = max_bytes;
    return ch;
}

static struct change *at(const struct meta_changes *ch, size_t i)
{
    return &ch->ring[(ch->first + i) % ch->max];
}

static void drop_oldest(struct meta_changes *ch)
{
    struct change *c = at(ch, 0);

    ch->bytes -= c->len;
    free(c->rec);
    c->rec = NULL;
    ch->first = (ch->first + 1) % ch->max;
    ch->n--;
}

void meta_changes_reset(struct meta_changes *ch)
{
    while (ch->n > 0) {
        drop_oldest(ch);
    }
    ch->first = 0;
}

void meta_changes_free(struct meta_changes *ch)
{
    if (ch == NULL) {
        return;
    }
    meta_changes_reset(ch);
    free(ch->ring);
    free(ch);
}

size_t meta_changes_count(const struct meta_changes *ch)
{
    return ch->n;
}

size_t meta_changes_bytes(const struct meta_changes *ch)
{
    return ch->bytes;
}

/* ---- encoding --------------------------------------------------------- */

static size_t record_size(const struct meta_sm_cmd *c)
{
    size_t n = 8 + 3 + 6 * 4 + c->vhost_len + c->exchange_len + c->dest_len +
               c->routing_key_len + c->shard_len + c->target_len + 8 + 4;
    size_t i;

    for (i = 0; i < c->n_args; i++) {
        n += 8 + c->args[i].key_len + c->args[i].value_len;
    }
    return n;
}

static unsigned char *put_str(unsigned char *p, const void *s, size_t len)
{
    p = le_put_u32(p, (uint32_t)len);
    if (len > 0) {
        memcpy(p, s, len);
    }
    return p + len;
}

static unsigned char *put_record(unsigned char *p, const struct meta_sm_cmd *c,
                                 uint64_t version)
{
    unsigned flags = (c->passive ? FLAG_PASSIVE : 0) |
                     (c->durable ? FLAG_DURABLE : 0) |
                     (c->auto_delete ? FLAG_AUTO_DELETE : 0) |
                     (c->internal ? FLAG_INTERNAL : 0) |
                     (c->if_unused ? FLAG_IF_UNUSED : 0) |
                     (c->dest_is_exchange ? FLAG_DEST_IS_EXCHANGE : 0);
    size_t i;

    p = le_put_u64(p, version);
    *p++ = (unsigned char)c->type;
    *p++ = (unsigned char)c->exchange_type;
    *p++ = (unsigned char)flags;
    p = put_str(p, c->vhost, c->vhost_len);
    p = put_str(p, c->exchange, c->exchange_len);
    p = put_str(p, c->dest, c->dest_len);
    p = put_str(p, c->routing_key, c->routing_key_len);
    p = put_str(p, c->shard, c->shard_len);
    p = put_str(p, c->target, c->target_len);
    p = le_put_u64(p, c->gen);
    p = le_put_u32(p, (uint32_t)c->n_args);
    for (i = 0; i < c->n_args; i++) {
        p = put_str(p, c->args[i].key, c->args[i].key_len);
        p = put_str(p, c->args[i].value, c->args[i].value_len);
    }
    return p;
}

void meta_changes_add(struct meta_changes *ch, const struct meta_sm_cmd *cmd,
                      uint64_t version)
{
    struct change *c;
    unsigned char *end;

    if (ch->n > 0 && at(ch, ch->n - 1)->version + 1 != version) {
        meta_changes_reset(ch);
    }
    if (ch->n == ch->max) {
        drop_oldest(ch);
    }
    c = at(ch, ch->n);
    c->version = version;
    c->len = record_size(cmd);
    c->rec = xmalloc(c->len);
    end = put_record(c->rec, cmd, version);
    INVARIANT((size_t)(end - c->rec) == c->len);
    ch->n++;
    ch->bytes += c->len;
    while (ch->n > 1 && ch->bytes > ch->max_bytes) {
        drop_oldest(ch);
    }
}

/* ---- answers ---------------------------------------------------------- */

/* Index of the change that made @known + 1, if the ring holds every
 * change from there to @newest. */
static bool covers(const struct meta_changes *ch, uint64_t known,
                   uint64_t newest, size_t *from)
{
    uint64_t oldest;

    if (ch == NULL || ch->n == 0 || known == 0 ||
        at(ch, ch->n - 1)->version != newest) {
        return false;
    }
    oldest = at(ch, 0)->version;
    if (known + 1 < oldest) {
        return false;
    }
    *from = (size_t)(known + 1 - oldest);
    return true;
}

int meta_changes_answer(const struct meta_changes *ch,
                        const struct meta_sm *sm, uint64_t known,
                        void *(*alloc)(size_t), void **state,
                        size_t *state_len, void **changes,
                        size_t *changes_len)
{
    uint64_t version = meta_sm_version(sm);
    size_t from, i, len = 1;
    unsigned char *p;

    *state = *changes = NULL;
    *state_len = *changes_len = 0;
    if (known != 0 && known >= version) {
        return 0;
    }
    if (!covers(ch, known, version, &from)) {
        return meta_sm_snapshot(sm, alloc, state, state_len);
    }
    for (i = from; i < ch->n; i++) {
        len += at(ch, i)->len;
    }
    p = alloc(len);
    if (p == NULL) {
        return -1;
    }
    *changes = p;
    *changes_len = len;
    *p++ = FORMAT;
    for (i = from; i < ch->n; i++) {
        memcpy(p, at(ch, i)->rec, at(ch, i)->len);
        p += at(ch, i)->len;
    }
    return 0;
}

/* ---- taking an answer ------------------------------------------------- */

static bool get_str(struct le_reader *r, const char **s, size_t *len)
{
    uint32_t n;
    const unsigned char *p;

    if (!le_get_u32(r, &n) || !le_get_bytes(r, &p, n)) {
        return false;
    }
    *s = (const char *)p;
    *len = n;
    return true;
}

/* One record into @c (args allocated into *@args: free it) and its
 * version. */
static bool get_record(struct le_reader *r, struct meta_sm_cmd *c,
                       struct meta_sm_kv **args, uint64_t *version)
{
    uint8_t type, etype, flags;
    uint32_t n, i;
    const char *v;
    size_t vlen;

    memset(c, 0, sizeof(*c));
    *args = NULL;
    if (!le_get_u64(r, version) || !le_get_u8(r, &type) ||
        !le_get_u8(r, &etype) || !le_get_u8(r, &flags) ||
        !get_str(r, &c->vhost, &c->vhost_len) ||
        !get_str(r, &c->exchange, &c->exchange_len) ||
        !get_str(r, &c->dest, &c->dest_len) ||
        !get_str(r, &c->routing_key, &c->routing_key_len) ||
        !get_str(r, &c->shard, &c->shard_len) ||
        !get_str(r, &c->target, &c->target_len) || !le_get_u64(r, &c->gen) ||
        !le_get_u32(r, &n) || n > r->left / 8) {
        return false;
    }
    c->type = (enum meta_sm_cmd_type)type;
    c->exchange_type = (enum meta_sm_exchange_type)etype;
    c->passive = flags & FLAG_PASSIVE;
    c->durable = flags & FLAG_DURABLE;
    c->auto_delete = flags & FLAG_AUTO_DELETE;
    c->internal = flags & FLAG_INTERNAL;
    c->if_unused = flags & FLAG_IF_UNUSED;
    c->dest_is_exchange = flags & FLAG_DEST_IS_EXCHANGE;
    if (n > 0) {
        *args = xcalloc(n, sizeof(**args));
    }
    for (i = 0; i < n; i++) {
        if (!get_str(r, &(*args)[i].key, &(*args)[i].key_len) ||
            !get_str(r, &v, &vlen)) {
            free(*args);
            *args = NULL;
            return false;
        }
        (*args)[i].value = v;
        (*args)[i].value_len = vlen;
    }
    c->args = *args;
    c->n_args = n;
    return true;
}

static int take_changes(struct meta_sm *copy, const void *buf, size_t len)
{
    struct le_reader r = {buf, len};
    uint8_t format;

    if (!le_get_u8(&r, &format) || format != FORMAT) {
        return -1;
    }
    while (r.left > 0) {
        struct meta_sm_cmd c;
        struct meta_sm_kv *args;
        struct meta_sm_result res;
        uint64_t version;

        if (!get_record(&r, &c, &args, &version)) {
            return -1;
        }
        if (version > meta_sm_version(copy)) {
            if (version != meta_sm_version(copy) + 1) {
                free(args);
                return -1; /* a gap */
            }
            meta_sm_apply(copy, &c, &res);
            if (!res.changed || res.version != version) {
                free(args);
                return -1;
            }
        }
        free(args);
    }
    return 0;
}

int meta_changes_take(struct meta_sm *copy, uint64_t version,
                      const void *state, size_t state_len,
                      const void *changes, size_t changes_len)
{
    if (state != NULL) {
        if (version <= meta_sm_version(copy)) {
            return 0;
        }
        return meta_sm_restore(copy, state, state_len);
    }
    if (changes == NULL) {
        return 0;
    }
    if (take_changes(copy, changes, changes_len) != 0 ||
        meta_sm_version(copy) < version) {
        return -1;
    }
    return 0;
}
