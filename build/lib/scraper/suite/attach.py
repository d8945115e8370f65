"""Give the kernels of a suite run their PyTorch side: the model and program that produced each graph.

`get_kernels_from_debug_info.py` extracts kernels from debug folders; when a folder was written by
run_inductor_suite.py it holds a suite manifest (`<debug root>/suite/manifest*.jsonl`) naming, per model, its
run_* folder, its graphs and its standalone program. `PyTorchSide`, a step of the stage's chain, joins the
extracted records to those entries on (run_dir, graph) and stores under `record.extra["pytorch"]`:

    {"suite", "model", "mode", "dtype",
     "program_file",        # the program, relative to the debug root (suite/programs/...)
     "program",             # its text: the script that builds the model and its inputs
     "module",              # --suite modules: the module class's own source (its dependency closure); else None
     "module_provenance",   # --suite modules: repo, path, commit, license, stars, lineno, class_name; else None
     "accuracy", "max_error", "tolerance",   # the worker's check of the compiled model against eager
     "problem_file", "pairing_file", "versions"}

It also sets the verification level `correct`: True when the model passed the accuracy check, False when it
failed, None when it was skipped or not run; the evidence (model, max_error, tolerance) goes to
`record.validation["correct"]`. Records of debug folders without a suite manifest are left as they are. Nothing
is executed: the programs are read as text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from scraper.records import KernelRecord
from scraper.stats import Stats
from scraper.suite.manifest import graph_index, manifest_files, pytorch_side

log = logging.getLogger(__name__)

PYTORCH_KEY = "pytorch"  # the key under KernelRecord.extra


def suite_roots(inputs: list[Path]) -> list[Path]:
    """The debug roots holding a suite manifest at, above or below each input (an input may be the debug root,
    a folder of several roots, a run_* folder inside one, or an output_code.py file)."""
    roots: dict[Path, Path] = {}
    for path in map(Path, inputs):
        found = [enclosing_root(path)]
        if path.is_dir():
            found += [m.parent.parent for m in sorted(path.rglob("manifest*.jsonl")) if m.parent.name == "suite"]
        for root in found:
            if root is not None:
                roots.setdefault(root.resolve(), root)
    return list(roots.values())


def enclosing_root(path: Path) -> Optional[Path]:
    """`path` itself or its nearest parent folder that holds a suite manifest; None when there is none."""
    path = path.resolve()  # a relative input's parents stop at the working folder
    start = path if path.is_dir() else path.parent
    return next((folder for folder in [start, *start.parents] if manifest_files(folder)), None)


class PyTorchSide:
    """The attach step of the Inductor stage's chain: `run(records)` stores, under `record.extra["pytorch"]`, the
    PyTorch side of every record whose (run_dir, graph) a suite manifest under `inputs` lists. Counts
    `pytorch_side_attached`, `pytorch_side_missing` (a graph of a suite debug root that its manifest does not
    list) and `pytorch_program_missing` in `stats`."""

    def __init__(self, inputs: list[Path], stats: Stats) -> None:
        self.roots = suite_roots(inputs)
        self.indexes = [(root, graph_index(root)) for root in self.roots]
        self.stats = stats
        self.cache: dict = {}  # program path -> text, read once

    def run(self, records: list[KernelRecord]) -> list[KernelRecord]:
        """Attach the PyTorch side to one batch of records (in place); returns it."""
        if self.indexes:
            for record in records:
                attach_one(record, self.indexes, self.cache, self.stats)
        return records


CORRECT = {"pass": True, "fail": False}


def set_correct(record: KernelRecord, side: dict, stats: Stats) -> None:
    """The `correct` level from the model's accuracy check, with its evidence."""
    record.correct = CORRECT.get(side.get("accuracy"))
    if side.get("accuracy") is None:
        return
    evidence = {"ok": record.correct, "accuracy": side["accuracy"], "model": side.get("model"),
                "max_error": side.get("max_error"), "tolerance": side.get("tolerance")}
    record.validation = {**(record.validation or {}), "correct": evidence}
    stats.inc(f"correct_{side['accuracy']}")


def attach_one(record: KernelRecord, indexes: list[tuple[Path, dict]], cache: dict, stats: Stats) -> bool:
    """Join one record to the first suite manifest that lists its graph; True when it was joined."""
    if record.source != "inductor" or not record.run_dir:
        return False
    for root, index in indexes:
        side = pytorch_side(record, index, root, cache=cache)
        if side is not None:
            if side["program_file"] and side["program"] is None:
                stats.inc("pytorch_program_missing")
                stats.error("attach", f"{root}/{side['program_file']}", "program file missing or unreadable")
            record.extra[PYTORCH_KEY] = side
            set_correct(record, side, stats)
            stats.inc("pytorch_side_attached")
            return True
    if any((root / record.run_dir).is_dir() for root, _ in indexes):
        # A run folder of a suite debug root whose graph no manifest line lists (e.g. a manifest cut short).
        record.extra.pop(PYTORCH_KEY, None)
        stats.inc("pytorch_side_missing")
        stats.error("attach", f"{record.run_dir}/{record.graph}", "graph not in the suite manifest")
    return False
