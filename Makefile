# Two entry points for a newcomer: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/usetl image build
	$(VENV)/bin/usetl vm run -- 'import platform, sys; print("hello from a USF:", sys.version.split()[0], platform.machine())'

test: setup
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests

bench: setup
	$(VENV)/bin/usetl bench startup

clean:
	rm -rf $(VENV) build src/*.egg-info
