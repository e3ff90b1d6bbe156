# The two commands a newcomer needs: `make run` and `make test`. Both set up
# .venv on first use and are safe to repeat.

VENV   := .venv
PYTHON := $(VENV)/bin/python
PIP    := $(PYTHON) -m pip --disable-pip-version-check -q

.PHONY: run test lint typecheck unit clean

$(PYTHON):
	python3 -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(PYTHON)
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(PYTHON)
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.runtime

# Browser libraries for the dashboard (MQTT.js, Chart.js), from the npm registry.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.runtime node_modules/.installed
	$(VENV)/bin/mqttish -c config/mqttish.yaml

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

test: lint typecheck node_modules/.installed
	$(PYTHON) -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest: no tests collected"; status=0; fi; \
	exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Benchmark mqttish side by side with Mosquitto, aedes and amqtt (docs/performance.md).
# One scenario / one broker while optimising:
#   make bench ARGS="--scenario fan-in-qos0 --broker mqttish"
# Other options: --smoke, --profile, --runs N (python -m bench --help).
.PHONY: bench
bench: $(VENV)/.runtime
	BENCH_COMMAND='make bench$(if $(ARGS), ARGS="$(ARGS)")' $(PYTHON) -m bench $(ARGS)

# Fuzz the broker (docs/robustness.md): a million mutated packets through the sans-IO
# core, then two minutes of hostile clients against a live broker while a healthy one
# times a heartbeat. Writes the results into docs/robustness.md. Other sizes and seeds:
#   make fuzz ARGS="--packets 100000 --wire-seconds 20 --seed 7"
# Replay a failure it saved: .venv/bin/python -m tests.fuzz replay .fuzz/<file>.json
.PHONY: fuzz
fuzz: $(VENV)/.dev
	FUZZ_COMMAND='make fuzz$(if $(ARGS), ARGS="$(ARGS)")' $(PYTHON) -m tests.fuzz \
		--doc docs/robustness.md $(ARGS)

# The crash test with many rounds of kill -9 (make test runs 4): nothing acknowledged is lost.
#   make crash ROUNDS=50
.PHONY: crash
crash: $(VENV)/.dev
	CRASH_ROUNDS=$(or $(ROUNDS),30) $(PYTHON) -m pytest -q -p no:randomly --timeout 900 \
		tests/e2e/test_crash.py
