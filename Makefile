# svs: the two commands of the quick start, and helpers.
#   make run   installs what is missing, builds, and starts both services on their defaults
#   make test  installs what is missing, then fmt, clippy and the whole test suite

.PHONY: run test deps build bench

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

bench: deps
	cargo bench --workspace
