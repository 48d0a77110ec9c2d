# The commands a reader needs (see README):
#   make test   - every test: unit tests, chapter execution (nbval) and the book build
#   make book   - build the book, executing every chapter, into _build/html, with the
#                 workshop kit in _build/html/kit (nelu.kit, a Sphinx extension of the build)
#   make check  - the setup check of a laptop, in well under a minute (python -m nelu.check)
# and, for maintainers: make kit (the kit again from the last build), make bench (README's
# table), make reproduce (results/).
# Each creates the virtual environment .venv on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Where the images are: $NELU_DATA if set, else ../shared/data (CI), else data/.
NELU_DATA ?= $(abspath $(if $(wildcard ../shared/data/SHA256SUMS),../shared/data,data))
export NELU_DATA
PYTEST_WORKERS ?= 2

.PHONY: test book check kit bench reproduce clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) tests

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

check: $(STAMP)
	$(BIN)/python -m nelu.check

kit: $(STAMP)
	$(BIN)/python -m nelu.kit --build _build

bench: $(STAMP)
	$(BIN)/python -m nelu.bench --readme README.md --json results/bench.json

reproduce: $(STAMP)
	$(BIN)/python -m nelu reproduce all --profile full

clean:
	rm -rf _build
