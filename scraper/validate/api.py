"""The functions the stage CLIs call: add_validate_args, validate_records, validate_from_args, meets,
level_fractions.

Levels build on each other: `parses` (ast.parse, here, safe: nothing runs) -> `imports` (sandboxed worker,
TRITON_INTERPRET=1) -> `compiles` (sandboxed worker, triton.compile to PTX; only records with a known
signature). A record that fails a level is False at every level above it that was asked for; a level not
checked stays None (`compiles` for records without a signature).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.metadata
import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

from tqdm import tqdm

from scraper.cli import default_jobs
from scraper.records import KernelRecord, iter_jsonl_lines, record_of_line, write_jsonl
from scraper.sandbox import SandboxUnavailable, require_wall
from scraper.stats import Rejects, Stats
from scraper.validate.cache import ResultCache, cache_key
from scraper.validate.compiles import target_text
from scraper.validate.pool import WorkerPool

log = logging.getLogger(__name__)

LEVELS = ("parses", "imports", "compiles")
DEFAULT_TIMEOUT = 30.0
DEFAULT_MEMORY_MB = 2048


def triton_version() -> str:
    """The installed Triton's version, without importing it into the pipeline process."""
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def add_validate_args(parser: argparse.ArgumentParser) -> None:
    """Add --validate [LEVEL], --validate-jobs, --validate-timeout, --validate-memory-mb, --validate-cache."""
    group = parser.add_argument_group("verification (scraper.validate)")
    group.add_argument("--validate", nargs="?", const="compiles", default=None, choices=LEVELS, metavar="LEVEL",
                       help="check every kernel up to LEVEL: parses, imports (runs the module in a sandboxed "
                            "process with TRITON_INTERPRET=1) or compiles (triton.compile to PTX for kernels with "
                            "a known signature); --validate alone means compiles")
    group.add_argument("--validate-jobs", type=int, default=None, metavar="N",
                       help="sandbox worker processes (default: the number of cores)")
    group.add_argument("--validate-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                       help=f"seconds one check may run before it is killed (default {DEFAULT_TIMEOUT:g})")
    group.add_argument("--validate-memory-mb", type=int, default=DEFAULT_MEMORY_MB, metavar="MB",
                       help="memory a kernel module may allocate on top of the preloaded worker "
                            f"(RLIMIT_AS; default {DEFAULT_MEMORY_MB})")
    group.add_argument("--validate-cache", default=None, metavar="PATH",
                       help="JSONL cache of results by record id, level and Triton version (default: "
                            "validate_cache.jsonl in the output folder)")
    group.add_argument("--unsafe-no-sandbox", action="store_true",
                       help="run imports/compiles checks even where the bubblewrap sandbox cannot run (scraped "
                            "code could then read your files); without it they are refused there")


def validate_from_args(records: list[KernelRecord], args: argparse.Namespace, *, stats: Optional[Stats] = None,
                       default_cache: Optional[str] = None) -> None:
    """validate_records with the options of add_validate_args; does nothing when --validate was not given."""
    if not getattr(args, "validate", None):
        return
    with _refusal_exits():
        validate_records(records, stats=stats, **_options_from_args(args, default_cache))


@contextlib.contextmanager
def _refusal_exits():
    """For the stage CLIs: no sandbox for imports/compiles -> the reason on stderr and exit status 2."""
    try:
        yield
    except SandboxUnavailable as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None


def _options_from_args(args: argparse.Namespace, default_cache: Optional[str]) -> dict:
    """validate_records' keyword options from the flags of add_validate_args."""
    return {"levels": LEVELS[: LEVELS.index(args.validate) + 1], "jobs": args.validate_jobs,
            "timeout": args.validate_timeout, "memory_mb": args.validate_memory_mb,
            "cache_path": args.validate_cache or default_cache,
            "unsafe_no_sandbox": getattr(args, "unsafe_no_sandbox", False)}


def read_manifest(path, rejects: Rejects) -> list[KernelRecord]:
    """The records of a kernels.jsonl; every line that is not one goes to `rejects` (reason `not_a_record`) with
    its line number and its text, and to the stats' "read" errors, so a rewrite of the manifest loses nothing."""
    records = []
    for line in iter_jsonl_lines(path):
        record, problem = record_of_line(line)
        if record is not None:
            records.append(record)
            continue
        message = problem if line.error else f"{path}:{line.number}: {problem}"
        rejects.stats and rejects.stats.error("read", str(path), message)
        rejects.add("not_a_record", line=line.number, message=message, text=line.text)
    return records


def validate_manifest(manifest, stats: Stats, **options) -> dict:
    """Check the records of a kernels.jsonl (`options` as for validate_records), rewrite it atomically with the
    levels filled, and return `level_fractions` (also kept in `stats.extra["validation"]`). Lines that are not
    records go to validate_rejects.jsonl beside it."""
    rejects = Rejects(Path(manifest).parent / "validate_rejects.jsonl", stats)
    rejects.reset()
    records = read_manifest(manifest, rejects)
    validate_records(records, stats=stats, **options)
    write_jsonl(manifest, records)
    stats.extra["validation"] = level_fractions(records)
    return stats.extra["validation"]


def validate_manifest_from_args(manifest, args: argparse.Namespace, stats: Stats) -> Optional[dict]:
    """For a stage CLI after it wrote `manifest` (a kernels.jsonl): with --validate, `validate_manifest` with the
    options of add_validate_args (cache: validate_cache.jsonl beside the manifest); without it, None."""
    if not getattr(args, "validate", None):
        return None
    default_cache = str(Path(manifest).parent / "validate_cache.jsonl")
    with _refusal_exits():
        return validate_manifest(manifest, stats, **_options_from_args(args, default_cache))


def check_parses(record: KernelRecord) -> dict:
    """The `parses` level: compile the module to an AST (nothing is executed)."""
    try:
        compile(record.code, record.file or record.name, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return {"ok": False, "error_class": type(exc).__name__, "error": f"{type(exc).__name__}: {text}"[:500]}
    return {"ok": True}


def _set_level(record: KernelRecord, level: str, result: dict, stats: Optional[Stats]) -> None:
    setattr(record, level, bool(result.get("ok")))
    record.validation = {**(record.validation or {}), level: result}
    if stats is not None:
        stats.inc(f"validate_{level}_{'ok' if result.get('ok') else 'failed'}")
        if not result.get("ok"):
            where = f"{record.name} ({record.id}{', ' + record.file if record.file else ''})"
            stats.error("validate", where, f"{level}: {result.get('error')}")


def _needed_levels(levels: Iterable[str]) -> tuple[str, ...]:
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise ValueError(f"unknown validation level(s) {unknown}; known: {LEVELS}")
    top = max((LEVELS.index(level) for level in levels), default=-1)
    return LEVELS[: top + 1]


def make_job(record: KernelRecord, level: str, timeout: float, memory_mb: int) -> dict:
    """The JSON job a worker runs for one record and level (scraper.validate.worker)."""
    return {"level": level, "name": record.name, "code": record.code, "signature": record.signature,
            "constants": record.constants, "launch": record.launch, "timeout": timeout, "memory_mb": memory_mb}


def _run_level(records, level, pool, cache, version, timeout, memory_mb, stats) -> None:
    """Run one sandboxed level over `records` (cache first), filling the records in place."""
    pending: dict[str, list[KernelRecord]] = {}  # cache key -> records with exactly these inputs
    for record in records:
        key = cache_key(record, level, version)
        cached = cache.get(key, timeout)
        if cached is not None:
            _set_level(record, level, cached, stats)
            stats and stats.inc("validate_cached")
        else:
            pending.setdefault(key, []).append(record)
    if not pending:
        return
    jobs = [dict(make_job(same[0], level, timeout, memory_mb), key=key) for key, same in pending.items()]
    with tqdm(total=len(jobs), desc=f"validate {level}", unit="kernel", disable=None) as bar:
        def on_result(job: dict, result: dict) -> None:
            cache.put(job["key"], result, timeout)
            for record in pending[job["key"]]:  # duplicates share one check
                _set_level(record, level, result, stats)
            stats and stats.inc("validate_jobs_run")
            stats and stats.inc("validate_duplicates_shared", len(pending[job["key"]]) - 1)
            bar.update()
        pool.run(jobs, on_result)


def _ready_for(records: list[KernelRecord], level: str, below: str, stats: Optional[Stats]) -> list[KernelRecord]:
    """Records that can be checked at `level`; the others are marked (failed below, or no signature to compile)."""
    ready = []
    for record in records:
        if not getattr(record, below):
            _fail_above(record, level, below, stats)
        elif level == "compiles" and not record.signature:
            record.compiles = None
            record.validation["compiles"] = {"ok": None, "skipped": "no known signature"}
            stats and stats.inc("validate_compiles_skipped")
        else:
            ready.append(record)
    return ready


def _fail_above(record: KernelRecord, level: str, below: str, stats: Optional[Stats]) -> None:
    """Mark `level` failed because `below` failed (not run)."""
    setattr(record, level, False)
    record.validation = {**(record.validation or {}), level: {"ok": False, "error_class": "NotRun",
                                                              "error": f"NotRun: {below} failed"}}
    stats and stats.inc(f"validate_{level}_failed")


def validate_records(records: list[KernelRecord], *, levels: Iterable[str] = LEVELS, jobs: Optional[int] = None,
                     timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
                     cache_path: Optional[str] = None, stats: Optional[Stats] = None,
                     unsafe_no_sandbox: bool = False) -> None:
    """Fill records' parses / imports / compiles / validation in place, up to the highest level in `levels`.

    Kernel code only ever runs in sandboxed worker processes (`jobs` of them, default: cores). Results are
    cached in `cache_path` (JSONL) by record id + level + Triton version. Counters `validate_<level>_ok/failed`,
    `validate_compiles_skipped` (no signature), `validate_cached` and `validate_jobs_run` go to `stats`, failures
    to its "validate" error phase. Levels above parses need the bubblewrap sandbox (scraper.sandbox):
    SandboxUnavailable without it, unless `unsafe_no_sandbox`.
    """
    needed = _needed_levels(levels)
    if len(needed) > 1:
        require_wall(unsafe_no_sandbox)
    version = triton_version()
    cache = ResultCache(cache_path)
    size = min(jobs or default_jobs(), max(1, len(records)))  # no idle workers for few records
    with WorkerPool(size, unsafe_no_sandbox) as pool:
        if len(needed) > 1 and any(cache.get(cache_key(r, "imports", version), timeout) is None for r in records):
            pool.start()  # workers import torch/triton while this process parses
        for record in tqdm(records, desc="validate parses", unit="kernel", disable=None):
            _set_level(record, "parses", check_parses(record), stats)
            record.validation["triton"] = version
        for below, level in zip(needed, needed[1:]):
            ready = _ready_for(records, level, below, stats)
            _run_level(ready, level, pool, cache, version, timeout, memory_mb, stats)
    if "compiles" in needed:
        for record in records:
            record.validation.setdefault("target", target_text())


def meets(record: KernelRecord, level: str) -> bool:
    """True when the record passed `level` and every level below it (for create_json.py --require)."""
    if level not in LEVELS:
        raise ValueError(f"unknown validation level {level!r}; known: {LEVELS}")
    return all(getattr(record, lower) is True for lower in LEVELS[: LEVELS.index(level) + 1])


def level_fractions(records: Iterable[KernelRecord]) -> dict:
    """Per source: {"records": n, "<level>": fraction passed of all n, "checked": {"<level>": count checked}}."""
    totals: dict = defaultdict(int)
    passed: dict = defaultdict(lambda: defaultdict(int))
    checked: dict = defaultdict(lambda: defaultdict(int))
    for record in records:
        totals[record.source] += 1
        for level in LEVELS:
            value = getattr(record, level)
            checked[record.source][level] += value is not None
            passed[record.source][level] += value is True
    return {source: {"records": n, **{level: round(passed[source][level] / n, 4) for level in LEVELS},
                     "checked": dict(checked[source])}
            for source, n in sorted(totals.items())}
