#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine. Installs what the tests need when it
# is missing: Debian packages for the tools (ffmpeg/ffprobe, mosquitto's clients, redis-cli,
# docker-compose, curl, chromium, npm, prometheus (and its promtool), python3-venv, g++, make,
# pkg-config and libssl-dev); the third-party servers
# the tests run (SRS 6, mosquitto, redis-server, coturn, nginx with its RTMP module) through
# scripts/tools.sh, which finds each in $SRS_BIN-style variables, the PATH or a local tool
# cache, else installs or builds it; a Python venv in target/pyenv (imageio-ffmpeg,
# playwright, paho-mqtt, aiortc); mqtt.js in target/npm; and cargo-fuzz (cargo install, into
# ~/.cargo/bin). Then runs formatting, lints, unit/property/integration tests, the part of
# the suite that needs data and SRS again from a fresh clone of HEAD (nothing beside it),
# docs, the purity check and short fuzz runs. The browser tests drive Debian's chromium
# through playwright (tests/browser/README.md); `playwright install` is never run: it would
# download browsers.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v curl >/dev/null 2>&1 || need+=(curl)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# the AAC encoder (fdk-aac) is C++ built from source by cargo
command -v g++ >/dev/null 2>&1 || need+=(g++)
# jemalloc, the gateway's allocator, is built from source with configure and make
command -v make >/dev/null 2>&1 || need+=(make)
# WebRTC's DTLS and SRTP link the system's OpenSSL (str0m's openssl backend)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
# the WebRTC tests play in a real browser, with mqtt.js from npm for MQTT over WebSocket
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
# the metrics tests scrape the gateway with a real Prometheus and check /metrics with promtool
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

echo "== third-party servers (scripts/tools.sh): SRS, mosquitto, redis, coturn, nginx-rtmp, Garage"
tool_env="$(scripts/tools.sh srs mosquitto redis-server turnserver nginx garage)"
eval "$tool_env"

echo "== no code, test or script reads the shared folder beside the clone (data is in tests/data)"
# scripts/tools.sh may: it is the one place that looks for a tool cache there
if grep -rn --exclude=tools.sh '\.\./shared' src tests benches examples scripts crates; then
  echo "the lines above read files outside the repository: test data and fixtures belong in it" >&2
  exit 1
fi

echo "== python venv with imageio-ffmpeg (an ffmpeg that reads HEVC in FLV, for the RTMP push tests)"
[ -x target/pyenv/bin/python ] || python3 -m venv target/pyenv
target/pyenv/bin/python -c 'import imageio_ffmpeg' >/dev/null 2>&1 \
  || target/pyenv/bin/pip install -q imageio-ffmpeg

echo "== playwright and paho-mqtt in the venv (drive /usr/bin/chromium; no browser download)"
target/pyenv/bin/python -c 'import playwright.sync_api' >/dev/null 2>&1 \
  || target/pyenv/bin/pip install -q playwright
target/pyenv/bin/python -c 'import paho.mqtt.client' >/dev/null 2>&1 \
  || target/pyenv/bin/pip install -q paho-mqtt
echo "== aiortc in the venv (a second WebRTC stack as the gateway's peer, tests/webrtc_aiortc.rs)"
target/pyenv/bin/python -c 'import aiortc' >/dev/null 2>&1 \
  || target/pyenv/bin/pip install -q aiortc

echo "== mqtt.js (v5) in target/npm (the browser pages' MQTT client, served locally)"
[ -e target/npm/node_modules/mqtt/dist/mqtt.min.js ] \
  || npm install --prefix target/npm mqtt@5 --no-audit --no-fund
echo "== mpegts.js (v1) in target/npm (the FLV player of the WS-FLV wall test, served locally)"
[ -e target/npm/node_modules/mpegts.js/dist/mpegts.js ] \
  || npm install --prefix target/npm mpegts.js@1 --no-audit --no-fund
echo "== hls.js (v1) in target/npm (the HLS player of the recordings' browser test, served locally)"
[ -e target/npm/node_modules/hls.js/dist/hls.js ] \
  || npm install --prefix target/npm hls.js@1 --no-audit --no-fund

echo "== browser harness self-test (headless chromium plays a canvas to itself over WebRTC)"
target/pyenv/bin/python tests/browser/selftest.py

echo "== purity: no tokio or std::net in sans-IO code"
if grep -rnE 'tokio|std::net' crates/jt1078-codec/src/ src/control/demand.rs | grep -vE '^[^:]+:[0-9]+:\s*//'; then
  echo "crates/jt1078-codec and src/control/demand.rs must stay sans-IO (no tokio, no std::net)" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
test_log="$(mktemp)"
cargo test --workspace --all-targets 2>&1 | tee "$test_log"
# one summary line over every test binary (the last binary run is the benchmark in test
# mode, whose own line says 0)
summary="$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$test_log")"
rm -f "$test_log"

echo "== from a fresh clone of HEAD with nothing beside it: the tests that need data and SRS"
fresh="$(mktemp -d)"
git clone --quiet --no-hardlinks "$PWD" "$fresh/jt1078-gateway"
fresh_log="$(mktemp)"
# the dependencies come from this checkout's target dir (the clone's own crates build anew
# beside this checkout's: their paths differ; the next build here links its own binaries
# back in place)
(cd "$fresh/jt1078-gateway" && CARGO_TARGET_DIR="$OLDPWD/target" \
  cargo test --quiet --test ingest_flv --test bridge_srs --test bridge_hooks 2>&1) | tee "$fresh_log"
rm -rf "$fresh"
fresh_summary="$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$fresh_log")"
rm -f "$fresh_log"
echo "fresh clone: $fresh_summary"

echo "== cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --quiet

echo "== cargo fuzz (stable toolchain, no sanitizer): build every target, short smoke runs"
# cargo-fuzz drives libFuzzer on stable with `-s none` (sanitizers need nightly; the codec
# forbids unsafe code, so coverage-guided search for panics and over-allocation is what
# matters). Longer runs: see docs/fuzzing.md.
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo fuzz build -s none -O --fuzz-dir fuzz
for target in jt1078_decoder h26x_parameter_sets audio_payloads; do
  corpus="$(mktemp -d)"
  cargo fuzz run -s none -O --fuzz-dir fuzz "$target" "$corpus" -- \
    -max_total_time=15 -rss_limit_mb=1024 -max_len=8192 2>&1 | tail -n 2
  rm -rf "$corpus"
done
echo "== all tests passed in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"
echo "tests: $summary"
