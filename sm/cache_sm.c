/*
 * cache_sm: the deterministic memcached state machine; contract in
 * cache_sm.h. Semantics follow memcached 1.6 (checked against 1.6.18), with
 * these decisions where a replicated, millisecond-clocked machine must differ
 * or memcached is vague:
 *
 *   - Clock: apply keeps clock_ms = max(every now_ms seen), so a new leader
 *     with a slower clock never moves time backwards. Every apply decision
 *     uses clock_ms; reads use their own now_ms as given.
 *   - Expiry is exact to the ms: exptime e > 0 relative (e <= 30 days) gives
 *     exp_ms = clock_ms + e * 1000, absolute gives e * 1000, and an item is
 *     dead once now >= exp_ms (memcached: exptime <= current_time, in whole
 *     seconds). e < 0 or an absolute time <= now is dead on arrival: the
 *     store still answers STORED, takes a cas, replaces (removes) the old
 *     item and stores nothing, which is what a memcached client observes.
 *   - CAS: next_cas starts at 1 and every successful set/add/replace/cas/
 *     append/prepend/incr/decr takes the next value. touch and gat keep the
 *     cas (as memcached does).
 *   - incr/decr parse the value like memcached's safe_strtoull: leading
 *     white space, optional sign, decimal digits that fit in 64 bits, then
 *     end of value or white space; a '-' is refused only if the result would
 *     be negative as int64 ("-0" is 0). incr wraps mod 2^64, decr floors at
 *     0. When the new decimal text is not longer than the value it is written
 *     in place, padded with spaces (memcached 1.6: "100" decr 95 reads back
 *     as "5  "); otherwise the item is rewritten with the exact text.
 *   - Too large: value_len > item_size_max gives TOO_LARGE (memcached also
 *     counts its item header, so its real threshold is a bit lower). A SET
 *     that fails with TOO_LARGE or NO_MEMORY removes the old item (memcached
 *     does this so stale data does not survive a failed set); other ops keep
 *     it. append/prepend whose result would exceed item_size_max (or the
 *     whole memory limit) answer NOT_STORED, as memcached 1.6.18 does.
 *   - flush_all: delay <= 0, or a deadline already reached, clears every
 *     item at once. A later deadline is remembered in flush_ms (replacing
 *     any pending one, like memcached's settings.oldest_live); the first
 *     apply whose clock_ms >= flush_ms clears every item before doing
 *     anything else. Since the clock only reaches flush_ms there, every item
 *     present while a flush is pending was stored before the deadline, so a
 *     read with now_ms >= flush_ms misses every key, and anything stored at
 *     or after the deadline survives. This gives memcached's "items stored
 *     before the deadline become invalid at the deadline" without its
 *     second-granularity edge (memcached uses oldest_cas for the same-second
 *     case).
 *   - Memory: an item is charged ITEM_OVERHEAD + key_len + value_len. A
 *     store first removes the item it replaces, then removes items from the
 *     oldest end of the write-order list until the new one fits (expired
 *     ones count as expired_unfetched, live ones as evictions). Stores,
 *     incr/decr, touch and gat move the item to the newest end; reads and
 *     failed ops never reorder. Expired items are removed only by apply,
 *     when a write looks them up or eviction reaches them.
 *   - The stats counters (total_items, evictions, expired_unfetched, applied)
 *     are not part of the replicated state: they are not in the digest or
 *     the snapshot, and restore resets them.
 *   - Host malloc failure would be the one nondeterministic outcome (this
 *     replica alone refusing a write the others applied), so allocating an
 *     item aborts instead, as raft and dqlite do: the node restarts and
 *     applies the log again. Only copies into results (a GAT or GET hit)
 *     may answer NO_MEMORY; they change no state.
 */
#include "sm/cache_sm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/invariant.h"
#include "common/le.h"
#include "common/ring.h"
#include "sm/cache_move.h"
#include "sm/cache_moves.h"
#include "sm/cache_snap.h"
#include "sm/cache_table.h"
#include "sm/dedup.h"
#include "sm/shard_ring.h"

#define CACHE_MEM_LIMIT_DEFAULT (64ULL * 1024 * 1024)
/* Deterministic per-item charge: roughly memcached's item header. It must
 * never depend on malloc or the host, or eviction would differ by replica. */
#define ITEM_OVERHEAD 48

#define DIGEST_SEED 0x6469676573742d31ULL /* "digest-1" */
#define SNAP_SEED 0x736e617073686f74ULL   /* "snapshot" */
#define SNAP_MAGIC 0x43514d52U            /* "RMQC" little-endian */
#define SNAP_VERSION 5U
/* magic, version, clock_ms, next_cas, flush_ms, item count */
#define SNAP_HEADER_V1_LEN (4 + 4 + 8 + 8 + 8 + 8)
/* + mem_limit, item_size_max, configured */
#define SNAP_HEADER_LEN (SNAP_HEADER_V1_LEN + 8 + 4 + 1)
#define SNAP_ITEM_FIXED CACHE_SNAP_ITEM_FIXED
#define SNAP_TRAILER_LEN 8
_Static_assert(ITEM_OVERHEAD >= SNAP_ITEM_FIXED,
               "a snapshot's size follows from the charged bytes");

/* An incremental snapshot (cache_sm.h): the bytes before the items are
 * made at begin, the items come from cache_snap, the trailer is sealed. */
struct cache_sm_snap {
    struct cache_sm *sm;
    unsigned char *head; /* header, ring, moves, request ids */
    size_t head_len;
    struct cache__snap items;
    size_t len;     /* all the bytes, trailer included */
    size_t written;
};

struct cache_sm {
    /* The shard's settings (CACHE_OP_CONFIG); part of the state. */
    uint64_t mem_limit;
    uint32_t item_size_max;
    bool configured; /* a CONFIG was applied: a seed no longer applies */
    /* Which keys this shard owns (CACHE_OP_RING); part of the state. */
    struct shard_ring ring;
    /* The moves of keys this shard takes part in (CACHE_OP_MOVE). */
    struct cache_moves moves;
    /* The answers of writes with request ids; part of the state. */
    struct dedup dedup;

    struct cache_table table;
    struct cache_item *oldest; /* write order: eviction starts here */
    struct cache_item *newest;
    uint64_t bytes; /* sum of item charges */
    uint64_t next_order; /* cache_item.order of the last append */
    struct cache_sm_snap *snap; /* the snapshot in progress, or NULL */

    uint64_t clock_ms; /* max now_ms applied */
    uint64_t next_cas;
    uint64_t flush_ms; /* pending flush_all deadline; 0 = none */

    uint64_t total_items;
    uint64_t evictions;
    uint64_t expired_unfetched;
    uint64_t applied;
};

static uint64_t item_charge(size_t key_len, size_t value_len)
{
    return ITEM_OVERHEAD + (uint64_t)key_len + (uint64_t)value_len;
}

static bool item_expired(const struct cache_item *it, uint64_t now_ms)
{
    return it->exp_ms != 0 && now_ms >= it->exp_ms;
}

static void list_append(struct cache_sm *sm, struct cache_item *it)
{
    it->order = ++sm->next_order;
    it->newer = NULL;
    it->older = sm->newest;
    if (sm->newest != NULL) {
        sm->newest->newer = it;
    } else {
        sm->oldest = it;
    }
    sm->newest = it;
}

static void list_remove(struct cache_sm *sm, struct cache_item *it)
{
    if (it->older != NULL) {
        it->older->newer = it->newer;
    } else {
        sm->oldest = it->newer;
    }
    if (it->newer != NULL) {
        it->newer->older = it->older;
    } else {
        sm->newest = it->older;
    }
    it->older = NULL;
    it->newer = NULL;
}

/* @it is about to change in place (or move): a snapshot in progress that
 * has not written it yet keeps it as it is. */
static void before_change(struct cache_sm *sm, struct cache_item *it)
{
    if (sm->snap != NULL && cache__snap_pending(&sm->snap->items, it)) {
        cache__snap_save_copy(&sm->snap->items, it);
    }
}

/* @it leaves the state: true if a snapshot in progress that has not
 * written it yet took it (else the caller frees it). Before unlinking it
 * from the write order: the snapshot's cursor may stand on it. */
static bool snapshot_keeps(struct cache_sm *sm, struct cache_item *it)
{
    if (sm->snap == NULL || !cache__snap_pending(&sm->snap->items, it)) {
        return false;
    }
    cache__snap_save(&sm->snap->items, it);
    return true;
}

static void move_newest(struct cache_sm *sm, struct cache_item *it)
{
    if (sm->newest != it) {
        list_remove(sm, it);
        list_append(sm, it);
    }
}

static void link_item(struct cache_sm *sm, struct cache_item *it)
{
    cache__table_insert(&sm->table, it);
    list_append(sm, it);
    sm->bytes += item_charge(it->key_len, it->value_len);
}

static void drop_item(struct cache_sm *sm, struct cache_item *it)
{
    bool kept;

    /* an item gone at the source of a move (evicted, expired, deleted)
     * must go at the target too: it joins the move's dirty set */
    if (cache_moves_tracking(&sm->moves)) {
        cache_moves_dirty(&sm->moves,
                          ring_hash(cache__item_key(it), it->key_len),
                          cache__item_key(it), it->key_len);
    }

    sm->bytes -= item_charge(it->key_len, it->value_len);
    cache__table_remove(&sm->table, it);
    kept = snapshot_keeps(sm, it);
    list_remove(sm, it);
    if (!kept) {
        free(it);
    }
}

/* Free every item; keeps the bucket arrays (memcached never shrinks its
 * table either) so clearing needs no allocation and cannot fail. */
static void clear_items(struct cache_sm *sm)
{
    struct cache_item *it = sm->oldest;
    struct cache_table *t = &sm->table;

    while (it != NULL) {
        struct cache_item *next = it->newer;

        if (!snapshot_keeps(sm, it)) {
            free(it);
        }
        it = next;
    }
    sm->oldest = NULL;
    sm->newest = NULL;
    sm->bytes = 0;
    if (t->b[1] != NULL) {
        free(t->b[0]);
        t->b[0] = t->b[1];
        t->mask[0] = t->mask[1];
        t->b[1] = NULL;
        t->mask[1] = 0;
        t->rehash_pos = 0;
    }
    memset(t->b[0], 0, (t->mask[0] + 1) * sizeof(*t->b[0]));
    t->count = 0;
}

/* Lookup for apply: an expired item found here is removed, so a write never
 * sees it and its memory comes back. */
static struct cache_item *find_live(struct cache_sm *sm,
                                    const char *key,
                                    size_t key_len,
                                    uint64_t hash)
{
    struct cache_item *it = cache__table_find(&sm->table, hash, key, key_len);

    if (it != NULL && item_expired(it, sm->clock_ms)) {
        sm->expired_unfetched++;
        drop_item(sm, it);
        return NULL;
    }
    return it;
}

/* Remove oldest-written items until @charge more bytes fit. The caller has
 * checked charge <= mem_limit and unlinked any item it is replacing, so this
 * always ends with room. */
static void make_room(struct cache_sm *sm, uint64_t charge)
{
    while (sm->oldest != NULL && sm->bytes + charge > sm->mem_limit) {
        struct cache_item *victim = sm->oldest;

        if (item_expired(victim, sm->clock_ms)) {
            sm->expired_unfetched++;
        } else {
            sm->evictions++;
        }
        drop_item(sm, victim);
    }
}

/*
 * memcached's exptime rules at clock @now_ms. Returns false when the result
 * is already expired (negative, or absolute and not in the future); else
 * sets *@exp_ms (0 = never). Saturates instead of overflowing.
 */
static bool exptime_to_ms(uint64_t now_ms, int64_t exptime, uint64_t *exp_ms)
{
    uint64_t t;

    if (exptime == 0) {
        *exp_ms = 0;
        return true;
    }
    if (exptime < 0) {
        return false;
    }
    if (exptime <= CACHE_REALTIME_MAXDELTA) {
        t = now_ms + (uint64_t)exptime * 1000;
        if (t < now_ms) {
            t = UINT64_MAX;
        }
    } else if ((uint64_t)exptime > UINT64_MAX / 1000) {
        t = UINT64_MAX;
    } else {
        t = (uint64_t)exptime * 1000;
    }
    if (t <= now_ms) {
        return false;
    }
    *exp_ms = t;
    return true;
}

static bool is_space(char c)
{
    /* isspace() in the C locale, without depending on the process locale */
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* memcached's safe_strtoull() applied to an item's data. memcached's data
 * is followed by "\r\n", so the end of our value plays the part of that
 * white space terminator. */
static bool parse_number(const char *s, size_t len, uint64_t *out)
{
    size_t i = 0;
    bool neg = false;
    bool any = false;
    uint64_t v = 0;

    while (i < len && is_space(s[i])) {
        i++;
    }
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        neg = s[i] == '-';
        i++;
    }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (v > (UINT64_MAX - d) / 10) {
            return false; /* strtoull's ERANGE */
        }
        v = v * 10 + d;
        any = true;
    }
    if (!any || (i < len && !is_space(s[i]))) {
        return false;
    }
    if (neg) {
        v = 0 - v; /* strtoull negates in unsigned arithmetic */
        if ((int64_t)v < 0) {
            return false;
        }
    }
    *out = v;
    return true;
}

/* Copy an item's data into @res as a HIT. false on ENOMEM. */
static bool result_hit(struct cache_result *res, const struct cache_item *it)
{
    res->value = NULL;
    res->value_len = it->value_len;
    if (it->value_len > 0) {
        res->value = malloc(it->value_len);
        if (res->value == NULL) {
            res->value_len = 0;
            return false;
        }
        memcpy(res->value, cache__item_cvalue(it), it->value_len);
    }
    res->status = CACHE_HIT;
    res->flags = it->flags;
    res->cas = it->cas;
    return true;
}

/* set, add, replace, cas */
static void apply_store(struct cache_sm *sm,
                        const struct cache_op *op,
                        uint64_t hash,
                        struct cache_result *res)
{
    uint64_t charge = item_charge(op->key_len, op->value_len);
    struct cache_item *old;
    struct cache_item *it = NULL;
    uint64_t exp_ms = 0;
    bool alive;

    if (op->value_len > sm->item_size_max) {
        res->status = CACHE_TOO_LARGE;
        goto err_failed_set;
    }
    if (charge > sm->mem_limit) {
        res->status = CACHE_NO_MEMORY;
        goto err_failed_set;
    }
    old = find_live(sm, op->key, op->key_len, hash);
    switch (op->type) {
        case CACHE_OP_ADD:
            if (old != NULL) {
                res->status = CACHE_NOT_STORED;
                return;
            }
            break;
        case CACHE_OP_REPLACE:
            if (old == NULL) {
                res->status = CACHE_NOT_STORED;
                return;
            }
            break;
        case CACHE_OP_CAS:
            if (old == NULL) {
                res->status = CACHE_NOT_FOUND;
                return;
            }
            if (old->cas != op->cas) {
                res->status = CACHE_EXISTS;
                return;
            }
            break;
        default:
            break;
    }

    alive = exptime_to_ms(sm->clock_ms, op->exptime, &exp_ms);
    if (alive) {
        it = cache__item_new(op->key, op->key_len, hash, op->value_len);
        if (op->value_len > 0) {
            memcpy(cache__item_value(it), op->value, op->value_len);
        }
        it->flags = op->flags;
        it->exp_ms = exp_ms;
        it->cas = sm->next_cas;
    }
    res->cas = sm->next_cas++;
    sm->total_items++;
    if (old != NULL) {
        drop_item(sm, old);
    }
    if (it != NULL) {
        make_room(sm, charge);
        link_item(sm, it);
    }
    res->status = CACHE_STORED;
    return;

err_failed_set:
    /* memcached drops the old item when a SET cannot be stored, so a client
     * never reads back the value it just tried to overwrite. */
    if (op->type == CACHE_OP_SET) {
        old = find_live(sm, op->key, op->key_len, hash);
        if (old != NULL) {
            drop_item(sm, old);
        }
    }
}

static void apply_concat(struct cache_sm *sm,
                         const struct cache_op *op,
                         uint64_t hash,
                         struct cache_result *res)
{
    struct cache_item *old;
    struct cache_item *it;
    size_t new_len;
    uint64_t charge;
    char *dst;

    if (op->value_len > sm->item_size_max) {
        res->status = CACHE_TOO_LARGE;
        return;
    }
    old = find_live(sm, op->key, op->key_len, hash);
    if (old == NULL) {
        res->status = CACHE_NOT_STORED;
        return;
    }
    new_len = (size_t)old->value_len + op->value_len;
    charge = item_charge(op->key_len, new_len);
    /* memcached 1.6.18 fails the allocation of the combined item and
     * answers NOT_STORED (not SERVER_ERROR) for both of these. */
    if (new_len > sm->item_size_max || charge > sm->mem_limit) {
        res->status = CACHE_NOT_STORED;
        return;
    }
    it = cache__item_new(op->key, op->key_len, hash, new_len);
    dst = cache__item_value(it);
    if (op->type == CACHE_OP_APPEND) {
        memcpy(dst, cache__item_value(old), old->value_len);
        if (op->value_len > 0) {
            memcpy(dst + old->value_len, op->value, op->value_len);
        }
    } else {
        if (op->value_len > 0) {
            memcpy(dst, op->value, op->value_len);
        }
        memcpy(dst + op->value_len, cache__item_value(old), old->value_len);
    }
    it->flags = old->flags;
    it->exp_ms = old->exp_ms;
    it->cas = sm->next_cas++;
    sm->total_items++;
    drop_item(sm, old);
    make_room(sm, charge);
    link_item(sm, it);
    res->status = CACHE_STORED;
    res->cas = it->cas;
}

static void apply_delta(struct cache_sm *sm,
                        const struct cache_op *op,
                        uint64_t hash,
                        struct cache_result *res)
{
    struct cache_item *old;
    struct cache_item *it;
    char buf[24];
    uint64_t v;
    size_t n;

    old = find_live(sm, op->key, op->key_len, hash);
    if (old == NULL) {
        res->status = CACHE_NOT_FOUND;
        return;
    }
    if (!parse_number(cache__item_value(old), old->value_len, &v)) {
        res->status = CACHE_NON_NUMERIC;
        return;
    }
    if (op->type == CACHE_OP_INCR) {
        v += op->delta; /* wraps mod 2^64, as in memcached */
    } else {
        v = op->delta > v ? 0 : v - op->delta;
    }
    n = (size_t)snprintf(buf, sizeof(buf), "%" PRIu64, v);

    if (n <= old->value_len) {
        /* memcached 1.6 rewrites in place and pads with spaces */
        char *dst = cache__item_value(old);

        before_change(sm, old);
        memcpy(dst, buf, n);
        memset(dst + n, ' ', old->value_len - n);
        old->cas = sm->next_cas++;
        move_newest(sm, old);
        it = old;
    } else {
        uint64_t charge = item_charge(old->key_len, n);

        if (charge > sm->mem_limit) {
            res->status = CACHE_NO_MEMORY;
            return;
        }
        it = cache__item_new(op->key, op->key_len, hash, n);
        memcpy(cache__item_value(it), buf, n);
        it->flags = old->flags;
        it->exp_ms = old->exp_ms;
        it->cas = sm->next_cas++;
        drop_item(sm, old);
        make_room(sm, charge);
        link_item(sm, it);
    }
    res->status = CACHE_NUMBER;
    res->number = v;
    res->cas = it->cas;
}

/* touch and gat: set a new exptime, keep the cas. */
static void apply_touch(struct cache_sm *sm,
                        const struct cache_op *op,
                        uint64_t hash,
                        struct cache_result *res)
{
    struct cache_item *it;
    uint64_t exp_ms = 0;

    it = find_live(sm, op->key, op->key_len, hash);
    if (it == NULL) {
        res->status = CACHE_NOT_FOUND;
        return;
    }
    if (op->type == CACHE_OP_GAT) {
        /* Copy before a dead-on-arrival exptime frees the item. On ENOMEM
         * the touch still happens: the state must not depend on malloc. */
        if (!result_hit(res, it)) {
            res->status = CACHE_NO_MEMORY;
        }
    } else {
        res->status = CACHE_TOUCHED;
    }
    if (exptime_to_ms(sm->clock_ms, op->exptime, &exp_ms)) {
        before_change(sm, it);
        it->exp_ms = exp_ms;
        move_newest(sm, it);
    } else {
        drop_item(sm, it);
    }
}

static void apply_flush(struct cache_sm *sm,
                        const struct cache_op *op,
                        struct cache_result *res)
{
    uint64_t deadline = 0;

    /* memcached: a delay <= 0 means now. An absolute time in the past is
     * also now here (memcached 1.6 would silently disable the flush). */
    if (op->exptime <= 0 ||
        !exptime_to_ms(sm->clock_ms, op->exptime, &deadline)) {
        clear_items(sm);
        cache_moves_flushed(&sm->moves);
        sm->flush_ms = 0;
    } else {
        sm->flush_ms = deadline;
    }
    res->status = CACHE_OK;
}

/* The shard's settings change: a smaller limit evicts down to it now, so
 * the state stays a function of the log whatever was stored before. */
static void apply_config(struct cache_sm *sm, const struct cache_op *op,
                         struct cache_result *res)
{
    const struct cache_op_config *c = &op->config;

    if (c->mem_limit == 0 && c->item_size_max == 0) {
        res->status = CACHE_BAD_REQUEST;
        return;
    }
    res->status = CACHE_OK;
    if (c->seed && sm->configured) {
        return;
    }
    if (c->mem_limit != 0) {
        sm->mem_limit = c->mem_limit;
    }
    if (c->item_size_max != 0) {
        sm->item_size_max = c->item_size_max;
    }
    sm->configured = true;
    make_room(sm, 0);
}

/* A ring spec (op->value): newer epochs replace older ones; a seed applies
 * only to a shard that has none. */
static void apply_ring(struct cache_sm *sm, const struct cache_op *op,
                       struct cache_result *res)
{
    struct shard_ring next;

    shard_ring_init(&next);
    if (shard_ring_decode(op->value, op->value_len, &next) != 0) {
        res->status = CACHE_BAD_REQUEST;
        return;
    }
    res->status = CACHE_OK;
    if ((op->config.seed && sm->ring.epoch != 0) ||
        next.epoch <= sm->ring.epoch) {
        shard_ring_clear(&next);
        return;
    }
    shard_ring_clear(&sm->ring);
    sm->ring = next;
}

/* Whether the shard serves @key now, for a write or a read. A key of an
 * arc moving in, or a write to an arc moving out under a fence, is
 * refused CACHE_MOVING (ask again soon); a key another shard owns is
 * refused CACHE_WRONG_OWNER naming it. Nothing is applied either way.
 * *@tracked: a write to it must join a move's dirty set. */
enum cache_status cache_sm_admit(const struct cache_sm *sm, uint64_t now_ms,
                                 const char *key, size_t key_len, bool write,
                                 const char **owner, bool *tracked)
{
    enum cache_moves_verdict v = MOVES_NONE;
    bool live = cache_moves_live(&sm->moves);
    uint32_t hash;

    *tracked = false;
    if (sm->ring.epoch == 0 && !live) {
        return CACHE_OK; /* a standalone shard: no md5 per op */
    }
    hash = ring_hash(key, key_len); /* once, for the moves and the ring */
    if (live) {
        v = cache_moves_check(&sm->moves, hash, now_ms);
    }
    if (v == MOVES_IMPORTING || (v == MOVES_FENCED && write)) {
        return CACHE_MOVING;
    }
    if (!shard_ring_owns(&sm->ring, hash, owner)) {
        return CACHE_WRONG_OWNER;
    }
    *tracked = v == MOVES_TRACK || v == MOVES_FENCED;
    return CACHE_OK;
}

static bool refuse_key(const struct cache_sm *sm, const char *key,
                       size_t key_len, bool write, struct cache_result *res,
                       bool *tracked)
{
    const char *owner = NULL;
    enum cache_status st = cache_sm_admit(sm, sm->clock_ms, key, key_len,
                                          write, &owner, tracked);

    if (st == CACHE_OK) {
        return false;
    }
    res->status = st;
    if (st == CACHE_WRONG_OWNER) {
        res->value_len = strlen(owner);
        res->value = xmemdup(owner, res->value_len);
    }
    return true;
}

/* ---- moves (sm/cache_move.h) -------------------------------------------- */

static uint64_t item_digest(const struct cache_item *it);

static bool item_in_arcs(const struct cache_item *it, const struct arc *arcs,
                         size_t n)
{
    return arcs_contain(arcs, n, ring_hash(cache__item_key(it), it->key_len));
}

/* Remove every item of @arcs. Scans the whole table (md5 per item): moves
 * are rare, and no index by ring hash is kept for them. */
static void drop_arcs(struct cache_sm *sm, const struct arc *arcs, size_t n)
{
    struct cache_item *it = sm->oldest;

    while (it != NULL) {
        struct cache_item *next = it->newer;
        if (item_in_arcs(it, arcs, n)) {
            drop_item(sm, it);
        }
        it = next;
    }
}

/* The digest of the items of @arcs: a sum of item digests (any order),
 * mixed with their count. S and T compare theirs before a hand-off. */
static void arcs_digest(const struct cache_sm *sm, const struct arc *arcs,
                        size_t n, uint64_t *digest, uint64_t *count)
{
    const struct cache_item *it;
    uint64_t sum = 0, k = 0;

    for (it = sm->oldest; it != NULL; it = it->newer) {
        if (item_in_arcs(it, arcs, n)) {
            sum += item_digest(it);
            k++;
        }
    }
    *digest = cache__mix64(sum ^ k);
    *count = k;
}

/* One imported item at the target: stored as the source had it (value,
 * flags, absolute expiry, cas), replacing what is there. */
static void import_item(struct cache_sm *sm, const struct cache_move_item *im)
{
    uint64_t hash = cache__hash_key(im->key, im->key_len);
    struct cache_item *old =
        cache__table_find(&sm->table, hash, im->key, im->key_len);
    uint64_t charge = item_charge(im->key_len, im->value_len);
    struct cache_item *it;

    if (old != NULL) {
        drop_item(sm, old);
    }
    if (im->tombstone || charge > sm->mem_limit) {
        return; /* too large here: the digests will differ, and say so */
    }
    make_room(sm, charge);
    it = cache__item_new(im->key, im->key_len, hash, im->value_len);
    if (im->value_len > 0) {
        memcpy(cache__item_value(it), im->value, im->value_len);
    }
    it->flags = im->flags;
    it->exp_ms = im->exp_ms;
    it->cas = im->cas;
    link_item(sm, it);
    if (im->cas >= sm->next_cas) {
        sm->next_cas = im->cas + 1;
    }
}

/* Whether @sm owns every arc of @c (checked at their ends: a diff's arcs
 * have one owner each). */
static bool owns_arcs(const struct cache_sm *sm, const struct cache_move_cmd *c)
{
    size_t i;

    for (i = 0; i < c->n_arcs; i++) {
        const char *lo = shard_ring_owner_hash(&sm->ring, c->arcs[i].lo);
        const char *hi = shard_ring_owner_hash(&sm->ring, c->arcs[i].hi);
        if (lo == NULL || hi == NULL || strcmp(lo, sm->ring.self) != 0 ||
            strcmp(hi, sm->ring.self) != 0) {
            return false;
        }
    }
    return true;
}

/* What a key weighs in a CUT's answer: its key and value (cache_sm *). */
static size_t cut_cost(void *data, const char *key, size_t len)
{
    const struct cache_sm *sm = data;
    const struct cache_item *it =
        cache__table_find(&sm->table, cache__hash_key(key, len), key, len);

    return len + (it != NULL ? it->value_len : 0) + 32;
}

/* The reply's value; @status: OK when the step is done (or was), else
 * NOT_STORED (refused in the move's state, which the reply tells). */
static void move_reply(struct cache_result *res, enum cache_status status,
                       const struct cache_move_reply *r)
{
    res->status = status;
    res->value = cache_move_reply_encode(r, &res->value_len);
}

static void apply_move(struct cache_sm *sm, const struct cache_op *op,
                       struct cache_result *res)
{
    struct cache_move_cmd c;
    struct cache_move_reply r;
    struct cache_move_rec *rec;
    enum cache_status st = CACHE_OK;
    size_t i;

    if (cache_move_cmd_decode(op->value, op->value_len, &c) != 0) {
        res->status = CACHE_BAD_REQUEST;
        return;
    }
    memset(&r, 0, sizeof(r));
    rec = cache_moves_find(&sm->moves, c.move_id);
    switch (c.kind) {
    case CACHE_MOVE_IN_BEGIN:
        if (rec == NULL) {
            rec = cache_moves_add(&sm->moves, c.move_id, false, c.peer,
                                  c.arcs, c.n_arcs);
            rec->state = CACHE_MOVE_IMPORTING;
            drop_arcs(sm, c.arcs, c.n_arcs); /* an earlier attempt's */
        } else if (rec->out) {
            st = CACHE_NOT_STORED;
        }
        break;
    case CACHE_MOVE_OUT_BEGIN:
        if (rec == NULL) {
            /* a delayed flush would outlive the copy at the target; the
             * arcs must be ours, by a ring spec overrides can refine */
            if (sm->flush_ms != 0 || sm->ring.epoch == 0 ||
                !owns_arcs(sm, &c)) {
                st = CACHE_NOT_STORED;
                break;
            }
            rec = cache_moves_add(&sm->moves, c.move_id, true, c.peer,
                                  c.arcs, c.n_arcs);
            rec->state = CACHE_MOVE_TRACKING;
        } else if (!rec->out) {
            st = CACHE_NOT_STORED;
        }
        break;
    case CACHE_MOVE_IMPORT:
        if (rec == NULL || rec->out || rec->state != CACHE_MOVE_IMPORTING) {
            st = CACHE_NOT_STORED;
            break;
        }
        for (i = 0; i < c.n_items; i++) {
            uint32_t h = ring_hash(c.items[i].key, c.items[i].key_len);
            if (arcs_contain(rec->arcs, rec->n_arcs, h)) {
                import_item(sm, &c.items[i]);
                r.count++;
            }
        }
        break;
    case CACHE_MOVE_CUT:
        if (rec == NULL || !rec->out ||
            (rec->state != CACHE_MOVE_TRACKING &&
             rec->state != CACHE_MOVE_FENCED) ||
            (c.seq != 0 && c.seq < rec->cut_seq)) {
            st = CACHE_NOT_STORED;
            break;
        }
        if (c.seq == 0 || c.seq > rec->cut_seq) {
            keyset_clear(&rec->cut);
            keyset_take(&rec->dirty, &rec->cut, CACHE_MOVE_BATCH_BYTES,
                        cut_cost, sm);
            rec->cut_seq = c.seq;
        }
        /* the keys as they are now: a write after this point is dirty
         * again, so the target gets it by a later CUT */
        r.n_items = keyset_size(&rec->cut);
        r.items = r.n_items ? xcalloc(r.n_items, sizeof(*r.items)) : NULL;
        for (i = 0; i < r.n_items; i++) {
            size_t len;
            const char *key = keyset_key(&rec->cut, i, &len);
            cache_sm_export_item(sm, key, len, &r.items[i]);
        }
        r.count = keyset_size(&rec->dirty);
        break;
    case CACHE_MOVE_FENCE:
        if (rec == NULL || !rec->out ||
            (rec->state != CACHE_MOVE_TRACKING &&
             rec->state != CACHE_MOVE_FENCED)) {
            st = CACHE_NOT_STORED;
            break;
        }
        if (rec->state == CACHE_MOVE_TRACKING) {
            rec->state = CACHE_MOVE_FENCED;
            rec->fenced_at = sm->clock_ms;
        }
        break;
    case CACHE_MOVE_HANDOFF:
        if (rec == NULL || !rec->out) {
            st = CACHE_NOT_STORED;
            break;
        }
        if (rec->state == CACHE_MOVE_HANDED_OFF ||
            rec->state == CACHE_MOVE_PURGED) {
            break;
        }
        if (rec->state != CACHE_MOVE_FENCED) {
            st = CACHE_NOT_STORED;
            break;
        }
        arcs_digest(sm, rec->arcs, rec->n_arcs, &r.digest, &r.count);
        if (keyset_size(&rec->dirty) != 0 || r.digest != c.digest) {
            st = CACHE_NOT_STORED;
            break;
        }
        rec->state = CACHE_MOVE_HANDED_OFF;
        shard_ring_override(&sm->ring, rec->arcs, rec->n_arcs, rec->peer);
        break;
    case CACHE_MOVE_ACTIVATE:
        if (rec == NULL || rec->out ||
            (rec->state != CACHE_MOVE_IMPORTING &&
             rec->state != CACHE_MOVE_ACTIVE)) {
            st = CACHE_NOT_STORED;
            break;
        }
        if (rec->state == CACHE_MOVE_IMPORTING) {
            rec->state = CACHE_MOVE_ACTIVE;
            if (sm->ring.epoch != 0) {
                shard_ring_override(&sm->ring, rec->arcs, rec->n_arcs,
                                    sm->ring.self);
            }
        }
        break;
    case CACHE_MOVE_PURGE:
        if (rec == NULL || !rec->out ||
            (rec->state != CACHE_MOVE_HANDED_OFF &&
             rec->state != CACHE_MOVE_PURGED)) {
            st = CACHE_NOT_STORED;
            break;
        }
        if (rec->state == CACHE_MOVE_HANDED_OFF) {
            drop_arcs(sm, rec->arcs, rec->n_arcs);
            rec->state = CACHE_MOVE_PURGED;
        }
        break;
    case CACHE_MOVE_ABORT:
        if (rec == NULL) {
            break;
        }
        if (rec->state == CACHE_MOVE_HANDED_OFF ||
            rec->state == CACHE_MOVE_PURGED ||
            rec->state == CACHE_MOVE_ACTIVE) {
            st = CACHE_NOT_STORED; /* after the hand-off: forward only */
            break;
        }
        if (!rec->out) {
            drop_arcs(sm, rec->arcs, rec->n_arcs);
        }
        cache_moves_remove(&sm->moves, rec);
        rec = NULL;
        break;
    default:
        st = CACHE_BAD_REQUEST;
        break;
    }
    r.state = rec != NULL ? rec->state : CACHE_MOVE_NONE;
    if (rec != NULL && (rec->state == CACHE_MOVE_ACTIVE ||
                        rec->state == CACHE_MOVE_PURGED)) {
        cache_moves_finished(&sm->moves, rec); /* may move the record */
    }
    move_reply(res, st, &r);
    free(r.items);
    cache_move_cmd_clear(&c);
}

enum cache_move_state cache_sm_move_state(const struct cache_sm *sm,
                                          uint64_t move_id)
{
    const struct cache_move_rec *rec =
        cache_moves_find((struct cache_moves *)&sm->moves, move_id);

    return rec != NULL ? rec->state : CACHE_MOVE_NONE;
}

int cache_sm_move_digest(const struct cache_sm *sm, uint64_t move_id,
                         uint64_t *digest, uint64_t *count)
{
    const struct cache_move_rec *rec =
        cache_moves_find((struct cache_moves *)&sm->moves, move_id);

    if (rec == NULL) {
        return -1;
    }
    arcs_digest(sm, rec->arcs, rec->n_arcs, digest, count);
    return 0;
}

int cache_sm_move_keys(const struct cache_sm *sm, uint64_t move_id,
                       void (*cb)(void *data, const char *key, size_t len),
                       void *data)
{
    const struct cache_move_rec *rec =
        cache_moves_find((struct cache_moves *)&sm->moves, move_id);
    const struct cache_item *it;

    if (rec == NULL) {
        return -1;
    }
    for (it = sm->oldest; it != NULL; it = it->newer) {
        if (item_in_arcs(it, rec->arcs, rec->n_arcs)) {
            cb(data, cache__item_key(it), it->key_len);
        }
    }
    return 0;
}

bool cache_sm_export_item(const struct cache_sm *sm, const char *key,
                          size_t len, struct cache_move_item *out)
{
    const struct cache_item *it;

    memset(out, 0, sizeof(*out));
    out->key = key;
    out->key_len = len;
    it = cache__table_find(&sm->table, cache__hash_key(key, len), key, len);
    if (it == NULL) {
        out->tombstone = true;
        return false;
    }
    out->value = cache__item_cvalue(it);
    out->value_len = it->value_len;
    out->flags = it->flags;
    out->exp_ms = it->exp_ms;
    out->cas = it->cas;
    return true;
}

struct cache_sm *cache_sm_new(const struct cache_sm_config *cfg)
{
    struct cache_sm *sm;

    sm = calloc(1, sizeof(*sm));
    if (sm == NULL) {
        goto err;
    }
    sm->mem_limit = CACHE_MEM_LIMIT_DEFAULT;
    sm->item_size_max = CACHE_ITEM_SIZE_MAX_DEFAULT;
    if (cfg != NULL && cfg->mem_limit != 0) {
        sm->mem_limit = cfg->mem_limit;
    }
    if (cfg != NULL && cfg->item_size_max != 0) {
        sm->item_size_max = cfg->item_size_max;
    }
    if (cache__table_init(&sm->table, 0) != 0) {
        goto err_after_alloc;
    }
    sm->next_cas = 1;
    shard_ring_init(&sm->ring);
    cache_moves_init(&sm->moves);
    dedup_init(&sm->dedup,
               cfg != NULL && cfg->dedup_window != 0
                   ? cfg->dedup_window
                   : CACHE_DEDUP_WINDOW_DEFAULT,
               cfg != NULL && cfg->dedup_clients != 0
                   ? cfg->dedup_clients
                   : CACHE_DEDUP_CLIENTS_DEFAULT);
    return sm;

err_after_alloc:
    free(sm);
err:
    return NULL;
}

void cache_sm_free(struct cache_sm *sm)
{
    if (sm == NULL) {
        return;
    }
    INVARIANT(sm->snap == NULL); /* its owner ends it first */
    clear_items(sm);
    cache__table_close(&sm->table);
    shard_ring_clear(&sm->ring);
    cache_moves_clear(&sm->moves);
    dedup_close(&sm->dedup);
    free(sm);
}

static void apply_op(struct cache_sm *sm, const struct cache_op *op,
                     struct cache_result *res)
{
    uint64_t hash;
    bool tracked;

    if (op->type == CACHE_OP_FLUSH_ALL) {
        apply_flush(sm, op, res);
        return;
    }
    if (op->type == CACHE_OP_CONFIG) {
        apply_config(sm, op, res);
        return;
    }
    if (op->type == CACHE_OP_RING) {
        apply_ring(sm, op, res);
        return;
    }
    if (op->type == CACHE_OP_MOVE) {
        apply_move(sm, op, res);
        return;
    }
    if (op->key == NULL || !cache_key_valid(op->key, op->key_len) ||
        (op->value == NULL && op->value_len != 0)) {
        res->status = CACHE_BAD_REQUEST;
        return;
    }
    if (refuse_key(sm, op->key, op->key_len, true, res, &tracked)) {
        return;
    }
    if (tracked) {
        /* before the op: whatever it does, T must learn the outcome (a
         * rare path: only keys of an arc moving out) */
        cache_moves_dirty(&sm->moves, ring_hash(op->key, op->key_len),
                          op->key, op->key_len);
    }
    hash = cache__hash_key(op->key, op->key_len);

    switch (op->type) {
        case CACHE_OP_SET:
        case CACHE_OP_ADD:
        case CACHE_OP_REPLACE:
        case CACHE_OP_CAS:
            apply_store(sm, op, hash, res);
            break;
        case CACHE_OP_APPEND:
        case CACHE_OP_PREPEND:
            apply_concat(sm, op, hash, res);
            break;
        case CACHE_OP_INCR:
        case CACHE_OP_DECR:
            apply_delta(sm, op, hash, res);
            break;
        case CACHE_OP_DELETE: {
            struct cache_item *it = find_live(sm, op->key, op->key_len, hash);

            if (it != NULL) {
                drop_item(sm, it);
                res->status = CACHE_DELETED;
            } else {
                res->status = CACHE_NOT_FOUND;
            }
            break;
        }
        case CACHE_OP_TOUCH:
        case CACHE_OP_GAT:
            apply_touch(sm, op, hash, res);
            break;
        default:
            res->status = CACHE_BAD_REQUEST;
            break;
    }
}

/* The ops a request id applies to: the memcached ones (the node's own
 * CONFIG, RING and MOVE steps are idempotent by design). */
static bool has_request_id(const struct cache_op *op)
{
    return op->seq != 0 && (cache_op_has_key(op->type) ||
                            op->type == CACHE_OP_FLUSH_ALL);
}

/* What is recorded of @res: deterministic on every replica (a GAT's copy
 * of the value may fail for want of memory on one replica alone, so a GAT
 * records only its status, a failed copy as the HIT it was). */
static void answer_of(const struct cache_op *op, const struct cache_result *res,
                      struct dedup_answer *a)
{
    memset(a, 0, sizeof(*a));
    a->code = (uint32_t)res->status;
    if (op->type == CACHE_OP_GAT) {
        if (res->status == CACHE_NO_MEMORY) {
            a->code = CACHE_HIT;
        }
        return;
    }
    a->number = res->number;
    a->cas = res->cas;
}

/* A repeated GAT reads the item as it is now; any other repeat answers
 * what was recorded. */
static void answer_again(const struct cache_sm *sm, const struct cache_op *op,
                         const struct dedup_answer *a,
                         struct cache_result *res)
{
    if (op->type == CACHE_OP_GAT && a->code == CACHE_HIT) {
        cache_sm_get(sm, sm->clock_ms, op->key, op->key_len, res);
        return;
    }
    res->status = (enum cache_status)a->code;
    res->number = a->number;
    res->cas = a->cas;
}

bool cache_sm_answered(const struct cache_sm *sm, const struct cache_op *op,
                       struct cache_result *res)
{
    struct dedup_answer a;

    if ((unsigned)op->type >= CACHE_OP__COUNT || !has_request_id(op) ||
        op->type == CACHE_OP_GAT) {
        return false;
    }
    switch (dedup_check(&sm->dedup, op->client_id, op->seq, &a)) {
    case DEDUP_NEW:
        return false;
    case DEDUP_STALE:
        cache_result_init(res);
        res->status = CACHE_STALE_RETRY;
        return true;
    case DEDUP_DUPLICATE:
        cache_result_init(res);
        answer_again(sm, op, &a, res);
        return true;
    }
    return false;
}

static void apply_one(struct cache_sm *sm, uint64_t now_ms,
                      const struct cache_op *op, struct cache_result *res)
{
    struct dedup_answer a;

    cache_result_init(res);
    sm->applied++;
    if (now_ms > sm->clock_ms) {
        sm->clock_ms = now_ms;
    }
    if (sm->flush_ms != 0 && sm->clock_ms >= sm->flush_ms) {
        clear_items(sm);
        cache_moves_flushed(&sm->moves);
        sm->flush_ms = 0;
    }
    /* Keep a resize moving even when writes are mostly updates. */
    cache__table_step(&sm->table, 1);
    if (sm->moves.n > 0) {
        cache_moves_expire(&sm->moves, sm->clock_ms);
    }

    if (op == NULL || (unsigned)op->type >= CACHE_OP__COUNT ||
        op->type == CACHE_OP_GET) {
        res->status = CACHE_BAD_REQUEST;
        return;
    }
    if (!has_request_id(op)) {
        apply_op(sm, op, res);
        return;
    }
    /* before ownership: a repeat answers even after its key moved away */
    switch (dedup_check(&sm->dedup, op->client_id, op->seq, &a)) {
    case DEDUP_STALE:
        res->status = CACHE_STALE_RETRY;
        return;
    case DEDUP_DUPLICATE:
        answer_again(sm, op, &a, res);
        return;
    case DEDUP_NEW:
        break;
    }
    apply_op(sm, op, res);
    if (res->status != CACHE_WRONG_OWNER && res->status != CACHE_MOVING) {
        answer_of(op, res, &a);
        dedup_record(&sm->dedup, op->client_id, op->seq, &a);
    }
}

void cache_sm_apply(struct cache_sm *sm,
                    uint64_t now_ms,
                    const struct cache_op *op,
                    struct cache_result *res)
{
    apply_one(sm, now_ms, op, res);
    INVARIANT(sm->bytes <= sm->mem_limit);
    INVARIANT(sm->table.count == 0 || sm->oldest != NULL);
    if (deep_check_due(sm->applied, sm->table.count)) {
        cache_sm_check(sm);
    }
}

void cache_sm_check(const struct cache_sm *sm)
{
    const struct cache_item *it, *prev = NULL;
    uint64_t n = 0, bytes = 0;

    for (it = sm->oldest; it != NULL; prev = it, it = it->newer) {
        INVARIANT(it->older == prev);
        /* a snapshot in progress relies on it (sm/cache_snap.h) */
        INVARIANT(prev == NULL || it->order > prev->order);
        INVARIANT(it->order <= sm->next_order);
        INVARIANT(it->key_len > 0);
        INVARIANT(it->cas != 0 && it->cas < sm->next_cas);
        INVARIANT(cache__table_find(&sm->table, it->hash, cache__item_key(it),
                                    it->key_len) == it);
        n++;
        bytes += item_charge(it->key_len, it->value_len);
    }
    INVARIANT(prev == sm->newest);
    INVARIANT(n == sm->table.count);
    INVARIANT(bytes == sm->bytes);
    INVARIANT(sm->bytes <= sm->mem_limit);
    INVARIANT(sm->item_size_max > 0 && sm->mem_limit > 0);
    dedup_check_invariants(&sm->dedup);
}

void cache_sm_get(const struct cache_sm *sm,
                  uint64_t now_ms,
                  const char *key,
                  size_t key_len,
                  struct cache_result *res)
{
    const struct cache_item *it;

    cache_result_init(res);
    if (key == NULL || !cache_key_valid(key, key_len)) {
        res->status = CACHE_BAD_REQUEST;
        return;
    }
    {
        bool tracked;
        if (refuse_key(sm, key, key_len, false, res, &tracked)) {
            return;
        }
    }
    /* Every item present while a flush is pending was stored before its
     * deadline (see the top of this file), so all of them are gone. */
    if (sm->flush_ms != 0 && now_ms >= sm->flush_ms) {
        res->status = CACHE_NOT_FOUND;
        return;
    }
    it = cache__table_find(&sm->table, cache__hash_key(key, key_len), key,
                           key_len);
    if (it == NULL || item_expired(it, now_ms)) {
        res->status = CACHE_NOT_FOUND;
        return;
    }
    if (!result_hit(res, it)) {
        res->status = CACHE_NO_MEMORY;
    }
}

static uint64_t item_digest(const struct cache_item *it)
{
    uint64_t h;

    h = cache__hash(cache__item_key(it), it->key_len, DIGEST_SEED);
    h = cache__hash(cache__item_cvalue(it), it->value_len, h);
    h = cache__mix64(h ^ ((uint64_t)it->flags + 1));
    h = cache__mix64(h ^ it->exp_ms);
    h = cache__mix64(h ^ it->cas);
    return h;
}

uint64_t cache_sm_digest(const struct cache_sm *sm)
{
    const struct cache_item *it;
    uint64_t sum = 0;
    uint64_t d;

    /* A sum is independent of iteration order and, unlike xor, does not
     * cancel equal terms. The write order itself is part of the state too
     * (it decides evictions), so fold it in with an order-dependent hash. */
    uint64_t order = DIGEST_SEED;

    for (it = sm->oldest; it != NULL; it = it->newer) {
        uint64_t ih = item_digest(it);

        sum += ih;
        order = cache__mix64(order ^ ih) + 0x9e3779b97f4a7c15ULL;
    }
    d = cache__mix64(sum ^ (uint64_t)sm->table.count);
    d = cache__mix64(d ^ order);
    d = cache__mix64(d ^ sm->next_cas);
    d = cache__mix64(d ^ sm->clock_ms);
    d = cache__mix64(d ^ sm->flush_ms);
    d = cache__mix64(d ^ sm->mem_limit);
    d = cache__mix64(d ^ ((uint64_t)sm->item_size_max << 1 | sm->configured));
    if (sm->ring.epoch != 0) {
        size_t len;
        void *spec = shard_ring_encode(&sm->ring, &len);
        d = cache__mix64(d ^ cache__hash(spec, len, DIGEST_SEED));
        free(spec);
    }
    if (sm->moves.n > 0) {
        struct buf b;
        buf_init(&b);
        cache_moves_encode(&sm->moves, &b);
        d = cache__mix64(d ^ cache__hash(b.data, b.len, DIGEST_SEED));
        buf_free(&b);
    }
    if (sm->dedup.n_clients > 0) {
        d = cache__mix64(d ^ dedup_digest(&sm->dedup));
    }
    return d;
}

uint64_t cache_sm_ring_epoch(const struct cache_sm *sm)
{
    return sm->ring.epoch;
}

bool cache_sm_configured(const struct cache_sm *sm)
{
    return sm->configured;
}

void cache_sm_stats(const struct cache_sm *sm, struct cache_sm_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->curr_items = sm->table.count;
    out->total_items = sm->total_items;
    out->bytes = sm->bytes;
    out->evictions = sm->evictions;
    out->expired_unfetched = sm->expired_unfetched;
    out->limit_maxbytes = sm->mem_limit;
    out->item_size_max = sm->item_size_max;
    out->configured = sm->configured;
    out->next_cas = sm->next_cas;
    out->applied = sm->applied;
    out->clock_ms = sm->clock_ms;
    out->dedup_clients = sm->dedup.n_clients;
}

/*
 * Snapshot format, all integers little-endian:
 *
 *   u32 magic "RMQC" | u32 version (2) | u64 clock_ms | u64 next_cas
 *   u64 flush_ms | u64 item count
 *   u64 mem_limit | u32 item_size_max | u8 configured      (version 2)
 *   u32 ring_len | ring spec (sm/shard_ring encoding)       (version 3)
 *   u32 moves_len | moves (sm/cache_moves encoding)          (version 4)
 *   u32 dedup_len | request ids (sm/dedup encoding)          (version 5)
 *   count x { u8 key_len | u32 flags | u32 value_len | u64 exp_ms | u64 cas
 *             | key bytes | value bytes }      oldest-written first
 *   u64 checksum: cache__hash(all bytes before it, SNAP_SEED)
 *
 * Items go oldest first so restore rebuilds the same write order, hence the
 * same future evictions. The inline and the incremental snapshot are the
 * same bytes (cache_sm_snapshot is one taken whole).
 */

/* The bytes before the items, as the state is now (xmalloc'd). */
static unsigned char *snap_head(const struct cache_sm *sm, size_t *len_out)
{
    unsigned char *head;
    unsigned char *p;
    size_t ring_len;
    void *ring = shard_ring_encode(&sm->ring, &ring_len);
    struct buf moves;
    struct buf ids;
    size_t len;

    buf_init(&moves);
    cache_moves_encode(&sm->moves, &moves);
    buf_init(&ids);
    dedup_encode(&sm->dedup, &ids);
    len = SNAP_HEADER_LEN + 4 + ring_len + 4 + moves.len + 4 + ids.len;
    head = xmalloc(len);
    p = le_put_u32(head, SNAP_MAGIC);
    p = le_put_u32(p, SNAP_VERSION);
    p = le_put_u64(p, sm->clock_ms);
    p = le_put_u64(p, sm->next_cas);
    p = le_put_u64(p, sm->flush_ms);
    p = le_put_u64(p, sm->table.count);
    p = le_put_u64(p, sm->mem_limit);
    p = le_put_u32(p, sm->item_size_max);
    *p++ = sm->configured;
    p = le_put_u32(p, (uint32_t)ring_len);
    if (ring_len > 0) {
        memcpy(p, ring, ring_len);
        p += ring_len;
    }
    free(ring);
    p = le_put_u32(p, (uint32_t)moves.len);
    if (moves.len > 0) {
        memcpy(p, moves.data, moves.len);
        p += moves.len;
    }
    buf_free(&moves);
    p = le_put_u32(p, (uint32_t)ids.len);
    if (ids.len > 0) {
        memcpy(p, ids.data, ids.len);
        p += ids.len;
    }
    buf_free(&ids);
    INVARIANT((size_t)(p - head) == len);
    *len_out = len;
    return head;
}

/* A snapshot of the state as it is now, not yet known to @sm. */
static struct cache_sm_snap *snap_new(const struct cache_sm *sm)
{
    struct cache_sm_snap *s = xcalloc(1, sizeof(*s));

    s->head = snap_head(sm, &s->head_len);
    cache__snap_init(&s->items, sm->oldest, sm->newest, sm->table.count);
    /* a record is an item's charge less what the charge adds to it */
    s->len = s->head_len +
             (size_t)(sm->bytes - sm->table.count *
                                      (uint64_t)(ITEM_OVERHEAD -
                                                 SNAP_ITEM_FIXED)) +
             SNAP_TRAILER_LEN;
    return s;
}

static void snap_free(struct cache_sm_snap *s)
{
    cache__snap_close(&s->items);
    free(s->head);
    free(s);
}

struct cache_sm_snap *cache_sm_snapshot_begin(struct cache_sm *sm,
                                              size_t *len)
{
    struct cache_sm_snap *s;

    if (sm->snap != NULL) {
        return NULL;
    }
    s = snap_new(sm);
    s->sm = sm;
    sm->snap = s; /* apply now saves what it has not written */
    *len = s->len;
    return s;
}

size_t cache_sm_snapshot_step(struct cache_sm_snap *s, void *out,
                              size_t room)
{
    unsigned char *p = out;
    size_t n = 0;
    size_t k;

    if (room > s->len - s->written) {
        room = s->len - s->written;
    }
    if (s->written < s->head_len) {
        k = s->head_len - s->written < room ? s->head_len - s->written : room;
        memcpy(p, s->head + s->written, k);
        n += k;
    }
    n += cache__snap_step(&s->items, p + n, room - n);
    if (s->items.items_left == 0 && n < room) {
        /* the trailer: zero until sealed */
        k = room - n;
        INVARIANT(k <= SNAP_TRAILER_LEN);
        memset(p + n, 0, k);
        n += k;
    }
    s->written += n;
    INVARIANT(s->written <= s->len);
    return n;
}

_Static_assert(CACHE_SM_SEAL_LEN == SNAP_TRAILER_LEN, "the trailer");

void cache_sm_seal_begin(struct cache_sm_seal *st, size_t len)
{
    INVARIANT(len >= SNAP_TRAILER_LEN);
    st->len = len - SNAP_TRAILER_LEN;
    st->fed = 0;
    st->h = cache__hash_begin((size_t)st->len, SNAP_SEED);
}

void cache_sm_seal_update(struct cache_sm_seal *st, const void *bytes,
                          size_t n)
{
    /* the hash reads 8-byte words: only the last piece may end mid-word */
    INVARIANT(n <= st->len - st->fed &&
              (n % 8 == 0 || st->fed + n == st->len));
    st->h = cache__hash_update(st->h, bytes, n);
    st->fed += n;
}

void cache_sm_seal_end(struct cache_sm_seal *st, void *trailer)
{
    INVARIANT(st->fed == st->len);
    le_put_u64(trailer, cache__hash_end(st->h, (size_t)st->len));
}

void cache_sm_snapshot_seal(void *buf, size_t len)
{
    unsigned char *p = buf;
    struct cache_sm_seal st;

    cache_sm_seal_begin(&st, len);
    cache_sm_seal_update(&st, p, len - SNAP_TRAILER_LEN);
    cache_sm_seal_end(&st, p + len - SNAP_TRAILER_LEN);
}

void cache_sm_snapshot_end(struct cache_sm_snap *s)
{
    if (s == NULL) {
        return;
    }
    INVARIANT(s->sm->snap == s);
    s->sm->snap = NULL;
    snap_free(s);
}

int cache_sm_snapshot(const struct cache_sm *sm, void *(*alloc)(size_t),
                      void **out, size_t *out_len)
{
    /* taken whole: nothing changes meanwhile, so @sm need not know it */
    struct cache_sm_snap *s = snap_new(sm);
    size_t len = s->len;
    unsigned char *buf = alloc(len);
    size_t n;

    if (buf == NULL) {
        snap_free(s);
        return -1;
    }
    n = cache_sm_snapshot_step(s, buf, len);
    INVARIANT(n == len); /* the size said is the size written */
    snap_free(s);
    cache_sm_snapshot_seal(buf, len);
    *out = buf;
    *out_len = len;
    return 0;
}

/* Parse one item record into a new item linked into @tmp. */
static bool restore_item(struct cache_sm *tmp, struct le_reader *r)
{
    const unsigned char *key;
    const unsigned char *value;
    struct cache_item *it;
    uint8_t key_len;
    uint32_t flags;
    uint32_t value_len;
    uint64_t exp_ms;
    uint64_t cas;
    uint64_t hash;

    if (!le_get_u8(r, &key_len) || !le_get_u32(r, &flags) ||
        !le_get_u32(r, &value_len) || !le_get_u64(r, &exp_ms) || !le_get_u64(r, &cas) ||
        !le_get_bytes(r, &key, key_len) || !le_get_bytes(r, &value, value_len)) {
        return false;
    }
    /* A cas at or above next_cas would let a later store reuse it. */
    if (!cache_key_valid((const char *)key, key_len) || cas == 0 ||
        cas >= tmp->next_cas) {
        return false;
    }
    hash = cache__hash_key((const char *)key, key_len);
    if (cache__table_find(&tmp->table, hash, (const char *)key, key_len) !=
        NULL) {
        return false;
    }
    it = cache__item_new((const char *)key, key_len, hash, value_len);
    if (value_len > 0) {
        memcpy(cache__item_value(it), value, value_len);
    }
    it->flags = flags;
    it->exp_ms = exp_ms;
    it->cas = cas;
    link_item(tmp, it);
    return true;
}

int cache_sm_restore(struct cache_sm *sm, const void *buf, size_t len)
{
    struct cache_sm tmp;
    struct le_reader r;
    uint32_t magic;
    uint32_t version;
    uint64_t count;
    uint64_t checksum;
    uint64_t i;

    /* the error path clears what tmp holds: start it empty */
    memset(&tmp, 0, sizeof(tmp));
    /* the write order goes on: a snapshot in progress must never take
     * the restored items for ones it has not written */
    tmp.next_order = sm->next_order;
    shard_ring_init(&tmp.ring);
    cache_moves_init(&tmp.moves);
    /* before version 5: no ids, this replica's limits */
    dedup_init(&tmp.dedup, sm->dedup.window, sm->dedup.max_clients);
    if (buf == NULL || len < SNAP_HEADER_V1_LEN + SNAP_TRAILER_LEN) {
        goto err;
    }
    r.p = (const unsigned char *)buf + len - SNAP_TRAILER_LEN;
    r.left = SNAP_TRAILER_LEN;
    le_get_u64(&r, &checksum);
    if (checksum != cache__hash(buf, len - SNAP_TRAILER_LEN, SNAP_SEED)) {
        goto err;
    }

    r.p = buf;
    r.left = len - SNAP_TRAILER_LEN;
    /* A version 1 snapshot (written before settings were in the log) keeps
     * this replica's settings, unconfigured: the next leader seeds them. */
    tmp.mem_limit = sm->mem_limit;
    tmp.item_size_max = sm->item_size_max;
    le_get_u32(&r, &magic);
    le_get_u32(&r, &version);
    le_get_u64(&r, &tmp.clock_ms);
    le_get_u64(&r, &tmp.next_cas);
    le_get_u64(&r, &tmp.flush_ms);
    le_get_u64(&r, &count);
    if (magic != SNAP_MAGIC || version == 0 || version > SNAP_VERSION ||
        tmp.next_cas == 0) {
        goto err;
    }
    if (version >= 2) {
        uint8_t configured;

        if (!le_get_u64(&r, &tmp.mem_limit) ||
            !le_get_u32(&r, &tmp.item_size_max) ||
            !le_get_u8(&r, &configured) || configured > 1 ||
            tmp.mem_limit == 0 || tmp.item_size_max == 0) {
            goto err;
        }
        tmp.configured = configured;
    }
    if (version >= 3) {
        const unsigned char *spec;
        uint32_t ring_len;

        if (!le_get_u32(&r, &ring_len) ||
            !le_get_bytes(&r, &spec, ring_len) ||
            (ring_len > 0 &&
             shard_ring_decode(spec, ring_len, &tmp.ring) != 0)) {
            goto err;
        }
    }
    if (version >= 4) {
        const unsigned char *mv;
        uint32_t mv_len;

        if (!le_get_u32(&r, &mv_len) || !le_get_bytes(&r, &mv, mv_len) ||
            cache_moves_decode(mv, mv_len, &tmp.moves) != 0) {
            goto err;
        }
    }
    if (version >= 5) {
        const unsigned char *ids;
        uint32_t ids_len;

        if (!le_get_u32(&r, &ids_len) || !le_get_bytes(&r, &ids, ids_len) ||
            dedup_decode(ids, ids_len, &tmp.dedup) != 0) {
            goto err;
        }
    }
    if (count > r.left / SNAP_ITEM_FIXED) {
        goto err;
    }
    if (cache__table_init(&tmp.table, (size_t)count) != 0) {
        goto err;
    }
    for (i = 0; i < count; i++) {
        if (!restore_item(&tmp, &r)) {
            goto err_after_table;
        }
    }
    if (r.left != 0) {
        goto err_after_table;
    }

    clear_items(sm); /* hands a snapshot in progress what it still needs */
    cache__table_close(&sm->table);
    shard_ring_clear(&sm->ring);
    cache_moves_clear(&sm->moves);
    dedup_close(&sm->dedup);
    tmp.snap = sm->snap;
    *sm = tmp;
    return 0;

err_after_table:
    clear_items(&tmp);
    cache__table_close(&tmp.table);
err:
    shard_ring_clear(&tmp.ring);
    cache_moves_clear(&tmp.moves);
    dedup_close(&tmp.dedup);
    return -1;
}
