"""Pairs and problems out of the Inductor stage: a step of get_kernels_from_debug_info.py's chain.

`PairStep.run(records)` receives the records of one graph (after the PyTorch side is attached) and builds that
graph's pair; `close()` writes `pairs.jsonl` (this run's pairs, and the pairs an earlier run made of graphs not
extracted again) and `problems/` (the KernelBench problem of every model the suite manifests of the inputs list as
ok, and the graph-level problems of graph-level pairs), with `problems/problems.jsonl` as their index.
kernels.jsonl is never touched. Graphs that give no pair go to pairs_rejects.jsonl as `pair_<reason>` (counted
`dropped_pair_<reason>` in the stage's stats.json).

A pair is model level when the suite recorded the model's one inference graph (scraper.suite.recording
.model_level_graph): python_code is the model's problem (scraper.suite.problems), ModelNew maps its weights and
inputs to `call`. Otherwise (an older debug root, a plain TORCH_COMPILE_DEBUG run, graph breaks, training graphs) it
is graph level: python_code is the ATen graph (scraper.pairs.graph_problem), ModelNew(*args) = call(list(args));
`level_reason` says why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from scraper.fileio import atomic_write_text, write_jsonl
from scraper.inductor.layout import PROVENANCE
from scraper.pairs import modelnew
from scraper.pairs.graph_problem import graph_problem
from scraper.pairs.launch import PairError
from scraper.pairs.record import PAIRS, PAIRS_REJECTS, PROBLEMS_DIR, PROBLEMS_INDEX, PairRecord, iter_pairs
from scraper.pairs.triton_code import host_code, module_text
from scraper.records import KernelRecord, iter_jsonl, kernel_id
from scraper.stats import Stats
from scraper.suite.attach import PYTORCH_KEY, enclosing_root, suite_roots
from scraper.suite.lists import safe_name
from scraper.suite.manifest import latest_entries, read_program
from scraper.suite.problems import problem_text
from scraper.suite.recording import model_level_graph

log = logging.getLogger(__name__)

# The library a suite's models come from: (repository, SPDX license) for KernelBook's provenance columns.
SUITE_LIBRARIES = {"timm": ("huggingface/pytorch-image-models", "Apache-2.0"),
                   "huggingface": ("huggingface/transformers", "Apache-2.0"),
                   "torchbench": ("pytorch/benchmark", None)}
CHECK_FIELDS = ("pair_correct", "speedup", "check")
MAX_PAIRING_BYTES = 64 * 1024 * 1024


class PairStep:
    """The pair step of the Inductor stage's chain (module docstring)."""

    def __init__(self, inputs: list[Path], out_dir: Path, stats: Stats) -> None:
        self.inputs, self.out_dir, self.stats = list(inputs), Path(out_dir), stats
        self.rejected: list[dict] = []  # this run's pairs_rejects.jsonl rows
        self.pairs: dict[str, PairRecord] = {}  # graph folder -> this run's pair
        self.seen: set[str] = set()  # graph folders this run extracted (with or without a pair)
        self.pairings: dict = {}  # pairing file -> its record (read once per model)

    def run(self, records: list[KernelRecord]) -> list[KernelRecord]:
        """Build the pair of one graph's records; returns the records unchanged."""
        if records:
            folder = graph_folder(records[0])
            self.seen.add(folder)
            try:
                self.pairs[folder] = self.build(records, folder)
                self.count(self.pairs[folder])
            except PairError as exc:
                log.info("%s: no pair: %s", folder, exc)
                self.stats.inc(f"dropped_pair_{exc.reason}")
                self.rejected.append({"reason": f"pair_{exc.reason}", "folder": folder, "model": records[0].model,
                                      "error": str(exc)})
        return records

    def count(self, pair: PairRecord) -> None:
        self.stats.inc("pairs")
        self.stats.inc(f"pairs_{pair.pair_level}_level")
        if pair.level_reason:
            self.stats.inc(f"pairs_graph_level_{pair.level_reason}")
        for source, kernels in pair.launch_configs.items():
            self.stats.inc(f"pair_kernels_launch_{source}", kernels)

    def build(self, records: list[KernelRecord], folder: str) -> PairRecord:
        """The pair of one graph; raises PairError."""
        first = records[0]
        output_code = read_text(self.out_dir / (first.output_code or ""), "no_output_code")
        side = first.extra.get(PYTORCH_KEY) or {}
        pairing = self.pairing(first, side)
        graph, reason = model_level_graph(pairing)
        if graph is not None and not side.get("program"):
            graph, reason = None, "program_missing"
        host = host_code(output_code, records, (pairing or {}).get("kernels"))
        pair = PairRecord(python_code="", triton_code="", **pair_provenance(first, side, folder))
        if graph is not None:
            pair.pair_level, pair.problem_file = "model", model_problem_file(side)
            pair.python_code = problem_text(side["program"], side["model"])
            model_new = modelnew.model_level(side["model"], graph, pairing["state"],
                                             graph["aot"][0]["output_offset"])
        else:
            pair.level_reason = reason if side else "no_suite"
            fx_graph = read_text(self.out_dir / (first.fx_graph or ""), "no_fx_graph")
            pair.python_code = graph_problem(fx_graph, output_code, graph_description(first, side))
            pair.problem_file = f"{PROBLEMS_DIR}/graphs/{folder}.py"
            model_new = modelnew.graph_level()
        pair.triton_code = module_text(triton_docstring(pair), host, model_new)
        pair.id = kernel_id(pair.triton_code)
        pair.kernels = [kernel.record.name for kernel in host.kernels]
        pair.launch_configs = dict(host.config_sources)
        return pair

    def pairing(self, record: KernelRecord, side: dict) -> Optional[dict]:
        """The pairing record the worker saved for the record's model (None for older debug roots)."""
        if not side.get("pairing_file") or not record.extra.get("input_output_code"):
            return None
        root = enclosing_root(Path(record.extra["input_output_code"]))
        path = (root / side["pairing_file"]).resolve() if root else None
        if path not in self.pairings:
            self.pairings[path] = read_pairing(root, path)
        return self.pairings[path]

    def close(self) -> None:
        """Write pairs.jsonl and problems/ (module docstring)."""
        write_jsonl(self.out_dir / PAIRS_REJECTS, self.merged_rows(self.out_dir / PAIRS_REJECTS, self.rejected))
        pairs = self.merged_pairs()
        write_jsonl(self.out_dir / PAIRS, pairs)
        problems = self.model_problems() + [graph_problem_entry(p) for p in pairs if p.pair_level == "graph"]
        write_problems(self.out_dir, problems, self.stats)
        log.info("%d pairs (%d model level), %d problems", len(pairs),
                 sum(p.pair_level == "model" for p in pairs), len(problems))

    def merged_pairs(self) -> list[PairRecord]:
        """This run's pairs (keeping the GPU check of an identical earlier pair) and the earlier run's pairs of
        graph folders not extracted again that still exist, in folder order."""
        earlier = {}
        path = self.out_dir / PAIRS
        if path.is_file():
            for pair in iter_pairs(path, on_error=lambda n, m: self.stats.error("pairs", str(path), m)):
                earlier[pair.folder] = pair
        merged = dict(self.pairs)
        for folder, pair in earlier.items():
            if folder in self.pairs and self.pairs[folder].id == pair.id:
                for name in CHECK_FIELDS:
                    setattr(merged[folder], name, getattr(pair, name))
            elif folder not in self.seen and (self.out_dir / folder / PROVENANCE).is_file():
                merged[folder] = pair
                self.stats.inc("pairs_kept_from_earlier_run")
        return [merged[folder] for folder in sorted(merged)]

    def merged_rows(self, path: Path, rows: list[dict]) -> list[dict]:
        """This run's rows of a per-graph file and the earlier rows of graph folders not extracted again that
        still exist, by folder."""
        earlier = [row for row in (iter_jsonl(path) if path.is_file() else [])
                   if row.get("folder") not in self.seen and (self.out_dir / str(row.get("folder")) / PROVENANCE)
                   .is_file()]
        return sorted(earlier + rows, key=lambda row: str(row.get("folder")))

    def model_problems(self) -> list[tuple[str, str, dict]]:
        """(file, text, index entry) of the problem of every ok model of the inputs' suite manifests."""
        found = []
        for root in suite_roots(self.inputs):
            cache: dict = {}
            for entry in latest_entries(root).values():
                if entry.get("status") != "ok" or not entry.get("program"):
                    continue
                program = read_program(root, entry["program"], cache)
                text = problem_text(program, entry["model"]) if program else None
                if text is None:
                    self.stats.inc("problems_without_program")
                    continue
                side = {"suite": entry.get("suite"), "model": entry["model"], "mode": entry.get("mode"),
                        "dtype": entry.get("dtype"), "module_provenance": entry.get("module")}
                found.append((model_problem_file(side), text, problem_entry(side, "model", entry)))
        return found


def graph_folder(record: KernelRecord) -> str:
    """`<model>/<graph>` of a record (its file is `<model>/<graph>/kernels/<name>.py`)."""
    return Path(record.file or "").parent.parent.as_posix()


def read_text(path: Path, reason: str) -> str:
    """A file the pair needs, or PairError(reason)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PairError(reason, str(exc)) from exc


def read_pairing(root: Optional[Path], path: Optional[Path]) -> Optional[dict]:
    """A pairing JSON inside its debug root (at most MAX_PAIRING_BYTES), or None."""
    if root is None or path is None or root.resolve() not in path.parents or not path.is_file():
        return None
    if path.stat().st_size > MAX_PAIRING_BYTES:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pair_provenance(record: KernelRecord, side: dict, folder: str) -> dict:
    """The provenance fields of a pair: KernelBook's columns and the suite's."""
    module = side.get("module_provenance") or {}
    repo, license = SUITE_LIBRARIES.get(side.get("suite"), (None, None))
    if side.get("suite") == "modules":
        repo, license = module.get("repo"), module.get("license")
    versions = side.get("versions") or {}
    return {"repo_name": repo, "licenses": [license] if license else [], "stars": module.get("stars"),
            "sha": module.get("commit"), "suite": side.get("suite"), "model": side.get("model") or record.model,
            "mode": side.get("mode"), "dtype": side.get("dtype"), "graph": record.graph, "folder": folder,
            "run_dir": record.run_dir, "path": module.get("path"), "versions": versions or None,
            "program_file": side.get("program_file"), "accuracy": side.get("accuracy"),
            "max_error": side.get("max_error")}


def model_problem_file(side: dict) -> str:
    """Where a model's problem goes in the output folder: problems/<suite>/<mode>-<dtype>/<model>.py."""
    variant = f"{side.get('mode') or 'inference'}-{side.get('dtype') or 'float32'}"
    return f"{PROBLEMS_DIR}/{side.get('suite') or 'unknown'}/{variant}/{safe_name(side['model'])}.py"


def graph_description(record: KernelRecord, side: dict) -> str:
    """The docstring of a graph-level problem."""
    model = side.get("model") or record.model
    suite = f" ({side['suite']} suite)" if side.get("suite") else ""
    return (f"Graph {record.graph} of {model}{suite}: the ATen graph PyTorch Inductor compiled "
            f"(fx_graph_readable.py), as a KernelBench problem.")


def triton_docstring(pair: PairRecord) -> str:
    """The docstring of a pair's triton_code."""
    what = f"{pair.model} ({pair.suite}, {pair.mode}, {pair.dtype})" if pair.pair_level == "model" else \
        f"Graph {pair.graph} of {pair.model}"
    interface = "ModelNew has Model's interface." if pair.pair_level == "model" else \
        "ModelNew(*args) runs call(list(args))."
    return (f"{what} as Triton: the kernels PyTorch Inductor generated for it and call(args), which launches\n"
            f"them. {interface}\n")


def problem_entry(side: dict, level: str, entry: Optional[dict] = None, graph: Optional[str] = None) -> dict:
    """The index line of a problem (its id, file and text are added when it is written)."""
    module = side.get("module_provenance") or {}
    return {"level": level, "suite": side.get("suite"), "model": side.get("model"), "mode": side.get("mode"),
            "dtype": side.get("dtype"), "graph": graph, "repo": module.get("repo"), "path": module.get("path"),
            "commit": module.get("commit"), "license": module.get("license"), "stars": module.get("stars"),
            "accuracy": (entry or {}).get("accuracy")}


def graph_problem_entry(pair: PairRecord) -> tuple[str, str, dict]:
    """(file, text, index entry) of a graph-level pair's problem."""
    side = {"suite": pair.suite, "model": pair.model, "mode": pair.mode, "dtype": pair.dtype,
            "module_provenance": {"repo": pair.repo_name, "path": pair.path, "commit": pair.sha,
                                  "license": (pair.licenses or [None])[0], "stars": pair.stars}}
    entry = problem_entry(side, "graph", graph=pair.graph)
    entry["accuracy"] = pair.accuracy
    return pair.problem_file, pair.python_code, entry


def write_problems(out_dir: Path, problems: list[tuple[str, str, dict]], stats: Stats) -> None:
    """The problem files (rewritten only when they change) and problems/problems.jsonl: this run's problems
    and the earlier index's entries whose files still exist."""
    index_path = out_dir / PROBLEMS_DIR / PROBLEMS_INDEX
    entries = {}
    if index_path.is_file():
        for entry in iter_jsonl(index_path):
            if isinstance(entry.get("file"), str) and (out_dir / entry["file"]).is_file():
                entries[entry["file"]] = entry
    for file, text, entry in problems:
        path = out_dir / file
        if not path.is_file() or path.read_text(encoding="utf-8", errors="replace") != text:
            atomic_write_text(path, text)
        entries[file] = {"id": kernel_id(text), "file": file, **entry}
        stats.inc(f"problems_{entry['level']}_level")
    write_jsonl(index_path, [entries[file] for file in sorted(entries)])
