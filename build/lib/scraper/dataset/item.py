"""The dataset build's own row type: a kernel record and what the build learns about it on the way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from scraper.records import KernelRecord


@dataclass
class Item:
    """One kernel in the dataset build. The record stays as the stages wrote it; the build's own facts are fields
    here, so nothing is parked in `record.extra` to be read back later."""

    record: KernelRecord
    input: str = ""  # the input folder or file it was read from
    n_tokens: Optional[int] = None  # tokens of the text it trains on
    cluster_size: int = 1  # copies (exact and near) it stands for after dedup
    split: Optional[str] = None  # "train" | "validation"
    group: Optional[str] = None  # what must not straddle splits: repo:..., model:..., folder:...
