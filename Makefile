PYTHON ?= python
export PYTHONPATH := $(CURDIR)

.PHONY: install dev test lint bench docs kafka-up kafka-down postgres-up postgres-down

# Installs what is missing: the package with its dev extras and Kafka's jars.
install:
	@$(PYTHON) -c "import router.cli, aiokafka, duckdb, pytest_asyncio, pytest_timeout, hypothesis, playwright" 2>/dev/null || \
		$(PYTHON) -m pip install -q -e '.[dev]'
	@$(PYTHON) -m scripts.kafka fetch >/dev/null

# Local Kafka + webhook sink + the router on config/router.yaml + demo events.
dev: install
	$(PYTHON) -m scripts.dev

# The whole suite (real Kafka, real PostgreSQL, headless Chromium).
test: install
	$(PYTHON) -m pytest -q -p no:cacheprovider

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m router.cli docs --check

bench: install
	$(PYTHON) -m bench

docs:
	$(PYTHON) -m router.cli docs
	$(PYTHON) -m router.cli schema -o config/router.schema.json

kafka-up:
	$(PYTHON) -m scripts.kafka start

kafka-down:
	$(PYTHON) -m scripts.kafka stop

postgres-up:
	$(PYTHON) -m scripts.postgres start

postgres-down:
	$(PYTHON) -m scripts.postgres stop
