#!/usr/bin/env bash
# make demo: a three-node cluster in network namespaces on a real etcd, six
# pods spread over the nodes, their addresses, the VXLAN overlay between the
# nodes, every pod reaching every pod and every node over IPv4 and IPv6, and
# everything torn down at the end. With `kubernetes` as second argument
# (`make demo STORE=kubernetes`) the weftds keep the cluster's state in the
# lab's API server (--store kubernetes): no etcd of weft's own, and the
# store's objects shown with kubectl.
set -euo pipefail
bin=${1:-target/release}
store=${2:-etcd}
case $store in
  etcd) store_args=(--etcd-members 1); store_what="fabric with etcd" ;;
  kubernetes) store_args=(--etcd-members 0 --kube-store); store_what="fabric with no etcd of weft's own (--store kubernetes)" ;;
  *) echo "STORE must be etcd or kubernetes, not '$store'" >&2; exit 2 ;;
esac
name=weft-demo-$$
weft() { "$bin/weft" "$@"; }
cleanup() { weft lab down --name "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== building lab $name: $store_what, 3 nodes each running weftd, 6 pods via weft-cni"
weft lab up --name "$name" --nodes 3 "${store_args[@]}" --routing overlay --pods 6 --no-hint

# --- Kubernetes: the lab's control plane (a multi-node lab runs one by default) ---
kubectl() { weft lab kubectl --name "$name" -- "$@"; }
echo
echo "== Kubernetes in the lab: kube-apiserver, controller-manager and scheduler in the fabric namespace, kube-proxy on each node"
kubectl version
kubectl get --raw='/readyz?verbose' | tail -1
echo "-- kubectl get nodes -o wide"
kubectl get nodes -o wide
echo "-- leader leases of the controller-manager and the scheduler"
kubectl -n kube-system get leases kube-controller-manager kube-scheduler
echo "-- Services (kube-proxy programs them on every node)"
kubectl get services -A -o wide
echo
echo "== a Deployment of 6 replicas: the scheduler spreads them, each node's lab kubelet attaches them through weft-cni"
kubectl apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: weft.test/agnhost, ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]}
YAML
kubectl rollout status deployment/web --timeout=120s
kubectl get pods -l app=web -o wide
echo "-- each pod asks the first for its hostname (TCP) and every pod answers the first (UDP)"
mapfile -t web < <(kubectl get pods -l app=web -o name | sed 's|^pod/|default/|')
for p in "${web[@]}"; do
  printf '%-32s -> %-32s tcp: %-28s udp: %s\n' "$p" "${web[0]}" \
    "$(weft lab probe --name "$name" --from "$p" --to "${web[0]}" --port 8080 --send hostname --print-reply 2>/dev/null)" \
    "$(weft lab probe --name "$name" --from "${web[0]}" --to "$p" --port 8081 --protocol udp --send hostname --print-reply 2>/dev/null)"
done
echo "-- weft endpoints on node 1: each pod's namespace/name and labels, live from the API (weftd runs as weft-system/weft)"
kubectl label pods -l app=web demo=labelled --overwrite >/dev/null
sleep 1
weft --lab "$name" endpoints
if [[ $store == kubernetes ]]; then
  echo
  echo "== weft's store in the API server: the head every commit goes through, and one object per pool, block and node"
  kubectl get weftstores,ippools,weftnodes
  echo "-- kubectl get ipamblocks (a block's record and route summary: its CIDR, node and addresses in use)"
  kubectl get ipamblocks
  echo "-- the weftds' registrations live on Leases in weft-system"
  kubectl -n weft-system get leases -l weft.dev/store=weft
fi
# --- end Kubernetes ---
echo
echo "== waiting until node 1's pods are on the eBPF fast path (2 s after their ADD, once chained plugins ran)"
for _ in $(seq 50); do
  st=$(weft --lab "$name" -o json status)
  fast=$(sed -n 's/.*"fast": *\([0-9]*\).*/\1/p' <<<"$st" | head -1)
  addrs=$(sed -n 's/.*"addresses": *\([0-9]*\).*/\1/p' <<<"$st" | head -1)
  if [[ -n $fast && $fast == "$addrs" && $fast != 0 ]]; then break; fi
  sleep 0.2
done
echo
echo "== weft lab status (which pod runs on which node)"
weft lab status --name "$name"
echo
echo "== weft ipam show (node 1's view of the cluster's blocks)"
weft --lab "$name" ipam show
echo
echo "== reachability: every pod to every pod and every node, TCP over IPv4 and IPv6"
weft lab check --name "$name" --svg "/tmp/$name-reachability.svg"
echo
echo "== weft status (node 1; forwarding counts the packets the check just sent)"
weft --lab "$name" status
echo
echo "== weft ipam check (node 1)"
weft --lab "$name" ipam check
echo
echo "== tearing down"
weft lab down --name "$name"
trap - EXIT
abs_bin=$(cd "$bin" && pwd)
echo
if [[ $(command -v weft 2>/dev/null) != "$abs_bin/weft" ]]; then
  cat <<EOF
== done. weft and weftd are in $abs_bin, which is not on your PATH:
  export PATH="$abs_bin:\$PATH"    # for this shell
  sudo make install                  # or for good (/usr/local/bin, with weftd's unit and the conflist)
EOF
else
  echo "== done."
fi
cat <<EOF
then a lab of your own, one command at a time:
  weft lab up --name mine --pods 3
  weft --lab mine endpoints
  weft lab check --name mine
  weft lab down --name mine
EOF
