# Every target sets itself up on a fresh machine: virtualenv, dependencies, a Redis server.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
PYTHON ?= python3

.PHONY: test test-fast demo bench-perf bench-quality bench-reliability lint redis prometheus compose-cli clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

redis: $(STAMP)
	bash deploy/local/ensure-redis.sh $(PY)

# The bias-metrics tests run a real Prometheus (Debian's package; they skip, saying why, without).
prometheus:
	bash deploy/prometheus/ensure-prometheus.sh >/dev/null || true

# `docker-compose.yml` is validated by a Compose CLI (the test skips, saying why, without one).
compose-cli:
	bash deploy/local/ensure-compose.sh >/dev/null || true

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint redis prometheus compose-cli
	$(PY) -m pytest -q -rs

# The developer loop: everything but the end-to-end tests marked `slow` (CI runs them all).
test-fast: lint redis
	$(PY) -m pytest -q -rs -m "not slow"

demo: redis
	$(PY) -m deploy.local.demo

bench-perf: redis
	$(PY) -m bench.perf

# COMPAS, Adult and MNIST are the slices vendored in blackbox/data and bench/data.
bench-quality: redis
	$(PY) -m bench.quality

# Redis and black-box faults, tampering, hot-swaps, body bombs, fuzzing: real processes on
# loopback with a Redis of its own (about five minutes; `python -m bench.reliability --quick`).
bench-reliability: redis
	$(PY) -m bench.reliability

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .hypothesis
