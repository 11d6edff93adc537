#!/usr/bin/env bash
# The test command: installs what is missing, holds the code to its habits
# (rustfmt, clippy with every warning an error, rustdoc without warnings),
# then runs every test (unit tests, and integration tests against
# srt-live-transmit, nginx-rtmp, ffprobe and real sockets on loopback).
# With arguments (e.g. `--test passthrough`), only `cargo test` runs, with
# them.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
if [ $# -eq 0 ]; then
    for c in rustfmt clippy; do
        if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
            rustup component add "$c"
        fi
    done
    echo "== cargo fmt --check" >&2
    cargo fmt --check
    echo "== cargo clippy --all-targets -D warnings" >&2
    cargo clippy --locked --all-targets -- -D warnings
    echo "== cargo doc (warnings are errors)" >&2
    RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
fi
cargo test --locked "$@"
