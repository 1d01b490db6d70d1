#!/usr/bin/python3
"""The AMQP acceptance tests on the standalone node: every check of
amqp_tutorials.py (the seven RabbitMQ tutorials with pika 1.2 and the broker
rules beyond them, all passing against RabbitMQ 3.10) against
`ringmq-node --standalone --amqp 127.0.0.1:PORT`.

t3_durability restarts the node (SIGTERM, same data dir and ports) between
publishing and reading; t3_durability_kill9 does it with kill -9 (the
messages were confirmed, so they must survive).
"""
import os

import amqp_tutorials as at
import ringmq_test as rt


class Standalone:
    def __init__(self):
        self.dir = rt.tmpdir("ringmq-amqp-")
        self.data = os.path.join(self.dir, "data")
        self.mc_port = rt.free_port()
        self.amqp_port = rt.free_port()
        # the queue and meta groups take the raft port's P+1 and P+2
        self.raft_port = rt.free_raft_port()
        self.node = rt.standalone(self.data, port=self.mc_port, amqp_port=self.amqp_port,
                                  extra=["--raft", "127.0.0.1:%d" % self.raft_port])

    def start(self):
        try:
            self.node.start()
            rt.wait_port(self.amqp_port, timeout=20, proc=self.node.proc)
        except Exception as e:
            raise AssertionError("ringmq-node %s: %r\n--- log tail:\n%s" % (
                " ".join(self.node.args), e, self.node.log()[-3000:])) from None

    def restart(self):
        code = self.node.stop()
        rt.check(code == 0, "ringmq-node exited %s on SIGTERM" % code)
        self.start()
        at.wait_amqp_ready("127.0.0.1", self.amqp_port)

    def restart_kill9(self):
        self.node.kill9()
        self.start()
        at.wait_amqp_ready("127.0.0.1", self.amqp_port)


if __name__ == "__main__":
    s = Standalone()
    rt.run_tests(at.suite("127.0.0.1", s.amqp_port, restart=s.restart,
                          hard_restart=s.restart_kill9, setup=s.start))
