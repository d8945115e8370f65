"""Where the graphs are in a torch_compile_debug folder, and where each one goes in the output folder.

Input: any number of folders (or output_code.py files); every `output_code.py` below them is one graph, in a
folder named `<model>__<n>_<inference|forward|backward>_<x.y>` inside `run_<date>-pid_<pid>/torchinductor/`.

Output: `<out>/<model>/<graph>/`. Two different runs can hold a graph of the same name (the same model compiled
twice); the second one then goes to `<graph>-<8 hex digits of a hash of its run>`. Each graph folder holds a
`provenance.json` naming the run it belongs to, so a rerun on the same input maps every graph to the same
folder again, whatever order the inputs come in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

OUTPUT_CODE = "output_code.py"
FX_GRAPH = "fx_graph_readable.py"
PROVENANCE = "provenance.json"
_GRAPH_NAME = re.compile(r"^(?P<model>.+?)__(?P<number>\d+)_(?P<kind>[A-Za-z]+)_(?P<version>[\d.]+)$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.+=-]")


@dataclass
class Graph:
    """One graph found in the input: its output_code.py and the names its provenance is built from."""

    output_code: Path
    model: str
    graph: str  # the graph folder's name, as Inductor wrote it
    graph_kind: Optional[str]  # inference | forward | backward (None when the folder name has another shape)
    run_dir: Optional[str]  # name of the enclosing run_* folder, if any
    identity: str  # what tells this graph apart from another of the same name: its run (or content) hash
    lossy_text: bool = False  # output_code.py was not UTF-8: its text has U+FFFD where the bad bytes were

    @property
    def fx_graph(self) -> Path:
        return self.output_code.parent / FX_GRAPH


def find_output_codes(
    inputs: list[Path], skip: Optional[Path] = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every output_code.py under the inputs (sorted per input, duplicates dropped), and the inputs that gave
    none, each with the reason (does not exist / no output_code.py / not a folder). Files below `skip` (the
    output folder, which holds copies of output_code.py) are left out."""
    found: dict[Path, Path] = {}  # resolved path -> path as reached from the input
    skipped = skip.resolve() if skip is not None else None
    problems = []
    for root in inputs:
        if not root.exists():
            problems.append((root, "does not exist"))
        elif root.is_file():
            if root.name == OUTPUT_CODE:
                found.setdefault(root.resolve(), root)
            else:
                problems.append((root, f"is a file, not a folder or an {OUTPUT_CODE}"))
        else:
            paths = [p for p in sorted(root.rglob(OUTPUT_CODE)) if not _below(p, skipped)]
            if not paths:
                problems.append((root, f"has no {OUTPUT_CODE} below it"))
            for path in paths:
                found.setdefault(path.resolve(), path)  # the same file reached through two inputs: once
    return list(found.values()), problems


def _below(path: Path, folder: Optional[Path]) -> bool:
    return folder is not None and (path.resolve() == folder or folder in path.resolve().parents)


def describe_graph(output_code: Path, content: bytes) -> Graph:
    """Model, graph and run names of one output_code.py, from its folder names."""
    graph = safe_name(output_code.parent.name or "graph")
    match = _GRAPH_NAME.match(graph)
    # Resolved, so that a path given relative to a folder inside the run (`torchinductor/g/output_code.py`)
    # still finds its run folder.
    resolved = output_code.resolve()
    run_folder = next((p for p in resolved.parents if p.name.startswith("run_")), None)
    run = run_folder.name if run_folder else None
    # The run folder (date + pid) and the graph's place in it identify a graph; without a run folder, the
    # file's content stands in for them.
    if run_folder:
        identity = f"run:{run}/{resolved.parent.relative_to(run_folder).as_posix()}"
    else:
        identity = "sha256:" + hashlib.sha256(content).hexdigest()
    return Graph(
        output_code=output_code,
        model=match["model"] if match else graph,
        graph=graph,
        graph_kind=match["kind"] if match else None,
        run_dir=run,
        identity=identity,
    )


def safe_name(name: str) -> str:
    """A single path component that cannot climb out of its folder (`..`, `/`, odd characters -> `_`)."""
    cleaned = _SAFE_NAME.sub("_", name).strip(".")
    return cleaned or "_"


def module_name(name: str) -> str:
    """A Python identifier for a kernel's file name (`kernels/<module_name>.py`)."""
    cleaned = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
    return "_" + cleaned if cleaned[0].isdigit() else cleaned


class FolderAllocator:
    """Gives each graph its `<model>/<graph>[-<hash>]` folder under `out_dir`, never one another run holds."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.claimed: dict[str, str] = {}  # folder (relative, posix) -> identity, for this run

    def folder_for(self, graph: Graph) -> str:
        """The relative folder for `graph` (claimed for the rest of this run)."""
        base = f"{safe_name(graph.model)}/{graph.graph}"
        digest = hashlib.sha256(graph.identity.encode("utf-8")).hexdigest()
        candidates = [base, f"{base}-{digest[:8]}"] + [f"{base}-{digest[:8]}-{n}" for n in range(2, 100)]
        for folder in candidates:
            if self._free_for(folder, graph.identity):
                self.claimed[folder] = graph.identity
                if folder != base:
                    log.info("%s is taken by another run; %s goes to %s", base, graph.output_code, folder)
                return folder
        raise RuntimeError(f"no free output folder for {graph.output_code}")  # 100 hash clashes: not in practice

    def _free_for(self, folder: str, identity: str) -> bool:
        if folder in self.claimed:
            return self.claimed[folder] == identity
        target = self.out_dir / folder
        # An empty folder is what a crash right after creating it leaves: nobody owns it yet.
        if not target.exists() or not any(target.iterdir()):
            return True
        return read_identity(target) == identity

    @staticmethod
    def mark(folder: str, graph: Graph) -> dict:
        """The provenance.json content that ties `folder` to `graph`'s run."""
        return {
            "identity": graph.identity,
            "model": graph.model,
            "graph": graph.graph,
            "run_dir": graph.run_dir,
            "folder": folder,
        }


def read_identity(folder: Path) -> Optional[str]:
    """The identity recorded in a graph folder's provenance.json (None when missing or unreadable)."""
    try:
        return json.loads((folder / PROVENANCE).read_text(encoding="utf-8")).get("identity")
    except (OSError, ValueError, AttributeError):
        return None
