#!/usr/bin/env python3
"""Stage 2a: GitHub repositories with Triton kernels (or, --discover pytorch, Python repositories using PyTorch),
downloaded and pinned to a commit (see --help; the code is in scraper/github/cli.py; `triton-data scrape` is the same
command)."""

import sys

from scraper.github.cli import main

if __name__ == "__main__":
    sys.exit(main())
