# The two front-door commands: `make demo` and `make test`. Both set up first (idempotent).
VENV ?= .venv
PYTEST_ARGS ?=
# The core every artifact goes through (compile, package, load, preprocess, targets, the backend
# interface); its coverage is reported on its own and must stay above 90%.
CORE = edgevision/artifact/*,edgevision/runtime/*,edgevision/compiler/*,edgevision/backends/base.py,edgevision/backends/__init__.py,edgevision/preprocess.py,edgevision/targets.py,edgevision/errors.py

.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/edgevision demo

test: setup
	$(VENV)/bin/python -m pytest --cov=edgevision --cov-report=term:skip-covered --durations=30 $(PYTEST_ARGS)
	@# A partial run (PYTEST_ARGS) cannot cover the core: only the full suite is held to the bar.
	@if [ -z "$(PYTEST_ARGS)" ]; then echo "core coverage:"; \
	  $(VENV)/bin/coverage report --include='$(CORE)' --skip-covered --fail-under=90; fi
