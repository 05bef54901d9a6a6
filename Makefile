# Every target bootstraps .venv on a fresh machine, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# exact torch and torchvision builds, for every pip install below (the package has lower bounds)
PIP := $(BIN)/pip install --quiet -c constraints.txt

.PHONY: demo test test-slow bench lint format clean

$(STAMP): pyproject.toml constraints.txt src/nettle/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	# torch and torchvision first, so nothing else pulls another build
	$(PIP) torch torchvision
	$(PIP) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nettle demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/pytest -q

test-slow: $(STAMP)
	# the browser check of the HTML report needs Debian's chromium (never a downloaded one)
	command -v chromium || (apt-get update && apt-get install -y chromium)
	$(BIN)/pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/trainer_overhead.py
	$(BIN)/python bench/count_speed.py
	$(BIN)/python bench/substitutes.py
	$(BIN)/python bench/checkpointing.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
