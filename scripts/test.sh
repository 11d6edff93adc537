#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test
# (unit tests, and integration tests against srt-live-transmit, nginx-rtmp,
# ffprobe and real sockets on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo test --locked "$@"
