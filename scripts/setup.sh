#!/usr/bin/env bash
# Installs the system packages weft's build, demo, tests and benchmarks use.
# Idempotent: asks apt only for what is missing.
set -euo pipefail

packages=(
  iproute2                    # ip: labs build namespaces with it
  nftables                    # nft: weftd installs the masquerade table
  containernetworking-plugins # /usr/lib/cni: the peers in benchmarks and chains
  iptables                    # the reference portmap plugin programs NAT with it
  iperf3 tcpdump              # benchmarks and debugging
  podman conmon runc          # real runtimes that drive weft in tests
  containerd
  golang-go golang-github-appc-cni-dev  # cnitool, built from Debian's libcni source
  busybox-static              # the container image of runtime tests
  etcd-server etcd-client     # the distributed store (multi-node labs, store tests)
  protobuf-compiler libprotobuf-dev  # protoc and its well-known types: etcd-client's build compiles etcd's .proto files
  procps psmisc               # ps, pgrep, fuser in scripts
  librsvg2-bin                # rsvg-convert: benchmark charts as PNG
  clang libbpf-dev            # the eBPF programs (crates/datapath/bpf) are built with them
  linux-libc-dev              # linux/bpf.h and friends for those programs
  bpftool                     # inspecting attached programs and maps
  chromium fonts-dejavu-core  # headless page test of `weft ui` (and its screenshot's text)
)

# Turns apt's machine-readable status lines ("dlstatus:3:14.2:Retrieving
# file 3 of 21", "pmstatus:bash:55.0:Unpacking bash") into a line on stderr
# every 10 percent of each phase.
apt_progress() {
  local kind _ pct what last_kind="" step shown=-1
  while IFS=: read -r kind _ pct what; do
    [[ $kind == dlstatus || $kind == pmstatus ]] || continue
    step=$(( ${pct%%.*} / 10 ))
    if [[ $kind != "$last_kind" ]]; then shown=-1; last_kind=$kind; fi
    if (( step > shown )); then
      shown=$step
      printf 'setup: %s %3d%% %s\n' "$([[ $kind == dlstatus ]] && echo download || echo install)" "${pct%%.*}" "$what" >&2
    fi
  done
}

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${missing[*]}; run as root (sudo make ...) to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # apt works for a minute or so on a fresh machine: say what it is doing
  echo "setup: ${#missing[@]} package(s) missing: ${missing[*]}" >&2
  echo "setup: refreshing the package lists (apt-get update)" >&2
  apt-get update -qq
  echo "setup: installing (downloading, then unpacking and configuring)" >&2
  apt-get install -y -qq --no-install-recommends -o APT::Status-Fd=3 "${missing[@]}" \
    3>&1 >/dev/null | apt_progress
  echo "setup: installed ${missing[*]}" >&2
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "setup: system packages present" >&2

# cargo-fuzz, for scripts/fuzz.sh (run by `make test`). libFuzzer needs the
# nightly toolchain, which the machine image ships beside stable.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz from crates.io (about a minute)" >&2
  cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "setup: the nightly Rust toolchain is missing (cargo-fuzz needs it); install it with rustup" >&2
  exit 1
fi
# Playwright (playwright-core only: no browser download, it drives Debian's
# chromium) for the `weft ui` page test, installed outside the checkout so
# tests leave no untracked files; again only when tests/ui's lock changes
ui_node=/var/cache/weft/ui-node
ui_lock="$(dirname "$0")/../tests/ui/package-lock.json"
if ! cmp -s "$ui_lock" "$ui_node/package-lock.json" || [[ ! -d $ui_node/node_modules/playwright-core ]]; then
  if ! command -v npm >/dev/null; then
    echo "setup: npm not found; install node and npm (Debian: nodejs npm) for the page test" >&2
    exit 1
  fi
  echo "setup: installing playwright-core for the page test into $ui_node" >&2
  mkdir -p "$ui_node"
  cp "$(dirname "$0")/../tests/ui/package.json" "$ui_lock" "$ui_node/"
  npm ci --prefix "$ui_node" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
fi

# the real Kubernetes control plane of `weft lab up --kubernetes`, built from
# the Go module proxy once and cached (/var/cache/weft/kube/<version>);
# progress and the expected time on stderr
bash "$(dirname "$0")/build-kube.sh" >/dev/null
