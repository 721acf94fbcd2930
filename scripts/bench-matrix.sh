#!/usr/bin/env bash
# Matrix command -> result latency of squall beside an echo-client floor, on
# a separate Synapse whose database is on tmpfs (its fsync would dominate
# otherwise). Prints median and p95 for both, and the time to the final
# message after kill -9 and a restart of the squall binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/squall-target}"
export SQUALL_TESTENV=/dev/shm/squall-bench-env SYNAPSE_PORT=8018 SYNAPSE_DB_DIR=/dev/shm/squall-bench-env/db
eval "$(bash scripts/testenv/synapse.sh up)"
trap 'bash scripts/testenv/synapse.sh stop' EXIT
# Release build, both sides (squall and the echo floor are matrix-sdk in the
# same profile): what users run.
cargo build --locked --release -p squall -p squall-tests --bin squall --bin matrix-latency >/dev/null
SQUALL_LOG=warn "$CARGO_TARGET_DIR/release/matrix-latency"
