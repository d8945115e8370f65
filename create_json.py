#!/usr/bin/env python3
"""Stage 3: kernel manifests -> a deduplicated torchtune dataset (see --help; the code is in scraper/dataset/cli.py;
`triton-data dataset` is the same command)."""

import sys

from scraper.dataset.cli import main

if __name__ == "__main__":
    sys.exit(main())
