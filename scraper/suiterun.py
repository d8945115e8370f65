"""What a suite run (stage 0) leaves on disk for stage 1, typed: the one contract between the two stages.

A debug root made by run_inductor_suite.py holds, beside the run_<date>-pid_<pid>/ folders Inductor writes:

    suite/manifest.jsonl (a shard: manifest-<i>-of-<N>.jsonl)   one ManifestEntry per model attempt
    suite/programs/<suite>/<variant>/<model>.py                 the model's standalone program
    suite/problems/<suite>/<variant>/<model>.py                 its KernelBench problem (scraper.kernelbench)
    suite/pairing/<suite>/<variant>/<model>.json                its Pairing: what each graph's call() takes
    suite/logs/<suite>/<variant>/<model>.log

Stage 0 writes the manifest and the pairing through these types (`to_dict`), stage 1 reads them back through
`SuiteRoot` and attaches a `PyTorchSide` to the kernels of each graph. All of it was written by a worker process
(for --suite modules, next to scraped code): files are read only inside their own debug root, with size caps,
and `from_dict` keeps only values of the expected types (a pairing that lies is refused, not trusted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from scraper.fileio import Done
from scraper.records import RecordFields

SUITE_DIR = "suite"
# What identifies "the same run" of a model: a model compiled in another mode or dtype is another job.
RESUME_KEYS = ("suite", "model", "mode", "dtype", "max_autotune")
# The largest files a worker writes are a few hundred KB (a closure); anything far larger is not one.
MAX_PROGRAM_BYTES = 16 * 1024 * 1024
MAX_PAIRING_BYTES = 64 * 1024 * 1024
# The footer the worker puts between a scraped module's closure and the suite's build() (scraper.worker.programs).
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
FOOTER_MARKER = "# " + "-" * 105 + "\n# Added by run_inductor_suite.py: how the suite built and called "


# ------------------------------------------------------------------------------------------------ manifest


@dataclass
class ManifestEntry(RecordFields):
    """One line of the suite's manifest: one attempt at one model. Fields that do not apply stay None; keys this
    version does not know are kept under `extra` (and written back at the top level)."""

    suite: Optional[str] = None
    model: Optional[str] = None
    mode: Optional[str] = "inference"
    dtype: Optional[str] = "float32"
    max_autotune: Optional[bool] = False
    status: Optional[str] = None  # ok | failed | skipped | timeout | crashed
    success: Optional[bool] = None
    phase: Optional[str] = None  # the step that failed: program, import, init, inputs, build, compile, worker
    error: Optional[str] = None
    returncode: Optional[int] = None
    batch_size: Optional[int] = None
    gpu: Optional[str] = None
    device: Optional[str] = None
    shard: Optional[str] = None
    started_at: Optional[str] = None
    seconds: Optional[float] = None
    worker_seconds: Optional[float] = None
    build_seconds: Optional[float] = None
    compile_seconds: Optional[float] = None
    parameters: Optional[int] = None
    # what the worker left, relative to the debug root
    run_dir: Optional[str] = None
    graphs: Optional[list] = None
    kernels: Optional[int] = None
    program: Optional[str] = None
    problem: Optional[str] = None
    pairing: Optional[str] = None
    log: Optional[str] = None
    versions: Optional[dict] = None
    # the accuracy check (scraper.accuracy)
    accuracy: Optional[str] = None  # pass | fail | skipped; None: not checked
    max_error: Optional[float] = None
    accuracy_detail: Optional[dict] = None
    # --suite modules
    module: Optional[dict] = None  # repo, path, commit, license, stars, lineno, class_name
    # a model not run
    skip_reason: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        """The resume key (RESUME_KEYS)."""
        return tuple(getattr(self, name) for name in RESUME_KEYS)

    def to_dict(self) -> dict:
        """The manifest line: every field, then the keys of `extra` at the top level."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data.update(self.extra)
        return data

    json_fields = to_dict  # what scraper.fileio.json_line writes

    @property
    def tolerance(self) -> Optional[float]:
        return (self.accuracy_detail or {}).get("tolerance") if isinstance(self.accuracy_detail, dict) else None


def safe_name(name: str, max_length: int = 120) -> str:
    """`name` as a file/graph-folder name: runs of characters other than letters, digits, `_-` become `_`
    (no dots: Inductor's graph folders are `<name>__<n>_inference_<a>.<b>`, parsed from the right). Longer
    than `max_length`: cut, and 8 hex digits of the name's sha256 appended so that cut names stay distinct."""
    safe = _UNSAFE.sub("_", name).strip("_") or "model"
    if len(safe) <= max_length:
        return safe
    return f"{safe[: max_length - 9]}_{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def resume_key(entry: dict) -> tuple:
    """The identity of a model run in a manifest line (see RESUME_KEYS)."""
    return tuple(entry.get(key) for key in RESUME_KEYS)


def manifest_files(debug_root: str | os.PathLike) -> list[Path]:
    """suite/manifest.jsonl and the shards' suite/manifest-<i>-of-<N>.jsonl under a debug root."""
    return sorted((Path(debug_root) / SUITE_DIR).glob("manifest*.jsonl"))


def latest_entries(debug_root: str | os.PathLike) -> dict[tuple, ManifestEntry]:
    """The latest manifest entry per resume key, over every manifest file of the debug root."""
    return Done(manifest_files(debug_root), key=lambda entry: entry.key, parse=entry_of).entries


def entry_of(data: Any) -> Optional[ManifestEntry]:
    """A manifest line as an entry, None when it is not one (not an object, no model)."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        return None
    try:
        return ManifestEntry.from_dict(data)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ run folders


def run_dir_contents(run_dir: str | os.PathLike) -> dict:
    """The graph folders under `run_dir`/torchinductor/ and the Triton kernels in their output_code.py (counted
    as `async_compile.triton(` calls)."""
    graph_root = Path(run_dir) / "torchinductor"
    graphs = sorted(p for p in graph_root.iterdir() if p.is_dir()) if graph_root.is_dir() else []
    return {"graphs": [g.name for g in graphs], "kernels": sum(count_kernels(g / "output_code.py") for g in graphs)}


def count_kernels(path: Path) -> int:
    """Triton kernels defined in one output_code.py (its `async_compile.triton(` calls); 0 when absent."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").count("async_compile.triton(")
    except OSError:
        return 0


def find_run_dir(debug_root: str | os.PathLike, pid: int) -> Optional[Path]:
    """The run_<date>-pid_<pid> folder a worker process made (for workers that died without reporting it)."""
    found = sorted(Path(debug_root).glob(f"run_*-pid_{pid}"))
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------------ pairing


class PairingError(ValueError):
    """A pairing record that is not what a worker writes."""


def _int(value: Any, what: str) -> int:
    """A non-negative int of a pairing record (a worker wrote it: checked before any code uses it)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PairingError(f"{what}: {value!r:.40} where a count or an index belongs")
    return value


@dataclass
class AotGraph:
    """One graph AOT autograd handed Inductor: the one whose `call(args)` output_code.py holds."""

    kind: str  # inference | forward | backward
    folder: Optional[str]  # its graph folder under the run folder's torchinductor/
    inputs: list  # its placeholder names, in call()'s argument order
    outputs: int
    output_offset: int  # where the model's own outputs start among them (after mutated inputs)

    @classmethod
    def from_dict(cls, data: dict) -> "AotGraph":
        if not isinstance(data, dict) or data.get("kind") not in ("inference", "forward", "backward"):
            raise PairingError(f"aot graph {data!r:.60}")
        inputs = data.get("inputs") or []
        if not isinstance(inputs, list) or not all(isinstance(name, str) for name in inputs):
            raise PairingError("aot inputs are not names")
        folder = data.get("folder")
        return cls(data["kind"], folder if isinstance(folder, str) else None, inputs,
                   _int(data.get("outputs", 0), "outputs"), _int(data.get("output_offset", 0), "output_offset"))


@dataclass
class GraphInput:
    """What one placeholder of a Dynamo graph is: a parameter or buffer of the model (by state-dict name), one of
    the inputs (by position in get_inputs()), or unmapped."""

    kind: str  # parameter | buffer | input | unmapped
    name: Optional[str] = None
    index: Optional[int] = None

    @classmethod
    def from_dict(cls, data: dict) -> "GraphInput":
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind == "input":
            return cls("input", index=_int(data.get("index"), "input index"))
        if kind in ("parameter", "buffer"):
            if not isinstance(data.get("name"), str):
                raise PairingError(f"{kind} without a name")
            return cls(kind, name=data["name"])
        return cls("unmapped")


@dataclass
class PairingGraph:
    """One Dynamo graph of the model: its placeholders resolved, the AOT graphs made of it, and where each output
    tensor of the model is among its outputs (None: not found)."""

    index: int
    inputs: list  # GraphInput per placeholder
    returns: list  # per output tensor of the model: its index among the graph's outputs, or None
    outputs: int
    own_state: list = field(default_factory=list)  # parameters the graph module holds itself
    aot: list = field(default_factory=list)  # AotGraph

    @classmethod
    def from_dict(cls, data: dict) -> "PairingGraph":
        if not isinstance(data, dict):
            raise PairingError("graph is not an object")
        returns = data.get("returns") or []
        if not isinstance(returns, list):
            raise PairingError("returns is not a list")
        return cls(_int(data.get("index", 0), "index"), [GraphInput.from_dict(i) for i in data.get("inputs") or []],
                   [None if r is None else _int(r, "return index") for r in returns],
                   _int(data.get("outputs", 0), "outputs"), list(data.get("own_state") or []),
                   [AotGraph.from_dict(a) for a in data.get("aot") or []])


@dataclass
class Pairing:
    """The pairing record of one model (written by scraper.worker.recording while it compiles): its Dynamo graphs,
    its parameters' and buffers' shapes and dtypes (`state`), its inputs, and the launch configuration Inductor's
    autotuner kept for each Triton kernel (`kernels`: {"by_file": ..., "by_name": ...})."""

    graphs: list = field(default_factory=list)  # PairingGraph
    state: dict = field(default_factory=dict)  # name -> {"shape", "dtype", "persistent"}
    inputs: list = field(default_factory=list)
    kernels: dict = field(default_factory=dict)
    backend: Optional[str] = None
    version: int = 1

    @classmethod
    def from_dict(cls, data: dict) -> "Pairing":
        """A pairing JSON as written by a worker; raises PairingError for anything else."""
        if not isinstance(data, dict):
            raise PairingError("not an object")
        state = data.get("state") or {}
        kernels = data.get("kernels") or {}
        if not isinstance(state, dict) or not isinstance(kernels, dict):
            raise PairingError("state or kernels is not an object")
        return cls([PairingGraph.from_dict(g) for g in data.get("graphs") or []], state,
                   list(data.get("inputs") or []), kernels, data.get("backend"), data.get("version") or 1)

    def model_level(self) -> tuple[Optional[PairingGraph], Optional[str]]:
        """The one graph through which `call(args)` computes the whole model, with its single inference AOT
        graph, or None and why not: several graphs (graph breaks), not an inference graph, counts that disagree
        (AOT deduplicated or added inputs), a placeholder that is neither a parameter, a buffer nor an input, or an
        output tensor that is not among the graph's outputs."""
        if len(self.graphs) != 1:
            return None, "no_pairing" if not self.graphs else "graph_breaks"
        graph = self.graphs[0]
        if len(graph.aot) != 1 or graph.aot[0].kind != "inference":
            return None, "not_inference"
        if graph.own_state or len(graph.aot[0].inputs) != len(graph.inputs):
            return None, "inputs_not_one_to_one"
        if any(entry.kind == "unmapped" for entry in graph.inputs):
            return None, "unmapped_input"
        if not graph.returns or any(index is None for index in graph.returns):
            return None, "unmapped_output"
        if graph.aot[0].output_offset + graph.outputs > graph.aot[0].outputs:
            return None, "outputs_not_one_to_one"
        return graph, None


def model_level_graph(pairing: Optional[dict]) -> tuple[Optional[PairingGraph], Optional[str]]:
    """`Pairing.model_level` of a pairing JSON (None or garbage: no pairing)."""
    if not pairing:
        return None, "no_pairing"
    try:
        return Pairing.from_dict(pairing).model_level()
    except PairingError:
        return None, "bad_pairing"


# ------------------------------------------------------------------------------------------------ programs


def module_source(program: str) -> Optional[str]:
    """The scraped module's own source (its dependency closure) out of a `--suite modules` program: everything
    before the suite's footer, ending in one newline; None when the text has no footer (not a modules program)."""
    cut = program.rfind("\n" + FOOTER_MARKER)
    if cut < 0:
        return None
    return program[:cut].rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------ the side


@dataclass
class PyTorchSide:
    """What stage 1 knows about the PyTorch side of one graph: the model and the suite run that produced it. The
    texts (`program`, `module`) are read once per graph and never stored on the kernel records."""

    suite: Optional[str]
    model: Optional[str]
    mode: Optional[str] = None
    dtype: Optional[str] = None
    program_file: Optional[str] = None  # relative to the debug root
    problem_file: Optional[str] = None
    pairing_file: Optional[str] = None
    module_provenance: Optional[dict] = None  # --suite modules: repo, path, commit, license, stars, class_name
    accuracy: Optional[str] = None
    max_error: Optional[float] = None
    tolerance: Optional[float] = None
    versions: Optional[dict] = None
    program: Optional[str] = field(default=None, repr=False)  # the program's text (None: missing, unreadable)
    problem: Optional[str] = field(default=None, repr=False)  # the problem the worker wrote
    pairing: Optional[dict] = field(default=None, repr=False)  # the pairing JSON

    @property
    def module(self) -> Optional[str]:
        """--suite modules: the module's own source (its closure) out of the program; else None."""
        return module_source(self.program) if self.suite == "modules" and self.program else None

    def record_fields(self) -> dict:
        """What goes on each kernel record (`extra["pytorch"]`): everything but the texts."""
        texts = ("program", "problem", "pairing")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in texts}


class SuiteRoot:
    """A debug root that holds a suite manifest: its entries by graph, and the files they name, read inside the
    root only (a manifest is data, not a path to trust) and each once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.resolved = self.path.resolve()
        self.entries = latest_entries(self.path)
        self.by_graph = {(Path(e.run_dir).name, graph): e for e in self.entries.values() if e.run_dir
                         for graph in e.graphs or [] if isinstance(graph, str)}
        self._texts: dict[Path, Optional[str]] = {}

    def entry_for(self, run_dir: Optional[str], graph: Optional[str]) -> Optional[ManifestEntry]:
        """The manifest entry of the model that produced graph `graph` of run folder `run_dir`."""
        return self.by_graph.get((Path(run_dir or "").name, graph or ""))

    def side(self, entry: ManifestEntry) -> PyTorchSide:
        """The PyTorch side of one manifest entry, its files read."""
        pairing_text = self.read(entry.pairing, MAX_PAIRING_BYTES)
        try:
            pairing = json.loads(pairing_text) if pairing_text else None
        except ValueError:
            pairing = None
        return PyTorchSide(
            suite=entry.suite, model=entry.model, mode=entry.mode, dtype=entry.dtype, program_file=entry.program,
            problem_file=entry.problem, pairing_file=entry.pairing, module_provenance=entry.module,
            accuracy=entry.accuracy, max_error=entry.max_error, tolerance=entry.tolerance, versions=entry.versions,
            program=self.read(entry.program), problem=self.read(entry.problem),
            pairing=pairing if isinstance(pairing, dict) else None)

    def read(self, relative: Optional[str], limit: int = MAX_PROGRAM_BYTES) -> Optional[str]:
        """The text of a file a manifest entry names (relative to the root); None when it is missing, unreadable,
        too large, a link, or outside the root."""
        if not isinstance(relative, str) or not relative:
            return None
        path = (self.resolved / relative).resolve()
        if path not in self._texts:
            self._texts[path] = read_inside(self.resolved, path, limit)
        return self._texts[path]

    def run_folders(self) -> Iterator[Path]:
        """The run folders the entries name that exist."""
        for entry in self.entries.values():
            if entry.run_dir and (self.path / entry.run_dir).is_dir():
                yield self.path / entry.run_dir


def read_inside(root: Path, path: Path, limit: int) -> Optional[str]:
    """The text of `path` when it is a regular file below `root` of at most `limit` bytes, else None."""
    if root not in path.parents or not path.is_file() or path.stat().st_size > limit:
        return None
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def enclosing_root(path: Path) -> Optional[Path]:
    """`path` itself or its nearest parent folder that holds a suite manifest; None when there is none."""
    path = Path(path).resolve()  # a relative input's parents stop at the working folder
    start = path if path.is_dir() else path.parent
    return next((folder for folder in [start, *start.parents] if manifest_files(folder)), None)


def suite_roots(inputs: list[Path]) -> list[Path]:
    """The debug roots holding a suite manifest at, above or below each input (an input may be the debug root,
    a folder of several roots, a run_* folder inside one, or an output_code.py file)."""
    roots: dict[Path, Path] = {}
    for path in map(Path, inputs):
        found = [enclosing_root(path)]
        if path.is_dir():
            found += [m.parent.parent for m in sorted(path.rglob("manifest*.jsonl")) if m.parent.name == SUITE_DIR]
        for root in found:
            if root is not None:
                roots.setdefault(root.resolve(), root)
    return list(roots.values())
