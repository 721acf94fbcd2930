#!/usr/bin/env bash
# Workflow benchmarks: per-task overhead of a 1,000-task sequential workflow
# and with-items over 10,000 items at concurrency 100 (SQLite, durable; add
# --postgres for PostgreSQL too).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/squall-target}"
cargo build --release --locked -p squall-tests --bin workflow-bench >/dev/null
SQUALL_LOG=warn "$CARGO_TARGET_DIR/release/workflow-bench" "$@"
