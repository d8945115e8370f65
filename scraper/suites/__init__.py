"""The model suites, one module each (PyTorch's benchmarks/dynamo pattern: `TimmRunner`, `HuggingfaceRunner`, ...):
what the host, the worker and stage 1 need to know about a suite, in one place and without torch.

    timm.py          timm models, `timm.create_model(name)`               huggingface/pytorch-image-models
    huggingface.py   transformers classes built from their config class  huggingface/transformers
    modules.py       nn.Module classes of scraped repositories            (their own repository and license)
    torchbench.py    TorchBench's models through a user's checkout        pytorch/benchmark

Each defines `SUITE`, a `Suite`: its name, its models file (scraper/suites/models/<name>.txt), its default batch
size, the library its models come from and its license (KernelBook's `repo_name` and `licenses`), the packages
its programs import (checked before any worker starts: `missing_packages`), whether it runs scraped code (then only behind the wall), and its program template
(scraper/worker/templates/<name>.py). `get(name)` gives the suite of a name.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from typing import Optional

from scraper.suites import huggingface, modules, timm, torchbench
from scraper.suites.base import MODELS_DIR, Suite  # noqa: F401  (re-exported)

SUITES = {suite.name: suite for suite in (timm.SUITE, huggingface.SUITE, modules.SUITE, torchbench.SUITE)}
NAMES = tuple(SUITES)


def get(name: Optional[str]) -> Optional[Suite]:
    """The suite called `name` (None for no or an unknown name)."""
    return SUITES.get(name or "")


def library_of(name: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(repository, SPDX license) a suite's models come from; (None, None) for scraped modules (their own) and
    unknown suites."""
    suite = get(name)
    return (suite.library, suite.license) if suite is not None else (None, None)


def missing_packages(name: Optional[str]) -> list[str]:
    """The packages every worker of suite `name` imports (torch, and the suite's own where each model needs them)
    that this Python cannot import; found without importing them, on this process's path and on the PYTHONPATH
    the workers start with (they inherit this environment: a folder set there after this process started counts)."""
    suite = get(name)
    needed = ["torch", *(suite.packages if suite is not None and suite.packages_required else ())]
    return [package for package in needed if not importable(package)]


def importable(package: str) -> bool:
    """Whether a worker started from this environment can import `package`."""
    if importlib.util.find_spec(package) is not None:
        return True
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return bool(extra) and importlib.machinery.PathFinder.find_spec(package, extra) is not None
