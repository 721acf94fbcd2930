#!/usr/bin/env bash
# Matrix command -> reply latency of squall beside an echo-client floor, on a
# separate Synapse whose database is on tmpfs (its fsync would dominate
# otherwise). Prints median and p95 for both.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/squall-target}"
export SQUALL_TESTENV=/dev/shm/squall-bench-env SYNAPSE_PORT=8018 SYNAPSE_DB_DIR=/dev/shm/squall-bench-env/db
eval "$(bash scripts/testenv/synapse.sh up)"
trap 'bash scripts/testenv/synapse.sh stop' EXIT
# Debug build: both sides (squall and the echo floor) are matrix-sdk in the
# same profile, and the homeserver dominates the latency.
cargo build --locked -p squall-tests --bin matrix-latency >/dev/null
SQUALL_LOG=warn "$CARGO_TARGET_DIR/debug/matrix-latency"
