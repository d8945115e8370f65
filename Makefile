# The two commands of the README: `make demo` runs the whole pipeline on bundled inputs, `make test` the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev test demo bubblewrap

# torch first, pinned, when none is installed: that takes the CPU build instead of several GB of CUDA packages.
# A torch you already have (a CUDA build on a GPU machine) is kept.
TORCH_PIN ?= torch==2.13.0

install: bubblewrap
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -r requirements.txt

install-dev: install
	$(PIP) install -q -r requirements-dev.txt

test: install-dev
	$(PYTHON) -m pytest

# The whole pipeline on bundled inputs (no token, no GPU, no network): see demo.sh.
demo: install
	PYTHON=$(PYTHON) bash demo.sh

# Scraped code (--validate imports/compiles, --suite modules) runs only inside a bubblewrap sandbox: install it
# when bwrap is missing and we are root (CI on a fresh machine); otherwise say what to do. TRITON_DATA_BWRAP
# (a path to bwrap, e.g. unpacked from the .deb with dpkg -x) counts as installed.
bubblewrap:
	@if command -v bwrap >/dev/null || [ -x "$$TRITON_DATA_BWRAP" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	else \
		echo "warning: bubblewrap (bwrap) is missing: install it (sudo apt-get install bubblewrap) or set" \
		     "TRITON_DATA_BWRAP, else --validate imports/compiles and --suite modules are refused" >&2; \
	fi
