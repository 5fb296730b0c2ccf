# `make demo` and `make test` each set everything up from a clean clone.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
EXTRAS := dev,fleet,dashboards,bedrock,vertex

.PHONY: demo test test-long lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/canary demo

test: $(STAMP)
	sh scripts/ensure-chromium.sh   # the status page is tested in a real browser
	sh scripts/ensure-prometheus.sh   # Alertmanager, Prometheus and promtool are tested for real
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

test-long: $(STAMP)   # adds the tests that take tens of minutes (the 100,000-run healthy demo)
	CANARY_LONG_TESTS=1 $(VENV)/bin/python -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	for b in bench/*.py; do $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
