#!/bin/bash
# Container health: GET /healthz on the HTTP port (9100) answers 200. For a
# router that means every shard has a leader it reaches; for a node, that it
# serves. bash's /dev/tcp: the runtime image has no curl.
exec 3<>/dev/tcp/127.0.0.1/"${RINGMQ_HTTP_PORT:-9100}" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 3 status <&3 || exit 1
case $status in
*" 200 "*) exit 0 ;;
*) exit 1 ;;
esac
