/*
 * amqp_publish: basic.publish of a channel (amqp_publish.h): the exchange
 * check, routing on the broker's meta view, one ENQUEUE per queue with the
 * connection's dedup id, basic.return for mandatory messages routed
 * nowhere, and the confirm once every ENQUEUE is applied.
 */
#include "edge/amqp_publish.h"

#include <assert.h>
#include <stdlib.h>

#include "common/clock.h"
#include "common/fnv.h"
#include "edge/amqp_after.h"
#include "edge/amqp_config.h"
#include "edge/amqp_edge.h"
#include "edge/amqp_kv.h"
#include "edge/amqp_op.h"
#include "proto/amqp_msg.h"

/* ------------------------------------------------------------- ordering */

/*
 * A channel's publishes into one queue are applied in order, also across a
 * failover: an ENQUEUE whose outcome is unknown is sent again 100 ms later,
 * while a later one may have reached the new leader at once. So each
 * ENQUEUE names the channel's previous ENQUEUE into the same queue that is
 * not settled yet (prev_seq); the state machine refuses it OUT_OF_ORDER
 * until that one is applied, and it is sent again. The chain of unsettled
 * ENQUEUEs per queue is kept for the last CHAN_ORDER_SLOTS queues of the
 * channel; a queue pushed out of the table starts a new chain (its next
 * publish waits for nothing).
 */

static struct chan_order *order_slot(struct amqp_channel *ch, uint64_t h)
{
    unsigned i;

    for (i = 0; i < CHAN_ORDER_SLOTS; i++) {
        if (ch->order[i].last != NULL && ch->order[i].queue_hash == h) {
            return &ch->order[i];
        }
    }
    return NULL;
}

/* @ec becomes the last ENQUEUE of its queue on @ch, after the previous
 * unsettled one if any. */
static void order_link(struct amqp_channel *ch, struct edge_call *ec)
{
    uint64_t h = fnv1a64(ec->queue, ec->queue_len);
    struct chan_order *slot = order_slot(ch, h);
    unsigned i;

    if (slot != NULL) {
        struct edge_call *prev = slot->last;

        assert(prev->order_next == NULL);
        prev->order_next = ec;
        ec->order_prev = prev;
        ec->bc.mq.prev_seq = prev->bc.mq.seq;
    } else {
        for (i = 0; i < CHAN_ORDER_SLOTS && ch->order[i].last != NULL; i++) {
        }
        if (i == CHAN_ORDER_SLOTS) {
            i = ch->order_victim++ % CHAN_ORDER_SLOTS;
        }
        slot = &ch->order[i];
        slot->queue_hash = h;
    }
    slot->last = ec;
}

/* @ec settled (applied, refused or given up): the next one follows @ec's
 * previous instead (if @ec was applied, so was that one). @ch: @ec's
 * channel, NULL once gone. */
static void order_unlink(struct amqp_channel *ch, struct edge_call *ec)
{
    struct edge_call *prev = ec->order_prev, *next = ec->order_next;

    if (next != NULL) {
        next->order_prev = prev;
        next->bc.mq.prev_seq = prev != NULL ? prev->bc.mq.seq : 0;
    }
    if (prev != NULL) {
        prev->order_next = next;
    }
    if (next == NULL && ch != NULL) {
        struct chan_order *slot =
            order_slot(ch, fnv1a64(ec->queue, ec->queue_len));

        if (slot != NULL && slot->last == ec) {
            slot->last = prev;
        }
    }
    ec->order_prev = ec->order_next = NULL;
}

/* -------------------------------------------------------------- publish */

static void publish_finish(struct chan_op *op)
{
    struct amqp_channel *ch = op->ch;
    struct amqp_method m;

    op->done = true;
    if (op->stored == 0 && op->failed == 0) {
        struct amqp_method req;

        if (amqp_method_decode(op->payload.data, op->payload.len, &req) == 0) {
            if (req.basic_publish.mandatory) {
                struct amqp_msg_view v;

                if (amqp_msg_decode(op->blob.data, op->blob.len, &v) == 0) {
                    amqp_method_init(&m, AMQP_BASIC_RETURN);
                    m.basic_return.reply_code = 312;
                    m.basic_return.reply_text = amqp_cstr("NO_ROUTE");
                    m.basic_return.exchange = v.exchange;
                    m.basic_return.routing_key = v.routing_key;
                    chan_emit_delivery(ch, &op->out, &m, &v);
                }
            }
            amqp_method_free(&req);
        }
    }
    if (op->confirm_tag) {
        amqp_method_init(&m, op->failed ? AMQP_BASIC_NACK : AMQP_BASIC_ACK);
        if (op->failed) {
            m.basic_nack.delivery_tag = op->confirm_tag;
        } else {
            m.basic_ack.delivery_tag = op->confirm_tag;
            ch->conn->stats->confirmed++;
        }
        chan_op_reply(op, &m);
    }
}

static void on_enqueue_done(struct edge_call *ec)
{
    struct chan_conn *cc = chan_conn_of_call(ec);
    struct chan_op *op;
    const struct mq_sm_result *r = &ec->bc.mq_result;

    /* Same (client, seq): stored once whatever happened before. A publish
     * whose channel is gone is not retried. */
    if (ec->op->ch != NULL && edge_call_retry_unavailable(ec)) {
        return;
    }
    /* Its previous one is not applied yet: again once it may be; with
     * nothing to wait for once that one settled. */
    if (ec->op->ch != NULL && ec->bc.status == OUTCOME_OK &&
        r->status == MQ_SM_OUT_OF_ORDER && !ec->calls->closing &&
        clock_mono_ms() < ec->deadline_ms) {
        if (ec->order_prev == NULL) {
            ec->bc.mq.prev_seq = 0;
        }
        edge_call_retry(ec);
        return;
    }
    order_unlink(ec->op->ch, ec);
    if (cc) {
        cc->ops->enqueues(cc, -1);
    }
    op = chan_op_of_call(ec);
    if (op == NULL) {
        return;
    }
    if (ec->bc.status != OUTCOME_OK) {
        op->failed++;
    } else {
        edge_after_result(ec->calls, ec->bc.shard, r);
        switch (r->status) {
        case MQ_SM_OK:
        case MQ_SM_DUPLICATE:
            op->stored++;
            break;
        case MQ_SM_NOT_FOUND:
            break; /* the queue went: not routed there */
        default:
            op->failed++;
            break;
        }
    }
    if (op->pending == 0) {
        publish_finish(op);
        chan_wake(op->ch);
    }
}

static bool parse_expiration(struct amqp_bytes e, uint64_t *ms)
{
    uint64_t v = 0;
    size_t i;

    if (e.len == 0 || e.len > 19) {
        return false;
    }
    for (i = 0; i < e.len; i++) {
        if (e.data[i] < '0' || e.data[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(e.data[i] - '0');
    }
    *ms = v;
    return true;
}

static bool routable(const struct edge_calls *k)
{
    const struct amqp_broker *b = &k->broker;

    return b->ops->routable == NULL || b->ops->routable(b->self);
}

bool chan_publish_may_start(const struct chan_op *op)
{
    struct edge_calls *k = op->ch->conn->calls;

    if (routable(k) || clock_mono_ms() - op->arrived_ms >= k->route_wait_ms) {
        return true;
    }
    k->publishes_held = true;
    return false;
}

void chan_start_publish(struct chan_op *op)
{
    struct amqp_channel *ch = op->ch;
    struct edge_calls *k = ch->conn->calls;
    const struct meta_sm *view = k->broker.ops->meta_view(k->broker.self);
    struct amqp_msg_view v;
    struct amqp_content_header h;
    struct meta_sm_route_result route;
    struct meta_sm_kv *kv = NULL;
    size_t n_kv = 0;
    struct buf kv_store;
    enum meta_sm_exchange_type type;
    bool internal = false;
    uint64_t ttl = 0;
    bool has_ttl = false;
    size_t i;

    if (ch->confirm) {
        op->confirm_tag = ch->confirm_next++;
    }
    if (!routable(k)) {
        /* The view may lack a binding already confirmed to a client: the
         * message is not routed on it (nacked, as an enqueue that failed) */
        op->failed++;
        publish_finish(op);
        return;
    }
    if (amqp_msg_decode(op->blob.data, op->blob.len, &v) != 0 ||
        amqp_content_header_decode(v.header.data, v.header.len, &h) != 0) {
        chan_op_fail(op, 502, "SYNTAX_ERROR - bad content header");
        return;
    }
    if (view == NULL ||
        meta_sm_exchange_info(view, EDGE_VHOST, EDGE_VHOST_LEN,
                              (const char *)v.exchange.data, v.exchange.len,
                              &type, NULL, &internal) != 0) {
        chan_op_fail(op, 404, "NOT_FOUND - no exchange '%.*s' in vhost '/'",
                (int)v.exchange.len, (const char *)v.exchange.data);
        amqp_content_header_free(&h);
        return;
    }
    if (internal) {
        chan_op_fail(op, 403,
                "ACCESS_REFUSED - cannot publish to internal exchange '%.*s' "
                "in vhost '/'",
                (int)v.exchange.len, (const char *)v.exchange.data);
        amqp_content_header_free(&h);
        return;
    }
    if (h.props.flags & AMQP_BASIC_EXPIRATION) {
        if (!parse_expiration(h.props.expiration, &ttl)) {
            chan_op_fail(op, 406,
                    "PRECONDITION_FAILED - invalid expiration '%.*s': "
                    "invalid_expiration",
                    (int)h.props.expiration.len,
                    (const char *)h.props.expiration.data);
            amqp_content_header_free(&h);
            return;
        }
        has_ttl = true;
    }
    buf_init(&kv_store);
    if (type == META_SM_HEADERS && (h.props.flags & AMQP_BASIC_HEADERS)) {
        kv = edge_table_kv(h.props.headers, &kv_store, &n_kv);
    }
    meta_sm_route_result_init(&route);
    meta_sm_route(view, EDGE_VHOST, EDGE_VHOST_LEN,
                  (const char *)v.exchange.data, v.exchange.len,
                  (const char *)v.routing_key.data, v.routing_key.len, kv,
                  n_kv, &route);
    free(kv);
    buf_free(&kv_store);
    amqp_content_header_free(&h);
    ch->conn->ops->published(ch->conn);
    ch->conn->stats->published++;
    op->targets = (unsigned)route.n_queues;
    op->pending++; /* see chan_settle */
    for (i = 0; i < route.n_queues; i++) {
        struct edge_call *ec = chan_op_call(op, on_enqueue_done);

        edge_call_set_queue(ec, route.queues[i].name, route.queues[i].len);
        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = chan_shard_of(ch, ec->queue, ec->queue_len);
        ec->bc.mq.type = MQ_SM_ENQUEUE;
        ec->bc.mq.client_id = ch->conn->client_id;
        ec->bc.mq.seq = ++ch->conn->next_seq;
        ec->bc.mq.has_ttl = has_ttl;
        ec->bc.mq.ttl_ms = ttl;
        ec->bc.mq.body = op->blob.data;
        ec->bc.mq.body_len = op->blob.len;
        ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
        order_link(ch, ec);
        ch->conn->ops->enqueues(ch->conn, +1);
        edge_call_submit(ec);
    }
    meta_sm_route_result_clear(&route);
    op->pending--;
    if (op->pending == 0) {
        publish_finish(op);
    }
}
