# make demo: the embedded stack end to end.  make test: the whole suite.
# make lint: ruff, then mypy (configured in pyproject.toml).
# Each creates .venv and installs the project on a fresh machine; nothing else is needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= .agentledger/demo
DEMO_RUNS ?= 300

.PHONY: demo test lint bench schemas clean chromium

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	@DEMO_DIR=$(DEMO_DIR) DEMO_RUNS=$(DEMO_RUNS) BIN=$(BIN) bash scripts/demo.sh

# The report test drives headless Chromium (Debian's package); install it when missing.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "could not install chromium: the browser tests will say so"

test: $(STAMP) chromium
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_sdk.py
	$(BIN)/python bench/bench_sink.py
	$(BIN)/python bench/bench_control.py
	$(BIN)/python bench/faust_ceiling.py
	$(BIN)/python bench/bench_decisions.py
	$(BIN)/python bench/bench_policy.py
	$(BIN)/python bench/bench_otlp.py
	$(BIN)/python bench/bench_e2e.py
	$(BIN)/python bench/bench_queries.py

schemas: $(STAMP)
	$(BIN)/python -m agentledger.schemas.export
	$(BIN)/python -m agentledger.schemas.vectors

clean:
	rm -rf $(VENV) .agentledger .pytest_cache .ruff_cache
