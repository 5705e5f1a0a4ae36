#!/usr/bin/env bash
# End-to-end test of the container setup: builds the images (building local base images first
# where they cannot be pulled), runs `docker compose up -d`, waits for both healthchecks,
# registers two clients over the compose network, exchanges a message, plays the demo headless,
# checks that both services' Prometheus metrics counted it, serves `svs web` from the cli
# container on the host's loopback, and removes every container and
# volume it made.
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME="svs-compose-test"
export COMPOSE_FILE=docker-compose.yml
. scripts/compose-lib.sh
ensure_base_images

echo "building images"
compose --profile cli build -q
echo "starting"
compose up -d

for _ in $(seq 1 120); do
  if healthy directory-service && healthy stream-service; then break; fi
  sleep 1
done
healthy directory-service && healthy stream-service || { echo "services did not become healthy"; exit 1; }
echo "both services healthy"

cli() { compose --profile cli run --rm -T -e SVS_HOME="/home/svs/$1" cli --name "$@"; }
# The cli container holds the CA certificate and nothing of the services' secrets.
compose --profile cli run --rm -T --entrypoint /bin/sh cli -c \
  'test -r /ca/ca.pem && ! test -e /data/tls/ca.key && ! test -e /data/directory/token_key.pem' ||
  { echo "the cli container can see the services' data volume"; exit 1; }
echo "the cli container sees only the CA certificate"

cli bob listen --count 1 --timeout 90 --json >"$work/bob.out" 2>"$work/bob.err" &
listener=$!
for _ in $(seq 1 60); do
  if cli alice who --json 2>/dev/null | grep -q '"bob"'; then break; fi
  sleep 1
done
cli alice send --to bob "hello over compose"
wait "$listener"
grep -q '"text":"hello over compose"' "$work/bob.out" || { echo "bob did not receive the message"; cat "$work/bob.out" "$work/bob.err"; exit 1; }
echo "message delivered"

summary="$(cli alice play demo --headless --json --resolution 240p | tail -n 1)"
echo "$summary"
echo "$summary" | grep -q '"frames_decoded":[1-9]' || { echo "no frames decoded"; exit 1; }
echo "$summary" | grep -q '"codec":"h264"' || { echo "the demo did not play as H.264"; exit 1; }
curl -sf http://127.0.0.1:9101/metrics | grep '^svs_rpc_total{' | grep 'Directory/Register' | grep -q 'code="Ok"' ||
  { echo "directory metrics do not count the registrations"; exit 1; }
curl -sf http://127.0.0.1:9102/metrics | grep -q '^svs_stream_frames_sent_total{rendition="240p"} [1-9]' ||
  { echo "stream metrics do not count the frames"; exit 1; }
echo "metrics counted"

# `svs web` in the cli container: its page reaches the host through a port published on the
# host's loopback only, with its security headers, and refuses another Host.
web="$(compose --profile cli run -d --service-ports -e SVS_HOME=/home/svs/carol cli --name carol web | tail -n 1)"
for _ in $(seq 1 60); do
  if curl -sf -o /dev/null http://127.0.0.1:8730/; then break; fi
  sleep 1
done
headers="$(curl -sf -D - -o /dev/null http://127.0.0.1:8730/)" ||
  { echo "svs web did not serve its page on 127.0.0.1:8730"; docker logs "$web" || true; exit 1; }
echo "$headers" | grep -qi "^content-security-policy: default-src 'none'" ||
  { echo "svs web's page came without its Content-Security-Policy"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: evil.example:8730' http://127.0.0.1:8730/)" = 403 ] ||
  { echo "svs web answered a request for another host"; exit 1; }
docker port "$web" 8730 | grep -qv '^127\.0\.0\.1:' &&
  { echo "svs web's port is published beyond the host's loopback"; exit 1; }
docker logs "$web" 2>&1 | grep -q "svs web: chat as carol at http://127.0.0.1:8730/#" ||
  { echo "svs web did not print its address"; docker logs "$web" || true; exit 1; }
docker rm -f "$web" >/dev/null
echo "svs web served its page"
echo "compose test passed"
