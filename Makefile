# Two entry points (see README): `make demo` runs the main job end to end, `make check` runs
# every check. Both create .venv and install the project into it on first use.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
OUT ?= artifacts/dlrm-heavy

.PHONY: demo check setup clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch==2.13.0 is pinned in pyproject.toml: this machine's CPU wheel, not GBs of CUDA ones.
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/recaccel train --dataset movielens-100k --model dlrm --preset heavy --out $(OUT)
	$(BIN)/recaccel optimize $(OUT) --recipe default --out $(OUT)-optimized
# Baseline, ablations and recaccel under MLPerf LoadGen, interleaved: results/bench/report.md
	$(BIN)/recaccel bench --baseline $(OUT)

check: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src
	$(BIN)/pytest

clean:
	rm -rf $(VENV) artifacts .mypy_cache .ruff_cache .pytest_cache
