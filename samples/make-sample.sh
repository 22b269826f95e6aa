#!/usr/bin/env bash
# Makes samples/sample-h264-g711a.jt1078, the stream the README's quick start replays:
# 10 s of ffmpeg's test pattern (640x360, 25 fps, H.264 Main, a key frame every 2 s) with a
# 1 kHz tone as G.711 A-law, packetised by our own encoder (`jt1078-gateway pack`).
# Run from the repository root: bash samples/make-sample.sh
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ffmpeg -v error -f lavfi -i testsrc=size=640x360:rate=25 -t 10 \
  -c:v libx264 -profile:v main -pix_fmt yuv420p -g 50 -bf 0 -b:v 400k -f h264 "$tmp/video.h264"
ffmpeg -v error -f lavfi -i sine=frequency=1000:sample_rate=8000 -t 10 -ac 1 -f alaw "$tmp/audio.alaw"
cargo run --quiet -- pack --video "$tmp/video.h264" --codec h264 --fps 25 \
  --alaw "$tmp/audio.alaw" --device 13800138000 --channel 1 \
  --out samples/sample-h264-g711a.jt1078
