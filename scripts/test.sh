#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need
# (ffmpeg/ffprobe, mosquitto and its clients; later redis, nginx-rtmp, chromium) when missing, then runs
# formatting, lints, unit/property/integration tests, docs and the purity check.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

echo "== purity: no tokio or std::net in sans-IO code"
if grep -rnE 'tokio|std::net' src/codec/ src/control/demand.rs | grep -vE '^[^:]+:[0-9]+:\s*//'; then
  echo "src/codec and src/control/demand.rs must stay sans-IO (no tokio, no std::net)" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --all-targets

echo "== cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --quiet

if command -v cargo-fuzz >/dev/null 2>&1 && rustup toolchain list 2>/dev/null | grep -q nightly; then
  echo "== cargo fuzz: build and a short smoke run"
  cargo +nightly fuzz build --fuzz-dir fuzz -O jt1078_decoder
  cargo +nightly fuzz run --fuzz-dir fuzz -O jt1078_decoder -- -max_total_time=20 -rss_limit_mb=1024
fi
echo "== all tests passed"
