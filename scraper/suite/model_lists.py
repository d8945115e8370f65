"""Model lists (readable text files under scraper/suites/models/) and deterministic sharding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from scraper.suites import MODELS_DIR, NAMES as SUITES  # noqa: F401  (re-exported)
from scraper.suiterun import safe_name  # noqa: F401  (re-exported: one home, the contract)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of a model list: the name the suite builds it by, and an optional batch size."""

    name: str
    batch_size: Optional[int] = None


def default_list_path(suite: str) -> Path:
    """The default list file of `suite` (scraper/suites/models/<suite>.txt)."""
    return MODELS_DIR / f"{suite}.txt"


def parse_list_line(line: str, where: str = "") -> Optional[ModelSpec]:
    """One line of a list file: `name [batch_size]`; blank lines and `#` comments give None."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    parts = text.replace(",", " ").split()
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"{where}: expected `name [batch_size]`, got {line.strip()!r}")
    return ModelSpec(parts[0], int(parts[1]) if len(parts) == 2 else None)


def read_model_list(path: str | Path) -> list[ModelSpec]:
    """Every model of a list file, in file order, first occurrence of a name kept."""
    specs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        spec = parse_list_line(line, f"{path}:{number}")
        if spec is not None:
            specs.append(spec)
    return dedupe(specs)


def parse_models_arg(text: str) -> list[ModelSpec]:
    """`--models a,b,c` (an optional `:batch` after a name: `resnet18:16`)."""
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, batch = item.partition(":")
        if batch and not batch.isdigit():
            raise ValueError(f"--models: bad batch size in {item!r} (expected name or name:batch)")
        specs.append(ModelSpec(name, int(batch) if batch else None))
    return dedupe(specs)


def dedupe(specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Keep the first spec of each name, in order."""
    seen, out = set(), []
    for spec in specs:
        if spec.name not in seen:
            seen.add(spec.name)
            out.append(spec)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/N"` -> (i, N), 0 <= i < N (0-based, as SLURM_ARRAY_TASK_ID with --array=0-(N-1))."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= i < N")
    return index, count


def shard(items: Sequence, index: int, count: int) -> list:
    """The items of shard `index` of `count`: every count-th item starting at `index` (round robin over the
    list order), so the N shards of one list are disjoint, cover it, and differ in size by at most one."""
    return list(items[index::count])
