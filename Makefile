# Every target creates .venv and installs what it needs, so a fresh clone only needs `make demo` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

LITELLM_VENV ?= .venv-litellm
LITELLM      := $(LITELLM_VENV)/bin/litellm

.PHONY: install demo test test-slow test-gateway lint bench clean

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

# The LiteLLM proxy (PyPI `litellm[proxy]`) in its own venv, in front of `imgedit simulate`.
$(LITELLM):
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install -q 'litellm[proxy]'

test-gateway: install $(LITELLM)
	IMGEDIT_LITELLM=$(abspath $(LITELLM)) $(PY) -m pytest -q -m gateway

lint: install
	$(VENV)/bin/ruff check pipeline tests
	$(VENV)/bin/mypy pipeline

bench: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) $(LITELLM_VENV) build *.egg-info
