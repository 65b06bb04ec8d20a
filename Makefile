# Beffroi — the two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo demo-distributed test lint system-deps bench clean proto

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

# Protocol peers Beffroi did not write, whose dependencies clash with Beffroi's (pysparkplug
# needs paho-mqtt 1.x): their own virtualenv, run by the tests as separate processes.
PEER := .venv-peer
$(PEER)/.installed: tests/peers/requirements.txt
	$(PYTHON) -m venv $(PEER)
	$(PEER)/bin/pip install -q -r tests/peers/requirements.txt
	touch $@

## proto: regenerate sparkplug/sparkplug_b_pb2.py from its .proto (protoc of grpcio-tools 1.71)
proto:
	$(PYTHON) -m venv .venv-protoc
	.venv-protoc/bin/pip install -q 'grpcio-tools==1.71.0'
	cd src/beffroi/sparkplug && ../../../.venv-protoc/bin/python -m grpc_tools.protoc -I. \
		--python_out=. --pyi_out=. sparkplug_b.proto

## demo: create .venv, install, start the simulated metropolis, the gateway and the HMI
demo: $(VENV)/.installed
	$(BIN)/beffroi demo --config config.toml

## demo-distributed: the same metropolis on Mosquitto, a central site and two edges
demo-distributed: $(VENV)/.installed system-deps
	bash scripts/demo-distributed.sh

## system-deps: Debian packages the tests start for real (chromium, mosquitto, influxdb,
## victoria-metrics, postgresql)
system-deps:
	bash scripts/system-deps.sh

## lint: ruff over sources and tests, mypy over the sources (strict on core/ and app/)
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/mypy

## test: install what tests need, lint, run the suite
test: $(VENV)/.installed-test $(PEER)/.installed system-deps lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(PEER) .venv-protoc var .pytest_cache tests/artifacts
