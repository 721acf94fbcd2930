#!/usr/bin/env bash
# aiosmtpd (PyPI): the SMTP sink core.sendmail is tested against
# (tests/e2e/st2core.rs). Installed once into a cached virtualenv and reused.
# Prints `export AIOSMTPD_PYTHON=...` (the virtualenv's python; the test runs
# `python -m aiosmtpd` with it).
#
#   eval "$(bash scripts/testenv/aiosmtpd.sh)"
#
# The virtualenv lives in $SQUALL_TESTENV_CACHE (default ~/.cache/squall-testenv).
set -euo pipefail
CACHE=${SQUALL_TESTENV_CACHE:-$HOME/.cache/squall-testenv}
VENV=$CACHE/aiosmtpd-venv
PY=$VENV/bin/python
if ! [ -x "$PY" ] || ! "$PY" -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "installing aiosmtpd into $VENV (one time)..." >&2
  mkdir -p "$CACHE"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'aiosmtpd>=1.4,<2' >&2
fi
echo "export AIOSMTPD_PYTHON=$PY"
