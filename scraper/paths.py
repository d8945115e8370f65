"""Where things are: the folder holding the `scraper` package (worker processes get it on their PYTHONPATH) and
the stages' default folders.

One rule for every stage: the default folders live under one root, the source checkout when the package runs
from one (a clone, or an editable install: wherever the command is started, the stages find each other's output
there, as the README's pipeline expects), else the working directory (an installed package never writes into
site-packages). A path given on the command line is always taken as given, relative to the working directory.

    in a checkout                               installed
    <checkout>/inductor_kernels/                ./inductor_kernels/
    <checkout>/scraper/generator/paritybench_download/   ./paritybench_download/
    <checkout>/scraper/generator/generated/     ./generated/
    <checkout>/datasets/                        ./datasets/
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parent.parent
IN_CHECKOUT = (PACKAGE_PARENT / "pyproject.toml").is_file() and "site-packages" not in PACKAGE_PARENT.parts
STAGES_ROOT = PACKAGE_PARENT if IN_CHECKOUT else Path(".")
# The generator's folders sit beside its script in the checkout (the seed's `cd scraper/generator` commands).
GENERATOR_ROOT = STAGES_ROOT / "scraper" / "generator" if IN_CHECKOUT else STAGES_ROOT
DEFAULT_INDUCTOR_DIR = STAGES_ROOT / "inductor_kernels"
DEFAULT_DOWNLOAD_DIR = GENERATOR_ROOT / "paritybench_download"
DEFAULT_GENERATED_DIR = GENERATOR_ROOT / "generated"
DEFAULT_DATASET_DIR = STAGES_ROOT / "datasets"
# What --help says about the defaults (one sentence for every stage).
DEFAULTS_RULE = ("the default folders of every stage are in the checkout when it runs from one, else in the "
                 "working directory")
