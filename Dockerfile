# syntax=docker/dockerfile:1
# Gateway image: no PyTorch and no training code (`eraser-gateway serve`). `worker` adds the
# training package and the CPU PyTorch build (`eraser worker`); `standin` adds scikit-learn to
# train the stand-in model.
FROM python:3.11.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 eraser
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY blackbox ./blackbox

FROM base AS gateway
RUN pip install .
USER eraser
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live')"
CMD ["eraser-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]

# Training worker: the same code and settings as the gateway plus the `train` extra. PyTorch
# 2.13.0 is installed on its own layer first; pass the package index that serves its CPU build
# as TORCH_INDEX_URL (the default wheel pulls multi-GB CUDA libraries).
FROM base AS worker
ARG TORCH_INDEX_URL=""
COPY patch_training ./patch_training
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    else pip install torch==2.13.0; fi \
 && pip install '.[train]'
USER eraser
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import os, redis; redis.Redis.from_url(os.environ['ERASER_REDIS__URL'], socket_timeout=3).ping()"
CMD ["eraser", "worker"]

FROM base AS standin
RUN pip install . scikit-learn
USER eraser
EXPOSE 9001
CMD ["python", "-m", "blackbox", "serve", "--host", "0.0.0.0", "--port", "9001", \
     "--model-path", "/home/eraser/compas_mlp.npz"]
