PYTHON ?= python

.PHONY: test kafka-up kafka-down postgres-up postgres-down

test:
	$(PYTHON) -m pytest -q -p no:cacheprovider

kafka-up:
	$(PYTHON) -m scripts.kafka start

kafka-down:
	$(PYTHON) -m scripts.kafka stop

postgres-up:
	$(PYTHON) -m scripts.postgres start

postgres-down:
	$(PYTHON) -m scripts.postgres stop
