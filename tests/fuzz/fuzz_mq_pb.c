/*
 * fuzz_mq_pb: libFuzzer target for the AMQP command/result decoders of
 * proto/mq_pb (what a node does with a Raft entry or an RPC body from a
 * peer).
 *
 * Input: byte 0 picks the message type (MqCommand, MqResult, MetaCommand,
 * MetaResult), the rest is its protobuf encoding. A decoded command is
 * applied to a fresh state machine (the decoder's promise is that whatever
 * it accepts is safe to apply), re-encoded and decoded again, which must
 * succeed with the same fields. A decoded result is released with
 * mq_sm_result_clear (ASan checks the layout).
 * Seeds: tests/fuzz/corpus_mq_pb/ (byte 0 + one real encoding of each kind).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
        d.seq != c.seq || d.who.consumer != c.who.consumer) {
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    switch (data[0] & 3) {
        case 0:
            mq_cmd(data + 1, size - 1);
            break;
        case 1:
            mq_result(data + 1, size - 1);
            break;
        case 2:
            meta_cmd(data + 1, size - 1);
            break;
        default:
            meta_result(data + 1, size - 1);
            break;
    }
    return 0;
}
