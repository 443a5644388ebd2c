# tickrun — two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint typecheck imports pkgview peers helm-check bench clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m tickrun.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The package as the tools should see it: build/pkgview/tickrun links the folders setup.py maps
# onto tickrun.* (mypy and import-linter read files, and cannot follow the editable install's
# import hook). Refreshed in place on every use (others may be type-checking through it): a new
# top-level file in tickrun/ is linked, a removed one unlinked.
PKGVIEW := build/pkgview/tickrun
pkgview:
	mkdir -p $(PKGVIEW)
	for f in tickrun/*; do ln -sfn $(CURDIR)/$$f $(PKGVIEW)/; done
	for d in functions triggers controller hub; do ln -sfn $(CURDIR)/$$d $(PKGVIEW)/$$d; done
	find $(PKGVIEW) -maxdepth 1 -xtype l -delete

typecheck: $(STAMP) pkgview
	$(VENV)/bin/mypy

# The layer contract of pyproject.toml ([tool.importlinter]); run from the view, whose tickrun is
# the whole package (from the repo root, ./tickrun would hide the mapped folders).
imports: $(STAMP) pkgview
	cd build/pkgview && $(CURDIR)/$(VENV)/bin/lint-imports $(CURDIR)/pyproject.toml

peers:
	bash deploy/peers/ensure.sh all

# helm lint + helm template of the chart (deploy/helm/tickrun) in its store variants; the
# rendered objects are validated against a real API server by tests/integration/test_helm_chart.py.
helm-check:
	bash deploy/peers/ensure.sh k8s
	bash deploy/helm/check.sh

test: $(STAMP) peers pkgview
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd build/pkgview && $(CURDIR)/$(VENV)/bin/lint-imports $(CURDIR)/pyproject.toml
	$(PY) -m pytest tests

# Benchmarks print tickrun beside a baseline measured in the same run. The MLflow baselines
# (tracking, serving) run MLflow from its own venv so its pins never touch tickrun's.
BENCHES ?= http kafka tracking deploy serving train features pipeline
MLFLOW_VENV ?= .venv-mlflow

$(MLFLOW_VENV)/.installed:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q mlflow scikit-learn xgboost-cpu pandas
	touch $@

bench: $(STAMP) peers $(MLFLOW_VENV)/.installed
	for b in $(BENCHES); do TICKRUN_MLFLOW_PYTHON=$(CURDIR)/$(MLFLOW_VENV)/bin/python $(PY) -m bench.$$b || exit 1; done

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) build *.egg-info .mypy_cache .ruff_cache
