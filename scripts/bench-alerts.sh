#!/usr/bin/env bash
# Benchmark: alert intake. wrk posts Alertmanager notifications that each
# group 100 alerts to /api/v1/alerts/alertmanager on a release build with a
# fresh SQLite (or PostgreSQL) database; de-duplication is off so every alert
# is stored. Prints alerts stored (durable before the 202) per second.
#
#   scripts/bench-alerts.sh [sqlite|postgres] [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
seconds=${2:-10}
connections=${3:-16}
# shellcheck source=lib/bench-server.sh
source scripts/lib/bench-server.sh
bench_server_start "$backend" SQUALL_PACKS='["packs"]' SQUALL_ALERTS__DEDUP_SECONDS=0
python3 - "$work/body.json" <<'PY'
import json, sys
alerts = [{
    "status": "firing",
    "labels": {"alertname": "BenchAlert", "instance": f"host{i}:9100", "job": "node", "severity": "warning"},
    "annotations": {"summary": f"benchmark alert {i}"},
    "startsAt": "2026-11-25T14:39:18.632084231Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://127.0.0.1:9090/graph",
    "fingerprint": f"{i:016x}",
} for i in range(100)]
body = {"receiver": "squall", "status": "firing", "alerts": alerts,
        "groupLabels": {"alertname": "BenchAlert"}, "commonLabels": {"alertname": "BenchAlert"},
        "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093", "version": "4",
        "groupKey": "{}:{alertname=\"BenchAlert\"}", "truncatedAlerts": 0}
open(sys.argv[1], "w").write(json.dumps(body))
PY
cat > "$work/post.lua" <<LUA
local f = io.open("$work/body.json", "r")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
start=$(date +%s.%N)
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/api/v1/alerts/alertmanager" > "$work/wrk.txt"
end=$(date +%s.%N)
if [ "$backend" = sqlite ]; then
  stored=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT COUNT(*) FROM trigger_instances WHERE trigger='squall.alert'\").fetchone()[0])" "$work/squall.db")
else
  stored=$(psql -qtA -h 127.0.0.1 -U postgres -d "$name" -c "SELECT COUNT(*) FROM trigger_instances WHERE trigger='squall.alert'")
fi
non202=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/wrk.txt" | grep -o '[0-9]*$' || echo 0)
python3 - "$start" "$end" "$stored" "$backend" "$non202" <<'PY'
import sys
start, end = float(sys.argv[1]), float(sys.argv[2])
stored = int(sys.argv[3])
print(f"backend={sys.argv[4]}: {stored} alerts stored ({stored//100} notifications of 100) in {end-start:.2f} s = {stored/(end-start):,.0f} alerts/s; non-2xx answers: {sys.argv[5]}")
PY
grep -E "Latency|50%|99%|Requests/sec" "$work/wrk.txt"
