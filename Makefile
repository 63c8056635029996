# The two commands of the contract: `make up` and `make test`.
# Both build in the dev profile (dependencies optimised, see Cargo.toml) so that RocksDB
# is compiled once and shared by the binary, the tests and the binaries tests spawn.
CARGO ?= cargo
DATA_DIR ?= ./.capstan/default
LISTEN ?= 127.0.0.1:2379
API_LISTEN ?= 127.0.0.1:6443
KUBECONFIG_OUT ?= ./.capstan/kubeconfig
NODE_NAME ?= node1

.PHONY: up test build deps test-deps bench bench-full bench-deps fuzz fmt clippy clean

deps:
	@scripts/install-deps.sh build

test-deps:
	@scripts/install-deps.sh test

bench-deps:
	@scripts/install-deps.sh bench

build: deps
	$(CARGO) build --bin capstan

## Start the embedded default cluster in one process: a single-member store, the
## Kubernetes API, the controller-manager, the scheduler, and one node (agent, proxy, DNS).
up: build
	@echo "Starting a single-member Capstan store on $(LISTEN), the Kubernetes API on $(API_LISTEN)"
	@echo "and node $(NODE_NAME), data in $(DATA_DIR). Reach it with:"
	@echo "  kubectl --kubeconfig $(KUBECONFIG_OUT) get nodes"
	@echo "  ETCDCTL_API=3 etcdctl --endpoints=https://$(LISTEN) --cacert $(DATA_DIR)/pki/ca.crt \\"
	@echo "    --cert $(DATA_DIR)/pki/admin.crt --key $(DATA_DIR)/pki/admin.key get --prefix /registry/namespaces --keys-only"
	@echo "The dashboard: kubectl --kubeconfig $(KUBECONFIG_OUT) proxy, then open http://127.0.0.1:8001/ui/"
	@echo "Stop it with Ctrl-C."
	./target/debug/capstan store --data-dir $(DATA_DIR) --listen-client $(LISTEN) \
		--apiserver-listen $(API_LISTEN) --write-kubeconfig $(KUBECONFIG_OUT) \
		--scheduler --node-name $(NODE_NAME)

## Build and run every test.
test: test-deps
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace

## Benchmarks: the criterion suites, then Capstan against etcd 3.4 side by side, then
## docs/BENCHMARKS.md and its plots (scripts/bench.sh; under 15 minutes after the build).
bench: bench-deps
	scripts/bench.sh

## The same with the large sizes (100,000 watchers, up to 10,000 pods, more runs), into
## docs/BENCHMARKS-full.md and docs/bench-full/ (the bounded report stays as it is).
bench-full: bench-deps
	PROFILE=full scripts/bench.sh

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= rest_body patch etcd_request raft_message
FUZZ_FLAGS ?= --fuzz-dir fuzz --features libfuzzer --sanitizer none --codegen-units 16

## Fuzzing (nightly, cargo-fuzz): each target of fuzz/ for FUZZ_SECONDS from its corpus
## (fuzz/corpus/<target>, kept in git; new inputs go to target/fuzz-corpus/<target>, crashes
## to fuzz/artifacts/<target>). make test replays the corpus on stable (fuzz/tests/replay.rs).
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	$(CARGO) +nightly fuzz build $(FUZZ_FLAGS)
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$t && \
		$(CARGO) +nightly fuzz run $(FUZZ_FLAGS) $$t target/fuzz-corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets

clean:
	$(CARGO) clean
	rm -rf ./.capstan
