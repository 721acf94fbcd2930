#!/usr/bin/env bash
# Run squall's whole test suite: unit tests, the store suite on SQLite and
# PostgreSQL, and the end-to-end tests (real HTTP, real child processes).
# Starts PostgreSQL when it is installed but not running; installs it when
# missing (Debian). Builds into $CARGO_TARGET_DIR (default
# ~/.cache/squall-target) so repeated runs and fresh clones stay warm.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/squall-target}"

bash scripts/ensure-postgres.sh
bash scripts/testenv/alertmanager.sh
bash scripts/testenv/prometheus.sh
# schemathesis (PyPI) for the OpenAPI test, in a cached virtualenv.
eval "$(bash scripts/testenv/schemathesis.sh)"
# aiosmtpd (PyPI), the SMTP sink core.sendmail is tested against.
eval "$(bash scripts/testenv/aiosmtpd.sh)"

# A real Matrix homeserver for the Matrix tests (installed once into a cached
# virtualenv, stopped again when the tests end).
eval "$(bash scripts/testenv/synapse.sh up)"
trap 'bash scripts/testenv/synapse.sh stop' EXIT

# The e2e suite runs the real `squall` binary (crash tests, CLI tests).
cargo build --locked -p squall
cargo test --locked --workspace "$@"
