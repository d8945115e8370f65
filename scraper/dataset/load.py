"""Read the input folders: their `kernels.jsonl` manifest when there is one, else a scan of their `.py` files.

A folder without a manifest (a checkout of KernelBench, a folder of hand-written kernels, ...) is scanned with the
generator's jit detection (`scraper.generator.detect.find_kernels_in_source`, the one implementation), which
parses with `ast` and never executes anything. Every problem is counted and the run goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator


from scraper.progress import progress
from scraper.dataset.item import Item
from scraper.records import KERNELS, KernelRecord, read_records
from scraper.repos import MAX_SCAN_BYTES, SKIP_DIRS
from scraper.stats import Rejects, Stats

log = logging.getLogger(__name__)


def load_inputs(paths: list, stats: Stats, rejects: Rejects) -> list[Item]:
    """An item for every usable record of every input (a folder, or a kernels.jsonl file), in input order.

    Records without source text go to `rejects` (reason `no_code`); a missing or empty input is an error in
    phase `load`.
    """
    items: list[Item] = []
    for raw in paths:
        path = Path(raw)
        found = _load_one(path, stats)
        if not found:
            stats.inc("inputs_empty")
        for record in found:
            if isinstance(record.code, str) and record.code.strip():
                items.append(Item(record, input=str(path)))
            else:
                rejects.add("no_code", id=record.id, name=record.name, source=record.source, input=str(path))
    for item in items:
        stats.inc(f"in_{item.record.source}")
    stats.inc("in_records", len(items))
    return items


def _load_one(path: Path, stats: Stats) -> list[KernelRecord]:
    if not path.exists():
        stats.error("load", str(path), "input does not exist")
        return []
    if path.is_file():
        if path.suffix == ".jsonl":
            return read_manifest(path, stats)
        if path.suffix == ".py":
            return scan_file(path, path.parent, stats)
        stats.error("load", str(path), "input file is neither a .jsonl manifest nor a .py file")
        return []
    manifest = path / KERNELS
    if manifest.is_file():
        return read_manifest(manifest, stats)
    log.info("%s has no %s: scanning its .py files for jit kernels", path, KERNELS)
    records = scan_folder(path, stats)
    if not records:
        stats.error("load", str(path), f"no {KERNELS} and no jit kernel in any .py file")
    return records


def read_manifest(path: Path, stats: Stats) -> list[KernelRecord]:
    """The records of one kernels.jsonl; malformed lines are counted as `load` errors and skipped."""
    records = read_records(path, on_error=lambda number, message: stats.error("load", f"{path}:{number}", message))
    stats.inc("manifest_records", len(records))
    if not records:
        stats.error("load", str(path), "manifest has no records")
    return records


def python_files(root: Path) -> Iterator[Path]:
    """The .py files under `root` in a stable order, without following symlinks or entering tool folders."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            candidate = Path(folder) / name
            if name.endswith(".py") and not candidate.is_symlink():
                yield candidate


def scan_folder(root: Path, stats: Stats) -> list[KernelRecord]:
    """Records for every jit kernel in the .py files under `root` (source="github", repo=None)."""
    records = []
    for file in progress(list(python_files(root)), desc=f"scan {root.name}", unit="file"):
        records.extend(scan_file(file, root, stats))
    return records


def scan_file(file: Path, root: Path, stats: Stats) -> list[KernelRecord]:
    """Records for the jit kernels of one file; unreadable or oversized files are `load` errors."""
    from scraper.generator import find_kernels_in_source  # imported late: only scans need it

    relative = file.relative_to(root).as_posix()
    try:
        if file.stat().st_size > MAX_SCAN_BYTES:
            stats.error("load", str(file), f"file larger than {MAX_SCAN_BYTES} bytes, skipped")
            return []
        text = file.read_text(encoding="utf-8", errors="replace")
        kernels = find_kernels_in_source(text, relative)
    except Exception as exc:  # untrusted file: whatever the parser trips on, count it and go on
        stats.error("load", str(file), exc)
        return []
    stats.inc("scanned_files")
    stats.inc("scanned_kernels", len(kernels))
    return [
        KernelRecord(name=k.name, code=k.source, source="github", kind=k.kind, path=relative,
                     lineno=k.lineno, end_lineno=k.end_lineno, decorators=list(k.decorators),
                     extra={"scanned_from": str(root), "qualname": k.qualname})
        for k in kernels if k.source.strip()
    ]
