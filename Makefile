# svs: the two commands of the quick start, and helpers.
#   make run   installs what is missing, builds, and starts both services on their defaults
#   make test  installs what is missing, then fmt, clippy and the whole test suite
#   make compose-test  the container setup end to end (needs Docker with Compose)
#   make cluster-test  the cluster setup (NATS, 3 directory and 2 stream replicas, proxy) end to end

.PHONY: run test compose-test cluster-test deps build bench soak

deps:
	./scripts/install-deps.sh

build: deps
	cargo build --release --workspace

run: build
	./scripts/run.sh

test: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

# Builds the images, runs docker compose, chats and plays through it, cleans up.
compose-test:
	./scripts/compose-test.sh

# Builds the images, runs docker-compose.cluster.yml, kills a replica mid-conversation, cleans up.
cluster-test:
	./scripts/cluster-test.sh

bench: deps
	cargo bench --workspace

# Everything at once against release binaries for SOAK_MINUTES (default 10); prints figures.
SOAK_MINUTES ?= 10
soak: build
	cargo run --release -p svs-cli --example soak -- --minutes $(SOAK_MINUTES)
