/*
 * fuzz_mq_pb: libFuzzer target for the AMQP command/result decoders of
 * proto/mq_pb (what a node does with a Raft entry or an RPC body from a
 * peer).
 *
 * Input: byte 0 picks the message type (MqCommand, MqResult, MetaCommand,
 * MetaResult, and the cluster map's MapCommand and MapDelta of
 * proto/map_pb), the rest is its protobuf encoding. A decoded command is
 * applied to a fresh state machine (the decoder's promise is that whatever
 * it accepts is safe to apply), re-encoded and decoded again, which must
 * succeed with the same fields. A decoded result is released with
 * mq_sm_result_clear (ASan checks the layout). A map command is applied to
 * a map_sm holding a small map; a map delta to a copy of that map, which
 * is then validated like a router does.
 * Seeds: tests/fuzz/corpus_mq_pb/ (byte 0 + one real encoding of each kind).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/map_pb.h"
#include "proto/mq_pb.h"

static void same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen || (alen > 0 && memcmp(a, b, alen) != 0)) {
        abort();
    }
}

static void mq_cmd(const uint8_t *data, size_t size)
{
    Ringmq__MqCommand *pb = ringmq__mq_command__unpack(NULL, size, data);
    Ringmq__MqCommand *again;
    struct mq_pb_cmd_buf b;
    struct mq_sm_cmd c;
    struct mq_sm_cmd d;
    struct mq_sm_result res;
    struct mq_sm *sm;
    uint32_t wait;
    uint8_t *buf;
    size_t n;

    if (pb == NULL) {
        return;
    }
    if (mq_pb_cmd_from_pb(pb, &c, &wait) != 0) {
        goto out;
    }
    sm = mq_sm_new(NULL);
    if (sm != NULL) {
        mq_sm_apply(sm, 1, &c, &res);
        mq_sm_result_clear(&res);
        mq_sm_free(sm);
    }
    if (mq_pb_cmd_to_pb(&c, wait, &b) != 0) {
        abort(); /* whatever decodes must encode */
    }
    n = ringmq__mq_command__get_packed_size(&b.pb);
    buf = malloc(n > 0 ? n : 1);
    ringmq__mq_command__pack(&b.pb, buf);
    mq_pb_cmd_buf_clear(&b);
    again = ringmq__mq_command__unpack(NULL, n, buf);
    if (again == NULL || mq_pb_cmd_from_pb(again, &d, NULL) != 0) {
        abort();
    }
    if (d.type != c.type || d.scope != c.scope || d.tag != c.tag ||
        d.seq != c.seq || d.who.consumer != c.who.consumer ||
        d.place_gen != c.place_gen) {
        abort();
    }
    same_bytes(d.queue, d.queue_len, c.queue, c.queue_len);
    same_bytes(d.body, d.body_len, c.body, c.body_len);
    ringmq__mq_command__free_unpacked(again, NULL);
    free(buf);
out:
    ringmq__mq_command__free_unpacked(pb, NULL);
}

static void mq_result(const uint8_t *data, size_t size)
{
    Ringmq__MqResult *pb = ringmq__mq_result__unpack(NULL, size, data);
    struct mq_pb_result_buf b;
    struct mq_sm_result r;

    if (pb == NULL) {
        return;
    }
    if (mq_pb_result_from_pb(pb, &r) == 0) {
        if (mq_pb_result_to_pb(&r, &b) != 0) {
            abort();
        }
        mq_pb_result_buf_clear(&b);
        mq_sm_result_clear(&r);
    }
    ringmq__mq_result__free_unpacked(pb, NULL);
}

static void meta_cmd(const uint8_t *data, size_t size)
{
    Ringmq__MetaCommand *pb = ringmq__meta_command__unpack(NULL, size, data);
    struct mq_pb_meta_buf b;
    struct meta_sm_cmd c;
    struct meta_sm_result r;
    struct meta_sm *sm;

    if (pb == NULL) {
        return;
    }
    if (mq_pb_meta_cmd_from_pb(pb, &c) == 0) {
        sm = meta_sm_new();
        if (sm != NULL) {
            meta_sm_apply(sm, &c, &r);
            meta_sm_free(sm);
        }
        if (mq_pb_meta_cmd_to_pb(&c, &b) != 0) {
            abort();
        }
        mq_pb_meta_buf_clear(&b);
        mq_pb_meta_cmd_release(&c);
    }
    ringmq__meta_command__free_unpacked(pb, NULL);
}

static void meta_result(const uint8_t *data, size_t size)
{
    Ringmq__MetaResult *pb = ringmq__meta_result__unpack(NULL, size, data);
    struct meta_sm_result r;

    if (pb == NULL) {
        return;
    }
    (void)mq_pb_meta_result_from_pb(pb, &r);
    ringmq__meta_result__free_unpacked(pb, NULL);
}

/* A map of two one-member shards, for commands and deltas to work on. */
static void small_map(struct cluster_map *map)
{
    unsigned s;

    cluster_map_init(map);
    map->epoch = 3;
    for (s = 0; s < 2; s++) {
        struct cluster_shard *sh = cluster_map_append(map);
        sh->name[0] = (char)('a' + s);
        sh->members[0].id = s + 1;
        memcpy(sh->members[0].raft, s ? "h:20" : "h:10", 5);
        memcpy(sh->members[0].rpc, s ? "h:21" : "h:11", 5);
        sh->n_members = 1;
    }
    if (cluster_map_default_meta(map, NULL, 0) != 0) {
        abort();
    }
}

static void map_cmd(const uint8_t *data, size_t size)
{
    Ringmq__MapCommand *pb = ringmq__map_command__unpack(NULL, size, data);
    Ringmq__MapCommand again;
    struct map_pb_arena a = {0};
    struct map_sm_cmd init = {.type = MAP_SM_INIT};
    struct map_sm_result res;
    struct cluster_map map;
    struct map_pb_cmd c, d;
    struct map_sm *sm;
    uint8_t *buf;
    size_t n;

    if (pb == NULL) {
        return;
    }
    if (map_pb_cmd_from(pb, &c) == 0) {
        small_map(&map);
        init.map = &map;
        sm = map_sm_new();
        map_sm_apply(sm, &init, &res);
        map_sm_apply(sm, &c.cmd, &res);
        if (res.changed && map_sm_epoch(sm) != 4 &&
            c.cmd.type != MAP_SM_INIT) {
            abort(); /* one change, one epoch */
        }
        map_sm_free(sm);
        cluster_map_clear(&map);
        map_pb_cmd_to(&c.cmd, &again, &a);
        n = ringmq__map_command__get_packed_size(&again);
        buf = malloc(n > 0 ? n : 1);
        ringmq__map_command__pack(&again, buf);
        map_pb_arena_clear(&a);
        ringmq__map_command__free_unpacked(pb, NULL);
        pb = ringmq__map_command__unpack(NULL, n, buf);
        free(buf);
        if (pb == NULL || map_pb_cmd_from(pb, &d) != 0 ||
            d.cmd.type != c.cmd.type ||
            strcmp(d.cmd.group, c.cmd.group) != 0) {
            abort(); /* whatever decodes must encode */
        }
        map_pb_cmd_clear(&d);
    }
    map_pb_cmd_clear(&c);
    ringmq__map_command__free_unpacked(pb, NULL);
}

static void map_delta(const uint8_t *data, size_t size)
{
    Ringmq__MapDelta *pb = ringmq__map_delta__unpack(NULL, size, data);
    struct cluster_map view;
    struct map_delta d;
    char err[256];

    if (pb == NULL) {
        return;
    }
    map_delta_init(&d);
    if (map_pb_delta_from(pb, &d) == 0) {
        small_map(&view);
        if (map_delta_apply(&view, &d) == 0) {
            (void)cluster_map_validate(&view, err, sizeof(err));
        }
        cluster_map_clear(&view);
    }
    map_delta_clear(&d);
    ringmq__map_delta__free_unpacked(pb, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    switch (data[0] % 6) {
        case 0:
            mq_cmd(data + 1, size - 1);
            break;
        case 1:
            mq_result(data + 1, size - 1);
            break;
        case 2:
            meta_cmd(data + 1, size - 1);
            break;
        case 3:
            meta_result(data + 1, size - 1);
            break;
        case 4:
            map_cmd(data + 1, size - 1);
            break;
        default:
            map_delta(data + 1, size - 1);
            break;
    }
    return 0;
}
