# Fresh-machine entry points: each target creates (or reuses) the virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.untied-installed

.PHONY: quickstart test test-slow benchmark benchmark-mono-forward benchmark-perturbation benchmark-forward-forward env clean-env

env: $(STAMP)

# pip takes torch/torchvision from this machine's local wheels when they are there
# (pip's configured find-links); elsewhere from PyPI.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

quickstart: $(STAMP)          ## run the default quickstart leaderboard (offline, ~1 min on a CPU)
	$(BIN)/untied run quickstart

test: $(STAMP)                ## the test suite CI runs (slow tests excluded)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)           ## the slow tests: real data at full size, compile checks
	$(BIN)/python -m pytest -q -m slow

benchmark: $(STAMP)           ## speed and memory ratios of the surrogates vs native activations
	$(BIN)/python benchmarks/surrogates.py

benchmark-mono-forward: $(STAMP)  ## MF+DD step (P = 1, 4, 8; Gaussian and Rademacher) vs MF+AD, its floor and the naive loop; memory
	$(BIN)/python benchmarks/mono_forward.py

benchmark-perturbation: $(STAMP)  ## SPSA/MeZO and forward-gradient steps vs forward passes; memory
	$(BIN)/python benchmarks/perturbation.py

benchmark-forward-forward: $(STAMP)  ## Forward-Forward step and prediction vs BP's, per sample (one thread)
	$(BIN)/python benchmarks/forward_forward.py

clean-env:
	rm -rf $(VENV)
