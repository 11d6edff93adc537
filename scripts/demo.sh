#!/usr/bin/env bash
# The demo: installs what is missing, then relays the embedded "Silk Way Star"
# grand final to 12 local stand-in ingests with a live table (Ctrl-C stops it).
# Extra arguments go to `simulcastd demo` (e.g. --duration 30s, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo run --locked --release --bin simulcastd -- demo "$@"
