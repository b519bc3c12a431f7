# The two commands of the README: `make run` (install, then the main job) and `make test`.
# Both create .venv on first use. torch is pinned first: `torch==2.13.0` is the CPU build
# that lies on our machines' disk; a looser requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install run test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/colpg db upgrade
	$(BIN)/colpg db status

test: install
	$(BIN)/python -m pytest
