# The two commands of the README: `make up` and `make test`. The rest are helpers.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: up test lint typecheck unit generated system-deps venv down clean load

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# grafana-client's niquests brings urllib3-future, whose wheel overwrites urllib3 (and breaks
	@# requests-based tools such as schemathesis); built from source with this flag it stays apart.
	URLLIB3_NO_OVERRIDE=1 $(PY) -m pip install --quiet --no-binary urllib3-future -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

system-deps:
	@scripts/install-system-deps

## up: the local stack, the reference estate in the registry, the services and the simulator at
## full device count, in the foreground; Ctrl-C stops everything.
up: venv system-deps
	$(BIN)/estatewatch stack run

## test: lint, type check and the whole test suite against real Mosquitto and influxd.
test: venv system-deps lint typecheck unit

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest

## load: Locust at the full device count, every scenario on a platform of its own (about 30 min);
## reports, plots and the verifier's verdict under results/load/. SCENARIOS="normal peak" picks some.
load: venv system-deps
	$(BIN)/estatewatch load run $(SCENARIOS)

## generated: rewrite the generated files (JSON Schemas, reference estate, Grafana boards); tests check they are current.
generated: venv
	$(PY) -m devices.schemas docs/schemas
	$(PY) -m devices.reference estates/luedi-south.yaml
	$(PY) -m grafana.build

down: venv
	$(BIN)/estatewatch stack down

clean: down
	rm -rf .run
