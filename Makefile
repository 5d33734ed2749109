# Two commands for a fresh machine: `make demo` and `make test`. Every target
# bootstraps .venv on first use, so nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench soak sim lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m keyfob.demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m bench.soak

sim: $(STAMP)
	$(BIN)/keyfob sim run

lint: $(STAMP)
	$(BIN)/ruff check host tests bench
	$(BIN)/python -m keyfob.build --check

clean:
	rm -rf $(VENV) build .pytest_cache
