"""The pair record and its JSONL file (`pairs.jsonl`); the problem index (`problems/problems.jsonl`).

A `PairRecord` is one PyTorch -> Triton pair: KernelBook's columns (`python_code`, `triton_code`, `entry_point`,
`repo_name`, `licenses`, `stars`, `sha`) and this pipeline's provenance and checks. Only this module turns pair
lines into records and back (as scraper.records does for kernels); the file mechanics are scraper.fileio's.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from scraper.fileio import iter_jsonl_lines, report
from scraper.records import PAIRS, PAIRS_REJECTS, RecordFields, kernel_id  # noqa: F401  (re-exported)

PROBLEMS_DIR = "problems"  # ... and the reference problems, one .py file each
PROBLEMS_INDEX = "problems.jsonl"  # inside PROBLEMS_DIR: one line per problem file
ENTRY_POINT = "Model"  # the reference class; the Triton one is ENTRY_POINT + "New" (KernelBook's convention)
LEVELS = ("kernel", "graph", "model")  # one fused kernel, one graph, one whole model


@dataclass
class PairRecord(RecordFields):
    """One PyTorch -> Triton pair. Fields that do not apply stay None."""

    python_code: str  # the KernelBench-form problem: class Model, get_inputs(), get_init_inputs()
    triton_code: str  # the kernels, call(args) and class ModelNew
    id: str = ""  # kernel_id(triton_code): the normalized Triton program (also the dedup key)
    entry_point: str = ENTRY_POINT
    # KernelBook's provenance columns
    repo_name: Optional[str] = None
    licenses: list = field(default_factory=list)
    stars: Optional[int] = None
    sha: Optional[str] = None
    # where it came from
    suite: Optional[str] = None
    model: Optional[str] = None
    mode: Optional[str] = None
    dtype: Optional[str] = None
    graph: Optional[str] = None  # the graph folder's name
    folder: Optional[str] = None  # <model>/<graph> in the Inductor stage's output
    run_dir: Optional[str] = None
    path: Optional[str] = None  # modules: the file of the class in its repository
    pair_level: str = "graph"  # kernel: one Triton kernel and the FX nodes it fuses; graph: the ATen graph Inductor
    #                            compiled; model: python_code is the suite's model
    level_reason: Optional[str] = None  # why a graph-level pair is not model-level (no_pairing, graph_breaks, ...)
    kernels: list = field(default_factory=list)  # names of the Triton kernels call() launches
    launch_configs: dict = field(default_factory=dict)  # recorded | heuristics | decorator -> kernels
    versions: Optional[dict] = None
    program_file: Optional[str] = None  # the suite program, relative to its debug root
    problem_file: Optional[str] = None  # python_code's file, relative to the output folder
    # KernelBook's other columns
    original_triton_code: Optional[str] = None  # what Inductor wrote: the kernel as embedded, or output_code.py
    module_name: Optional[str] = None  # the nn.Module the PyTorch comes from (the model's class, the kernel)
    uuid: Optional[str] = None  # a stable UUID of the pair (uuid5 of its id)
    repo_link: Optional[str] = None  # https://github.com/<repo> (at its commit where known)
    # the problem
    kernel: Optional[str] = None  # kernel level: the kernel's name in its graph
    ops: list = field(default_factory=list)  # kernel level: the ATen ops Model calls
    needs_cuda: Optional[bool] = None  # Model calls an op without a CPU kernel (fused attention, ...)
    packages: list = field(default_factory=list)  # what python_code imports besides torch (timm, transformers)
    reference_finite: Optional[bool] = None  # Model's output on get_inputs() is finite (None: not run here)
    # checks
    accuracy: Optional[str] = None  # the suite model's accuracy check: pass | fail | skipped (None: not run)
    max_error: Optional[float] = None
    pair_correct: Optional[bool] = None  # the GPU check (scraper.pairs.check); None: not checked
    speedup: Optional[float] = None  # eager time / Triton time, on that GPU
    check: Optional[dict] = None  # the check's evidence: max_error, eager_ms, triton_ms, gpu, error ...
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pair_level not in LEVELS:
            raise ValueError(f"pair_level must be one of {LEVELS}, got {self.pair_level!r}")
        if not self.id:
            self.id = kernel_id(self.triton_code)
        if not self.uuid and self.triton_code:
            self.uuid = pair_uuid(self.id)

    def identify(self) -> None:
        """id and uuid from the finished triton_code."""
        self.id = kernel_id(self.triton_code)
        self.uuid = pair_uuid(self.id)


def pair_uuid(pair_id: str) -> str:
    """The pair's UUID (KernelBook's `uuid` column): uuid5 of its id, so the same program has the same UUID."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"triton-data/pair/{pair_id}"))



def iter_pairs(path: str | os.PathLike, on_error: Optional[Callable[[int, str], None]] = None
               ) -> Iterator[PairRecord]:
    """Every well-formed pair of a pairs.jsonl; bad lines go to `on_error(line_number, message)`."""
    for line in iter_jsonl_lines(path):
        if line.error:
            report(on_error, line.number, line.error)
            continue
        try:
            yield PairRecord.from_dict(line.data)
        except (TypeError, ValueError, AttributeError) as exc:
            report(on_error, line.number, f"{path}:{line.number}: not a pair record ({type(exc).__name__}: {exc})")


def read_pairs(path: str | os.PathLike, on_error: Optional[Callable[[int, str], None]] = None) -> list[PairRecord]:
    """`iter_pairs` as a list."""
    return list(iter_pairs(path, on_error))
