#!/usr/bin/env bash
# Install the Debian packages that the tests run for real. Needs root for apt-get;
# without it, say what is missing and how to get it.
set -euo pipefail

# Debian package → the binary the tests start.
declare -A binary=(
  [chromium]=/usr/bin/chromium
  [mosquitto]=/usr/sbin/mosquitto
  [influxdb]=/usr/bin/influxd
  [victoria-metrics]=/usr/bin/victoria-metrics
)
need=()
for pkg in "${!binary[@]}"; do
  [ -x "${binary[$pkg]}" ] || need+=("$pkg")
done
# PostgreSQL's server lives under its major version (15 on Debian 12).
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing Debian packages: ${need[*]}" >&2
  echo "system-deps: run as root, or: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "system-deps: tests that need them will be skipped" >&2
  exit 0
fi

echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Services must not start on their own: the tests start each binary on a free port.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
