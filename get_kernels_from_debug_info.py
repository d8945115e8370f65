#!/usr/bin/env python3
"""Stage 1: every Triton kernel of PyTorch Inductor debug folders -> inductor_kernels/ (see --help; the code is in
scraper/inductor/cli.py; `triton-data inductor` is the same command)."""

import sys

from scraper.inductor.cli import main

if __name__ == "__main__":
    sys.exit(main())
