# The two commands of the README: `make demo` runs the whole pipeline on bundled inputs, `make test` the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev test demo

# torch first, pinned: that takes the CPU build already on disk instead of several GB of CUDA packages.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt

install-dev: install
	$(PIP) install -q -r requirements-dev.txt

test: install-dev
	$(PYTHON) -m pytest

# The whole pipeline on bundled inputs (no token, no GPU, no network): see demo.sh.
demo: install
	PYTHON=$(PYTHON) bash demo.sh
