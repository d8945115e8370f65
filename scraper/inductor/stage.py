"""The Inductor stage: torch_compile_debug folders -> inductor_kernels/ (files, kernels.jsonl, pairs.jsonl, stats).

The stage is one chain over graphs (scraper.inductor.unit.GraphUnit): each output_code.py is read and parsed once
(extract: every embedded Triton kernel becomes a KernelRecord with its clean code, original text and provenance,
and a file `<model>/<graph>/kernels/<name>.py`; the graph's output_code.py and fx_graph_readable.py are copied
beside them), then passed through the steps (attach the PyTorch side, pair, validate: each `step(unit) -> unit`)
and written as it streams. Nothing of the input is executed.

Reruns: the manifests are keyed by graph folder. A rerun re-extracts the graphs it is given, replaces their
records and pairs and keeps those of other graphs (from earlier runs on other inputs), in folder order, so the
same input always gives the same kernels.jsonl, and several debug folders can be added one run at a time. A pair
made again with the same id keeps the GPU check an earlier run wrote on it.

A graph an earlier finished run did is not done again: graphs_done.jsonl keeps, per graph folder, a fingerprint of
its input (the output_code.py's path and bytes, its fx_graph_readable.py, the run's options) with the counts and
rejects it added; a rerun whose graph has the same fingerprint keeps its records, pairs and rejects as they are
and carries its counts, so the files and counts are those of a fresh run (pairing is ~90% of the stage's time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple, Optional, Sequence


from scraper.progress import progress
from scraper.inductor.kernel import KernelModuleError, clean_kernel
from scraper.inductor.layout import (
    FX_GRAPH,
    OUTPUT_CODE,
    PROVENANCE,
    FolderAllocator,
    Graph,
    describe_graph,
    find_output_codes,
    module_name,
    safe_name,
)
from scraper.inductor.output_code import EmbeddedKernel, parse_comment, read_fallback_source, read_output_code
from scraper.inductor.unit import GraphUnit, Step
from scraper.fileio import iter_jsonl_lines
from scraper.records import KERNELS, PAIRS, PAIRS_REJECTS, KernelRecord, ManifestWriter, atomic_write_bytes, \
    iter_records
from scraper.pipeline import Done, chain
from scraper.stats import REJECTS, STATS, Rejects, Stats

log = logging.getLogger(__name__)
# An output_code.py larger than this is not one Inductor wrote (the largest real ones are a few MB).
MAX_OUTPUT_CODE_BYTES = 256 * 1024 * 1024
# ... and what is parsed is bounded by its code, not its bytes: a syntax tree costs ~130 bytes per token (a 4 MiB
# file of `x = 1` lines took stage 1 to 2.5 GiB), while the kernels' source, most of a real output_code.py, sits
# in string constants that cost nothing. The largest of the fixtures (botnet26t, resnet18 backward) have ~70,000.
MAX_CODE_TOKENS = 1_000_000
_TRIPLE_QUOTED = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"", re.DOTALL)  # linear: a failed opener has no closer
_CODE_TOKEN = re.compile(r"\w+|[^\w\s]")
CHECK_FIELDS = ("pair_correct", "speedup", "check")  # what the GPU check writes on a pair
PROGRAM = "program.py"  # in a graph folder of a suite run: the model's program (scraper.suiterun)
GRAPHS_DONE = "graphs_done.jsonl"  # per finished graph folder: its input's fingerprint, counts and rejects


def extract_kernels(inputs: list[Path], out_dir: Path, stats: Optional[Stats] = None,
                    steps: Sequence[Step] = (), options: str = "") -> Stats:
    """Extract every Triton kernel below `inputs` into `out_dir`; returns the run's Stats (also saved as
    stats.json). Bad inputs are reported, counted and skipped; the run goes on.

    Each graph is extracted, passed through `steps` (each `step(unit) -> unit`, scraper.inductor.unit) and
    written as it streams, in the order of the graph folders, together with what other runs put there: its
    kernel records to kernels.jsonl, its pairs to pairs.jsonl and what gave none to pairs_rejects.jsonl (each
    written once: the file replaces the old one when the run ends). A graph whose input and `options` (what
    else changes the steps' output, e.g. the validation level) are those of a graph an earlier run finished is
    kept as that run wrote it, not done again."""
    stats = stats or Stats("inductor")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    rejects = Rejects(out_dir / REJECTS, stats)
    rejects.reset()
    paths, problems = find_output_codes(inputs, skip=out_dir)
    for root, reason in problems:
        log.error("input %s %s", root, reason)
        stats.error("input", str(root), f"input {reason}")
    earlier = EarlierOutput(out_dir, stats)
    planned = plan_graphs(paths, FolderAllocator(out_dir), stats, rejects, options)
    with StageWriter(out_dir) as writer:
        for folder in progress(sorted(set(planned) | earlier.folders()), desc="graphs", unit="graph"):
            if folder not in planned:
                writer.write_earlier(earlier, folder)
            elif earlier.finished(planned[folder]):
                writer.write_kept(earlier, folder, stats, rejects)
            else:
                run_and_write(planned[folder], out_dir, steps, stats, rejects, earlier, writer)
    stats.inc("manifest_records", writer.kernels.count)
    stats.save(out_dir / STATS)
    return stats


def run_and_write(item: "PlannedGraph", out_dir: Path, steps: Sequence[Step], stats: Stats, rejects: Rejects,
                  earlier: "EarlierOutput", writer: "StageWriter") -> None:
    """Do one graph and write it, with its entry in graphs_done.jsonl: what it added to the counters and rejects."""
    before, first_reject = Counter(stats.counts), len(rejects.added)
    unit = run_chain(item, out_dir, steps, stats, rejects)
    earlier.keep_checks(unit)
    writer.write_unit(unit)
    counts = stats.counts_since(before)
    # problems are counted when problems/ is written at the end, for this run's graphs only
    counts.update(f"problems_{pair.pair_level}_level" for pair in unit.pairs if pair.pair_level in PROBLEM_LEVELS)
    writer.done.write_line(json.dumps({"folder": item.folder, "fingerprint": item.fingerprint,
                                       "records": len(unit.records), "counts": dict(counts),
                                       "rejects": rejects.added[first_reject:]}, default=str))
    if unit.records != earlier.records.get(item.folder):  # after the entry: a fact of this run, not the graph's
        stats.inc("manifest_records_changed", len(unit.records))


PROBLEM_LEVELS = ("graph", "kernel")  # the pair levels that get a problem file (scraper.pairs.build)


def run_chain(item: "PlannedGraph", out_dir: Path, steps: Sequence[Step], stats: Stats, rejects: Rejects
              ) -> GraphUnit:
    """Extract one graph and pass its unit through the steps."""
    return chain(extract_graph(item, out_dir, stats, rejects), steps)


class StageWriter:
    """The stage's manifests, written once as the units stream (scraper.records.ManifestWriter): kernels.jsonl,
    pairs.jsonl and pairs_rejects.jsonl."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.kernels = ManifestWriter(out_dir / KERNELS)
        self.pairs = ManifestWriter(out_dir / PAIRS)
        self.pair_rejects = ManifestWriter(out_dir / PAIRS_REJECTS)
        self.done = ManifestWriter(out_dir / GRAPHS_DONE)

    def write_unit(self, unit: GraphUnit) -> None:
        program = getattr(unit.side, "program", None)
        if program is not None:  # the suite's program, once per graph (the kernel records point at it)
            write_if_changed(self.out_dir / unit.folder / PROGRAM, program.encode("utf-8"))
        for record in unit.records:
            self.kernels.write(record)
        for pair in unit.pairs:
            self.pairs.write(pair)
        for row in unit.pair_rejects:
            self.pair_rejects.write(row)

    def write_earlier(self, earlier: "EarlierOutput", folder: str) -> None:
        """What an earlier run wrote for a graph folder this run did not extract again."""
        for record in earlier.records.get(folder, []):
            self.kernels.write(record)
        for text in earlier.pairs.get(folder, []):
            self.pairs.write_line(text)
            earlier.stats.inc("pairs_kept_from_earlier_run")
        for text in earlier.pair_rejects.get(folder, []):
            self.pair_rejects.write_line(text)
        if folder in earlier.done:
            self.done.write_line(json.dumps(earlier.done[folder], default=str))

    def write_kept(self, earlier: "EarlierOutput", folder: str, stats: Stats, rejects: Rejects) -> None:
        """A graph an earlier run finished from the same input: its output as written, its counts and rejects."""
        entry = earlier.done[folder]
        for record in earlier.records.get(folder, []):
            self.kernels.write(record)
        for name in ("pairs", "pair_rejects"):
            for text in getattr(earlier, name).get(folder, []):
                getattr(self, name).write_line(text)
        stats.carry_earlier(entry.get("counts") or {})
        for row in entry.get("rejects") or []:
            rejects.keep(row)
        self.done.write_line(json.dumps(entry, default=str))
        stats.inc("graphs_kept_done_earlier")

    def __enter__(self) -> "StageWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        for writer in (self.kernels, self.pairs, self.pair_rejects, self.done):
            writer.close(keep=kind is None)


class EarlierOutput:
    """What an earlier run left in the output folder, by graph folder: kernel records, and the lines of pairs.jsonl
    and pairs_rejects.jsonl (kept as they are). Folders someone deleted since are left out and counted."""

    def __init__(self, out_dir: Path, stats: Stats) -> None:
        self.stats = stats
        self.records = earlier_records(out_dir / KERNELS, stats)
        self.pairs = earlier_lines(out_dir / PAIRS, out_dir, stats)
        self.pair_rejects = earlier_lines(out_dir / PAIRS_REJECTS, out_dir, stats)
        self.done = earlier_done(out_dir / GRAPHS_DONE)

    def finished(self, item: "PlannedGraph") -> bool:
        """Whether an earlier run finished this graph from the same input, and the manifest still holds all of
        its records (what someone edited or a torn file lost is done again)."""
        entry = self.done.get(item.folder)
        return (entry is not None and entry.get("fingerprint") == item.fingerprint
                and entry.get("records") == len(self.records.get(item.folder, [])))

    def folders(self) -> set:
        return set(self.records) | set(self.pairs) | set(self.pair_rejects)

    def keep_checks(self, unit: GraphUnit) -> None:
        """A pair made again with the id of an earlier one keeps that one's GPU check."""
        checked = {}
        for text in self.pairs.get(unit.folder, []):
            data = json.loads(text)
            checked[data.get("id")] = data
        for pair in unit.pairs:
            if pair.id in checked:
                for name in CHECK_FIELDS:
                    setattr(pair, name, checked[pair.id].get(name))


def earlier_lines(path: Path, out_dir: Path, stats: Stats) -> dict[str, list[str]]:
    """The JSON lines of a per-graph file an earlier run wrote, by their "folder" (folders gone are dropped)."""
    found: dict[str, list[str]] = defaultdict(list)
    if not path.is_file():
        return found
    for line in iter_jsonl_lines(path):
        if line.error or not isinstance(line.data, dict):
            stats.error("manifest", str(path), line.error or "not an object")
            continue
        folder = line.data.get("folder")
        if isinstance(folder, str) and (out_dir / folder / PROVENANCE).is_file():
            found[folder].append(json.dumps(line.data, ensure_ascii=False, default=str))
    return found


def earlier_done(path: Path) -> dict[str, dict]:
    """graphs_done.jsonl's entries by graph folder (a later line wins)."""
    return Done(path, "folder").entries


class PlannedGraph(NamedTuple):
    """One output_code.py with the folder it goes to and the fingerprint of what it is made from."""

    path: Path
    graph: Graph
    folder: str
    fingerprint: str = ""


def input_fingerprint(path: Path, content: bytes, graph: Graph, options: str) -> str:
    """sha256 of what a graph's output is made from: the output_code.py's path and bytes, its
    fx_graph_readable.py's bytes (none: empty) and the run's options."""
    digest = hashlib.sha256(f"{path}\0{options}\0".encode("utf-8", "surrogateescape"))
    digest.update(hashlib.sha256(content).digest())
    try:
        digest.update(hashlib.sha256(graph.fx_graph.read_bytes()).digest())
    except OSError:
        digest.update(b"no fx graph")
    return digest.hexdigest()


def plan_graphs(paths: list[Path], allocator: FolderAllocator, stats: Stats, rejects: Rejects, options: str = ""
                ) -> dict[str, PlannedGraph]:
    """The folder of every readable output_code.py (allocated in input order, so the first of two same-named
    graphs keeps the plain name), by folder."""
    planned = {}
    for path in progress(paths, desc="graphs (read)", unit="graph"):
        text, content, lossy = read_text(path, stats, rejects)
        if text is None:
            continue
        graph = describe_graph(path, content)
        graph.lossy_text = lossy
        folder = allocator.folder_for(graph)
        planned[folder] = PlannedGraph(path, graph, folder, input_fingerprint(path, content, graph, options))
    return planned


def extract_graph(item: PlannedGraph, out_dir: Path, stats: Stats, rejects: Rejects) -> GraphUnit:
    """Extract one output_code.py into its graph folder; returns the graph's unit."""
    path, graph, folder = item.path, item.graph, item.folder
    unit = GraphUnit(path=path, graph=graph, folder=folder)
    text, content, _ = read_text(path, None, None)  # read again: planning kept only the folder, not the bytes
    if text is None:
        stats.error("read", str(path), "gone or unreadable since the run started")
        return unit
    unit.text, unit.content = text, content
    stats.inc("graphs")
    if folder != f"{safe_name(graph.model)}/{graph.graph}":
        stats.inc("graphs_renamed_same_name_other_run")
    target = out_dir / folder
    # provenance.json first: it claims the folder for this run before anything else lands there.
    mark = json.dumps(FolderAllocator.mark(folder, graph), indent=2, sort_keys=True) + "\n"
    write_if_changed(target / PROVENANCE, mark.encode("utf-8"))
    write_if_changed(target / OUTPUT_CODE, content)
    unit.fx_graph = copy_fx_graph(graph, target, stats)
    unit.embedded = read_output_code(text, str(path))
    report_damage(path, unit.embedded, stats, rejects)
    records = []
    for kernel in unit.embedded.kernels:
        record = kernel_record(kernel, graph, folder, unit.fx_graph is not None, stats, rejects)
        if record is not None:
            records.append(record)
    unit.records = unique_files(records, stats)
    write_kernel_files(target, folder, unit.records)
    stats.inc("kernels", len(unit.records))
    for record in unit.records:
        stats.inc(f"kernels_{record.kind}")
    return unit


def read_text(path: Path, stats: Optional[Stats], rejects: Optional[Rejects]) -> tuple[Optional[str], bytes, bool]:
    """The file's text, its bytes, and whether the text is lossy: non-UTF-8 bytes are replaced by U+FFFD (and
    counted) so the rest can still be read. The text is None when the file cannot be read. Problems are
    reported to `stats` and `rejects` (not at all when they are None: a second read of a planned file)."""
    try:
        if path.stat().st_size > MAX_OUTPUT_CODE_BYTES:
            raise OSError(f"larger than {MAX_OUTPUT_CODE_BYTES} bytes")
        content = path.read_bytes()
    except OSError as exc:
        if stats is not None:
            log.error("cannot read %s: %s", path, exc)
            stats.error("read", str(path), exc)
            rejects.add("unreadable", output_code=str(path), error=str(exc))
        return None, b"", False
    lossy = False
    try:
        text = content.decode("utf-8-sig")  # -sig: an editor's byte-order mark is not code
    except UnicodeDecodeError as exc:
        if stats is not None:
            log.warning("%s is not UTF-8 (%s); reading it with the bad bytes replaced", path, exc)
            stats.error("decode", str(path), f"not UTF-8: {exc.reason} at byte {exc.start}")
        text, lossy = content.decode("utf-8-sig", errors="replace"), True
    tokens = code_tokens(text)
    if tokens > MAX_CODE_TOKENS:
        if stats is not None:
            log.error("%s: not parsed: %d code tokens (at most %d)", path, tokens, MAX_CODE_TOKENS)
            stats.inc("graphs_too_large_to_parse")
            rejects.add("too_large_to_parse", output_code=str(path), error=f"{tokens} code tokens")
        return None, b"", False
    return text, content, lossy


def code_tokens(text: str, limit: int = MAX_CODE_TOKENS) -> int:
    """How many tokens of `text` lie outside triple-quoted strings (counted up to just past `limit`): what
    parsing it costs."""
    code = _TRIPLE_QUOTED.sub("''", text)
    count = 0
    for count, _ in enumerate(_CODE_TOKEN.finditer(code), 1):
        if count > limit:
            break
    return count


def copy_fx_graph(graph: Graph, target: Path, stats: Stats) -> Optional[str]:
    """Copy the graph's fx_graph_readable.py beside its kernels; returns its text, None (counted) when there is
    none or it is not a regular file of the graph's folder."""
    path = graph.fx_graph
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_OUTPUT_CODE_BYTES:
            raise OSError("not a regular file")
        content = path.read_bytes()
    except OSError:
        stats.inc("graphs_without_fx_graph")
        return None
    if code_tokens(content.decode("utf-8", errors="replace")) > MAX_CODE_TOKENS:  # see MAX_CODE_TOKENS
        stats.inc("graphs_fx_graph_too_large_to_parse")
        return None
    write_if_changed(target / FX_GRAPH, content)
    return content.decode("utf-8", errors="replace")


def report_damage(path: Path, embedded, stats: Stats, rejects: Rejects) -> None:
    """Count what a damaged or kernel-less output_code.py lost or lacked."""
    if embedded.salvaged:
        kept = len(embedded.kernels)
        message = f"does not parse ({embedded.parse_error}); kept the {kept} kernels before the damage"
        log.error("%s %s, lost %d", path, message, embedded.lost_kernels)
        stats.error("parse", str(path), message)
        stats.inc("kernels_lost_in_damaged_files", embedded.lost_kernels)
        rejects.add("output_code_does_not_parse", output_code=str(path), error=embedded.parse_error,
                    kernels_kept=len(embedded.kernels), kernels_lost=embedded.lost_kernels)
    if embedded.kernels:
        stats.inc("graphs_with_triton_kernels")
    elif embedded.other_kernels:
        log.info("%s has no Triton kernels (%d C++/other kernels): a CPU graph", path, embedded.other_kernels)
        stats.inc("graphs_cpu_only")
    elif not embedded.salvaged:
        stats.inc("graphs_without_kernels")
    stats.inc("non_triton_kernels_skipped", embedded.other_kernels)


def kernel_record(
    kernel: EmbeddedKernel, graph: Graph, folder: str, has_fx: bool, stats: Stats, rejects: Rejects
) -> Optional[KernelRecord]:
    """The record of one embedded kernel, or None (rejected with its reason)."""
    where = f"{graph.output_code}:{kernel.lineno}"
    source = kernel.source
    if source is None:
        source = read_fallback_source(kernel, graph_root(graph))
        kernel.source_from = "kernel_path" if source is not None else "missing"
        stats.inc(f"kernels_source_{kernel.source_from}")
    if source is None:
        return _reject(rejects, stats, "no_source", where, kernel, "no embedded source and no kernel path file")
    if graph.lossy_text and "\ufffd" in source:
        return _reject(rejects, stats, "not_utf8", where, kernel, "kernel text holds bytes that are not UTF-8")
    try:
        clean = clean_kernel(source, kernel.name)
    except KernelModuleError as exc:
        return _reject(rejects, stats, "kernel_does_not_parse", where, kernel, str(exc))
    info = parse_comment(kernel.comment)
    name = module_name(kernel.name)
    return KernelRecord(
        name=kernel.name,
        code=clean.code,
        source="inductor",
        kind=clean.kind,
        original=source,
        file=f"{folder}/kernels/{name}.py",
        model=graph.model,
        graph=graph.graph,
        run_dir=graph.run_dir,
        output_code=f"{folder}/{OUTPUT_CODE}",
        fx_graph=f"{folder}/{FX_GRAPH}" if has_fx else None,
        comment=kernel.comment,
        aten_ops=info.get("aten_ops", []),
        source_nodes=info.get("source_nodes", []),
        graph_fragment=info.get("graph_fragment"),
        signature=clean.signature,
        constants=clean.constants,
        launch=clean.launch,
        extra=_extra(kernel, graph, info, clean.dropped_statements),
    )


def graph_root(graph: Graph) -> Path:
    """The folder a graph's files may come from: its run_* folder, else its own folder. Nothing outside it is
    read (a debug folder made behind the wall is data a scraped module wrote: it can name any host file)."""
    folder = graph.output_code.parent
    run = next((p for p in folder.parents if p.name.startswith("run_")), None)
    return run if run is not None else folder


def _extra(kernel: EmbeddedKernel, graph: Graph, info: dict, dropped: list) -> dict:
    extra = {
        "graph_kind": graph.graph_kind,
        "variable": kernel.variable,
        "name_passed": kernel.name_passed,
        "lineno": kernel.lineno,
        "source_from": kernel.source_from,
        "kernel_path": info.get("kernel_path"),
        "source_node_mapping": info.get("source_node_mapping"),
        "dropped_statements": dropped,
        "input_output_code": str(graph.output_code),
    }
    if "original_path" in info:
        extra["original_path"] = info["original_path"]
    return extra


def _reject(rejects: Rejects, stats: Stats, reason: str, where: str, kernel: EmbeddedKernel, message: str) -> None:
    log.warning("%s: kernel %s skipped: %s", where, kernel.name, message)
    stats.error("extract", where, message)
    rejects.add(reason, where=where, name=kernel.name, error=message)
    return None


def unique_files(records: list[KernelRecord], stats: Stats) -> list[KernelRecord]:
    """Give two kernels of one graph that map to the same file name distinct files (`<name>__2.py`)."""
    seen: dict[str, int] = defaultdict(int)
    for record in records:
        seen[record.file] += 1
        if seen[record.file] > 1:
            stats.inc("kernels_same_name_in_graph")
            record.file = record.file.removesuffix(".py") + f"__{seen[record.file]}.py"
    return records


def write_kernel_files(target: Path, folder: str, records: list[KernelRecord]) -> None:
    """Write each record's clean code to its file; remove kernel files a previous run left that are gone now."""
    kernels_dir = target / "kernels"
    wanted = {Path(record.file).name for record in records}
    if kernels_dir.is_dir():
        for stale in kernels_dir.glob("*.py"):
            if stale.name not in wanted:
                stale.unlink()
    for record in records:
        write_if_changed(target.parent.parent / record.file, record.code.encode("utf-8"))


def write_if_changed(path: Path, content: bytes) -> None:
    """Write `content` atomically unless the file already holds exactly that (reruns then write nothing)."""
    try:
        if path.stat().st_size == len(content) and path.read_bytes() == content:
            return
    except OSError:
        pass
    atomic_write_bytes(path, content)


def earlier_records(path: Path, stats: Stats) -> dict[str, list[KernelRecord]]:
    """The records an earlier run wrote to kernels.jsonl, by graph folder; records of graph folders someone deleted
    since (they would point at nothing) are left out and counted."""
    latest: dict[str, KernelRecord] = {}  # file -> record; a later line for the same file wins
    if path.exists():
        for record in iter_records(path, on_error=lambda n, m: stats.error("manifest", str(path), m)):
            if isinstance(record.file, str) and record.source == "inductor":
                latest[record.file] = record
            else:
                stats.error("manifest", str(path), "line is not an Inductor kernel record")
    by_folder: dict[str, list[KernelRecord]] = defaultdict(list)
    for record in latest.values():
        by_folder[graph_folder(record.file)].append(record)
    for folder in [f for f in by_folder if not (path.parent / f / PROVENANCE).is_file()]:
        stats.inc("manifest_records_dropped_folder_gone", len(by_folder.pop(folder)))
    return dict(by_folder)


def graph_folder(file: Optional[str]) -> str:
    """`<model>/<graph>` of a record's `<model>/<graph>/kernels/<name>.py`."""
    return str(Path(file or "").parent.parent.as_posix())
