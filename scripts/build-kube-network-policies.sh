#!/usr/bin/env bash
# Builds kube-network-policies (sigs.k8s.io/kube-network-policies, the
# upstream reference NetworkPolicy agent: nftables + nfqueue) from its
# published Go module, for `weft bench policy`'s side-by-side row.
#
# The result is cached outside the clone, keyed by the version:
#   $WEFT_KNP_CACHE (default /var/cache/weft/kube-network-policies)/<version>/bin/
# A second run finds it and returns at once. Prints the bin directory on
# stdout; progress goes to stderr.
set -euo pipefail

version=${WEFT_KNP_VERSION:-v0.8.0}
cache=${WEFT_KNP_CACHE:-/var/cache/weft/kube-network-policies}
dir="$cache/$version"
bin="$dir/bin"

if [[ -x $bin/kube-network-policies ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" 2>/dev/null || {
  echo "build-kube-network-policies: cannot create $bin; run as root or point WEFT_KNP_CACHE at a writable directory" >&2
  exit 1
}
# one build at a time per version: the second waits and finds the result
exec 9>"$dir/.lock"
flock 9
if [[ -x $bin/kube-network-policies ]]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "build-kube-network-policies: go not found; install Go 1.26 (the machines have it)" >&2; exit 1; }

start=$(date +%s)
echo "build-kube-network-policies: building $version into $bin" >&2
module=sigs.k8s.io/kube-network-policies
src=$(go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[[ -n $src && -d $src ]] || { echo "build-kube-network-policies: go mod download $module@$version gave no source directory" >&2; exit 1; }
# the module's own go.mod and go.sum pin every dependency; its main package is ./cmd
(cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -o "$bin/kube-network-policies.tmp" ./cmd)
mv "$bin/kube-network-policies.tmp" "$bin/kube-network-policies"
echo "build-kube-network-policies: done in $(( $(date +%s) - start )) s" >&2
echo "$bin"
