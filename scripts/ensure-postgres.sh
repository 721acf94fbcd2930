#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for user postgres
# without a password (the store suite creates and drops its own databases).
# Uses SQUALL_TEST_POSTGRES when set and skips all of this.
set -euo pipefail
if [ -n "${SQUALL_TEST_POSTGRES:-}" ]; then
  exit 0
fi
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ready; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL is not installed; installing it (apt-get)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -n | tail -n 1)
hba="/etc/postgresql/$version/main/pg_hba.conf"
if ! grep -q "squall-tests" "$hba"; then
  # Local test server only: trust loopback connections.
  sed -i '1i host all all 127.0.0.1/32 trust # squall-tests' "$hba"
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster --skip-systemctl-redirect "$version" main restart
for _ in $(seq 1 50); do
  ready && exit 0
  sleep 0.2
done
echo "PostgreSQL did not come up on 127.0.0.1:5432; see /var/log/postgresql/" >&2
exit 1
