# Beffroi — the two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

## demo: create .venv, install, start the simulated metropolis, the gateway and the HMI
demo: $(VENV)/.installed
	$(BIN)/beffroi demo --config config.toml

## system-deps: Debian packages the tests start for real (chromium)
system-deps:
	bash scripts/system-deps.sh

## lint: ruff over sources and tests, mypy over the sources (strict on core/ and app/)
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/mypy

## test: install what tests need, lint, run the suite
test: $(VENV)/.installed-test system-deps lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var .pytest_cache tests/artifacts
