# The two set-up commands of the README: `make book` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
export MPLBACKEND := Agg
PROFILE ?= quick
CHAPTERS ?= notebooks/*.md

.PHONY: venv book test test-fast refresh check-chapters bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# Build the book into _build/html from the chapters' stored outputs (no execution).
book: venv
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going

# Every test: package unit tests, the chapter pair/hash and book-build checks, and every chapter executed
# afresh by nbval in the quick profile (its asserts are the checks).
test: venv
	DIFFDENS_PROFILE=quick $(PY) -m pytest -q -n 2 --dist loadfile --timeout=900 --nbval-lax --nbval-current-env tests notebooks

test-fast: venv
	DIFFDENS_PROFILE=quick $(PY) -m pytest -q --timeout=900 tests

# Re-execute chapters (md -> ipynb) in PROFILE and stamp profile, device and source hash into their metadata.
refresh: venv
	$(PY) scripts/chapters.py refresh --profile $(PROFILE) $(CHAPTERS)

check-chapters: venv
	$(PY) scripts/chapters.py check --require-profile full

clean:
	rm -rf _build
