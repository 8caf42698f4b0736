# Set-up and entry points; every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"

demo: install
	$(BIN)/python simulate.py

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/optics_bench.py --json benchmarks/optics_bench.json
