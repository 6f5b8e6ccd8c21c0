# trainledger: `make demo` runs the main job, `make test` the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench bench-scale bytecode clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Our own modules' bytecode, as installing the package would write it. Where
# PYTHONDONTWRITEBYTECODE is set, Python would otherwise compile them again at
# every start (about 60 ms of each `trainledger` command). Only changed files
# are compiled again.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q domain service projections adapters cli bench > /dev/null

demo: $(STAMP) bytecode
	bash examples/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint bytecode
	$(BIN)/pytest -n 2 --dist loadfile -q

unit: $(STAMP) bytecode
	$(BIN)/pytest -q tests/unit

bench: $(STAMP) bytecode
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# A million lifecycles (bench/scale.py; up to 45 minutes): SCALE_ARGS="--size 100000" for less.
bench-scale: $(STAMP) bytecode
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .trainledger demo-output .mypy_cache .ruff_cache .pytest_cache
