#!/bin/sh
# Runs the script named by the first argument with the remaining arguments.
# Arguments arrive as argv, so nothing here is re-parsed by a shell.
set -eu
script="$1"
shift
if [ -z "${1-}" ]; then
  shift || true
  exec "$script" "$@"
fi
exec "$script" "$@"
