# `make repro`: set up (idempotent) and run the pipeline. `make test`: set up and run the tests.
# `make study STUDY=<name>`: set up and run one study of the paper (see README).
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# What FFCV compiles against when pip builds it from source.
APT_PACKAGES := pkg-config libopencv-dev libturbojpeg0-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUN := PATH="$(BIN):$$PATH"

.PHONY: setup repro test study system-packages
setup: system-packages $(STAMP)

system-packages:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  echo "installing system packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(APT_PACKAGES); }

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || python3.11 -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

repro: setup
	$(RUN) dvc repro

test: setup
	$(RUN) python -m pytest

# `make study STUDY=table1`: one of the paper's tables/figures (studies/studies.yaml), cell by cell.
study: setup
	@test -n "$(STUDY)" || { echo "usage: make study STUDY=<name> (see studies/studies.yaml)"; exit 2; }
	$(RUN) dvc repro studies/dvc.yaml:report-$(STUDY)
