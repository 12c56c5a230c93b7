# The README's two commands are `make demo` and `make test`; both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup image k8s operator-image demo test test-unit test-k8s lint bench notebook stack-up stack-down clean help

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## install the venv, Kafka, MinIO and the Spark jars (idempotent)
	@scripts/bootstrap.sh

demo: setup  ## start the local stack and run the pipeline end to end
	$(VENV)/bin/dlpipe demo

image: setup  ## build the dlpipe image without Docker (mmdebstrap base, buildah; idempotent)
	@scripts/image.sh build

k8s: setup  ## build etcd, Kubernetes, CoreDNS and the Spark operator from source, and the node's packages (idempotent; first time ~15 min)
	@scripts/install_k8s.sh

operator-image: image k8s  ## the Spark operator's image: dlpipe's plus the operator built from source
	@scripts/image.sh operator

test: setup image k8s operator-image lint  ## lint, then every test: the real local stack, the image, the Kubernetes node
	$(PY) -m pytest -m "not spark_on_k8s" $(PYTEST_ARGS)

test-unit: setup  ## the tests that need no service (stack down is fine), in under 2 minutes
	$(PY) -m pytest -m "not integration and not k8s" -n 2 $(PYTEST_ARGS)

test-k8s: setup image k8s operator-image  ## only the Kubernetes tests (the chart, the node, Spark jobs in cluster mode)
	$(PY) -m pytest -m k8s $(PYTEST_ARGS)

lint: setup  ## ruff, and the import layers (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: setup  ## run every benchmark in bench/, write bench/results/
	$(PY) -m bench

notebook: setup  ## JupyterLab with notebooks/ on the local stack; kernels get `spark` (Spark Connect)
	$(VENV)/bin/dlpipe notebook $(NOTEBOOK_ARGS)

stack-up: setup  ## start Kafka + MinIO + a Spark standalone cluster
	$(VENV)/bin/dlpipe stack up --cluster

stack-down:  ## stop the local stack
	$(VENV)/bin/dlpipe stack down

clean:  ## remove the venv and the local stack's state (downloads in ~/.cache/dlpipe stay)
	-$(VENV)/bin/dlpipe stack down
	rm -rf $(VENV) .dlpipe
