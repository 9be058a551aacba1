#!/usr/bin/env bash
# Builds cnitool (the CNI project's reference driver) from Debian's own source
# package of libcni, with Debian's Go toolchain: nothing comes from outside
# the Debian archive. Output: $1 (default target/tools/cnitool). Idempotent.
set -euo pipefail
out=${1:-target/tools/cnitool}
[[ -x $out ]] && exit 0
for p in golang-go golang-github-appc-cni-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || { echo "build-cnitool: $p missing; run scripts/setup.sh" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/src"
# a private sources list with the deb-src line the machine's own list lacks
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" > "$work/sources.list"
apt_opts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists")
echo "build-cnitool: fetching Debian's golang-github-appc-cni source" >&2
apt-get "${apt_opts[@]}" update -qq
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only golang-github-appc-cni >/dev/null 2>&1)
mkdir -p "$work/gopath/src/github.com/containernetworking"
tar -xf "$work"/src/golang-github-appc-cni_*.orig.tar.* -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'golang-github-appc-cni-*' -o -maxdepth 1 -type d -name 'cni-*' | head -1)
[[ -n $src ]] || src=$(dirname "$(find "$work" -path '*/cnitool/cnitool.go' | head -1)")/..
mv "$src" "$work/gopath/src/github.com/containernetworking/cni"
echo "build-cnitool: building with $(go version | cut -d' ' -f3)" >&2
mkdir -p "$(dirname "$out")"
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
(cd "$work/gopath/src/github.com/containernetworking/cni/cnitool" &&
  GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$work/gopath:/usr/share/gocode" GOCACHE="$work/gocache" \
  go build -o "$abs_out" .)
echo "build-cnitool: $out" >&2
