#!/usr/bin/python3
"""Malformed AMQP input on raw sockets against the standalone node: a wrong
protocol header, bad frames, methods out of order. Each case expects the
server's answer (connection.close with a reply code, or the protocol header
and a close), and then a new connection must still be served (handshake,
channel, queue.declare).

Expected codes were taken from RabbitMQ 3.10.8 (`--rabbitmq` runs these
cases against a private RabbitMQ instead: rabbitmq_ref.py). Where RabbitMQ's
answer is not one a server should copy, ringmq's expectation differs and the
case says so (RABBITMQ_DIFFERS):

  - unknown class/method: RabbitMQ's reader crashes ({unknown_method_id,
    {99,99}}) and the TCP connection just drops, no connection.close.
    ringmq: connection.close 540 NOT_IMPLEMENTED.
  - a field table with an unknown type octet: RabbitMQ's reader crashes
    (function_clause in rabbit_binary_parser:parse_table) and drops the TCP
    connection. ringmq: connection.close 502 SYNTAX_ERROR. (Truncated
    arguments are 501 FRAME_ERROR "cannot decode" in both.)

Reply codes must be RabbitMQ's; the reply text's "NAME - " prefix and the
class/method ids in connection.close are only compared and reported (NOTE
lines), not failed.

RabbitMQ notes for the server engineers:
  - reply texts start with the constant's name: "FRAME_ERROR - ...",
    "CHANNEL_ERROR - expected 'channel.open'", "UNEXPECTED_FRAME - ...";
  - undecodable (truncated) method arguments are 501 FRAME_ERROR "cannot
    decode ..." (not 502); a connection-class-only violation such as
    queue.declare on channel 0 is 504 CHANNEL_ERROR "unexpected method in
    connection state running" (not 503); a content header of another class
    than the publish is 505 UNEXPECTED_FRAME (not 502);
  - RabbitMQ checks a frame's size from its 7-byte header (it does not wait
    for the payload) and tolerates payloads up to frame_max (not
    frame_max - 8): "{frame_too_large,1000000,131064}";
  - a basic.publish on a channel that is not open is answered (504) only
    once its content header and body have arrived;
  - a heartbeat on a channel other than 0 is 505 UNEXPECTED_FRAME;
  - after the server's connection.close and the client's close-ok the
    server closes the socket; after the server's close-ok (client-initiated
    close) RabbitMQ leaves closing the socket to the client.
"""
import struct
import sys

import amqp_raw as R
import ringmq_test as rt

RABBITMQ = "--rabbitmq" in sys.argv
RABBITMQ_DIFFERS = object()


def unopened_publish():
    return (R.method_frame(5, 60, 40, R.basic_publish_args("", "q")) +
            R.content_header(5, 60, 5) + R.frame(R.FRAME_BODY, 5, b"hello"))


def bad_table_declare():
    return R.method_frame(1, 50, 10, R.queue_declare_args(
        "q", arguments=R.table([(b"x-a", b"z", b"\x01")])))


# name, channel opened first?, bytes to send, (code, text prefix, class, method),
# RabbitMQ's answer when it differs ("eof": TCP closed without connection.close)
CASES = [
    ("bad_frame_end_heartbeat", False, R.frame(R.FRAME_HEARTBEAT, 0, b"", end=b"\x00"),
     (501, "FRAME_ERROR", 0, 0), None),
    ("bad_frame_end_method", True,
     R.frame(R.FRAME_METHOD, 1, struct.pack("!HH", 50, 10) + R.queue_declare_args("q"),
             end=b"\xcd"), (501, "FRAME_ERROR", 0, 0), None),
    ("oversize_frame", False, struct.pack("!BHI", R.FRAME_METHOD, 0, 1000000) + b"\x00" * 16,
     (501, "FRAME_ERROR", 0, 0), None),
    ("unknown_frame_type", False, R.frame(9, 0, b"xx"), (501, "FRAME_ERROR", 0, 0), None),
    ("truncated_method_args", True, R.method_frame(1, 50, 10, b"\x00\x00\x05ab"),
     (501, "FRAME_ERROR", 50, 10), None),
    ("unknown_class_method_ch0", False, R.method_frame(0, 99, 99),
     (540, "NOT_IMPLEMENTED", 99, 99), "eof"),
    ("unknown_class_method_ch1", True, R.method_frame(1, 99, 99),
     (540, "NOT_IMPLEMENTED", 99, 99), "eof"),
    ("unknown_method_known_class", True, R.method_frame(1, 50, 99),
     (540, "NOT_IMPLEMENTED", 50, 99), "eof"),
    ("bad_field_table_type", True, bad_table_declare(), (502, "SYNTAX_ERROR", 50, 10), "eof"),
    ("method_on_unopened_channel", False, R.method_frame(5, 50, 10, R.queue_declare_args("q")),
     (504, "CHANNEL_ERROR", 50, 10), None),
    ("publish_on_unopened_channel", False, unopened_publish(), (504, "CHANNEL_ERROR", 60, 40),
     None),
    ("close_on_unopened_channel", False,
     R.method_frame(7, 20, 40, struct.pack("!H", 200) + R.shortstr("x") +
                    struct.pack("!HH", 0, 0)), (504, "CHANNEL_ERROR", 20, 40), None),
    ("channel_open_twice", True, R.method_frame(1, 20, 10, R.shortstr("")),
     (504, "CHANNEL_ERROR", 20, 10), None),
    ("queue_method_on_channel_0", False, R.method_frame(0, 50, 10, R.queue_declare_args("q")),
     (504, "CHANNEL_ERROR", 50, 10), None),
    ("body_without_header", True, R.frame(R.FRAME_BODY, 1, b"hello"),
     (505, "UNEXPECTED_FRAME", 0, 0), None),
    ("header_without_publish", True, R.content_header(1, 60, 5),
     (505, "UNEXPECTED_FRAME", 0, 0), None),
    ("publish_then_method", True,
     R.method_frame(1, 60, 40, R.basic_publish_args("", "q")) +
     R.method_frame(1, 50, 10, R.queue_declare_args("q")),
     (505, "UNEXPECTED_FRAME", 60, 40), None),
    ("header_class_mismatch", True,
     R.method_frame(1, 60, 40, R.basic_publish_args("", "q")) + R.content_header(1, 50, 2),
     (505, "UNEXPECTED_FRAME", 60, 40), None),
    ("heartbeat_on_channel_1", True, R.frame(R.FRAME_HEARTBEAT, 1, b""),
     (505, "UNEXPECTED_FRAME", 0, 0), None),
]

HEADERS = [
    ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("amqp_1_0", b"AMQP\x00\x01\x00\x00"),
    ("amqp_0_10", b"AMQP\x01\x01\x00\x0a"),
    ("amqp_0_9_2", b"AMQP\x00\x00\x09\x02"),
    ("not_amqp", b"AMQX\x00\x00\x09\x01"),
]

target = {"port": None}


def port():
    return target["port"]


def still_serves():
    rt.check(R.serves(port()), "a new connection is not served")


def header_case(name, data):
    def t():
        c = R.RawConn(port())
        try:
            c.send(data)
            got = c.read_raw(8, 5)
            rt.check(got == R.PROTOCOL_HEADER, "%s: answered %r" % (name, got))
            c.expect_eof(5)
        finally:
            c.close()
        still_serves()
    t.__name__ = "test_header_" + name
    return t


def frame_case(name, chan_open, data, want, rabbitmq):
    def t():
        c = R.RawConn(port()).handshake()
        try:
            if chan_open:
                c.open_channel(1)
            c.send(data)
            if RABBITMQ and rabbitmq == "eof":
                try:
                    got = c.expect_close(5)
                except R.Closed:
                    pass
                else:
                    raise AssertionError("RabbitMQ answered %r (expected a dropped TCP "
                                         "connection)" % (got,))
            else:
                code, text, cls, meth = c.expect_close(5)
                rt.check(code == want[0],
                         "%s: connection.close %d %r %d.%d, want code %d (%s)" %
                         ((name, code, text, cls, meth) + want[:2]))
                print("     %s: %d %r %d.%d" % (name, code, text, cls, meth))
                # RabbitMQ's text starts with the constant's name and names
                # the offending method; a difference is reported, not failed
                if not text.startswith(want[1] + " - ") or (cls, meth) != want[2:]:
                    print("     NOTE %s: want a reply text starting '%s - ' and "
                          "class.method %d.%d (%s)" % ((name, want[1]) + want[2:] + (
                              "RabbitMQ's answer" if rabbitmq is None
                              else "RabbitMQ's convention",)))
        finally:
            c.close()
        still_serves()
    t.__name__ = "test_" + name
    return t


def test_setup():
    if RABBITMQ:
        import rabbitmq_ref
        target["port"] = rabbitmq_ref.RabbitMQ().start().port
        return
    amqp_port = rt.standalone_amqp("ringmq-amqpbad-")
    target["port"] = amqp_port
    still_serves()


def test_clean_connection():
    still_serves()


def gated(t):
    def g():
        if target["port"] is None:
            raise AssertionError("skipped: no server (see test_setup)")
        t()
    g.__name__ = t.__name__
    return g


if __name__ == "__main__":
    tests = [test_setup, gated(test_clean_connection)]
    tests += [gated(header_case(n, d)) for n, d in HEADERS]
    tests += [gated(frame_case(*c)) for c in CASES]
    rt.run_tests(tests)
