"""The unit stage 1's chain passes from step to step: one graph (one output_code.py) and what it becomes.

    extract (stage.py) -> attach the PyTorch side (attach.py) -> pair (scraper.pairs) -> validate -> write

Each step takes a `GraphUnit` and returns it (`run(unit) -> unit`); what the graph's files hold is read and parsed
once, here, and every step uses it: the text of output_code.py, its kernels, the FX graph, the suite's side of the
graph (program, problem and pairing read once per graph, never copied onto each kernel record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from scraper.inductor.layout import Graph
from scraper.inductor.output_code import OutputCode
from scraper import pipeline
from scraper.records import KernelRecord


@dataclass
class GraphUnit:
    """One graph of the input and everything the chain makes of it."""

    path: Path  # the output_code.py read
    graph: Graph
    folder: str  # <model>/<graph> in the output folder
    text: str = ""  # output_code.py's text (U+FFFD where bytes were not UTF-8)
    content: bytes = b""  # ... and its bytes, copied to the output as they are
    embedded: Optional[OutputCode] = None  # its kernels as read
    fx_graph: Optional[str] = None  # fx_graph_readable.py's text, when the graph folder has one
    records: list = field(default_factory=list)  # KernelRecord, one per kernel
    side: Optional[object] = None  # scraper.suiterun.PyTorchSide, when a suite manifest lists the graph
    root: Optional[Path] = None  # the suite debug root the graph belongs to (None: a plain debug folder)
    pairs: list = field(default_factory=list)  # scraper.records.PairRecord made of the graph
    pair_rejects: list = field(default_factory=list)  # {"reason", "folder", ...} rows of what gave no pair
    problems: list = field(default_factory=list)  # scraper.pairs.problem.Problem files to write

    @property
    def first(self) -> Optional[KernelRecord]:
        return self.records[0] if self.records else None


Step = pipeline.Step  # here: GraphUnit -> GraphUnit


def records_step(function: Callable[[list], list]) -> Step:
    """A step over a unit's kernel records (a validator's `run(records) -> records`) as a unit step."""

    def step(unit: GraphUnit) -> GraphUnit:
        unit.records = function(unit.records)
        return unit

    return step
