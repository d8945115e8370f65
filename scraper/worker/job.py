"""The one contract between the suite's host side and its worker: a job record in, a result record out.

The orchestrator (scraper.suite.orchestrate) writes a `WorkerJob` as JSON and starts the worker on it:

    python -m scraper.worker JOB.json            # one model, then exit (behind the wall: paths as seen inside)

A persistent worker (scraper.worker.serve) gets the same record, one JSON line per model, on its stdin. The worker
writes a `WorkerResult` to `job.result`; the orchestrator turns it into the manifest entry
(scraper.suiterun.ManifestEntry), its own fields winning over what a walled worker (which ran scraped code)
claims. A replacement worker script (`run_inductor_suite.py --worker SCRIPT`) is called the same way:
`SCRIPT JOB.json`, and reads its job with `read_job`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from scraper.records import RecordFields

MODES = ("inference", "training")
MAX_JOB_BYTES = 16 * 1024 * 1024  # a job holds a module's hints at most: a few KB


@dataclass
class WorkerJob(RecordFields):
    """One model to build, compile and check (module docstring). Paths are as the worker sees them."""

    suite: str
    model: str  # timm name, transformers class, module id or TorchBench model
    out: str  # the debug root: run_*/ folders are created here
    program: str  # where to write the model's standalone program
    result: str  # where to write the WorkerResult JSON
    problem: Optional[str] = None  # where to write the model's KernelBench problem (none without)
    pairing: Optional[str] = None  # where to write the pairing record (none without)
    graph_name: Optional[str] = None  # the name given to the graphs (default: model)
    mode: str = "inference"
    dtype: str = "float32"
    batch_size: Optional[int] = None  # default: the suite's; torchbench: the model's own
    seq_len: int = 512  # huggingface: tokens per sequence (capped by the config's max_position_embeddings)
    hf_layers: int = 2  # huggingface: max layers per stack; 0 = all
    max_autotune: bool = False  # mode="max-autotune-no-cudagraphs"
    backend: str = "inductor"  # torch.compile backend; "none" = run eagerly (a dry run of the program)
    device: Optional[str] = None  # cuda or cpu (default: cuda when available)
    accuracy: bool = True  # compare the compiled model's outputs (in training, loss and gradients) with eager
    cache: bool = False  # keep Inductor's FX-graph/autograd caches on (a hit can skip writing the debug files)
    source: Optional[str] = None  # modules: the module's source file (its dependency closure)
    class_name: Optional[str] = None  # modules: the nn.Module class to build
    hints: list = field(default_factory=list)  # modules: the class's calls in its repository (usages)
    torchbench_dir: Optional[str] = None  # torchbench: the checkout of pytorch/benchmark ($TORCHBENCH_DIR)
    random_weights: bool = False  # torchbench: keep the random initialization where a checkpoint would be fetched
    log: Optional[str] = None  # a persistent worker: the file this model's output goes to
    source_text: Optional[str] = None  # a persistent worker behind the wall: the source, written to `source`
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.hints is None:
            self.hints = []

    def replace(self, **changes) -> "WorkerJob":
        return dataclasses.replace(self, **changes)

    def write(self, path: str | Path) -> Path:
        """The job as a JSON file (what the worker is started on)."""
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return Path(path)


def read_job(argv: Optional[list[str]] = None) -> WorkerJob:
    """The job of a worker's command line: `JOB.json` (or `--job JOB.json`); SystemExit(2) with a message when
    there is none or it is not a job."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--job"]:
        args = args[1:]
    if len(args) != 1:
        sys.exit("usage: python -m scraper.worker JOB.json  (a WorkerJob, see scraper/worker/job.py)")
    path = Path(args[0])
    try:
        if path.stat().st_size > MAX_JOB_BYTES:
            raise ValueError("too large")
        return WorkerJob.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        sys.exit(f"{path}: not a worker job ({exc})")


@dataclass
class WorkerResult(RecordFields):
    """What the worker reports about one model (its result JSON). Everything a worker found out beyond these
    fields (the constructor arguments and input shapes it inferred, TorchBench's batch size, ...) is in `extra`
    and reaches the manifest entry as it is."""

    suite: Optional[str] = None
    model: Optional[str] = None
    success: bool = False
    phase: Optional[str] = None  # which step failed: program, import, init, inputs, build, compile, worker
    error: Optional[str] = None  # `Type: first line`
    pid: Optional[int] = None
    seconds: Optional[float] = None
    device: Optional[str] = None
    build_seconds: Optional[float] = None
    compile_seconds: Optional[float] = None
    parameters: Optional[int] = None
    run_dir: Optional[str] = None  # the debug run folder, relative to the job's `out`
    graphs: list = field(default_factory=list)
    kernels: int = 0
    versions: dict = field(default_factory=dict)
    accuracy: Optional[str] = None
    max_error: Optional[float] = None
    accuracy_detail: Optional[dict] = None
    skip_reason: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The result JSON: every field, then what `extra` holds at the top level."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data.update(self.extra)
        return data

    json_fields = to_dict  # what scraper.fileio.json_line writes

    def update(self, fields: dict) -> None:
        """Set fields by name; names that are no field go to `extra`."""
        known = {f.name for f in dataclasses.fields(self)}
        for key, value in fields.items():
            if key in known and key != "extra":
                setattr(self, key, value)
            else:
                self.extra[key] = value
