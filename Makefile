# Two entry points (see README): `make demo` runs the main job end to end, `make check` runs
# every check. Both create .venv on first use; demo installs the core, check the dev extra
# (every extra and the test tools). Each has its own stamp, so running one after the other
# installs only what is missing.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
OUT ?= artifacts/dlrm-heavy
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: demo check setup results clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is pinned in pyproject.toml: this machine's CPU wheel, not GBs of CUDA ones.
$(BIN)/.core: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(BIN)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@

setup: $(BIN)/.dev

demo: $(BIN)/.core
	$(BIN)/recaccel train --dataset movielens-100k --model dlrm --preset heavy --out $(OUT)
	$(BIN)/recaccel optimize $(OUT) --recipe default --out $(OUT)-optimized
# Baseline, ablations and recaccel under MLPerf LoadGen, interleaved: results/bench/report.md
	$(BIN)/recaccel bench --baseline $(OUT)

# The files behind results/README.md's main tables, measured again on this machine (about an
# hour on 2 cores): the zoo's accuracy, the demo (optimization report, benchmark) and the
# runtime profile of the demo's student. Copy the changed figures into results/README.md.
results: demo
	$(BIN)/recaccel train --dataset movielens-100k --model all --preset all --out artifacts/zoo \
		--json > results/movielens-100k-zoo.json.part && mv results/movielens-100k-zoo.json.part results/movielens-100k-zoo.json
	cp $(OUT)-optimized/report.md $(OUT)-optimized/report.json results/optimize-movielens/
	$(BIN)/recaccel profile $(OUT) $(OUT)-optimized/02-prune-1 \
		$(OUT)-optimized/03-quantize_embeddings-1 --select --out results/profile-movielens

check: $(BIN)/.dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src
	$(BIN)/pytest

clean:
	rm -rf $(VENV) artifacts .mypy_cache .ruff_cache .pytest_cache
