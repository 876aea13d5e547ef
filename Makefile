# One command per job on a fresh clone:
#   make reproduce   -> sets up .venv and runs the whole study (cae reproduce --out runs/reproduce)
#   make test        -> sets up .venv and runs the test suite (summary line; skips and failures listed)
#   make screenshots -> retakes docs/serve.png from the page with the shipped colorizer (docs/screenshots.py)
# and, to check the installed wheel from outside the checkout (its own fresh venv):
#   make wheel-smoke -> .ci/wheel_smoke.sh
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/reproduce
# The torch pin keeps pip on the CPU wheel that lies on the dev/CI machines' disk;
# anything newer resolves a multi-GB CUDA build there.
TORCH ?= torch==2.13.0
# The data: CAE_DATA_DIR if set, else a CIFAR-10 copy in ../shared/datasets beside the clone (as on
# the dev/CI machines, which have no internet for the download), else cae's own search.
CAE_DATA_DIR ?= $(wildcard $(abspath ..)/shared/datasets/cifar-10-batches-bin)
ifneq ($(CAE_DATA_DIR),)
export CAE_DATA_DIR
endif

.PHONY: setup reproduce quick test screenshots wheel-smoke bench clean

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

# -q ends with the count line ("N passed, M skipped in Xs"); -rfEs lists failures, errors and
# skips with their reasons (in CI a skip fails the run: tests/conftest.py)
test: setup
	$(BIN)/python -m pytest -q -rfEs

screenshots: setup
	$(BIN)/python docs/screenshots.py

wheel-smoke:
	PYTHON="$(PYTHON)" TORCH="$(TORCH)" bash .ci/wheel_smoke.sh

bench: setup
	$(BIN)/cae bench

clean:
	rm -rf $(VENV) runs
