# ItemSage on Spark. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= itemsage-demo
PYTEST_ARGS ?=

.PHONY: venv demo test clean

venv: $(STAMP)

# Re-created when the package metadata changes (a stale venv) or when it is missing.
$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

demo: venv
	$(VENV)/bin/itemsage demo --workdir $(WORKDIR)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(WORKDIR) *.egg-info .pytest_cache
