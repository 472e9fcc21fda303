#!/usr/bin/env bash
# Make sure a Compose CLI can validate docker-compose.yml; print the command to use.
#   1. `docker compose` (the v2 plugin) works → use it
#   2. `docker-compose` is on PATH → use it
#   3. apt-get is usable (root on Debian/Ubuntu) → install Debian's `docker-compose` package
#      (v1.29: it validates files against the Compose Specification schema, needs no engine
#      for `config`)
#   4. otherwise → exit 1 saying why (the test then skips with that reason)
set -euo pipefail

if docker compose version >/dev/null 2>&1; then echo "docker compose"; exit 0; fi
if command -v docker-compose >/dev/null; then echo "docker-compose"; exit 0; fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "compose: no docker compose plugin or docker-compose, and apt-get is not usable here" >&2
  exit 1
fi
echo "compose: installing Debian's docker-compose package" >&2
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; }
if ! install >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && install >/dev/null
fi
command -v docker-compose >/dev/null && echo "docker-compose"
