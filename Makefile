# Two commands do all the set-up on a fresh machine with Python 3.10+:
#   make demo   creates .venv, installs tmstarget, builds the demo dataset, runs the whole workflow
#   make test   installs and runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_BIDS ?= demo/bids
DEMO_OUT ?= demo/out
CORES ?= 2

.PHONY: install demo test test-fast test-acceptance benchmark clean reliability-docs cohort-docs

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	touch $@

install: $(BIN)/.installed

$(DEMO_BIDS)/dataset_description.json: | $(BIN)/.installed
	$(BIN)/tmstarget demo-data $(DEMO_BIDS)

demo: install $(DEMO_BIDS)/dataset_description.json
	$(BIN)/tmstarget $(DEMO_BIDS) $(DEMO_OUT) group --config config/demo.yaml --cores $(CORES)

# Tests run on TEST_WORKERS pytest-xdist workers; tests/conftest.py puts every test that reads the shared
# demo workflow run on one worker and starts the longest files first. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest -q -ra $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

# the import contract first (pyproject.toml [tool.importlinter]: a package imports only its own and lower
# layers), then every kind of check (unit, whole demo workflow, real scans, browser, SLURM, kill-and-resume)
# in < 20 min
test: install
	$(BIN)/lint-imports
	$(PYTEST) -m "not acceptance"

# the longer acceptance runs (registration invariance cases, one workflow each); .ci/run runs them too
test-acceptance: install
	$(PYTEST) -m acceptance

test-fast: install
	$(BIN)/lint-imports
	$(PYTEST) -m "not slow and not acceptance"

# Wall time and peak memory: every stage of the demo run (Snakemake benchmark files), the built-in
# preprocessing step by step, and denoise + seed map next to plain nilearn on a demo-sized and a
# 600-volume 2 mm MNI run; the scaling of realignment, preprocess_bold, denoise and seed map with run size
# (3 mm x 200 to 2 mm x 1200 volumes) and the old/new realignment cost ratio.
benchmark: demo
	$(BIN)/python benchmarks/workflow_stages.py $(DEMO_OUT)
	$(BIN)/python benchmarks/bench_preprocessing.py
	$(BIN)/python benchmarks/bench_denoise_seedmap.py
	$(BIN)/python benchmarks/scaling.py

# docs/reliability.md and docs/reliability_halves.md regenerated from an empty cache folder: gate-accepted
# preparation of the real runs and the demo workflow, the protocol run (benchmarks/reliability_bench.py), the
# split-half measurements (benchmarks/reliability_halves.py) and the pages from their JSON output (both runs
# first: a page written into docs/ would mark the tree dirty for the next run's commit line).
RELIABILITY_BENCH ?= $(HOME)/.cache/tmstarget/bench-protocol
reliability-docs: install
	rm -rf $(RELIABILITY_BENCH)
	TMSTARGET_BENCH=$(RELIABILITY_BENCH) $(BIN)/python benchmarks/reliability_bench.py prepare
	TMSTARGET_BENCH=$(RELIABILITY_BENCH) $(BIN)/python benchmarks/reliability_bench.py run
	TMSTARGET_BENCH=$(RELIABILITY_BENCH) $(BIN)/python benchmarks/reliability_halves.py run
	TMSTARGET_BENCH=$(RELIABILITY_BENCH) $(BIN)/python benchmarks/reliability_bench.py docs
	TMSTARGET_BENCH=$(RELIABILITY_BENCH) $(BIN)/python benchmarks/reliability_halves.py docs

# docs/cohort_benchmark.md regenerated from an empty bench folder (issue 23, item 4): N = 10, 100, 1000
# hard-linked subjects of the raw and the fMRIPrep route; planning, dry run, one job's parse, group report
# (benchmarks/cohort.py run: 41 min at 4ae4cb7 on 2 cores at load 2-19, after its two one-subject workflow
# runs of the sources), then the page from its JSON.
COHORT_BENCH ?= $(HOME)/.cache/tmstarget/cohort
cohort-docs: install
	rm -rf $(COHORT_BENCH)
	TMSTARGET_COHORT_BENCH=$(COHORT_BENCH) $(BIN)/python benchmarks/cohort.py run
	TMSTARGET_COHORT_BENCH=$(COHORT_BENCH) $(BIN)/python benchmarks/cohort.py docs

clean:
	rm -rf demo .pytest_cache
