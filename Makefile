# The two commands of the README: `make demo` and `make test`. Everything else supports them.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
OPA      = $(shell $(BIN)/python -c 'from services.devstack.opa import binary; from services.settings import Settings; print(binary(Settings()))')

.PHONY: demo test install stack lint policy-test unit integration down clean mutation bench-opa bench bench-scale faults browser audit-deps asyncapi image image-lock compose-smoke helm-check

$(BIN)/accord: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools  # venv ships an old, known-vulnerable setuptools
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/accord

stack: install
	$(BIN)/accord dev up

demo: stack
	$(BIN)/accord demo

# What CI runs: installs and starts everything, then every check and test, then the fault
# suite on its private stack (its table printed; exit 1 unless nothing was lost or duplicated).
test: stack lint policy-test browser audit-deps asyncapi helm-check
	$(BIN)/pytest -q
	$(BIN)/accord faults

# docs/asyncapi.yaml is the generated one (accord asyncapi) and the AsyncAPI CLI, pinned and
# installed into ~/.cache/accord by deploy/asyncapi.sh, finds it valid.
asyncapi: install
	$(BIN)/accord asyncapi --check
	bash deploy/asyncapi.sh docs/asyncapi.yaml

# Debian's chromium and chromium-driver for the dashboard's browser test (idempotent).
browser:
	bash deploy/browser.sh

lint: install
	$(BIN)/ruff check services tools tests deploy
	$(BIN)/ruff format --check services tools tests deploy
	$(BIN)/mypy

# Known-vulnerable dependencies (deploy/audit-deps.sh): pip-audit with OSV or PyPI's per-release
# JSON; where neither answers, the fallback tools/dep_audit.py checks the distributions that are
# at their latest release against PyPI's project JSON and lists the others as NOT checked; fails on
# any known vulnerability. Skipped with a message if no data answers at all; ACCORD_AUDIT_REQUIRED=1
# makes a skip, or a fallback that left something unchecked, a failure. See docs/security.md.
audit-deps: install
	BIN=$(BIN) bash deploy/audit-deps.sh

policy-test: stack
	$(OPA) fmt --list --fail policies/
	$(OPA) check --strict --schema policies/schemas/ policies/
	$(OPA) test policies/ --coverage --threshold 95 > /dev/null || { $(OPA) test -v policies/ | tail -40; exit 1; }
	$(OPA) test policies/

# Delete each rule's clause in turn (on a copy of policies/); every mutant must fail `opa test`.
mutation: install
	$(BIN)/python -m tools.policy_mutation

# Decision latency through the running OPA server: single decisions and batches of 100.
bench-opa: stack
	$(BIN)/accord bench opa --decisions 500 --batches 50

# The relay against a raw Kafka pass-through and Kafka's ProducerPerformance (< 3 minutes).
bench: stack
	$(BIN)/accord bench relay

# The relay's throughput with 1, then 3 instances in one group (docs/relay.md#scale-out).
bench-scale: stack
	$(BIN)/accord bench scale --instances 1,3

# Relay SIGKILLs, a broker restart, OPA and PostgreSQL stopped, then 2 of 3 relays and 1 of 2 OPA
# servers SIGKILLed, on a private stack (< 15 minutes).
faults: install
	$(BIN)/accord faults

# The OCI images from Debian's packages (docs/deployment.md): accord (every Accord role) and
# accord-infra (the pilot's Kafka and PostgreSQL); prints each one's size and digest.
image: install
	BIN=$(BIN) bash deploy/image/build.sh --infra

# Re-pin the image's Python dependencies (deploy/image/requirements.txt) from the venv.
image-lock: install
	BIN=$(BIN) bash deploy/image/lock.sh

# The compose pilot under podman: one event from an agency to a partner, then everything stopped.
compose-smoke: install
	BIN=$(BIN) bash deploy/compose/smoke.sh

# The Helm chart: lint, render three value sets, yamllint and kubernetes-validate each (seconds).
helm-check: install
	BIN=$(BIN) bash deploy/helm/check.sh

down:
	$(BIN)/accord dev down

clean: down
	rm -rf .accord
