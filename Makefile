# `make repro`: set up (idempotent) and run the pipeline. `make test`: set up and run the tests.
# `make study STUDY=<name> [SCALE=cpu|paper|smoke]`: set up and run one study of the paper (see README).
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# What FFCV compiles against when pip builds it from source.
APT_PACKAGES := pkg-config libopencv-dev libturbojpeg0-dev
# What only the tests need: a real single-node SLURM (the dispatcher's tests), a browser (`dvc plots show`) and
# QEMU's user-mode emulator (other CPU models: tests/test_fingerprint.py, make check-repro CPU=...).
TEST_APT_PACKAGES := slurm-wlm munge chromium qemu-user
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUN := PATH="$(BIN):$$PATH"

.PHONY: setup repro test check-repro study dispatch bundle system-packages test-system-packages apt
setup: system-packages $(STAMP)

system-packages:
	@$(MAKE) -s apt PACKAGES="$(APT_PACKAGES)"

test-system-packages:
	@$(MAKE) -s apt PACKAGES="$(TEST_APT_PACKAGES)"

apt:
	@dpkg -s $(PACKAGES) >/dev/null 2>&1 || { \
	  echo "installing system packages: $(PACKAGES)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(PACKAGES); }

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || python3.11 -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

repro: setup
	$(RUN) dvc repro

# `make check-repro`: rebuild the default experiment from scratch in a scratch clone of HEAD and compare the bytes
# of every output with the committed dvc.lock, explaining any difference (lmc/reproduce.py).
# `make check-repro SCALE=cpu [SAMPLE=6] [SEED=n]`: the same for SAMPLE cells of a scale's studies, drawn by a
# printed seed over models and optimizers, with their data and trunk stages; `CELLS=a,b` names the stages instead
# (of the default experiment without SCALE).
# `CPU=<model>` runs each stage under QEMU's emulation of that CPU model (qemu-x86_64 -cpu help; hours);
# `CPU=<model> QUICK=1` instead compares the fingerprint probe of every model with reports/fingerprints.json.
check-repro: setup
	$(RUN) $(if $(and $(CPU),$(QUICK)),python -m lmc.fingerprint --check --cpu $(CPU),python -m lmc.reproduce $(if $(SCALE),--project studies/$(SCALE)) $(if $(CELLS),--stages $(CELLS),$(if $(SCALE),--sample $(or $(SAMPLE),6) $(if $(SEED),--seed $(SEED)))) $(if $(CPU),--cpu $(CPU)) $(ARGS))

# `make test TEST_WORKERS=n`: the tests on n processes (pytest-xdist); tests that share a module-scoped fixture
# stay on one worker (tests/conftest.py), the others go to whichever is free. 0: all in one process.
TEST_WORKERS ?= 2
test: setup test-system-packages
	$(RUN) python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

# `make dispatch STUDY="table1 fig1" SCALE=paper EXECUTOR=slurm JOBS=64 ARGS="--partition gpu --gpus-per-task 1"`:
# a study's pending cells on workers (lmc/dispatch/; EXECUTOR local and SCALE cpu by default).
dispatch: setup
	@test -n "$(STUDY)" || { echo "usage: make dispatch STUDY=<name> [SCALE=cpu|paper|smoke] [EXECUTOR=local|slurm] [JOBS=n] [ARGS=...]"; exit 2; }
	$(RUN) python -m lmc.dispatch $(STUDY) --scale $(or $(SCALE),cpu) --executor $(or $(EXECUTOR),local) --jobs $(or $(JOBS),1) $(ARGS)

# `make study STUDY=table1 SCALE=paper`: one of the paper's tables/figures (studies/studies.yaml) at one scale
# (cpu by default), cell by cell, into studies/<scale>/ and reports/<scale>/; no other scale reruns.
study: setup
	@test -n "$(STUDY)" || { echo "usage: make study STUDY=<name> [SCALE=cpu|paper|smoke] (see studies/studies.yaml)"; exit 2; }
	$(RUN) python -m lmc.studies_dvc --repro $(STUDY) --scale $(or $(SCALE),cpu)

# `make bundle PYTHON=3.12`: wheels of DVC and all it pulls in, for a bare machine with that Python (and torch)
# but no network: the archive executor's runner installs them there (lmc/bundle.py; README: a bare machine).
bundle: setup
	$(RUN) python -m lmc.bundle --python $(or $(PYTHON),3.12) --out $(or $(BUNDLE_DIR),.bundle)
