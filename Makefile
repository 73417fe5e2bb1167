# Two entry points for a newcomer: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup host-tools ui-assets cluster-tools cluster-demo demo test lint bench report readme-table compat corpus fuzz clean

# `make report` writes the evaluation here; `make report QUICK=1` is the under-5-minute run.
REPORT_DIR ?= eval
comma := ,

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) host-tools cluster-tools ui-assets

# The dashboard's front-end libraries (ui/package.json, versions pinned by its lock file),
# copied as built into the package, which serves them at /ui: nothing is fetched at run time.
UI_VENDOR := src/usetl/api/static/vendor
UI_FILES := preact/dist/preact.module.js preact/hooks/dist/hooks.module.js \
	htm/dist/htm.module.js uplot/dist/uPlot.esm.js uplot/dist/uPlot.min.css
ui-assets: $(UI_VENDOR)/.installed
$(UI_VENDOR)/.installed: ui/package.json ui/package-lock.json
	cd ui && npm ci --silent --no-audit --no-fund
	mkdir -p $(UI_VENDOR)
	cp $(addprefix ui/node_modules/,$(UI_FILES)) $(UI_VENDOR)/
	touch $@

# runc for the container baselines of `make report`, chromium for the dashboard's browser
# tests; quiet, and a no-op once installed.
host-tools:
	@command -v runc >/dev/null || apt-get install -y -qq runc >/dev/null 2>&1 || \
		echo "make: could not install runc; the container baselines will be reported as failed"
	@command -v chromium >/dev/null || apt-get install -y -qq chromium >/dev/null 2>&1 || \
		echo "make: could not install chromium; the dashboard's browser tests will fail"

# nats-server (JetStream) and PostgreSQL 15 for several hosts (`usetl gateway`, `usetl worker`)
# and their tests; quiet, and a no-op once installed. No system service is started: tests and
# `make cluster-demo` run their own servers in temporary directories.
cluster-tools:
	@command -v nats-server >/dev/null && test -x /usr/lib/postgresql/15/bin/initdb || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server postgresql-15 \
		>/dev/null 2>&1 || echo "make: could not install nats-server and postgresql-15"

# Several hosts on this machine: NATS, PostgreSQL, three namespaced workers, a gateway.
cluster-demo: setup
	$(VENV)/bin/usetl image build
	$(PY) -m usetl.cluster.demo

demo: setup
	$(VENV)/bin/usetl image build
	$(VENV)/bin/usetl vm run -- 'import platform, sys; print("hello from a USF:", sys.version.split()[0], platform.machine())'
	$(VENV)/bin/usetl demo

test: setup
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests

# The syscall fuzzer: 10 M hostile syscalls by default, on 2 worker processes, with
# progress every 10 s (and the --first-chunk to resume from); fails on a monitor error or hang.
FUZZ_SYSCALLS ?= 10000000
FUZZ_WORKERS ?= 2
FUZZ_SEED ?= 1
fuzz: setup
	$(PY) -m usetl.bench.fuzz --syscalls $(FUZZ_SYSCALLS) --workers $(FUZZ_WORKERS) \
		--seed $(FUZZ_SEED) --chunk 5000 $(if $(FIRST_CHUNK),--first-chunk $(FIRST_CHUNK))

bench: setup
	$(VENV)/bin/usetl bench startup

report: setup
	$(VENV)/bin/usetl bench all --report $(REPORT_DIR) $(if $(QUICK),--quick)

# CPython's own test modules in a USF and on the host, side by side (tens of minutes).
compat: setup
	$(VENV)/bin/usetl bench cpython-tests

# The corpus of real serverless functions (SeBS, FunctionBench, ServerlessBench, FaaSdom and
# the patterns handlers use), each deployed with its requirements (installed into the module
# store: it reaches the package index) and run in a USF and on the host: pass or fail per
# function and the rate. CORPUS=name1,name2 for some of them.
corpus: setup
	$(VENV)/bin/usetl image build
	$(PY) -m usetl.bench.corpus $(subst $(comma), ,$(CORPUS))

readme-table: setup
	$(VENV)/bin/usetl bench readme-table $(REPORT_DIR)

clean:
	rm -rf $(VENV) build src/*.egg-info ui/node_modules $(UI_VENDOR)
