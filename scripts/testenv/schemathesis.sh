#!/usr/bin/env bash
# schemathesis (PyPI) for the OpenAPI test (tests/e2e/openapi.rs): installed
# once into a cached virtualenv and reused. Prints `export SCHEMATHESIS=...`.
#
#   eval "$(bash scripts/testenv/schemathesis.sh)"
#
# The virtualenv lives in $SQUALL_TESTENV_CACHE (default ~/.cache/squall-testenv).
set -euo pipefail
CACHE=${SQUALL_TESTENV_CACHE:-$HOME/.cache/squall-testenv}
VENV=$CACHE/schemathesis-venv
BIN=$VENV/bin/schemathesis
if ! [ -x "$BIN" ] || ! "$BIN" --version >/dev/null 2>&1; then
  echo "installing schemathesis into $VENV (one time)..." >&2
  mkdir -p "$CACHE"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4.32,<5' >&2
fi
echo "export SCHEMATHESIS=$BIN"
