# Shared by compose-test.sh and cluster-test.sh (sourced, not run): `compose` runs whichever of
# `docker compose` / `docker-compose` exists on the file(s) in COMPOSE_FILE; on exit, `cleanup`
# prints the logs of a failed run and removes every container and volume of the project;
# `ensure_base_images` builds local base images where they cannot be pulled; `healthy SERVICE`
# says whether a service's healthcheck passes; `completed SERVICE` whether a one-shot service
# exited with status 0.

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

work="$(mktemp -d)"
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "--- compose logs (failure) ---"
    compose logs --no-color --tail=80 2>/dev/null || true
  fi
  compose --profile cli down --volumes --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

ensure_base_images() {
  # A local rust:1-bookworm (labelled with the Cargo.lock whose crates it holds) cannot be pulled
  # again: the script remakes it when the lock has changed since, or the offline build fails.
  local staged
  staged="$(docker image inspect -f '{{ index .Config.Labels "svs.cargo-lock" }}' rust:1-bookworm 2>/dev/null || true)"
  if [ -n "$staged" ] && [ "$staged" != "<no value>" ]; then
    ./scripts/build-local-base-images.sh
    return
  fi
  for image in rust:1-bookworm debian:bookworm-slim; do
    if ! docker image inspect "$image" >/dev/null 2>&1 && ! docker pull -q "$image" >/dev/null 2>&1; then
      echo "cannot pull $image: building local base images from Debian packages"
      ./scripts/build-local-base-images.sh
      break
    fi
  done
}

healthy() { [ "$(docker inspect --format '{{.State.Health.Status}}' "$(compose ps -q "$1")" 2>/dev/null)" = healthy ]; }
completed() { [ "$(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$(compose ps -aq "$1")" 2>/dev/null)" = "exited 0" ]; }
