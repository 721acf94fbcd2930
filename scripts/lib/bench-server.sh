# Sourced by the HTTP benchmarks: start a release `squall serve` on a fresh
# database and stop it (and drop the database) on exit.
#
#   bench_server_start BACKEND [VAR=value ...]   # extra environment for serve
#
# Sets: work (temp dir), port, db, name (PostgreSQL database), pid, key.
bench_server_start() {
  local backend=$1
  shift
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/squall-target}"
  cargo build --locked --release -p squall >/dev/null
  local bin="$CARGO_TARGET_DIR/release/squall"
  work=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  case "$backend" in
    sqlite) db="sqlite://$work/squall.db" ;;
    postgres)
      name="squall_bench_$$"
      psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $name" >/dev/null
      db="postgres://postgres@127.0.0.1:5432/$name" ;;
    *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
  esac
  BENCH_BACKEND=$backend
  trap bench_server_stop EXIT
  env SQUALL_LISTEN="127.0.0.1:$port" SQUALL_DATA_DIR="$work" SQUALL_DATABASE_URL="$db" \
    SQUALL_LOG=warn "$@" "$bin" serve &
  pid=$!
  until curl -sf "127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done
  key=$(cat "$work/admin-api-key")
}

bench_server_stop() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ "${BENCH_BACKEND:-}" = postgres ] && psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
  rm -rf "$work"
}
