#!/usr/bin/env bash
# Builds the real Kubernetes control plane the lab runs (kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl and etcd) from
# the published Go modules: a wrapper module requires k8s.io/kubernetes at the
# pinned version and replaces each of its ./staging/... modules with the
# published k8s.io/<x> v0.<minor>.<patch>, read from the real go.mod in the
# module cache. One binary, `kube`, dispatches on its name (symlinks).
#
# The result is cached outside the clone, keyed by the version:
#   $WEFT_KUBE_CACHE (default /var/cache/weft/kube)/<version>/bin/
# A second run (and CI on the same machine) finds it and returns at once.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

version=${WEFT_KUBE_VERSION:-v1.36.3}
cache=${WEFT_KUBE_CACHE:-/var/cache/weft/kube}
here=$(cd "$(dirname "$0")" && pwd)
dir="$cache/$version"
bin="$dir/bin"
commands=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl etcd)

built() {
  [[ -x $bin/kube && -f $dir/built && $(cat "$dir/built") == "$(sha256sum "$here/kube/main.go" | cut -d' ' -f1)" ]]
}
if built; then
  echo "$bin"
  exit 0
fi

mkdir -p "$dir" 2>/dev/null || {
  echo "build-kube: cannot create $dir; run as root (sudo make setup) or point WEFT_KUBE_CACHE at a writable directory" >&2
  exit 1
}
# one build at a time per version (make setup, CI and a person may start it
# together): the second waits for the first and then finds its result
exec 9>"$dir/.lock"
if ! flock -n 9; then
  echo "build-kube: another build of $version is running (lock $dir/.lock); waiting for it to finish" >&2
  flock 9
fi
if built; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-kube: go not found; install Go 1.26 (the machines have it)" >&2; exit 1; }
export GOFLAGS=-mod=mod
mkdir -p "$dir/src" "$bin"
start=$(date +%s)
echo "build-kube: building Kubernetes $version (kube-apiserver, controller-manager, scheduler, kube-proxy, kubectl, etcd) into $bin" >&2
echo "build-kube: a cold build takes ~21 minutes on 2 shared CPUs (measured: 1251 s, 13.4 min of CPU); it is cached for later runs" >&2

echo "build-kube: [1/3] fetching k8s.io/kubernetes@$version" >&2
modjson=$(cd "$dir/src" && go mod download -json "k8s.io/kubernetes@$version")
gomod=$(printf '%s' "$modjson" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
minor_patch=${version#v1.}

{
  echo "module weft.local/kube"
  echo
  grep -E '^go ' "$gomod"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  echo "replace ("
  # every staging module of the real go.mod, at its published version
  grep -E '^\s+k8s.io/[a-z0-9-]+ => ./staging/src/' "$gomod" |
    awk -v v="v0.$minor_patch" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} >"$dir/src/go.mod"
cp "$here/kube/main.go" "$dir/src/main.go"

echo "build-kube: [2/3] resolving modules (go mod tidy)" >&2
(cd "$dir/src" && go mod tidy >&2)

echo "build-kube: [3/3] compiling (go build; this is the long part)" >&2
(
  cd "$dir/src"
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*}" -o "$bin/kube.new" . >&2
) &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  sleep 30
  kill -0 "$pid" 2>/dev/null && echo "build-kube: still compiling ($(( $(date +%s) - start )) s so far)" >&2
done
wait "$pid"
mv "$bin/kube.new" "$bin/kube"
for c in "${commands[@]}"; do ln -sf kube "$bin/$c"; done
sha256sum "$here/kube/main.go" | cut -d' ' -f1 >"$dir/built"
echo "build-kube: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
