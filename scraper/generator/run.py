"""The --generate-all / --generate-one loop: one repository per task, in parallel worker processes.

Each worker reads one archive or directory, finds the jit kernels, cuts each out with its closure, writes the
modules and returns the records, its Stats and its rejects. The parent passes each repository's records through
the chain's steps (e.g. validation), appends them to kernels.jsonl and its rejects to rejects.jsonl, and marks
the archive done in archives.jsonl, so a rerun skips finished archives (unchanged size and mtime) and a crash
loses at most the archive in progress (its partial records are dropped on the next run). A rerun keeps the
rejects and errors.csv rows of the archives it does not redo.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import resource
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence


from scraper.cli import workers_leave_interrupts_to_us
from scraper.progress import progress
from scraper.generator.archives import ArchiveError, read_repository
from scraper.generator.closure import extract_closure
from scraper.generator.detect import decorator_roots
from scraper.generator.launchers import repo_launches
from scraper.generator.provenance import Provenance, provenance_for
from scraper.generator.repoindex import DEFAULT_ALLOWED_IMPORTS, RepoIndex
from scraper.generator.write import duplicate_qualnames, module_relpath, unique_relpath, write_module
from scraper.records import KERNELS, KernelRecord, append_records, iter_records, write_jsonl
from scraper.repos import SKIP_DIRS
from scraper.pipeline import Done, Step, chain
from scraper.stats import ERRORS, REJECTS, STATS, Rejects, Stats
from scraper.fileio import OutputFolder, claim_output, first_object, remove_tree, walk_tree
from scraper.validate.api import LEVELS, VALIDATE_CACHE

log = logging.getLogger(__name__)

STAGE = "generator"
WORKER_MEMORY_MB = 4096  # what each worker process may map beyond what it inherits (--worker-memory-mb)
DONE_NAME = "archives.jsonl"
OUTPUT_FILES = (KERNELS, STATS, REJECTS, ERRORS, DONE_NAME, VALIDATE_CACHE)
# A step over one repository's records (e.g. validation) is a scraper.pipeline.Step: records -> records.


@dataclass
class Task:
    """One repository to process."""

    location: str
    out_dir: str
    manifest: dict = field(default_factory=dict)
    allowed_imports: frozenset = DEFAULT_ALLOWED_IMPORTS


@dataclass
class RepoResult:
    """What one worker sends back."""

    location: str
    archive: str
    records: list = field(default_factory=list)  # KernelRecords
    rejects: list = field(default_factory=list)  # {"reason": ..., ...}
    stats: Stats = field(default_factory=lambda: Stats(STAGE))
    ok: bool = True
    files: set = field(default_factory=set)  # module paths written, so two kernels never share one




@contextlib.contextmanager
def no_cyclic_gc():
    """The cyclic GC off for a while. The index keeps every parsed file alive; with the GC on, each allocation
    burst re-scans those millions of AST nodes (parsing gets ~4x slower), and collecting a large repository's
    records re-scans them too. ASTs and records hold no reference cycles: refcounting frees them (FlagGems peaks
    at the same memory either way). On the way out, what was allocated meanwhile moves to the oldest generation
    (freeze, then unfreeze: no object stays out of the GC); else the first collection after re-enabling scans
    all of it at once as young objects (0.8 s of FlagGems' 7.7 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def process_repository(task: Task) -> RepoResult:
    """Read one repository and extract every kernel of it (runs in a worker; never raises for bad input: a
    repository that breaks something is that repository's counted error, and the others go on)."""
    with no_cyclic_gc():
        try:
            return _process_repository(task)
        except Exception as exc:  # a bug meeting a hostile tree, or memory running out: this repository only
            result = RepoResult(task.location, Path(task.location).name, ok=False)
            result.stats.error("archive", result.archive, exc)
            result.rejects.append({"reason": "internal_error", "archive": result.archive,
                                   "message": f"{type(exc).__name__}: {exc}"})
            return result


def _process_repository(task: Task) -> RepoResult:
    result = RepoResult(task.location, Path(task.location).name)
    stats = result.stats
    try:
        source = read_repository(task.location)
    except ArchiveError as exc:
        stats.error("archive", result.archive, exc)
        result.rejects.append({"reason": "bad_archive", "archive": result.archive, "message": str(exc)})
        result.ok = False
        return result
    stats.inc("repositories")
    provenance = provenance_for(source, task.manifest)
    for problem in source.problems:
        stats.error("read", f"{result.archive}:{problem.path}", f"{problem.reason}: {problem.message}")
        result.rejects.append({"reason": problem.reason, "archive": result.archive, "path": problem.path})
    index = RepoIndex.from_source(source, allowed_imports=task.allowed_imports)
    try:
        _extract_all(source, index, provenance, Path(task.out_dir), result)
        _count_not_parsed(index, result)
    finally:
        index.drop()  # every tree of the repository goes now, not at the next cyclic collection
    return result


def _extract_all(source, index: RepoIndex, provenance: Provenance, out_dir: Path, result: RepoResult) -> None:
    """Every kernel of the repository's files: those mentioning triton, then those that use one of its
    decorators through a repository alias."""
    quiet = []  # files that do not mention triton: kernels there only through a repository alias
    for file in source.files:
        if _guarded(_read_file, file, index, provenance, out_dir, result):
            quiet.append(file)
    quiet = [(file, decorator_roots(file.text)) for file in quiet]
    quiet = [(file, roots) for file, roots in quiet if roots]
    alias_names = _repository_alias_names(index, source.files) if quiet else set()
    for file, roots in quiet:
        if not alias_names.isdisjoint(roots):
            result.stats.inc("files_scanned_for_repo_alias")
            _guarded(_process_file, file, index, provenance, out_dir, result)


def _count_not_parsed(index: RepoIndex, result: RepoResult) -> None:
    """Count (files_not_parsed_<reason>) and reject every file that was too large to parse, or past the
    repository's parse budget (scraper.generator.parse)."""
    for path, message in sorted(index.skipped.items()):
        reason = index.module(path).parsed.skipped
        result.stats.inc(f"files_not_parsed_{reason}")
        result.stats.error("parse", f"{result.archive}:{path}", message)
        result.rejects.append({"reason": "not_parsed", "archive": result.archive, "path": path, "message": message})


def _guarded(function, file, index, provenance, out_dir, result):
    try:
        return function(file, index, provenance, out_dir, result)
    except Exception as exc:  # a bug meeting odd scraped code costs one file, not the run
        result.stats.error("detect", f"{result.archive}:{file.path}", exc)
        result.rejects.append({"reason": "internal_error", "archive": result.archive, "path": file.path,
                               "message": f"{type(exc).__name__}: {exc}"})
        return False


def _read_file(file, index: RepoIndex, provenance: Provenance, out_dir: Path, result: RepoResult) -> bool:
    """Count the file and process it when it mentions triton; True when it does not (a second look may follow)."""
    result.stats.inc("files_read")
    if file.decode_error:
        result.stats.error("decode", f"{result.archive}:{file.path}", file.decode_error)
    if "triton" not in file.text:
        return True
    result.stats.inc("files_mention_triton")
    _process_file(file, index, provenance, out_dir, result)
    return False


def _repository_alias_names(index: RepoIndex, files) -> set[str]:
    """Names some file mentioning triton binds to one of triton's decorators (`my_jit = triton.jit`): a file that
    never says "triton" can still hold kernels when it decorates with one of them (`from .u import my_jit`)."""
    names = set()
    for file in files:
        if "triton" in file.text:
            try:
                names.update(index.own_triton_aliases(file.path))
            except Exception as exc:  # already counted when the file itself was processed
                log.debug("%s: no aliases read: %s", file.path, exc)
    return names


def _process_file(file, index: RepoIndex, provenance: Provenance, out_dir: Path, result: RepoResult) -> None:
    stats = result.stats
    where = f"{result.archive}:{file.path}"
    parsed = index.module(file.path).parsed  # parsed once, shared with the closure and the alias pass
    if parsed.salvaged:
        stats.inc("files_salvaged")
        stats.inc(f"files_salvaged_{parse_failure_kind(parsed.errors[0])}")
        stats.inc("blocks_lost", parsed.blocks_lost)
        stats.error("parse", where, parsed.errors[0])
    kernels = index.kernels(file.path)
    stats.inc("kernels_found", len(kernels))
    duplicates = duplicate_qualnames(kernels)
    for kernel in kernels:
        _extract_kernel(kernel, index, provenance, out_dir, result, kernel.qualname in duplicates)


def parse_failure_kind(message: str) -> str:
    """Why a file did not parse as a whole: python2 (print/exec statements), newer_python (3.12 f-strings,
    PEP 695 `type`), nul_bytes, or other."""
    if "Missing parentheses in call to" in message or "print " in message:
        return "python2"
    if "f-string" in message or "type parameter" in message:
        return "newer_python"
    if "null bytes" in message:
        return "nul_bytes"
    return "other"


def _extract_kernel(kernel, index, provenance: Provenance, out_dir: Path, result: RepoResult, duplicate: bool) -> None:
    stats = result.stats
    where = f"{result.archive}:{kernel.path}:{kernel.lineno}:{kernel.qualname}"
    if kernel.nested:
        stats.inc(f"kernels_nested_in_{kernel.parent}")
    try:
        closure = extract_closure(index, kernel.path, kernel.qualname, kernel.lineno)
    except Exception as exc:  # KeyError, RecursionError on absurdly deep code, or a bug: one kernel lost, counted
        stats.error("extract", where, exc)
        result.rejects.append({"reason": "extract_failed", "archive": result.archive, "path": kernel.path,
                               "name": kernel.qualname, "lineno": kernel.lineno, "message": str(exc)})
        return
    try:
        launches = repo_launches(index)
        usage = {"role": launches.role(kernel), "launcher": launches.launcher_record(kernel)}
    except Exception as exc:  # the kernel stays; only how it is launched is lost, counted
        stats.error("launcher", where, exc)
        usage = {"role": None, "launcher": None}
    stats.inc(f"kernels_{kernel.dialect}")
    stats.inc(f"role_{usage['role']}")
    if usage["launcher"]:
        stats.inc("kernels_with_launcher")
    relpath = unique_relpath(module_relpath(provenance.slug, kernel.path, kernel.qualname, kernel.lineno, duplicate),
                             kernel.path, result.files)
    write_module(out_dir, relpath, closure.code)
    result.records.append(_record(kernel, closure, provenance, relpath, result.archive, usage))
    stats.inc("kernels_extracted")
    _count_self_contained(stats, closure, where)


def _count_self_contained(stats: Stats, closure, where: str) -> None:
    if closure.conflicts:  # two copied statements bind one name: the module runs, maybe with the wrong one
        stats.inc("kernels_with_name_conflicts")
    if closure.self_contained:
        stats.inc("kernels_self_contained")
        return
    stats.inc("kernels_not_self_contained")
    for reason in sorted({reason.split(":")[0] for reason in closure.reasons.values()}):
        stats.inc(f"not_self_contained_{reason}")
    detail = ", ".join(f"{name} ({reason})" for name, reason in sorted(closure.reasons.items()))
    stats.error("deps", where, f"unresolved: {detail}")


def _record(kernel, closure, provenance: Provenance, relpath: str, archive: str, usage: dict) -> KernelRecord:
    return KernelRecord(
        dialect=kernel.dialect, role=usage["role"], launcher=usage["launcher"],
        name=kernel.name, code=closure.code, source="github", kind=kernel.kind, file=relpath, original=kernel.source,
        repo=provenance.repo, commit=provenance.commit, path=kernel.path, license=provenance.license,
        stars=provenance.stars, lineno=kernel.lineno, end_lineno=kernel.end_lineno,
        decorators=list(kernel.decorators), unresolved=closure.unresolved, self_contained=closure.self_contained,
        extra={
            "qualname": kernel.qualname, "nested": kernel.nested, "via_call": kernel.via_call,
            "unresolved_reasons": closure.reasons, "dependencies": closure.dependencies,
            "conflicts": closure.conflicts, "dropped_decorators": closure.dropped_decorators,
            "archive": archive, "provenance": provenance.origin, "html_url": provenance.html_url,
        },
    )


# ------------------------------------------------------------------------------------------ the parent side


def archive_fingerprint(location: Path) -> dict:
    """Size and mtime of an archive, to tell a changed one. For a directory (a local clone, edited in place: its
    top entry's mtime does not move when a nested file changes): the number of .py files, their total size and
    the newest mtime of them and of the folders (a deleted or renamed file moves its folder's mtime), walked at
    any depth without following links; one that cannot be walked gets an `error` (and counts as changed)."""
    info = location.stat()
    if not location.is_dir():
        return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
    files, size, newest = 0, 0, info.st_mtime_ns
    try:
        for entry in walk_tree(location, enter=lambda folder: folder.name not in SKIP_DIRS):
            if stat.S_ISDIR(entry.stat.st_mode) or entry.name.endswith(".py"):
                newest = max(newest, entry.stat.st_mtime_ns)
            if entry.name.endswith(".py") and not stat.S_ISDIR(entry.stat.st_mode):
                files, size = files + 1, size + entry.stat.st_size
    except OSError as exc:
        return {"size": size, "mtime_ns": newest, "py_files": files, "error": f"{type(exc).__name__}: {exc}"}
    return {"size": size, "mtime_ns": newest, "py_files": files}


def load_done(out_dir: Path) -> dict[str, dict]:
    """archives.jsonl entries by archive name (latest wins)."""
    return Done(out_dir / DONE_NAME, "archive").entries


def drop_records_of(out_dir: Path, keep_archives: set[str], stale: set[str]) -> int:
    """Before a run: rewrite kernels.jsonl without the records of unfinished or stale archives (and delete their
    modules), so the run appends their new records to a manifest that holds none of the old ones."""
    path = out_dir / KERNELS
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for record in iter_records(path):
        archive = record.extra.get("archive")
        if archive in keep_archives and archive not in stale:
            kept.append(record)
            continue
        dropped += 1
        if record.file:
            (out_dir / record.file).unlink(missing_ok=True)
    if dropped:
        write_jsonl(path, kept)
    return dropped


def plan(locations: Iterable[Path], out_dir: Path, force: bool, stats: Stats, checked_to: str | None = None
         ) -> list[Path]:
    """The archives still to process; records of unfinished or changed ones are removed first (every record of
    the manifest that belongs to no finished archive goes)."""
    done = load_done(out_dir)
    todo, stale = [], set()
    for location in locations:
        entry = done.get(location.name)
        unchanged = entry and entry.get("ok", True) and all(
            entry.get(k) == v for k, v in archive_fingerprint(location).items())
        if unchanged and not force and checked_far_enough(entry, checked_to):
            stats.inc("repositories_skipped_done")
            continue
        todo.append(location)
        if entry:
            stale.add(location.name)
    dropped = drop_records_of(out_dir, set(done), stale)
    if dropped:
        log.info("dropped %d records of unfinished or changed archives", dropped)
    return todo


def checked_far_enough(entry: dict, level: str | None) -> bool:
    """True when a finished archive's records were validated at least up to `level` (None: nothing asked), so a
    rerun with a higher --validate redoes the archives it has not checked that far."""
    if level is None:
        return True
    done = entry.get("validated")
    return done in LEVELS and LEVELS.index(done) >= LEVELS.index(level)


def run(locations: list[Path], out_dir: Path, manifest: dict, jobs: int, force: bool = False,
        allowed_imports: frozenset = DEFAULT_ALLOWED_IMPORTS, steps: Sequence[Step] = (),
        stats: Stats | None = None, validated: str | None = None, memory_mb: int = WORKER_MEMORY_MB) -> Stats:
    """Process every location into out_dir, each repository's records through `steps` (`step(records) ->
    records`, e.g. validation up to level `validated`) before they are appended; returns the merged Stats (also
    saved as stats.json, errors.csv). With `jobs` > 1 each worker process may map `memory_mb` more than it
    inherits."""
    owned = output_folder(out_dir)
    stats = stats or Stats(STAGE)
    ledger = Done(out_dir / DONE_NAME, "archive")
    earlier = dict(ledger.entries)  # read before the plan drops records: what the kept archives' entries say
    todo = plan(locations, out_dir, force, stats, validated)
    redo = {location.name for location in todo}
    carry_kept_archives(stats, out_dir, earlier, redo)
    rejects = Rejects(out_dir / REJECTS, stats)
    rejects.reset(keep=lambda row: row.get("archive") not in redo)
    tasks = [Task(str(location), str(out_dir), manifest, allowed_imports) for location in todo]
    with progress(total=len(tasks), unit="repo", desc="repositories") as bar, no_cyclic_gc():
        for result in _results(tasks, jobs, memory_mb):
            owned.claim(sorted({record.file.split("/")[0] for record in result.records if record.file}))
            _collect(result, out_dir, steps, stats, rejects, validated, ledger)
            bar.update(1)
    stats.save(out_dir / STATS)
    stats.save_errors_csv(out_dir / ERRORS, keep_earlier=lambda row: archive_of_where(row[1:2]) not in redo)
    return stats


def carry_kept_archives(stats: Stats, out_dir: Path, done: dict[str, dict], redo: set[str]) -> None:
    """Carry into `stats` the counts of every finished archive this run keeps (its records stay in kernels.jsonl),
    so stats.json describes the whole output, not only the archives this run did."""
    recount = None  # an entry of an older version has no counts: its records are counted from the manifest
    for name, entry in done.items():
        if name in redo:
            continue
        counts = entry.get("counts")
        if not isinstance(counts, dict):
            recount = recount if recount is not None else records_by_archive(out_dir)
            counts = {"repositories": 1, "kernels_extracted": recount.get(name, 0)} if entry.get("ok", True) else {}
        stats.carry_earlier(counts)


def records_by_archive(out_dir: Path) -> dict[str, int]:
    """How many records of kernels.jsonl belong to each archive."""
    path = out_dir / KERNELS
    found: dict[str, int] = {}
    for record in iter_records(path) if path.is_file() else []:
        archive = record.extra.get("archive")
        found[archive] = found.get(archive, 0) + 1
    return found


def archive_of_where(where: list) -> str:
    """The archive an errors.csv row is about: its `where` is `<archive>` or `<archive>:<path>...`."""
    return where[0].split(":", 1)[0] if where else ""


def _results(tasks: list[Task], jobs: int, memory_mb: int = WORKER_MEMORY_MB):
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(process_repository, tasks)
        return
    # fork: workers inherit the imported modules (no torch here), so start-up costs milliseconds
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with workers_leave_interrupts_to_us():
        pool = context.Pool(min(jobs, len(tasks)), initializer=limit_memory, initargs=(memory_mb,))
    with pool:
        yield from pool.imap_unordered(process_repository, tasks, chunksize=1)


def limit_memory(memory_mb: int) -> None:
    """RLIMIT_AS for a worker process: what it maps now plus `memory_mb` (0: no limit). Past it an allocation
    fails with MemoryError, which costs the repository being read (process_repository), not the machine."""
    if memory_mb <= 0:
        return
    with open("/proc/self/status") as status:
        mapped = next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:")), 0)
    limit = mapped + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _collect(result: RepoResult, out_dir: Path, steps: Sequence[Step], stats: Stats, rejects: Rejects,
             validated: str | None, ledger: Done) -> None:
    """Pass one repository's records through the steps, append them and its rejects, then mark it done (in that
    order: crash-safe). The entry keeps what the repository added to the counters, for the stats of a rerun that
    skips it."""
    before = Counter(stats.counts)
    stats.merge(result.stats)
    records = chain(result.records, steps)
    append_records(out_dir / KERNELS, records)
    for reject in result.rejects:
        rejects.add(reject.pop("reason"), **reject)
    location = Path(result.location)
    if location.exists():
        entry = {"archive": result.archive, "location": str(location), "kernels": len(records),
                 "validated": validated, "ok": result.ok, **archive_fingerprint(location),
                 "counts": dict(stats.counts_since(before))}
        ledger.mark(entry)


def output_folder(out_dir: Path) -> OutputFolder:
    """The generator's output folder: refuses (FileExistsError) a folder whose files are someone else's, and
    records this stage's files; a folder an earlier version wrote (archives.jsonl, no list yet) is adopted."""
    return claim_output(out_dir, STAGE, OUTPUT_FILES,
                        adopt=lambda folder: (folder / DONE_NAME).is_file() or _has_github_records(folder))


def _has_github_records(folder: Path) -> bool:
    first = first_object(folder / KERNELS)
    return first is not None and first.get("source") == "github"


def clean_output(out_dir: Path) -> None:
    """--clean: remove what earlier runs of the generator wrote (the files and repository folders it lists as its
    own; README.md and anything else stay)."""
    if not Path(out_dir).is_dir():
        return
    owned = output_folder(out_dir)
    for name, stage in owned.owned.items():
        entry = Path(out_dir) / name
        if stage != STAGE or name == "README.md" or not entry.exists():
            continue
        remove_tree(entry)  # at any depth: what an older version wrote may be deeper than Python recurses
