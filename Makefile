# The two commands the README names: `make demo` (the main job) and `make test`.
# Both do all set-up on a fresh machine and are safe to repeat.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test check bench clean

$(STAMP): requirements.txt requirements-dev.txt agent/requirements.txt package.json package-lock.json
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH"; exit 1; }
	@# Headless Chromium renders the HTML reports in their tests (Debian's package; no browser download).
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		{ echo "needs Debian's chromium: sudo apt-get install chromium"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m devtools.demo

test: $(STAMP)
	$(PY) -m pytest

check: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .demo .devhost

# The longer suite (not part of `make test`): a chaos seed sweep and the property/fuzz tests with the
# `long` hypothesis profile (chaos); back-to-back migrations and rollbacks with memory and open files
# sampled (soak, SOAK_MINUTES, default 30). Results under bench/results/.
SOAK_MINUTES ?= 30
CHAOS_RUNS ?= 5

.PHONY: chaos soak

chaos: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/property tests/chaos -m "long or not long" -q
	$(PY) -m devtools.chaos --patients 20 --runs $(CHAOS_RUNS)

soak: $(STAMP)
	$(PY) -m devtools.soak --minutes $(SOAK_MINUTES)
