#!/usr/bin/env bash
# Memory across a long series of events: the release daemon with two UDP
# legs on the test source, CYCLES times (120 by default) schedule, arm,
# 2 s on the slate, abort; the daemon's VmRSS, threads and open files
# every 10 cycles. A flat series is the goal (issue 15, defect 11).
#
#   benches/soak.sh
#   CYCLES=40 benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --release --locked --bin simulcastd --bin simulcastctl >&2
CYCLES=${CYCLES:-120}
work=$(mktemp -d)
port=46100
daemon=
cleanup() { [ -n "$daemon" ] && kill "$daemon" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/soak.toml" <<TOML
[event]
title = "Soak"
[source]
type = "test"
[program]
width = 480
height = 270
framerate = 25
video_kbps = 800
gop = 25
[[channels]]
id = "kr-kbs"
name = "KBS"
country = "KR"
timezone = "Asia/Seoul"
ingest = { type = "udp", uri = "udp://127.0.0.1:24998" }
[[channels]]
id = "kz-udp"
name = "KZ"
country = "KZ"
timezone = "Asia/Almaty"
ingest = { type = "udp", uri = "udp://127.0.0.1:24996" }
TOML
ctl=target/release/simulcastctl
token=$($ctl --json token create --role admin --name soak --db "$work/s.db" | python3 -c "import sys, json; print(json.load(sys.stdin)['token'])")
target/release/simulcastd serve --db "$work/s.db" --config "$work/soak.toml" --listen "127.0.0.1:$port" \
  --metrics-listen off 2>"${DAEMON_LOG:-$work/daemon.log}" &
daemon=$!
sleep 2
export SIMULCAST_ADDR="http://127.0.0.1:$port" SIMULCAST_TOKEN="$token"
status() { awk '/VmRSS/ {printf "%d MB", $2 / 1024}' "/proc/$daemon/status"; printf ', %s threads, %s fds' "$(ls "/proc/$daemon/task" | wc -l)" "$(ls "/proc/$daemon/fd" | wc -l)"; }
echo "| cycles | daemon |"
echo "|---|---|"
echo "| 0 | $(status) |"
for i in $(seq 1 "$CYCLES"); do
  at=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
  id=$($ctl --json events schedule --title "Soak $i" --at "$at" --duration 1h | python3 -c "import sys, json; print(json.load(sys.stdin)[0]['id'])")
  $ctl events arm "$id" >/dev/null
  sleep 2
  $ctl events abort "$id" >/dev/null
  sleep 2.5   # the abort's 1 s emergency slate, then the pipelines close (off the control loop)
  if [ $((i % 10)) = 0 ]; then echo "| $i | $(status) |"; fi
done
