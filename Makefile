# The two commands of the contract: `make up` and `make test`.
# Both build in the dev profile (dependencies optimised, see Cargo.toml) so that RocksDB
# is compiled once and shared by the binary, the tests and the binaries tests spawn.
CARGO ?= cargo
DATA_DIR ?= ./.capstan/default
LISTEN ?= 127.0.0.1:2379
API_LISTEN ?= 127.0.0.1:6443
KUBECONFIG_OUT ?= ./.capstan/kubeconfig
NODE_NAME ?= node1

.PHONY: up test build deps test-deps bench bench-full bench-deps fmt clippy clean

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

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets

clean:
	$(CARGO) clean
	rm -rf ./.capstan
