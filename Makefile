# Every target sets itself up on a fresh machine: virtualenv, dependencies, a Redis server.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
PYTHON ?= python3

.PHONY: test test-fast demo bench-perf bench-quality bench-reliability bench-gpu lint redis prometheus compose-cli browser-deps clean

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

# /docs is checked in a headless DOM (jsdom, pinned by its lockfile; the test skips, saying why,
# without node and npm).
browser-deps:
	cd tests/service/api/browser && { command -v npm >/dev/null && npm ci --no-audit --no-fund --silent || echo "npm not found: the headless /docs check will skip"; }

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint redis prometheus compose-cli browser-deps
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

# The patch stage on a GPU (docs/operations.md#gpu): CUDA vs raw ONNX Runtime with I/O binding at
# batch 1, 32, 256, fp16 parity; bench/results/gpu.json only from a CUDA run. Here it exports the
# patches and measures the CPU provider into .cache/. On the lent GPU machine, with no venv:
# `make bench-gpu PY=python3 GPU_BENCH_ARGS='--patches /tmp/gpu-bench'` (PYTHONPATH=/tmp/site).
GPU_BENCH_ARGS ?=
bench-gpu: $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))
	$(PY) -m bench.gpu $(GPU_BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .hypothesis
