# The README's two commands are `make run` and `make test`; the rest are their parts.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test setup setup-test web lint format bench clean

run: setup  ## Bring up a federation on this machine (central + two sites), Ctrl-C stops it
	$(VENV)/bin/datadns up

test: setup-test  ## Set up everything the tests need, then run the whole suite
	. scripts/test-env.sh && $(PY) -m pytest -ra --durations=25 $(PYTEST_ARGS)

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

web:
	scripts/build-web.sh

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: setup-test
	. scripts/test-env.sh && $(PY) bench/resolve.py && $(PY) bench/register.py && $(PY) bench/launch.py && $(PY) bench/run.py

clean:
	rm -rf build *.egg-info girder_resolver/web_client_dist/* web_client/node_modules
