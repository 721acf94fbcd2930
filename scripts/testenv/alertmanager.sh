#!/usr/bin/env bash
# Make sure Prometheus Alertmanager (Debian package prometheus-alertmanager)
# is installed for the end-to-end tests; the tests start their own instance
# on loopback. Installs it with apt-get when missing.
set -euo pipefail
if command -v prometheus-alertmanager >/dev/null 2>&1; then
  exit 0
fi
echo "Prometheus Alertmanager is not installed; installing it (apt-get)..." >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null
