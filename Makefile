# One command per job on a fresh clone:
#   make reproduce   -> sets up .venv and runs the whole study (cae reproduce --out runs/reproduce)
#   make test        -> sets up .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/reproduce
# The torch pin keeps pip on the CPU wheel that lies on the dev/CI machines' disk;
# anything newer resolves a multi-GB CUDA build there.
TORCH ?= torch==2.13.0

.PHONY: setup reproduce quick test bench clean

$(BIN)/cae: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]" "$(TORCH)"
	touch $(BIN)/cae

setup: $(BIN)/cae

reproduce: setup
	$(BIN)/cae reproduce --out $(OUT)

quick: setup
	$(BIN)/cae reproduce --quick --out runs/quick

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/cae bench

clean:
	rm -rf $(VENV) runs
