#!/usr/bin/python3
"""Deliveries resume promptly after a long partition heals.

In the fault lab: a consumer on router R of host H (not the host of the
queue group's leader) and a publisher on another host's router. H is cut
off from every other host for PARTITION_S seconds while the publisher goes
on, then the partition heals. R's RPC connection to the queue leader (its
long-polled CHECKOUT) is stalled the whole time; TCP retransmits on such a
connection back off exponentially (to 12.8 s and more after 30 s), so a
router that waits for TCP would deliver again only at the next retransmit,
long after the heal. The RPC connections give up on a dead peer within
seconds (TCP_USER_TIMEOUT and keepalive) and are made again: the first
delivery after the heal must come within RESUME_MAX_S. Every confirmed
message is delivered in the end.

  test_heal_resume.py BUILD_DIR [OUT_DIR]    (root: network namespaces)
"""
import os
import sys
import threading
import time

import pika

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as labmod  # noqa: E402

PARTITION_S = 30
RESUME_MAX_S = 8
QUEUE = "resume"


def params(h):
    return pika.ConnectionParameters(
        host=h.ip, port=labmod.AMQP_PORT,
        credentials=pika.PlainCredentials(*labmod.AMQP_USER),
        heartbeat=0, connection_attempts=1, socket_timeout=5,
        blocked_connection_timeout=60)


class Publisher(threading.Thread):
    """One message every 50 ms with confirms, numbered; keeps going across
    errors (reconnects)."""

    def __init__(self, h):
        super().__init__(daemon=True)
        self.h = h
        self.stop = False
        self.confirmed = set()
        self.n = 0

    def run(self):
        while not self.stop:
            try:
                c = pika.BlockingConnection(params(self.h))
                ch = c.channel()
                ch.confirm_delivery()
                while not self.stop:
                    self.n += 1
                    ch.basic_publish("", QUEUE, b"%d" % self.n,
                                     pika.BasicProperties(delivery_mode=2))
                    self.confirmed.add(self.n)
                    time.sleep(0.05)
                c.close()
            except Exception:  # noqa: BLE001 - outcome unknown: go on
                time.sleep(0.5)


class Consumer(threading.Thread):
    def __init__(self, h):
        super().__init__(daemon=True)
        self.h = h
        self.got = {}  # message number -> first receive time
        self.stop = False
        self.error = None

    def run(self):
        try:
            c = pika.BlockingConnection(params(self.h))
            ch = c.channel()
            ch.basic_qos(prefetch_count=50)

            def cb(ch_, m, props, body):
                self.got.setdefault(int(body), time.monotonic())
                ch_.basic_ack(m.delivery_tag)

            ch.basic_consume(QUEUE, cb)
            while not self.stop:
                c.process_data_events(time_limit=0.2)
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)


def main():
    dirs = labmod.scenario_dirs("heal-resume")
    if dirs is None:
        return 1
    build, out = dirs
    pid = os.getpid()
    lab = labmod.Lab(build, out, net_index=labmod.free_net_index(pid + 7),
                     tag="rqh%x" % (pid % 0xfff), faketime=False)
    pub = cons = None
    try:
        lab.up()
        leader = None
        deadline = time.monotonic() + 30
        while leader is None:
            assert time.monotonic() < deadline, "no queue leader"
            leader = lab.leader("s1.mq")
            time.sleep(0.2)
        others = [h for h in lab.hosts if h is not leader]
        cut, pub_host = others[0], others[1]
        c = pika.BlockingConnection(params(pub_host))
        c.channel().queue_declare(QUEUE, durable=True)
        c.close()
        cons = Consumer(cut)
        cons.start()
        pub = Publisher(pub_host)
        pub.start()
        time.sleep(3)
        assert cons.got, "nothing delivered before the partition"

        lab.partition({h.i: ({h.i} if h is cut else
                             {o.i for o in lab.hosts if o is not cut})
                       for h in lab.hosts})
        print("cut off host %s (consumer's router) for %d s; queue leader "
              "on %s" % (cut.name, PARTITION_S, leader.name), flush=True)
        time.sleep(PARTITION_S)
        lab.heal_partition()
        healed = time.monotonic()
        deadline = healed + 60
        while not any(t > healed for t in cons.got.values()):
            assert time.monotonic() < deadline, "no delivery 60 s after heal"
            time.sleep(0.05)
        first = min(t for t in cons.got.values() if t > healed) - healed
        print("first delivery %.1f s after the heal" % first, flush=True)

        pub.stop = True
        pub.join(30)
        deadline = time.monotonic() + 60
        while not pub.confirmed <= set(cons.got):
            assert time.monotonic() < deadline, (
                "confirmed messages never delivered: %s" %
                sorted(pub.confirmed - set(cons.got))[:10])
            time.sleep(0.2)
        assert cons.error is None, "consumer: " + cons.error
        print("ok: %d confirmed messages, all delivered" % len(pub.confirmed))
        assert first <= RESUME_MAX_S, (
            "deliveries resumed %.1f s after the heal (at most %d s)"
            % (first, RESUME_MAX_S))
        print("ok: deliveries resumed %.1f s after a %d s partition healed"
              % (first, PARTITION_S))
        return 0
    finally:
        if pub is not None:
            pub.stop = True
        if cons is not None:
            cons.stop = True
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
