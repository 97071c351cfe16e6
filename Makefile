# make all    every step, then results.md        make seeds   step 3 on five seeds
# make test   the test suite                     make bench   training speed, results/bench.md
# make colab  single-file copies in colab/       make results rebuild results.md from the JSONs
# make clean  remove results/ and the venv
# The data folder comes from MNIST_DATA_DIR (default: data/, downloaded there if missing).
VENV := .venv
PYTHON := $(VENV)/bin/python
STEPS := step1_skeleton step2_bn_gap step3_aug_sched
SEEDS ?= 1,2,3,4,5

.PHONY: all results test seeds bench colab clean $(STEPS)

all: $(STEPS)
	$(MAKE) --no-print-directory results

# results.md and the README's results section, from the steps' JSONs (and results/seeds.md).
results: $(VENV)/.installed
	$(PYTHON) common.py results $(STEPS:%=results/%.json) --seeds-md results/seeds.md --output results.md --readme README.md
	@cat results.md

$(STEPS): $(VENV)/.installed
	$(PYTHON) $@.py

seeds: $(VENV)/.installed
	$(PYTHON) step3_aug_sched.py --seeds $(SEEDS)

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q tests

bench: $(VENV)/.installed
	$(PYTHON) tools/bench.py

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
	rm -rf results $(VENV)
