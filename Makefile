# The two commands of the README: `make demo` runs the whole pipeline on bundled inputs, `make test` the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev test demo

# torch first, pinned, when none is installed: that takes the CPU build instead of several GB of CUDA packages.
# A torch you already have (a CUDA build on a GPU machine) is kept.
TORCH_PIN ?= torch==2.13.0

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -r requirements.txt

install-dev: install
	$(PIP) install -q -r requirements-dev.txt

test: install-dev
	$(PYTHON) -m pytest

# The whole pipeline on bundled inputs (no token, no GPU, no network): see demo.sh.
demo: install
	PYTHON=$(PYTHON) bash demo.sh
