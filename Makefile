# Two entry points (see README):  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-fast bench refresh-notebooks clean

# torch first and alone: it comes from the CPU wheel on local disk in seconds; asking for it
# together with packages that depend on it is what pulls a CUDA build elsewhere.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[notebooks,test]" "torch==2.13.0"
	touch $(STAMP)

setup: $(STAMP)

## Main job: execute every notebook top to bottom on the bundled data, tiny profile.
run: $(STAMP)
	$(PY) -m cqia_nb.cli notebooks --out build/executed

## All tests (what .ci/run calls).
test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_load.py
	$(PY) benchmarks/bench_widget.py
	$(PY) benchmarks/bench_rules.py
	$(PY) benchmarks/bench_dedup.py

## Re-execute notebooks and store the outputs of NBVAL_CHECK_OUTPUT cells (others cleared).
refresh-notebooks: $(STAMP)
	$(PY) -m cqia_nb.cli notebooks --refresh-checked

clean:
	rm -rf build .cache
