#!/usr/bin/env bash
# For machines whose Docker engine cannot pull images (no registry access): builds local images
# under the names the Dockerfiles use, so docker/Dockerfile and docker-compose.yml build and run
# unchanged.
#   debian:bookworm-slim  a debootstrap'ed bookworm (minbase) imported with `docker import`
#   rust:1-bookworm       that image plus gcc, this machine's stable Rust toolchain, and cargo's
#                         already-downloaded crates (the build runs with CARGO_NET_OFFLINE)
# Images that already exist are left alone, except a rust:1-bookworm staged for another Cargo.lock
# (its crates would not build the new one offline): it is made again, labelled with the lock's hash. Needs root (debootstrap) and Debian's mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${SVS_ROOTFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/svs-rootfs}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have debian:bookworm-slim; then
  if [ ! -f "$cache/bookworm/.complete" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    rm -rf "$cache/bookworm"
    mkdir -p "$cache"
    echo "debootstrapping bookworm into $cache/bookworm"
    debootstrap --variant=minbase bookworm "$cache/bookworm" "$mirror" >/dev/null
    rm -rf "$cache/bookworm/var/lib/apt/lists/"* "$cache/bookworm/var/cache/apt/"*.bin
    touch "$cache/bookworm/.complete"
  fi
  echo "importing debian:bookworm-slim"
  tar -C "$cache/bookworm" --exclude=./.complete -c . |
    docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - debian:bookworm-slim >/dev/null
fi

lock_hash="$(sha256sum Cargo.lock | cut -c1-16)"
if have rust:1-bookworm; then
  staged_for="$(docker image inspect -f '{{ index .Config.Labels "svs.cargo-lock" }}' rust:1-bookworm 2>/dev/null || true)"
  if [ "$staged_for" != "$lock_hash" ]; then
    echo "rust:1-bookworm holds the crates of another Cargo.lock: making it again"
    docker rmi rust:1-bookworm >/dev/null
  fi
fi

if ! have rust:1-bookworm; then
  cargo fetch --locked >/dev/null
  sysroot="$(rustc --print sysroot)"
  cargo_home="${CARGO_HOME:-$HOME/.cargo}"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  echo "staging the Rust toolchain from $sysroot and crates from $cargo_home/registry"
  mkdir -p "$stage/rust" "$stage/cargo/registry"
  cp -a "$sysroot/bin" "$sysroot/lib" "$stage/rust/"
  cp -a "$cargo_home/registry/index" "$cargo_home/registry/cache" "$stage/cargo/registry/"
  cat > "$stage/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
COPY cargo /usr/local/cargo
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo \
    CARGO_NET_OFFLINE=true
DOCKERFILE
  echo "LABEL svs.cargo-lock=$lock_hash" >> "$stage/Dockerfile"
  echo "building rust:1-bookworm"
  docker build -q -t rust:1-bookworm "$stage" >/dev/null
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|rust:1-bookworm) '
