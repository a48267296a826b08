# Two targets are the project's contract (see README.md): `make demo` and `make test`.
# Each creates the virtual environment .venv on first use (only Python 3.10+ and pip needed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint gradcheck lessons clean

demo: $(VENV)/.installed
	$(BIN)/alexnet train

test: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/pytest -n 2

gradcheck: $(VENV)/.installed
	$(BIN)/minigrad gradcheck

lessons: $(VENV)/.installed
	$(BIN)/python scripts/build_lessons.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
