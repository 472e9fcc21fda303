#!/usr/bin/env bash
# Make sure a `prometheus` server binary (and its `promtool`) is installed; print its path.
#   1. already on PATH → nothing to do
#   2. apt-get is usable (root on Debian/Ubuntu) → install Debian's `prometheus` package
#      (--no-install-recommends: no node exporter; in containers the packaged service is not
#      started, and the tests run their own server on a free loopback port anyway)
#   3. otherwise → exit 1 saying why (the tests that need it then skip with that reason)
# Usage: ensure-prometheus.sh   (stdout: the binary's path; progress on stderr)
set -euo pipefail

if command -v prometheus >/dev/null; then command -v prometheus; exit 0; fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "prometheus: not installed, and apt-get is not usable here (needs root on Debian/Ubuntu)" >&2
  exit 1
fi
echo "prometheus: installing Debian's prometheus package" >&2
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
if ! install >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && install >/dev/null
fi
command -v prometheus
