# yiyun: `make demo` runs it with demo data, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install install-test system-deps bench lint serve clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP) system-deps

# Debian's Chromium and CJK fonts for the browser tests (never `playwright install`).
system-deps:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
		|| echo "could not install chromium; browser tests will report it"; \
	fi

demo: $(STAMP)
	$(BIN)/yiyun db upgrade
	$(BIN)/yiyun demo --if-empty
	$(BIN)/yiyun serve --host 127.0.0.1 --port 8000

serve: $(STAMP)
	$(BIN)/yiyun db upgrade
	$(BIN)/yiyun serve --host 127.0.0.1 --port 8000

lint: $(TEST_STAMP)
	$(BIN)/lint-imports

test: install-test
	$(BIN)/lint-imports
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf var .pytest_cache
