# Every target creates .venv and installs what it needs, so a fresh clone only needs `make demo` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/imgedit run jobs/demo.yaml

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check pipeline tests
	$(VENV)/bin/mypy pipeline

bench: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
