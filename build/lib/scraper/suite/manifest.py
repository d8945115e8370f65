"""The suite's manifest: one JSON line per model attempt in <debug root>/suite/manifest*.jsonl.

Each line: suite, model, mode, dtype, max_autotune, batch_size, gpu, started_at, seconds (wall, orchestrator),
status ("ok" | "failed" | "skipped" | "timeout" | "crashed"), success, phase (which step failed: program, import,
init, inputs, build, compile, worker), error (`Type: first line`), returncode, run_dir (the run_<date>-pid_<pid>/ folder
of the worker, relative to the debug root), graphs (graph folder names under run_dir/torchinductor/), kernels
(Triton kernels in their output_code.py), program and log (paths relative to the debug root), versions (torch,
triton, cuda, gpu, python, timm/transformers), build_seconds, compile_seconds, worker_seconds, parameters,
device, shard; for --suite modules also module (repo, path, commit, license, class_name), init_args,
init_kwargs, input_shapes; for --suite torchbench also torchbench_dir, torchbench_commit, random_weights,
random_weights_used (checkpoints not fetched), and for a skipped model skip_reason ("needs download", "missing
package X", "not implemented", "not in the checkout") and blocked (the network accesses refused). The latest line
of a (suite, model, mode, dtype, max_autotune) wins.

`graph_index` / `pytorch_side` join the kernels that get_kernels_from_debug_info.py extracts (their `run_dir` and
`graph` fields) back to the model and the PyTorch program that produced them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from scraper.records import KernelRecord, iter_jsonl
from scraper.suite.programs import module_source

# What identifies "the same run" of a model: a model compiled in another mode or dtype is another job.
RESUME_KEYS = ("suite", "model", "mode", "dtype", "max_autotune")


def resume_key(entry: dict) -> tuple:
    """The identity of a model run in the manifest (see RESUME_KEYS)."""
    return tuple(entry.get(key) for key in RESUME_KEYS)


def manifest_files(debug_root: str | os.PathLike) -> list[Path]:
    """suite/manifest.jsonl and the shards' suite/manifest-<i>-of-<N>.jsonl under a debug root."""
    return sorted((Path(debug_root) / "suite").glob("manifest*.jsonl"))


def latest_entries(debug_root: str | os.PathLike) -> dict[tuple, dict]:
    """The latest manifest entry per resume key, over every manifest file of the debug root."""
    latest: dict[tuple, dict] = {}
    for path in manifest_files(debug_root):
        for entry in iter_jsonl(path):
            latest[resume_key(entry)] = entry
    return latest


def graph_index(debug_root: str | os.PathLike) -> dict[tuple[str, str], dict]:
    """(run_dir folder name, graph folder name) -> the manifest entry of the model that produced that graph."""
    index = {}
    for entry in latest_entries(debug_root).values():
        run_dir = entry.get("run_dir")
        for graph in entry.get("graphs") or []:
            if run_dir:
                index[(Path(run_dir).name, graph)] = entry
    return index


# A program file larger than this is not one the suite wrote (the largest closures are a few hundred KB).
MAX_PROGRAM_BYTES = 16 * 1024 * 1024


def pytorch_side(record: KernelRecord, index: dict[tuple[str, str], dict], debug_root: str | os.PathLike,
                 with_source: bool = True, cache: Optional[dict] = None) -> Optional[dict]:
    """The PyTorch side of one extracted kernel: suite, model, mode, dtype, the
    program's path relative to the debug root ("program_file") and, with_source, its text ("program") and, for
    --suite modules, the module's own source (its dependency closure, "module"); for scraped modules also
    their provenance ("module_provenance": repo, path, commit, license, stars, lineno, class_name); the
    accuracy check ("accuracy", "max_error", "tolerance"), the paths of the problem and pairing files the worker
    wrote ("problem_file", "pairing_file", relative to the debug root; None for older runs) and "versions". None when
    the kernel's graph is not in the index (a debug folder the suite did not make). `cache` (a dict kept by the
    caller) saves reading one program once per kernel."""
    entry = index.get((Path(record.run_dir or "").name, record.graph or ""))
    if entry is None:
        return None
    side = {"suite": entry.get("suite"), "model": entry.get("model"), "mode": entry.get("mode"),
            "dtype": entry.get("dtype"), "program_file": entry.get("program"), "program": None, "module": None,
            "module_provenance": entry.get("module"), **accuracy_of(entry),
            "problem_file": entry.get("problem"), "pairing_file": entry.get("pairing"),
            "versions": entry.get("versions")}
    if with_source and entry.get("program"):
        side["program"] = read_program(debug_root, entry["program"], cache if cache is not None else {})
        if entry.get("suite") == "modules" and side["program"] is not None:
            side["module"] = module_source(side["program"])
    return side


def accuracy_of(entry: dict) -> dict:
    """The accuracy check of a manifest entry: {"accuracy": "pass"|"fail"|"skipped"|None (not checked: a run
    made before the check existed), "max_error", "tolerance"}."""
    detail = entry.get("accuracy_detail") or {}
    return {"accuracy": entry.get("accuracy"), "max_error": entry.get("max_error"),
            "tolerance": detail.get("tolerance")}


def read_program(debug_root: str | os.PathLike, relative: str, cache: dict) -> Optional[str]:
    """The text of a program file named in the manifest (relative to the debug root); None when it is
    missing, unreadable, too large or outside the debug root (a manifest is data, not a path to trust)."""
    root = Path(debug_root).resolve()
    path = (root / relative).resolve()
    if path not in cache:
        cache[path] = None
        if root in path.parents and path.is_file() and path.stat().st_size <= MAX_PROGRAM_BYTES:
            try:
                cache[path] = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                pass
    return cache[path]


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

