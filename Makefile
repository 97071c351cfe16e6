# make all          every step (weights kept), robustness, then results.md and the README table
# make test         the test suite (what CI runs)
# make seeds        step 3 on SEEDS, two side by side     make bench   training speed
# make robustness   accuracy on moved test digits          make colab   single-file steps
# make experiments  EXPERIMENTS.md from recorded runs      make clean   results and venv
# make frontier     step 3 at four smaller widths on SEEDS (hours on a CPU), then EXPERIMENTS.md
# The data folder comes from MNIST_DATA_DIR (default: data/, downloaded there if missing).
VENV := .venv
PYTHON := $(VENV)/bin/python
STEPS := step1_skeleton step2_bn_gap step3_aug_sched
SEEDS ?= 21,22,23,24,25,26,27,28,29,30
JOBS ?= 2
# make bench times one epoch of step 3 against this commit (before the speed work)
BENCH_BASE ?= 607dc3a

FRONTIER := widths-x0.45 widths-x0.55 widths-x0.7 widths-x0.85

.PHONY: all results test seeds bench colab robustness experiments frontier clean $(STEPS)

all: $(STEPS)
	$(MAKE) --no-print-directory robustness results

$(STEPS): $(VENV)/.installed
	$(PYTHON) $@.py --save-model

results: $(VENV)/.installed
	$(PYTHON) tools/report.py results $(STEPS:%=results/%.json) --seeds-md results/seeds.md \
		--robustness-md results/robustness.md --readme README.md

robustness: $(VENV)/.installed
	$(PYTHON) tools/robustness.py

seeds: $(VENV)/.installed
	$(PYTHON) tools/ablations.py step3 --seeds $(SEEDS) --jobs $(JOBS) --out results

experiments: $(VENV)/.installed
	$(PYTHON) tools/ablations.py --variants-json results/experiments/variants.json
	$(PYTHON) tools/report.py experiments

frontier: $(VENV)/.installed
	for variant in $(FRONTIER); do $(PYTHON) tools/ablations.py $$variant --seeds $(SEEDS) --jobs $(JOBS) || exit 1; done
	$(MAKE) --no-print-directory experiments

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q tests

bench: $(VENV)/.installed
	$(PYTHON) tools/bench.py --base $(BENCH_BASE)

colab: $(VENV)/.installed
	$(PYTHON) tools/make_colab.py

# The environment is rebuilt whenever requirements.txt changes.
$(VENV)/.installed: requirements.txt
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

clean:
	rm -rf results/*.json results/*.png results/*.pt results/*.md results/seeds $(VENV)
