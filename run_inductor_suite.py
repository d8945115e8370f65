#!/usr/bin/env python3
"""Compile model suites (timm, huggingface, scraped nn.Modules) with TORCH_COMPILE_DEBUG=1 into Inductor debug
folders, one worker subprocess per model and per GPU, with a manifest of results. See --help and docs/suite.md;
the logic lives in scraper/suite/."""

import sys

from scraper.suite.command import main

if __name__ == "__main__":
    sys.exit(main())
