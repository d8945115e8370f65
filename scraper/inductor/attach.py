"""Give each graph of a suite run its PyTorch side: the model and program that produced it (a step of stage 1).

`get_kernels_from_debug_info.py` extracts kernels from debug folders; when a folder was written by
run_inductor_suite.py it holds a suite manifest (scraper.suiterun) naming, per model, its run_* folder, its graphs,
its program, problem and pairing record. `AttachStep` joins each graph to its entry on (run folder, graph folder)
and puts the side on the unit (`unit.side`: the texts read once per graph) and, without the texts, on each kernel
record (`record.extra["pytorch"]`):

    {"suite", "model", "mode", "dtype", "program_file", "problem_file", "pairing_file", "module_provenance",
     "accuracy", "max_error", "tolerance", "versions",
     "program_copy"}       # <model>/<graph>/program.py in the output: the program, once per graph

The manifest is the authority for a suite root: a graph's model is the entry's model, never what the graph folder's
name says (a scraped module can write a folder called `resnet18__0_inference_0.0` into its own run folder), and
kernels of `--suite modules` graphs are marked `extra["scraped"] = True`. A graph folder inside a suite root that no
entry lists keeps no model at all. It also sets the verification level `correct` from the model's accuracy check
(True = passed, False = failed, None = skipped or not run), with the evidence in `record.validation["correct"]`.
Nothing is executed: the files are read as text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from scraper.inductor.unit import GraphUnit
from scraper.records import KernelRecord
from scraper.stats import Stats
from scraper.suiterun import PyTorchSide, SuiteRoot, suite_roots

log = logging.getLogger(__name__)

PYTORCH_KEY = "pytorch"  # the key under KernelRecord.extra
SCRAPED_KEY = "scraped"  # ... True for kernels Inductor generated for a scraped nn.Module
CORRECT = {"pass": True, "fail": False}


class AttachStep:
    """The attach step (module docstring). Counts `pytorch_side_attached` (kernels), `pytorch_side_missing` (kernels
    of a suite root's graph that its manifest does not list) and `pytorch_program_missing` in `stats`."""

    def __init__(self, inputs: list[Path], stats: Stats) -> None:
        self.roots = [SuiteRoot(path) for path in suite_roots(inputs)]
        self.stats = stats
        self.sides: dict = {}  # (root, resume key) -> PyTorchSide, read once per model

    def __call__(self, unit: GraphUnit) -> GraphUnit:
        if not self.roots or not unit.records:
            return unit
        for root in self.roots:
            entry = root.entry_for(unit.graph.run_dir, unit.graph.graph)
            if entry is not None:
                unit.root, unit.side = root.path, self.side_of(root, entry)
                copy = f"{unit.folder}/program.py" if unit.side.program is not None else None
                for record in unit.records:
                    attach(record, unit.side, self.stats, copy)
                return unit
        if self.inside_a_root(unit):
            for record in unit.records:  # a folder the suite did not make: no model, whatever its name says
                record.extra.pop(PYTORCH_KEY, None)
                record.model = None
                self.stats.inc("pytorch_side_missing")
            self.stats.error("attach", f"{unit.graph.run_dir}/{unit.graph.graph}", "graph not in the suite manifest")
        return unit

    def side_of(self, root: SuiteRoot, entry) -> PyTorchSide:
        key = (root.resolved, entry.key)
        if key not in self.sides:
            side = self.sides[key] = root.side(entry)
            if side.program_file and side.program is None:
                self.stats.inc("pytorch_program_missing_models")
                self.stats.error("attach", f"{root.path}/{side.program_file}", "program file missing or unreadable")
        return self.sides[key]

    def inside_a_root(self, unit: GraphUnit) -> bool:
        """Whether the graph lies in a run folder of a suite root (as opposed to a plain debug folder)."""
        run_dir = unit.graph.run_dir
        return bool(run_dir) and any((root.path / run_dir).is_dir() for root in self.roots)


def attach(record: KernelRecord, side: PyTorchSide, stats: Stats, program_copy: Optional[str] = None) -> None:
    """The side's fields on one kernel record, its model the manifest's, and its `correct` level."""
    record.extra[PYTORCH_KEY] = {**side.record_fields(), "program_copy": program_copy}
    if side.model:
        record.model = side.model
    if side.suite == "modules":
        record.extra[SCRAPED_KEY] = True
    stats.inc("pytorch_side_attached")
    if side.program_file and side.program is None:
        stats.inc("pytorch_program_missing")
    set_correct(record, side, stats)


def set_correct(record: KernelRecord, side: PyTorchSide, stats: Stats) -> None:
    """The `correct` level from the model's accuracy check, with its evidence."""
    record.correct = CORRECT.get(side.accuracy)
    if side.accuracy is None:
        return
    evidence = {"ok": record.correct, "accuracy": side.accuracy, "model": side.model,
                "max_error": side.max_error, "tolerance": side.tolerance}
    record.validation = {**(record.validation or {}), "correct": evidence}
    stats.inc(f"correct_{side.accuracy}")


def side_of_record(record: KernelRecord) -> Optional[dict]:
    """The PyTorch side stored on a kernel record (None for kernels of plain debug folders)."""
    return record.extra.get(PYTORCH_KEY)
