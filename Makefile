# ItemSage on Spark. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Airflow runs the DAG files in its own environment; the DAG test builds one like it.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_SPEC ?= apache-airflow>=2.10,<4
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
WORKDIR ?= itemsage-demo
PYTEST_ARGS ?=

.PHONY: venv java airflow-venv demo demo-flipkart test bench bench-full bench-catalog clean

venv: $(STAMP) java

java:
	@./scripts/ensure-java.sh

# Re-created when the package metadata changes (a stale venv) or when it is missing.
$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(AIRFLOW_STAMP): Makefile
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet '$(AIRFLOW_SPEC)' \
	  || echo "warning: Airflow did not install; the DAG test falls back to a structural check"
	@touch $@

airflow-venv: $(AIRFLOW_STAMP)

demo: venv
	$(VENV)/bin/itemsage demo --workdir $(WORKDIR)

# The real-catalog recipe on the shared Flipkart sample (../shared/data): train on the catalog
# itself, check it against TF-IDF on its category tree, then embed and index it.
demo-flipkart: venv
	$(VENV)/bin/itemsage demo --workdir $(WORKDIR)-flipkart \
	  --catalog ../shared/data/flipkart_products.parquet --mapping conf/mappings/flipkart.toml \
	  --surfaces conf/surfaces-flipkart.toml --label-column product_type

test: venv airflow-venv
	ITEMSAGE_AIRFLOW_PYTHON=$(CURDIR)/$(AIRFLOW_VENV)/bin/python $(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks (bench/run.py): quick sizes here, 100k and 1M products in bench-full.
bench: venv
	$(PY) bench/run.py --products 20000

bench-full: venv
	$(PY) bench/run.py --products 100000 1000000

# Real-catalog quality: trained on the Flipkart sample alone vs TF-IDF and random (docs/model.md).
bench-catalog: venv
	$(PY) bench/catalog_quality.py

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) $(WORKDIR) $(WORKDIR)-flipkart *.egg-info .pytest_cache
