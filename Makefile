# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint unit bench services serve clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@# ctok (Claude token counts) declares Python >= 3.12 but runs on 3.11; optional.
	$(BIN)/pip install -q --ignore-requires-python 'ctok>=1.3' || \
		echo "ctok not installed: Claude token counts will be approximated from o200k"
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/spendgate demo

serve: $(VENV)/.installed
	$(BIN)/spendgate serve --simulated

services:
	@scripts/services.sh

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

unit: $(VENV)/.dev services
	$(BIN)/pytest -q

test: lint unit

bench: $(VENV)/.dev
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
