#!/usr/bin/env bash
# Starts the whole system on its defaults from the repository root: directory-service on :50051
# (TLS with a local CA created in ./data), and says how to connect. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
mkdir -p data videos

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

"$bin/directory-service" --data-dir data &
pids+=($!)

for _ in $(seq 1 100); do
  [ -f data/tls/ca.pem ] && "$bin/directory-service" health --ca data/tls/ca.pem >/dev/null 2>&1 && break
  sleep 0.1
done

cat <<MSG

svs is running.
  directory-service  https://localhost:50051   (CA: data/tls/ca.pem)

In two other terminals, from this directory:
  $bin/svs chat --name alice
  $bin/svs chat --name bob

Ctrl-C here stops the services.
MSG
wait
