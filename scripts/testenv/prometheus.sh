#!/usr/bin/env bash
# Make sure Prometheus (Debian package prometheus) is installed for the
# metrics test; the test starts its own instance on loopback, scraping a
# squall server. Installs it with apt-get when missing.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
echo "Prometheus is not installed; installing it (apt-get)..." >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
