#!/usr/bin/env bash
# What scraping /metrics costs the gateway at N live streams (docs/benchmarks.md §11): a
# release gateway on loopback ports 27078-27884, N simulated devices looping a small
# recording, then the gateway's CPU time (from /proc/PID/stat) over a burst of SCRAPES
# scrapes against its baseline rate with the same streams and no scrape.
# Usage: cargo build --release --bin jt1078-gateway && scripts/bench-metrics.sh
#        (N=1000 SCRAPES=300 PER_STREAM=false by default)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
BIN=${BIN:-$root/target/release/jt1078-gateway}
N=${N:-1000}
FILE=${FILE:-$root/tests/data/h264-012345678999-ch1.jt1078}
SCRAPES=${SCRAPES:-300}
work="$(mktemp -d)"
cd "$work"
cat > gw.toml <<EOT
[ingest]
live_listen = "127.0.0.1:27078"
playback_listen = "127.0.0.1:27079"
[http]
listen = "127.0.0.1:27080"
[webrtc]
enabled = false
[mqtt]
embedded_listen = "127.0.0.1:27883"
embedded_ws_listen = "127.0.0.1:27884"
[metrics]
per_stream = ${PER_STREAM:-false}
[log]
level = "warn"
EOT
$BIN serve --config gw.toml > gw.log 2>&1 &
GW=$!
SIM=""
trap 'kill $GW $SIM 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1
$BIN simulate --file "$FILE" --server 127.0.0.1:27078 --device 13900000000 --devices "$N" --loop > sim.log 2>&1 &
SIM=$!
for i in $(seq 1 120); do
  n=$(curl -s 127.0.0.1:27080/metrics | awk '/^jt1078_streams\{/ {s+=$2} END {print s+0}')
  [ "$n" -ge "$N" ] && break
  sleep 1
done
echo "streams live: $n"
ticks() { awk '{print $14+$15}' /proc/$GW/stat; }
hz=$(getconf CLK_TCK)
# baseline: the streams alone, 20 s
t0=$(ticks); s0=$(date +%s.%N); sleep 20; t1=$(ticks); s1=$(date +%s.%N)
base=$(echo "($t1-$t0)/$hz/($s1-$s0)" | bc -l)
# burst: SCRAPES scrapes back to back
bytes=$(curl -s 127.0.0.1:27080/metrics | wc -c)
t2=$(ticks); s2=$(date +%s.%N)
for i in $(seq 1 "$SCRAPES"); do curl -s -o /dev/null 127.0.0.1:27080/metrics; done
t3=$(ticks); s3=$(date +%s.%N)
burst=$(echo "($t3-$t2)/$hz" | bc -l)
wall=$(echo "$s3-$s2" | bc -l)
per=$(echo "($burst-$base*$wall)/$SCRAPES" | bc -l)
printf 'streams %s, /metrics %s bytes\n' "$n" "$bytes"
printf 'baseline gateway CPU %.1f %% of one core\n' "$(echo "$base*100" | bc -l)"
printf '%s scrapes in %.2f s: gateway CPU %.3f s, %.2f ms per scrape above the baseline\n' "$SCRAPES" "$wall" "$burst" "$(echo "$per*1000" | bc -l)"
printf 'scraped every second: %.2f %% of one core\n' "$(echo "$per*100" | bc -l)"
