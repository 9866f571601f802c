# The two front-door commands: `make demo` and `make test`. Both set up first (idempotent).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/edgevision demo

test: setup
	$(VENV)/bin/python -m pytest --cov=edgevision --cov-report=term:skip-covered $(PYTEST_ARGS)
