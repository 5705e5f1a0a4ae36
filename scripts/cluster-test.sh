#!/usr/bin/env bash
# End-to-end test of the cluster setup (docker-compose.cluster.yml): NATS, three directory
# replicas, two stream replicas and the proxy come up healthy; bob listens on directory-2 (with
# directory-3 as his fallback) while alice sends from directory-1; directory-2 is killed with
# `docker kill`; bob's client fails over by itself and alice keeps sending. Every message whose
# send succeeded must reach bob exactly once. Then the demo plays through the proxy. Removes
# every container and volume it made.
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME="svs-cluster-test"
export COMPOSE_FILE=docker-compose.cluster.yml
. scripts/compose-lib.sh
ensure_base_images

echo "building images"
compose --profile cli build -q
echo "starting the cluster"
compose up -d

services=(nats directory-1 directory-2 directory-3 stream-1 stream-2 proxy)
all_healthy() { for s in "${services[@]}"; do healthy "$s" || return 1; done; completed ca; }
for _ in $(seq 1 180); do
  if all_healthy; then break; fi
  sleep 1
done
all_healthy || { echo "the cluster did not become healthy"; exit 1; }
echo "all ${#services[@]} services healthy"

# NATS takes only the replicas: it is not on the network the cli container shares, and the cli
# container holds the CA certificate and none of the services' secrets.
compose --profile cli run --rm -T --no-deps --entrypoint /bin/bash cli -c \
  'test -r /ca/ca.pem && ! test -e /data/cluster/token_key.pem && ! test -e /data/tls/ca.key && ! test -e /run/svs-nats/password && ! (exec 3<>/dev/tcp/nats/4222) 2>/dev/null' ||
  { echo "the cli container can reach NATS or read a service's secret"; exit 1; }
echo "NATS and the services' secrets are out of the cli container's reach"

# cli NAME DIRECTORY-URLS ARGS...: the real CLI on the compose network.
cli() {
  local name="$1" urls="$2"
  shift 2
  compose --profile cli run --rm -T --no-deps -e SVS_HOME="/home/svs/$name" -e SVS_DIRECTORY="$urls" cli --name "$name" "$@"
}
d1=https://directory-1:50051
d2=https://directory-2:50051
d3=https://directory-3:50051

total=6
cli bob "$d2,$d3" listen --count "$total" --timeout 180 --json >"$work/bob.out" 2>"$work/bob.err" &
listener=$!
for _ in $(seq 1 60); do
  if cli alice "$d1" who --json 2>/dev/null | grep -q '"bob"'; then break; fi
  sleep 1
done
cli alice "$d1" who --json | grep -q '"bob"' || { echo "alice on directory-1 does not see bob on directory-2"; exit 1; }
echo "presence crosses replicas"

for n in 1 2 3; do cli alice "$d1" send --to bob "before the kill $n" >/dev/null; done
# Give bob's replica the first three, then take it away without warning.
for _ in $(seq 1 30); do
  [ "$(grep -c '"text":"before the kill' "$work/bob.out" 2>/dev/null || true)" -ge 3 ] && break
  sleep 1
done
docker kill "$(compose ps -q directory-2)" >/dev/null
echo "directory-2 killed"
for n in 1 2 3; do cli alice "$d1" send --to bob "after the kill $n" >/dev/null; done
wait "$listener" || { echo "bob's listener failed"; cat "$work/bob.err"; exit 1; }
for n in 1 2 3; do
  for when in before after; do
    count="$(grep -c "\"text\":\"$when the kill $n\"" "$work/bob.out" || true)"
    [ "$count" = 1 ] || { echo "'$when the kill $n' reached bob $count times"; cat "$work/bob.out" "$work/bob.err"; exit 1; }
  done
done
echo "every accepted message reached bob exactly once across the failover"

summary="$(cli carol https://proxy:50051 play demo --headless --json --resolution 240p | tail -n 1)"
echo "$summary"
echo "$summary" | grep -q '"frames_decoded":[1-9]' || { echo "no frames decoded through the proxy"; exit 1; }
echo "cluster test passed"
