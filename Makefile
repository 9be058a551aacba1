# The two commands of the README: `make demo` and `make test`.
CARGO ?= cargo
BIN := target/release
# make demo STORE=kubernetes: the demo's cluster keeps its state in the API server
STORE ?= etcd

.PHONY: setup build demo test unit lint fmt fuzz bench install clean-labs

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --bins
	@# weft-cni is exec'd for every CNI call: linked statically (static-pie)
	@# it skips the dynamic loader, ~0.2 ms of every call
	$(CARGO) rustc --release -p weft-cni --bin weft-cni -- -C target-feature=+crt-static

## demo: a lab with three pods talking, shown and torn down (STORE=etcd|kubernetes)
demo: build
	@bash scripts/demo.sh $(BIN) $(STORE)

## test: everything CI runs (privileged tests need root); each phase says
## how long it took, and the suite's summary repeats them
test: export WEFT_PHASES = $(CURDIR)/target/test-phases
test:
	@mkdir -p target && rm -f $(WEFT_PHASES)
	@bash scripts/phase.sh setup bash scripts/setup.sh
	@bash scripts/phase.sh lint $(MAKE) --no-print-directory lint
	@# the test binaries are built here, so the tests phase is their run alone
	@bash scripts/phase.sh build sh -c '$(CARGO) build --bins && $(CARGO) test --workspace --no-run'
	@# the fuzzers first: the suite's total stays the run's last line
	@bash scripts/phase.sh fuzz bash scripts/fuzz.sh
	@bash scripts/test.sh

unit:
	$(CARGO) test --workspace --lib --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## fuzz: every fuzz target for FUZZ_SECONDS (default 10) each
fuzz:
	@bash scripts/fuzz.sh

## install: weft on this host (binaries, /opt/cni/bin/weft-cni, conflist, systemd unit)
install: build
	$(BIN)/weft install

## bench: weft-cni against the reference plugins, side by side (reports go to
## /var/tmp/weft-bench, not into the checkout; WEFT_BENCH_DIR=DIR to change it)
bench: build
	$(BIN)/weft bench cni

clean-labs:
	@for l in $$(ls /run/weft-lab 2>/dev/null); do $(BIN)/weft lab down --name $$l || true; done
