# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv and
# install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: demo test install lint docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install  ## migrate, load the bundled Online Retail sample, print curl calls, serve on :$(PORT)
	$(BIN)/redpoll demo --port $(PORT)

test: install  ## the full default test suite (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

docs: install  ## regenerate docs/cli.md and docs/configuration.md
	$(BIN)/python -m redpoll.cli.docgen docs

clean:
	rm -rf $(VENV) .redpoll .pytest_cache .ruff_cache
