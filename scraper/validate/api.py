"""Verification as a step of a stage's chain (`Validator.run(records) -> records`) and its command-line flags.

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
from scraper.records import KernelRecord, ManifestWriter, iter_jsonl_lines, record_of_line
from scraper.sandbox import SandboxUnavailable, require_wall
from scraper.stats import Rejects, Stats
from scraper.validate.cache import ResultCache, cache_key
from scraper.validate.compiles import target_text
from scraper.validate.pool import WorkerPool

log = logging.getLogger(__name__)

LEVELS = ("parses", "imports", "compiles")
DEFAULT_TIMEOUT = 30.0
DEFAULT_MEMORY_MB = 2048
VALIDATE_REJECTS = "validate_rejects.jsonl"
VALIDATE_CACHE = "validate_cache.jsonl"


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


def options_from_args(args: argparse.Namespace, default_cache: Optional[str] = None) -> dict:
    """`Validator`'s keyword options from the flags of add_validate_args."""
    return {"levels": LEVELS[: LEVELS.index(args.validate) + 1], "jobs": args.validate_jobs,
            "timeout": args.validate_timeout, "memory_mb": args.validate_memory_mb,
            "cache_path": args.validate_cache or default_cache,
            "unsafe_no_sandbox": getattr(args, "unsafe_no_sandbox", False)}


def validator_from_args(args: argparse.Namespace, stats: Optional[Stats], default_cache: Optional[str] = None
                        ) -> Optional["Validator"]:
    """The validate step a stage CLI puts in its chain, or None when --validate was not given."""
    if not getattr(args, "validate", None):
        return None
    with refusal_exits():
        return Validator(stats=stats, **options_from_args(args, default_cache))


def validate_from_args(records: list[KernelRecord], args: argparse.Namespace, *, stats: Optional[Stats] = None,
                       default_cache: Optional[str] = None) -> None:
    """validate_records with the options of add_validate_args; does nothing when --validate was not given."""
    if not getattr(args, "validate", None):
        return
    with refusal_exits():
        validate_records(records, stats=stats, **options_from_args(args, default_cache))


@contextlib.contextmanager
def refusal_exits():
    """For the stage CLIs: no sandbox for imports/compiles -> the reason on stderr and exit status 2."""
    try:
        yield
    except SandboxUnavailable as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None


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


def _run_level(records, level, pool_of, cache, version, timeout, memory_mb, stats) -> None:
    """Run one sandboxed level over `records` (cache first), filling the records in place; `pool_of()` gives the
    worker pool when something is not cached."""
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
        pool_of().run(jobs, on_result)


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


class Validator:
    """The validate step of a stage's chain: `run(records)` fills parses / imports / compiles / validation of one
    batch of records in place and returns it, up to the highest level in `levels`.

    Kernel code only ever runs in sandboxed worker processes (`jobs` of them, default: cores), one pool for every
    batch, started when a batch first needs it. Results are cached in `cache_path` (JSONL) by record id + level +
    Triton version, so identical kernels of later batches are not checked again. Counters
    `validate_<level>_ok/failed`, `validate_compiles_skipped` (no signature), `validate_cached` and
    `validate_jobs_run` go to `stats`, failures to its "validate" error phase. Use it as a context manager so the
    workers are always stopped. Levels above parses need the bubblewrap sandbox (scraper.sandbox): it raises
    SandboxUnavailable without one, unless `unsafe_no_sandbox`.
    """

    def __init__(self, *, levels: Iterable[str] = LEVELS, jobs: Optional[int] = None,
                 timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
                 cache_path: Optional[str] = None, stats: Optional[Stats] = None,
                 unsafe_no_sandbox: bool = False) -> None:
        self.needed = _needed_levels(levels)
        if len(self.needed) > 1:
            require_wall(unsafe_no_sandbox)
        self.unsafe_no_sandbox = unsafe_no_sandbox
        self.timeout, self.memory_mb, self.stats = timeout, memory_mb, stats
        self.version = triton_version()
        self.cache = ResultCache(cache_path)
        self.jobs = jobs or default_jobs()
        self.pool: Optional[WorkerPool] = None
        self.checked: list[KernelRecord] = []  # every record run() saw, for the fractions at the end

    def run(self, records: list[KernelRecord]) -> list[KernelRecord]:
        """Check one batch (in place); returns it."""
        if len(self.needed) > 1 and self._any_uncached(records):
            self._pool().start()  # workers import torch/triton while this process parses
        for record in records:
            _set_level(record, "parses", check_parses(record), self.stats)
            record.validation["triton"] = self.version
        for below, level in zip(self.needed, self.needed[1:]):
            ready = _ready_for(records, level, below, self.stats)
            if ready:
                _run_level(ready, level, self._pool, self.cache, self.version, self.timeout, self.memory_mb,
                           self.stats)
        if "compiles" in self.needed:
            for record in records:
                record.validation.setdefault("target", target_text())
        self.checked.extend(records)
        return records

    def fractions(self) -> dict:
        """`level_fractions` of every record checked so far."""
        return level_fractions(self.checked)

    def _any_uncached(self, records: list[KernelRecord]) -> bool:
        return any(self.cache.get(cache_key(r, "imports", self.version), self.timeout) is None for r in records)

    def _pool(self) -> WorkerPool:
        if self.pool is None:
            self.pool = WorkerPool(self.jobs, self.unsafe_no_sandbox)
        return self.pool

    def close(self) -> None:
        """Stop the workers."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> "Validator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def validate_records(records: list[KernelRecord], *, stats: Optional[Stats] = None, **options) -> None:
    """Fill records' levels in place in one batch (`options` as for `Validator`); no idle workers for few
    records."""
    options["jobs"] = min(options.get("jobs") or default_jobs(), max(1, len(records)))
    with Validator(stats=stats, **options) as validator:
        validator.run(records)


def validate_manifest(manifest, stats: Stats, batch: int = 256, **options) -> dict:
    """Check the records of a kernels.jsonl (`options` as for `Validator`) and write it once, with the levels
    filled, in the same order. Lines that are not records stay in it as they were, and are also listed in
    validate_rejects.jsonl beside it (reason `not_a_record`, with their line number and text) and in the stats'
    "read" errors. Returns `level_fractions` (also kept in `stats.extra["validation"]`)."""
    rejects = Rejects(Path(manifest).parent / VALIDATE_REJECTS, stats)
    rejects.reset()
    pending: list = []  # records of the current batch, and lines kept as they are, in file order
    with Validator(stats=stats, **options) as validator, ManifestWriter(manifest) as writer:
        for line in iter_jsonl_lines(manifest):
            record, problem = record_of_line(line)
            if record is None:
                message = problem if line.error else f"{manifest}:{line.number}: {problem}"
                stats.error("read", str(manifest), message)
                rejects.add("not_a_record", line=line.number, message=message, text=line.text)
            pending.append(record if record is not None else line.text)
            if sum(isinstance(item, KernelRecord) for item in pending) >= batch:
                _flush(pending, validator, writer)
        _flush(pending, validator, writer)
        stats.extra["validation"] = validator.fractions()
    return stats.extra["validation"]


def _flush(pending: list, validator: Validator, writer: ManifestWriter) -> None:
    """Validate the batch's records and write the batch in its order."""
    validator.run([item for item in pending if isinstance(item, KernelRecord)])
    for item in pending:
        writer.write(item) if isinstance(item, KernelRecord) else writer.write_line(item)
    pending.clear()


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
