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
