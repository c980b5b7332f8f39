# ocppgw: `make run` starts a working gateway on a fresh clone; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 33033
# loopback: a laptop's DEBUG portal and admin stay off the LAN (make run HOST=0.0.0.0 to expose)
HOST ?= 127.0.0.1
export DEBUG ?= true

.PHONY: run test lint unit e2e bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py quickstart --host $(HOST) --port $(PORT)
	$(PY) manage.py rungateway --host $(HOST) --port $(PORT) --embedded-broker

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# PYTEST_ARGS narrows a run, e.g. PYTEST_ARGS='-m "not e2e"' for the in-process tests only
test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles
