#!/usr/bin/env bash
# Install the Debian packages that the tests run for real. Needs root for apt-get;
# without it, say what is missing and how to get it.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)

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
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
