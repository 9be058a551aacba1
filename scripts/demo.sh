#!/usr/bin/env bash
# make demo: a single-node lab, three pods, their addresses, pod-to-pod and
# pod-to-node traffic over IPv4 and IPv6, then everything torn down.
set -euo pipefail
bin=${1:-target/release}
name=weft-demo-$$
weft() { "$bin/weft" "$@"; }
cleanup() { weft lab down --name "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== building lab $name (fabric + node namespace, weftd, 3 pods via weft-cni)"
weft lab up --name "$name" --pods 3
# The 3-node variant goes here once weftd's multi-node side (--store etcd,
# --etcd-endpoints, --routing) lands; the lab side exists already:
#   weft lab up --name "$name" --nodes 3 --etcd-members 3 --routing overlay --pods 6
# (pods spread round-robin over the nodes; `weft lab status` shows which pod
# runs where, `weft lab check` adds every node's underlay as a column).
echo
echo "== weft status"
weft --lab "$name" status
echo
echo "== weft endpoints"
weft --lab "$name" endpoints
echo
echo "== weft ipam show"
weft --lab "$name" ipam show
echo
echo "== reachability: every pod to every pod and to the node, TCP over IPv4 and IPv6"
weft lab check --name "$name"
echo
echo "== weft ipam check"
weft --lab "$name" ipam check
echo
echo "== tearing down"
