#!/bin/bash
# nfq_delay holds packets for the time asked, and traffic flows undelayed
# again once it stops (--queue-bypass). Two namespaces joined by a veth
# pair; round trips are timed with a small TCP echo in /usr/bin/python3.
#   test_nfq_delay.sh PATH/TO/nfq_delay
set -euo pipefail
bin=$1
[ "$(id -u)" = 0 ] || { echo "test_nfq_delay: needs root" >&2; exit 1; }
a=rqd$$a
b=rqd$$b
helper=
server=
cleanup() {
    for p in $helper $server; do kill "$p" 2>/dev/null || true; done
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$a"
ip netns add "$b"
ip link add eth0 netns "$a" type veth peer name eth0 netns "$b"
ip -n "$a" addr add 10.99.0.1/24 dev eth0
ip -n "$b" addr add 10.99.0.2/24 dev eth0
for ns in "$a" "$b"; do
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
done

# An echo server in b; the client in a prints the median round trip in ms.
ip netns exec "$b" /usr/bin/python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.0.2", 7777)); s.listen(8)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(64)
        if not d: break
        c.sendall(d)
    c.close()
' &
server=$!
rtt() {
    ip netns exec "$a" /usr/bin/python3 -c '
import socket, statistics, time
for _ in range(50):
    try:
        c = socket.create_connection(("10.99.0.2", 7777), timeout=5); break
    except OSError: time.sleep(0.1)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.settimeout(10)
t = []
for _ in range(7):
    s = time.monotonic(); c.sendall(b"x"); c.recv(1); t.append(time.monotonic() - s)
print(int(statistics.median(t) * 1000))
'
}

base=$(rtt)
ip netns exec "$b" iptables -A INPUT -s 10.99.0.1 -j NFQUEUE --queue-num 3 --queue-bypass
ip netns exec "$b" "$bin" --queue 3 --delay-ms 200 2>/dev/null &
helper=$!
sleep 0.3
delayed=$(rtt)
kill "$helper"
wait "$helper"
helper=
after=$(rtt)
echo "round trip: ${base} ms before, ${delayed} ms with --delay-ms 200, ${after} ms after"
[ "$delayed" -ge $((base + 180)) ] && [ "$delayed" -lt 1000 ] ||
    { echo "FAIL: delay not applied" >&2; exit 1; }
[ "$after" -lt $((base + 50)) ] ||
    { echo "FAIL: still delayed after the helper stopped" >&2; exit 1; }
echo "ok"
