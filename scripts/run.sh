#!/usr/bin/env bash
# Starts the whole system on its defaults from the repository root: directory-service on :50051
# and stream-service on :50052 (TLS with a local CA created in ./data), makes the demo video when
# ./videos has none, and says how to connect. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
mkdir -p data videos

# Also when the demos predate their sound track (demo.wav).
if ! ls videos/*_*.mp4 >/dev/null 2>&1 || { [ -e videos/demo_720p.mp4 ] && [ ! -e videos/demo.wav ]; }; then
  echo "making the demo videos (demo and detail, 10 s each in 240p, 720p and 1440p, with sound)"
  "$bin/stream-service" make-demo --videos videos
fi

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

"$bin/directory-service" --data-dir data &
pids+=($!)
"$bin/stream-service" --data-dir data --videos videos &
pids+=($!)

for _ in $(seq 1 150); do
  if [ -f data/tls/ca.pem ] &&
    "$bin/directory-service" health --ca data/tls/ca.pem >/dev/null 2>&1 &&
    "$bin/stream-service" health --ca data/tls/ca.pem >/dev/null 2>&1; then
    break
  fi
  sleep 0.2
done

cat <<MSG

svs is running.
  directory-service  https://localhost:50051
  stream-service     https://localhost:50052
  CA certificate     data/tls/ca.pem (svs finds it when run from this directory)

In other terminals, from this directory:
  $bin/svs chat --name alice
  $bin/svs chat --name bob
  $bin/svs videos --name alice
  $bin/svs play demo --name alice            # a window; --headless without a display
  $bin/svs web --name carol                  # the chat and the player in your browser

Ctrl-C here stops the services.
MSG
wait
