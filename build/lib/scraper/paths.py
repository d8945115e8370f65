"""Where things are: the folder holding the `scraper` package (worker processes get it on their PYTHONPATH) and
the stages' default folders: inside the source checkout when the package runs from one (as the README's commands
do), else relative to the working folder (an installed package never writes into site-packages)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parent.parent
IN_CHECKOUT = (PACKAGE_PARENT / "pyproject.toml").is_file() and "site-packages" not in PACKAGE_PARENT.parts
STAGES_ROOT = PACKAGE_PARENT if IN_CHECKOUT else Path(".")
DEFAULT_DOWNLOAD_DIR = STAGES_ROOT / "scraper" / "generator" / "paritybench_download"
DEFAULT_GENERATED_DIR = STAGES_ROOT / "scraper" / "generator" / "generated"
