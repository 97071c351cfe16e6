# make all          every step (weights kept), their figures, robustness, then results.md and the README table
# make test         the test suite (what CI runs)
# make seeds        step 3 on the report SEEDS, JOBS side by side, then results.md and EXPERIMENTS.md
# make results      results.md and the README table from the recorded runs (part of make all and make seeds)
# make robustness   accuracy on moved test digits, from the saved weights (part of make all)
# make experiments  EXPERIMENTS.md from every variant's recorded runs
# make frontier     step 3 at four smaller widths on DEV_SEEDS (hours on a CPU), then EXPERIMENTS.md
# make bench        where a training step's time goes, and one epoch against BENCH_BASE: results/bench.md
# make colab        the notebooks and single-file steps in colab/
# make clean        the environment, weights, logs and locks: nothing a commit holds (results stay)
# STEP_ARGS adds options to every training run (e.g. STEP_ARGS="--epochs 1 --subset 512" for a quick look),
# BENCH_ARGS to make bench. The data folder comes from MNIST_DATA_DIR (default: data/, downloaded if missing).
VENV := .venv
PYTHON := $(VENV)/bin/python
STEPS := step1_skeleton step2_bn_gap step3_aug_sched
# Step 3's report seeds: no step-3 choice was made on them (1-5 and 21-30 are development seeds).
SEEDS ?= 31,32,33,34,35,36,37,38,39,40
DEV_SEEDS ?= 21,22,23,24,25,26,27,28,29,30
JOBS ?= 2
STEP_ARGS ?=
BENCH_ARGS ?=
# make bench times one epoch of step 3 against this commit (before the speed work)
BENCH_BASE ?= 607dc3a

FRONTIER := widths-x0.45 widths-x0.55 widths-x0.7 widths-x0.85

.PHONY: all results test seeds bench colab robustness experiments frontier clean $(STEPS)

all: $(STEPS)
	$(PYTHON) tools/figures.py
	$(MAKE) --no-print-directory robustness results

$(STEPS): $(VENV)/.installed
	$(PYTHON) $@.py --save-model $(STEP_ARGS)

results: $(VENV)/.installed
	$(PYTHON) tools/report.py results $(STEPS:%=results/%.json) --seeds-folder results/experiments/step3 \
		--seeds $(SEEDS) --robustness-md results/robustness.md --readme README.md

robustness: $(VENV)/.installed
	$(PYTHON) tools/robustness.py

seeds: $(VENV)/.installed
	$(PYTHON) tools/ablations.py step3 --seeds $(SEEDS) --jobs $(JOBS) $(STEP_ARGS)
	$(MAKE) --no-print-directory results experiments

experiments: $(VENV)/.installed
	$(PYTHON) tools/ablations.py --variants-json results/experiments/variants.json
	$(PYTHON) tools/report.py experiments

frontier: $(VENV)/.installed
	for variant in $(FRONTIER); do $(PYTHON) tools/ablations.py $$variant --seeds $(DEV_SEEDS) --jobs $(JOBS) $(STEP_ARGS) || exit 1; done
	$(MAKE) --no-print-directory experiments

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q tests

bench: $(VENV)/.installed
	$(PYTHON) tools/bench.py --base $(BENCH_BASE) $(BENCH_ARGS)

colab: $(VENV)/.installed
	$(PYTHON) tools/make_colab.py

# The environment is rebuilt whenever requirements.txt changes.
$(VENV)/.installed: requirements.txt
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

# Only what no commit holds (tests/test_cli.py checks it).
clean:
	rm -rf $(VENV) results/*.pt results/ablations results/experiments/*/seeds/*.log results/experiments/*/seeds/*.lock \
		.pytest_cache
