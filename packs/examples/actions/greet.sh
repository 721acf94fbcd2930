#!/bin/sh
# greet.sh NAME [--shout] [--times=N]
set -eu
name="$1"; shift
shout=false; times=1
for arg in "$@"; do
  case "$arg" in
    --shout) shout=true ;;
    --times=*) times="${arg#--times=}" ;;
  esac
done
greeting="hello, $name"
[ "$shout" = true ] && greeting=$(printf '%s' "$greeting" | tr '[:lower:]' '[:upper:]')
i=0
while [ "$i" -lt "$times" ]; do
  echo "$greeting"
  i=$((i + 1))
done
