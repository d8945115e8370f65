"""The `Suite` record (scraper.suites)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class Suite:
    """What one suite is (module docstring)."""

    name: str
    default_batch: Optional[int]  # None: each model's own (TorchBench)
    library: Optional[str] = None  # owner/name of the repository its models come from (None: their own)
    license: Optional[str] = None  # SPDX id of that library
    packages: tuple = ()  # what its programs import besides torch
    # Whether every model needs all of `packages`: then the host checks them before any worker starts.
    # TorchBench: each model its own (one whose package is missing is recorded skipped).
    packages_required: bool = True
    scraped: bool = False  # its programs run code scraped from GitHub: only behind the wall
    model_list: bool = True  # its models come from a models file (modules: from the repositories)
    extra: dict = field(default_factory=dict)

    @property
    def models_file(self) -> Path:
        """scraper/suites/models/<name>.txt: the default model list."""
        return MODELS_DIR / f"{self.name}.txt"
