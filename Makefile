# The two commands of the README: `make demo` runs the whole pipeline on bundled inputs, `make test` the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev test demo bubblewrap chromium torch

# torch first, pinned, when none is installed. A torch you already have (a CUDA build on a GPU machine) is kept.
# The package registry's torch for Linux x86_64 is the CUDA build (with ~22 nvidia-* packages, GBs), so the CPU
# build comes from PyTorch's own index (TORCH_INDEX) when that answers within TORCH_PROBE_S seconds; else, as on a
# machine that reaches only the registry, the registry's pin (the CPU build only where a local wheel provides
# it). TORCH_INDEX= (empty) skips the index; TORCH_INDEX=URL names a mirror of it.
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PROBE_S ?= 5

install: bubblewrap
	$(PYTHON) -c "import torch" 2>/dev/null || $(MAKE) --no-print-directory torch
	$(PIP) install -q -r requirements.txt

# Install TORCH_PIN: from TORCH_INDEX when it is reachable (falling back to the registry if that install fails),
# else from the package registry, saying which.
torch:
	@if [ -n "$(TORCH_INDEX)" ] && $(PYTHON) -c "import sys, urllib.request; \
	        urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).close()" \
	        "$(TORCH_INDEX)/" "$(TORCH_PROBE_S)" 2>/dev/null; then \
		echo "torch: $(TORCH_PIN) from $(TORCH_INDEX)" >&2; \
		$(PIP) install -q "$(TORCH_PIN)" --index-url "$(TORCH_INDEX)" && exit 0; \
		echo "torch: installing from $(TORCH_INDEX) failed; trying the package registry" >&2; \
	else \
		echo "torch: $(if $(TORCH_INDEX),$(TORCH_INDEX) is not reachable,TORCH_INDEX is empty): $(TORCH_PIN) from the package" \
		     "registry (the CUDA build on Linux x86_64 unless a local wheel gives the CPU one)" >&2; \
	fi; \
	$(PIP) install -q "$(TORCH_PIN)"

install-dev: install chromium
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

# tests/test_report.py opens `triton-data report`'s page in a real headless browser: install Debian's chromium when
# no Chromium is there and we are root (CI on a fresh machine); otherwise say that the test will be skipped.
# TRITON_DATA_CHROMIUM (a path to a chromium binary) counts as installed. The names are the test's (CHROMIUMS).
CHROMIUMS = chromium chromium-browser google-chrome google-chrome-stable chrome
chromium:
	@found=; for name in $(CHROMIUMS); do command -v $$name >/dev/null && found=$$name && break; done; \
	if [ -n "$$found" ] || [ -x "$$TRITON_DATA_CHROMIUM" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "warning: no Chromium (chromium): tests/test_report.py, which opens the report in a browser, is" \
		     "skipped; install it (sudo apt-get install chromium) or set TRITON_DATA_CHROMIUM" >&2; \
	fi
