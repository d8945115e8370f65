"""Where things are: the folder holding the `scraper` package (worker processes get it on their PYTHONPATH) and
the stages' default folders."""

from __future__ import annotations

from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parent.parent
DEFAULT_DOWNLOAD_DIR = PACKAGE_PARENT / "scraper" / "generator" / "paritybench_download"
