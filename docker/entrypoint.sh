#!/bin/sh
# The image's start command: `node` or `router`, configured by environment
# (docs/deploy.md), so that compose files and Helm charts need no scripts.
#
#   RINGMQ_CLUSTER   cluster map file (default /etc/ringmq/cluster.yaml)
#   RINGMQ_NODE_ID   node: its member id; default: the trailing number of
#                    the host name plus RINGMQ_NODE_ID_BASE (StatefulSet
#                    pod "ringmq-s2-0" with base 4 is node 4)
#   RINGMQ_NAME      router: its entry in the map (default: the host name)
#   RINGMQ_DATA_DIR  node data (default /var/lib/ringmq)
#   RINGMQ_AMQP_USERS  router: AMQP users file (name:password lines)
#   RINGMQ_READ_MODE node: leader (default) or linearizable
# Listeners bind every interface (the map's addresses are names that other
# hosts resolve); HTTP /healthz and /metrics on 9100.
# Extra arguments after the role go to the binary.
set -eu
role=${1:-node}
[ $# -gt 0 ] && shift
map=${RINGMQ_CLUSTER:-/etc/ringmq/cluster.yaml}
host=$(hostname)

case $role in
node)
    id=${RINGMQ_NODE_ID:-}
    if [ -z "$id" ]; then
        ordinal=$(printf '%s\n' "$host" | sed -n 's/.*[^0-9]\([0-9][0-9]*\)$/\1/p')
        [ -n "$ordinal" ] || { echo "entrypoint: set RINGMQ_NODE_ID (host name $host has no number)" >&2; exit 64; }
        id=$((ordinal + ${RINGMQ_NODE_ID_BASE:-0}))
    fi
    exec ringmq-node --cluster "$map" --id "$id" \
        --data-dir "${RINGMQ_DATA_DIR:-/var/lib/ringmq}" \
        --rpc "0.0.0.0:${RINGMQ_RPC_PORT:-7101}" --http 0.0.0.0:9100 \
        --read-mode "${RINGMQ_READ_MODE:-leader}" "$@"
    ;;
router)
    set -- --cluster "$map" --name "${RINGMQ_NAME:-$host}" \
        --memcached 0.0.0.0:11211 --amqp 0.0.0.0:5672 --http 0.0.0.0:9100 "$@"
    if [ -n "${RINGMQ_AMQP_USERS:-}" ]; then
        set -- "$@" --amqp-users "$RINGMQ_AMQP_USERS"
    fi
    exec ringmq-router "$@"
    ;;
*)
    exec "$role" "$@"
    ;;
esac
