# Set-up and entry points; every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages for the flashing tests (a real sshd on 127.0.0.1) and the viewer-page test (headless Chromium).
SYSTEM_PACKAGES := openssh-server chromium

.PHONY: install system-deps lint demo test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# LenslessPiCam's package (the outside ADMM reconstruction attacker) goes in without its own requirements, which
# pin numpy 1.26 and pull hydra, paramiko and rawpy; its ADMM needs only numpy, scipy, torch and matplotlib. It
# declares Python < 3.12: elsewhere that attacker and its test skip and say why. torchattacks (Face Encryption's
# FGSM / PGD) goes in the same way: its requirements pull a torchvision built against another torch build (whose
# missing operators break lensless' import) and pin requests 2.25; it needs only torch.
install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/pip install -q --no-deps "lensless==1.0.8" || echo "note: lensless not installed; the admm attacker is unavailable"
	$(BIN)/pip install -q --no-deps "torchattacks==3.5.1"

# Installs the Debian packages where they are missing and apt-get can run as root; elsewhere the
# tests that need them skip and say why.
system-deps:
	@if command -v /usr/sbin/sshd >/dev/null && command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	else echo "note: $(SYSTEM_PACKAGES) not installed (needs root and apt-get); the flashing and viewer tests will skip"; fi

# Style (ruff lint and format, 120 columns) and the floors of docs/architecture.md (import-linter).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

demo: install
	$(BIN)/python simulate.py

test: install system-deps lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/optics_bench.py --json benchmarks/results/optics_bench.json
