#!/usr/bin/python3
"""Issue 4: memory/disk watermarks block AMQP publishers with
connection.blocked instead of crashing or dropping, on the standalone node
and through a cluster's routers.

A standalone node whose disk-free limit no disk meets is over its watermark
from the start: a pika connection is told connection.blocked, and once it
has published the node stops reading it, so a confirmed publish cannot
complete (pika's blocked_connection_timeout fires). The same data directory
with the default limits serves the publisher again, and every message that
was confirmed is there.
"""
import os

import pika
import pika.exceptions as pex

import amqp_tutorials as at
import ringmq_test as rt

HOST = "127.0.0.1"


def params(port, blocked_timeout):
    return pika.ConnectionParameters(
        host=HOST, port=port, connection_attempts=1, socket_timeout=5,
        stack_timeout=15, blocked_connection_timeout=blocked_timeout)


def start(data, amqp_port, extra):
    node = rt.standalone(data, port=rt.free_port(), amqp_port=amqp_port,
                         extra=["--raft", "127.0.0.1:%d" % rt.free_raft_port()] + extra)
    node.start()
    rt.wait_port(amqp_port, timeout=20, proc=node.proc)
    at.wait_amqp_ready(HOST, amqp_port)
    return node


def test_disk_watermark_blocks_publishers():
    data = rt.tmpdir("ringmq-wm-")
    port = rt.free_port()
    node = start(data, port, ["--amqp-disk-free-limit", "1000000g"])
    rt.wait_until(lambda: "publishers blocked" in node.log(), 10,
                  "the node to see its watermark")
    blocked = []
    c = pika.BlockingConnection(params(port, 3))
    c.add_on_connection_blocked_callback(lambda conn, m: blocked.append(m.method.reason))
    ch = c.channel()
    ch.queue_declare("wm", durable=True)
    ch.confirm_delivery()
    confirmed = 0
    timed_out = False
    try:
        for i in range(5):
            ch.basic_publish("", "wm", "m%d" % i,
                             properties=pika.BasicProperties(delivery_mode=2))
            confirmed += 1
    except pex.ConnectionBlockedTimeout:
        timed_out = True
    except pex.AMQPError as e:
        raise AssertionError("publish while blocked: %r" % (e,)) from None
    # pika raises ConnectionBlockedTimeout only for a connection the broker
    # blocked (connection.blocked received); its callback may not have been
    # dispatched before the connection was torn down.
    rt.check(timed_out, "publishes went on while blocked (%d confirmed, "
             "blocked callbacks %r)" % (confirmed, blocked))
    rt.check(confirmed <= 1, "%d publishes confirmed while blocked" % confirmed)
    rt.check(node.alive(), "the node died while blocking")
    rt.check(node.stop() == 0, "clean stop")

    node = start(data, port, [])
    c = pika.BlockingConnection(params(port, 5))
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "wm", "after", properties=pika.BasicProperties(delivery_mode=2))
    got = at.drain_get(ch, "wm")
    rt.check(got[-1:] == [b"after"] and len(got) == confirmed + 1,
             "messages after the block: %r (%d confirmed before)" % (got, confirmed))
    c.close()
    rt.check(node.stop() == 0, "clean stop")


def test_cluster_nodes_block_router_publishers():
    """The same through a router: the shard's nodes report their watermark
    in their answers, the router blocks its publishers. It does so on the
    answer that brings the news, not at its next tick (a publisher that
    connected right after the router came up once had all ten publishes
    confirmed before the tick): at most one publish is confirmed here, as
    on the standalone node, the one read before any answer said "blocked"
    (wait_amqp_ready's declare and ours already bring such answers)."""
    from test_cluster_routers import LocalCluster
    os.environ["RINGMQ_NODE_FLAGS"] = "--amqp-disk-free-limit 1000000g"
    try:
        lc = LocalCluster().up()
    finally:
        del os.environ["RINGMQ_NODE_FLAGS"]
    port = 5672 + lc.off
    at.wait_amqp_ready(HOST, port, timeout=60)
    c = pika.BlockingConnection(params(port, 3))
    ch = c.channel()
    ch.queue_declare("wmc", durable=True)
    ch.confirm_delivery()
    timed_out = False
    confirmed = 0
    try:
        for i in range(10):
            ch.basic_publish("", "wmc", "m%d" % i)
            confirmed += 1
    except pex.ConnectionBlockedTimeout:
        timed_out = True
    rt.check(timed_out, "publishes through the router went on while the "
             "nodes are over their watermark (%d confirmed)" % confirmed)
    rt.check(confirmed <= 1, "%d publishes confirmed through the router "
             "while blocked" % confirmed)
    lc.down()


if __name__ == "__main__":
    rt.run_tests([test_disk_watermark_blocks_publishers,
                  test_cluster_nodes_block_router_publishers])
