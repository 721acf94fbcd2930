#!/usr/bin/env bash
# Benchmark: webhook -> rule -> execution recorded, end to end over HTTP.
#
#   scripts/bench-webhooks.sh [noop|true] [sqlite|postgres] [seconds] [connections]
#
# Starts a release build of `squall serve` on a fresh database with the test
# packs, drives POST /api/v1/webhooks/<hook> with wrk for the given time, waits
# until every accepted webhook's execution has finished, and prints:
#   - webhooks accepted per second (each durable before its 202),
#   - executions recorded per second, from the first request to the last
#     execution finished.
# Needs wrk (apt-get install wrk) and, for postgres, the server on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
hook=${1:-noop}
backend=${2:-sqlite}
seconds=${3:-10}
connections=${4:-32}
# shellcheck source=lib/bench-server.sh
source scripts/lib/bench-server.sh
bench_server_start "$backend" SQUALL_PACKS='["packs","tests/fixtures/bench"]' SQUALL_WORKER__CONCURRENCY="${SQUALL_WORKER__CONCURRENCY:-512}"
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["St2-Api-Key"] = "$key"
LUA
start=$(date +%s.%N)
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/api/v1/webhooks/$hook" > "$work/wrk.txt"
sent_end=$(date +%s.%N)
# Wait for the queue to drain: no execution requested or running.
query() {
  if [ "$backend" = sqlite ]; then
    python3 - "$work/squall.db" "$1" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=30)
print(con.execute(sys.argv[2]).fetchone()[0])
PY
  else
    psql -qtA -h 127.0.0.1 -U postgres -d "$name" -c "$1"
  fi
}
while [ "$(query "SELECT COUNT(*) FROM executions WHERE status IN ('requested','running')")" != 0 ]; do sleep 0.05; done
done_at=$(date +%s.%N)
accepted=$(query "SELECT COUNT(*) FROM trigger_instances")
succeeded=$(query "SELECT COUNT(*) FROM executions WHERE status = 'succeeded'")
total=$(query "SELECT COUNT(*) FROM executions")
non202=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/wrk.txt" | grep -o '[0-9]*$' || echo 0)
python3 - "$start" "$sent_end" "$done_at" "$accepted" "$succeeded" "$total" "$hook" "$backend" "$non202" <<'PY'
import sys
start, sent_end, done_at = map(float, sys.argv[1:4])
accepted, succeeded, total = map(int, sys.argv[4:7])
hook, backend, non202 = sys.argv[7], sys.argv[8], sys.argv[9]
print(f"hook={hook} backend={backend}")
print(f"webhooks accepted (202, durable): {accepted} in {sent_end-start:.2f} s = {accepted/(sent_end-start):,.0f}/s; non-2xx answers: {non202}")
print(f"executions recorded: {succeeded} succeeded of {total}, last finished {done_at-start:.2f} s after start = {succeeded/(done_at-start):,.0f}/s")
PY
grep -E "Latency|50%|99%|Requests/sec" "$work/wrk.txt"
