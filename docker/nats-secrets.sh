#!/bin/sh
# Makes, once, what NATS and the directory replicas share in the cluster compose file
# (docker-compose.cluster.yml runs it as the one-shot `nats-secrets` service):
#   /nats-client/password  the replicas' NATS password ("svs" + 64 hex digits: nats-server reads
#                          it as a config value, which must start with a letter)
#   /nats-client/ca.pem    the CA the replicas trust for NATS's certificate
#   /nats-server/server.pem, server.key
#                          NATS's certificate for the name "nats", signed by that CA, whose key
#                          is thrown away: no one can sign another certificate under it
# The replicas mount only /nats-client; NATS mounts both. Files belong to uid 10001 (the user
# NATS and the replicas run as), keys and the password 0400.
set -eu
client=/nats-client
server=/nats-server
if ! test -s "$client/password"; then
  printf 'svs%s' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > "$client/password"
fi
if ! test -s "$server/server.pem" || ! test -s "$client/ca.pem"; then
  work="$(mktemp -d)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=svs NATS CA" -keyout "$work/ca.key" -out "$client/ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=nats" \
    -keyout "$server/server.key" -out "$work/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:nats\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > "$work/ext"
  openssl x509 -req -in "$work/server.csr" -CA "$client/ca.pem" -CAkey "$work/ca.key" \
    -set_serial "0x$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" -days 825 \
    -extfile "$work/ext" -out "$server/server.pem" 2>/dev/null
  rm -rf "$work"
fi
chown 10001:10001 "$client/password" "$client/ca.pem" "$server/server.pem" "$server/server.key"
chmod 0400 "$client/password" "$server/server.key"
chmod 0444 "$client/ca.pem" "$server/server.pem"
