"""`triton-data build --merge corpus_0 corpus_1 ... -o all/`: shards (each a `--shard i/N` build; they share
nothing) unioned into one corpus, then its datasets and report made as an unsharded build makes them.

Per stage folder (kernels/, generated/): every file of every shard copied to the same place (a path two shards
both hold keeps the first shard's copy: the same graph or module under the same name), and the record files
(kernels.jsonl, pairs.jsonl, problems/problems.jsonl) written again as the union of the shards' lines (an id may
repeat: the same kernel in two models is two records, as stage 1 writes them; the datasets deduplicate).
The suites' manifests are unioned too (suites/<suite>/suite/manifest.jsonl; their debug folders stay in the
shards: stage 1 has already read them).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from scraper import corpus as layout
from scraper.fileio import atomic_write_text

log = logging.getLogger("scraper.builder")
RECORDS = ("kernels.jsonl", "pairs.jsonl", "problems/problems.jsonl")


def merge(shards: list[Path], out: Path) -> dict:
    """Union the shards' stage folders into `out`; counts of what was merged."""
    counts = {}
    for stage in (layout.KERNELS, layout.GENERATED):
        folders = [shard / stage for shard in shards if (shard / stage).is_dir()]
        if folders:
            counts[stage] = merge_folders(folders, out / stage)
    for suite in sorted({p.name for shard in shards for p in (shard / layout.SUITES).glob("*") if p.is_dir()}):
        manifests = [shard / layout.SUITES / suite / "suite" / "manifest.jsonl" for shard in shards]
        lines = [line for path in manifests if path.is_file() for line in read_lines(path)]
        target = out / layout.SUITES / suite / "suite" / "manifest.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, "".join(line + "\n" for line in lines))
        counts[f"suite:{suite}"] = len(lines)
    return counts


def merge_folders(folders: list[Path], target: Path) -> dict:
    """Copy every file of `folders` into `target` (first copy wins), then the record files as unions by id."""
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_symlink() or not path.is_file() or str(relative) in RECORDS:
                continue
            destination = target / relative
            if not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
    counts = {}
    for name in RECORDS:
        sources = [folder / name for folder in folders if (folder / name).is_file()]
        if sources:
            lines = [line for path in sources for line in read_lines(path)]
            rows = union_of_lines(lines)
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target / name, "".join(json.dumps(row) + "\n" for row in rows))
            counts[name] = len(rows)
    return counts


def union_of_lines(lines: list[str]) -> list[dict]:
    """Each distinct line once, in first-seen order."""
    rows = []
    for line in dict.fromkeys(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            log.warning("a line that is not JSON was left out of the merge: %.80s", line)
    return rows


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
