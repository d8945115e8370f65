"""Pairs and problems out of the Inductor stage: the pair step of get_kernels_from_debug_info.py's chain.

`PairStep(unit)` builds the pair of one graph (scraper.inductor.unit.GraphUnit, after the PyTorch side is attached)
and puts it on the unit (`unit.pairs`; what gives none goes to `unit.pair_rejects` as `pair_<reason>`, counted
`dropped_pair_<reason>` in the stage's stats.json); the stage's writer streams them to pairs.jsonl and
pairs_rejects.jsonl. `close()` writes `problems/`: the KernelBench problem of every model the suite manifests of
the inputs list as ok (the problem the worker wrote, else one made from its program for older runs) and the
graph-level problems of this run's graph-level pairs, with `problems/problems.jsonl` as their index.
kernels.jsonl is never touched.

A pair is model level when the suite recorded the model's one inference graph (scraper.suiterun.Pairing
.model_level): python_code is the model's problem, triton_code starts with the same program (ModelNew builds the
model with its build(), so KernelBench's evaluator, which builds both sides with the same seed, gives both the same
weights) and ModelNew maps its weights and inputs to `call`. Otherwise (an older debug root, a plain
TORCH_COMPILE_DEBUG run, graph breaks, training graphs, a program that defines a name the kernels' code does) it is
graph level: python_code is the ATen graph written again from its FX nodes (scraper.pairs.graph_problem), ModelNew
lays its arguments out as call() asserts; `level_reason` says why. Both return one tensor (several: packed).
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Optional

from scraper.fileio import atomic_write_text, write_jsonl
from scraper.kernelbench import current, packages, problem_text, top_level_names
from scraper.pairs import modelnew
from scraper.pairs.graph_problem import graph_problem
from scraper.pairs.launch import PairError
from scraper.pairs.record import PROBLEMS_DIR, PROBLEMS_INDEX, PairRecord
from scraper.pairs.kernel_pairs import KernelPairs, needs_cuda
from scraper.pairs.triton_code import host_code, module_text, parse_wrapper
from scraper.records import KernelRecord, iter_jsonl, kernel_id
from scraper.stats import Stats
from scraper.suites import library_of
from scraper.suiterun import PyTorchSide, SuiteRoot, model_level_graph, safe_name, suite_roots

log = logging.getLogger(__name__)

CHECK_FIELDS = ("pair_correct", "speedup", "check")


class PairStep:
    """The pair step of the Inductor stage's chain (module docstring)."""

    def __init__(self, inputs: list[Path], out_dir: Path, stats: Stats, kernel_level: bool = True) -> None:
        self.inputs, self.out_dir, self.stats = list(inputs), Path(out_dir), stats
        self.graph_problems: list[tuple[str, str, dict]] = []  # this run's graph- and kernel-level problems
        self.kernel_pairs = KernelPairs(stats) if kernel_level else None

    def __call__(self, unit):
        """Build the pairs of one graph's unit (the graph or model level, and one per kernel); returns the unit."""
        if not unit.records:
            return unit
        try:
            parsed = parse_wrapper(unit.text)
        except PairError as exc:
            self.reject(unit, exc)
            return unit
        try:
            pair = self.build(unit, parsed)
        except PairError as exc:
            self.reject(unit, exc)
        else:
            unit.pairs.append(pair)
            self.count(pair)
            if pair.pair_level == "graph":
                self.graph_problems.append(graph_problem_entry(pair))
        if self.kernel_pairs is not None:
            self.add_kernel_pairs(unit, parsed)
        return unit

    def reject(self, unit, exc: PairError) -> None:
        log.info("%s: no pair: %s", unit.folder, exc)
        self.stats.inc(f"dropped_pair_{exc.reason}")
        unit.pair_rejects.append({"reason": f"pair_{exc.reason}", "folder": unit.folder,
                                  "model": unit.records[0].model, "error": str(exc)})

    def add_kernel_pairs(self, unit, parsed) -> None:
        """The kernel-level pairs of the unit (scraper.pairs.kernel_pairs) and their problems."""
        side = unit.side
        pairing = side.pairing if side is not None else None
        provenance = pair_provenance(unit.records[0], side, unit.folder)
        pairs, rejects = self.kernel_pairs.pairs(unit, parsed, (pairing or {}).get("kernels"), provenance)
        for pair in pairs:
            pair.problem_file = f"{PROBLEMS_DIR}/kernels/{pair.id}.py"
            unit.pairs.append(pair)
            self.count(pair)
            self.graph_problems.append(graph_problem_entry(pair))
        unit.pair_rejects.extend(rejects)

    def count(self, pair: PairRecord) -> None:
        self.stats.inc("pairs")
        self.stats.inc(f"pairs_{pair.pair_level}_level")
        if pair.level_reason:
            self.stats.inc(f"pairs_graph_level_{pair.level_reason}")
        for source, kernels in pair.launch_configs.items():
            self.stats.inc(f"pair_kernels_launch_{source}", kernels)

    def build(self, unit, parsed) -> PairRecord:
        """The graph- or model-level pair of one graph; raises PairError."""
        first, side = unit.records[0], unit.side
        pairing = side.pairing if side is not None else None
        graph, reason = model_level_graph(pairing)
        if graph is not None and not side.program:
            graph, reason = None, "program_missing"
        host = host_code(parsed, unit.records, (pairing or {}).get("kernels"))
        pair = PairRecord(python_code="", triton_code="", **pair_provenance(first, side, unit.folder))
        program = None
        if graph is not None:
            model_new = modelnew.model_level(side.model, graph, pairing["state"], graph.aot[0].output_offset)
            program = side.program
            clashes = program_clashes(program, module_text("", host, model_new))
            if clashes:  # the kernels' or call()'s names would replace the program's own
                graph, reason = None, "program_name_clash"
                log.info("%s: the program defines %s, as the triton_code does", unit.folder, ", ".join(clashes))
        if graph is not None:
            pair.pair_level, pair.problem_file = "model", model_problem_file(side)
            pair.python_code = model_problem(side)
            pair.packages = packages(program)
        else:
            program = None
            pair.level_reason = reason if side is not None else "no_suite"
            if unit.fx_graph is None:
                raise PairError("no_fx_graph", f"{unit.folder} has no fx_graph_readable.py")
            problem = graph_problem(unit.fx_graph, unit.text, graph_description(first, side))
            pair.python_code = problem.text
            pair.problem_file = f"{PROBLEMS_DIR}/graphs/{unit.folder}.py"
            model_new = modelnew.graph_level(problem.layouts, problem.outputs)
            pair.ops, pair.needs_cuda = problem.ops, any(needs_cuda(op) for op in problem.ops)
        pair.triton_code = module_text(triton_docstring(pair), host, model_new, program)
        pair.original_triton_code = unit.text
        pair.module_name = (side.module_provenance or {}).get("class_name") or side.model if side else first.model
        pair.identify()
        pair.kernels = [kernel.record.name for kernel in host.kernels]
        pair.launch_configs = dict(host.config_sources)
        return pair

    def close(self) -> None:
        """Write problems/ (module docstring)."""
        if self.kernel_pairs is not None:
            self.kernel_pairs.close()
        problems = self.model_problems() + self.graph_problems
        write_problems(self.out_dir, problems, self.stats)
        log.info("%d problems", len(problems))

    def model_problems(self) -> list[tuple[str, str, dict]]:
        """(file, text, index entry) of the problem of every ok model of the inputs' suite manifests."""
        found = []
        for path in suite_roots(self.inputs):
            root = SuiteRoot(path)
            for entry in root.entries.values():
                if entry.status != "ok" or not entry.program:
                    continue
                side = root.side(entry)
                text = model_problem(side)
                if text is None:
                    self.stats.inc("problems_without_program")
                    continue
                found.append((model_problem_file(side), text, {**problem_entry(side, "model", entry.accuracy),
                                                               "packages": packages(side.program)}))
        return found


def program_clashes(program: str, triton_code: str) -> list:
    """The names the program defines that the rest of a model-level triton_code defines again (imports aside)."""
    rest = top_level_names(triton_code) - imported_names(triton_code)
    return sorted((top_level_names(program) - imported_names(program)) & rest)


def imported_names(text: str) -> set:
    """The names a module's top-level imports bind."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return set()
    return {(alias.asname or alias.name).split(".")[0] for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}


def model_problem(side: PyTorchSide) -> Optional[str]:
    """A model's KernelBench problem: the one its worker wrote when it has this version's interface, else one made
    from its program (older runs)."""
    if current(side.problem):
        return side.problem
    return problem_text(side.program, side.model) if side.program else None


def pair_provenance(record: KernelRecord, side: Optional[PyTorchSide], folder: str) -> dict:
    """The provenance fields of a pair: KernelBook's columns and the suite's."""
    if side is None:
        return {"model": record.model, "graph": record.graph, "folder": folder, "run_dir": record.run_dir}
    module = side.module_provenance or {}
    repo, license = library_of(side.suite)
    if side.suite == "modules":
        repo, license = module.get("repo"), module.get("license")
    return {"repo_name": repo, "licenses": [license] if license else [], "stars": module.get("stars"),
            "sha": module.get("commit"), "repo_link": repo_link(repo, module.get("commit")),
            "suite": side.suite, "model": side.model or record.model,
            "mode": side.mode, "dtype": side.dtype, "graph": record.graph, "folder": folder,
            "run_dir": record.run_dir, "path": module.get("path"), "versions": side.versions or None,
            "program_file": side.program_file, "accuracy": side.accuracy, "max_error": side.max_error}


def repo_link(repo: Optional[str], commit: Optional[str]) -> Optional[str]:
    """KernelBook's `repo_link`: the repository on GitHub, at its commit where known (None for local names)."""
    if not repo or repo.startswith("local/") or repo.count("/") != 1:
        return None
    return f"https://github.com/{repo}" + (f"/tree/{commit}" if commit else "")


def model_problem_file(side: PyTorchSide) -> str:
    """Where a model's problem goes in the output folder: problems/<suite>/<mode>-<dtype>/<model>.py."""
    variant = f"{side.mode or 'inference'}-{side.dtype or 'float32'}"
    return f"{PROBLEMS_DIR}/{side.suite or 'unknown'}/{variant}/{safe_name(side.model or 'model')}.py"


def graph_description(record: KernelRecord, side: Optional[PyTorchSide]) -> str:
    """The docstring of a graph-level problem."""
    model = (side.model if side is not None else None) or record.model
    suite = f" ({side.suite} suite)" if side is not None and side.suite else ""
    return (f"Graph {record.graph} of {model}{suite}: the ATen graph PyTorch Inductor compiled "
            f"(fx_graph_readable.py), as a KernelBench problem.")


def triton_docstring(pair: PairRecord) -> str:
    """The docstring of a pair's triton_code."""
    what = f"{pair.model} ({pair.suite}, {pair.mode}, {pair.dtype})" if pair.pair_level == "model" else \
        f"Graph {pair.graph} of {pair.model}"
    interface = "ModelNew has Model's interface." if pair.pair_level == "model" else \
        "ModelNew(*args) runs call() on the arguments laid out as it asserts."
    return (f"{what} as Triton: the kernels PyTorch Inductor generated for it and call(args), which launches\n"
            f"them. {interface}\n")


def problem_entry(side: PyTorchSide, level: str, accuracy: Optional[str] = None, graph: Optional[str] = None
                  ) -> dict:
    """The index line of a problem (its id, file and text are added when it is written)."""
    module = side.module_provenance or {}
    return {"level": level, "suite": side.suite, "model": side.model, "mode": side.mode, "dtype": side.dtype,
            "graph": graph, "repo": module.get("repo"), "path": module.get("path"), "commit": module.get("commit"),
            "license": module.get("license"), "stars": module.get("stars"), "accuracy": accuracy}


def graph_problem_entry(pair: PairRecord) -> tuple[str, str, dict]:
    """(file, text, index entry) of a graph- or kernel-level pair's problem."""
    side = PyTorchSide(suite=pair.suite, model=pair.model, mode=pair.mode, dtype=pair.dtype,
                       module_provenance={"repo": pair.repo_name, "path": pair.path, "commit": pair.sha,
                                          "license": (pair.licenses or [None])[0], "stars": pair.stars})
    entry = problem_entry(side, pair.pair_level, pair.accuracy, graph=pair.graph)
    entry.update(kernel=pair.kernel, needs_cuda=pair.needs_cuda, packages=pair.packages,
                 reference_finite=pair.reference_finite)
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
