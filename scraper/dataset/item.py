"""The one item type of the dataset build, for all three tasks: a row in the making and what the build learns
about it on the way (scraper.dataset.pipeline runs each task's steps over a list of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from scraper.records import KernelRecord


@dataclass
class Item:
    """One row in the making. A completion row's item holds the kernel record as the stages wrote it; a pair's or
    a problem's holds its columns as loaded (`row`). The build's own facts are fields here, so nothing is parked
    in `record.extra` to be read back later."""

    record: Optional[KernelRecord] = None  # completion: the kernel
    input: str = ""  # the input folder or file it was read from
    row: dict = field(default_factory=dict)  # pairs, problems: the row's columns as loaded
    group_repo: Optional[str] = None  # pairs, problems: the repository that must not straddle splits
    n_tokens: Optional[int] = None  # tokens of the text it trains on
    cluster_size: int = 1  # copies (exact and near) it stands for after dedup
    split: Optional[str] = None  # "train" | "validation"
    group: Optional[str] = None  # what must not straddle splits: repo:..., model:..., folder:...

    @property
    def id(self) -> str:
        """The id dedup keys on: the record's (normalized code), else the row's."""
        return self.record.id if self.record is not None else self.row["id"]
