# Two set-up commands (see README):
#   make quickstart   install into .venv, then run `sakd quickstart` on the embedded data (CPU, < 5 min)
#   make test         install into .venv (with test tools), then run the test suite
# constraints.txt pins the CPU wheel of torch (and every other dependency) for reproducible installs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint install

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/sakd quickstart

test: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/pytest -n 2 --dist loadgroup --durations=15

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
