"""--suite modules, orchestrator side: the candidate nn.Module classes of downloaded repositories, each cut out with
the generator's static dependency closure, listed by a pool of processes and cached per archive.

    listings = list_repositories(download_dir, cache_dir, jobs)   # [RepoListing], in archive order

Two stages, both static (nothing is imported or executed): `discover` reads one archive and finds its candidate
classes, how the repository's own tests and examples call them (scraper.modules.usage), the extensions its setup.py
builds and its own packages; `cut_out` cuts a chunk of one archive's classes out with their closures, so the
classes of one large repository are spread over the pool (each process keeps the index of the archives it has
seen). A listing is cached under `cache_dir` as JSON, keyed by the archive's sha256 (a folder: its files' paths,
sizes and modification times), its download-manifest line and the code version (the source of this module, of
what it calls in scraper/suite and of scraper/generator), so a rerun, or another --per-repo, lists nothing again.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from scraper.modules.usage import dotted
from scraper.records import atomic_write_text

log = logging.getLogger(__name__)

CHUNK = 12  # classes per closure task: small enough to spread one big repository over the pool
PREFILTER = ("forward", "Module")  # a file without both words defines no candidate class
# What a listing depends on besides the generator: this package and the import checks it shares with the worker.
LISTING_CODE = ("modules/listing.py", "modules/classes.py", "modules/usage.py", "modules/needs.py",
                "worker/infer/guarded.py")
INDEX_MEMO = 2  # archive indexes a pool process keeps (tasks arrive grouped by archive)
LIST_SECONDS = 600.0  # the most one step of one repository's listing may take (its discovery, a chunk of closures)


@dataclass
class RepoListing:
    """The candidates of one repository (or folder), as cached."""

    archive: str  # file or folder name in the download folder
    provenance: dict  # repo, commit, license, stars (scraper.generator.Provenance fields)
    entries: list = field(default_factory=list)  # class_name, code, path, lineno, imports, hints
    dropped: int = 0  # classes whose closure is not self-contained (or could not be cut out)
    extensions: list = field(default_factory=list)  # compiled modules its setup.py builds
    packages: list = field(default_factory=list)  # its own top-level packages
    error: Optional[str] = None  # the archive could not be read


def list_repositories(download_dir: Path, cache_dir: Optional[Path] = None, jobs: Optional[int] = None,
                      seconds: Optional[float] = LIST_SECONDS) -> list[RepoListing]:
    """The listing of every archive/folder of `download_dir` (cached ones read back, the others made by `jobs`
    processes: default every available core; 1 = in this process). A repository that cannot be read or listed
    within `seconds` (per step) has its `error`; the others are listed all the same."""
    from scraper.generator import load_manifest
    from scraper.repos import list_archives

    download_dir = Path(download_dir)
    if not download_dir.is_dir():
        return []
    manifest = load_manifest(download_dir)
    keys = {location: cache_key(location, manifest.get(location.name)) for location in list_archives(download_dir)}
    listings = {location: read_cached(cache_dir, location, key) for location, key in keys.items()}
    todo = [location for location, listing in listings.items() if listing is None]
    if todo:
        log.info("listing %d of %d repositories (%d from the cache)", len(todo), len(keys), len(keys) - len(todo))
        listings.update(make_listings(todo, manifest, keys, jobs or available_cores(), seconds))
        for location in todo:
            write_cached(cache_dir, location, keys[location], listings[location])
    return [listings[location] for location in keys]


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_listings(locations: list[Path], manifest: dict, keys: dict, jobs: int,
                  seconds: Optional[float] = LIST_SECONDS) -> dict[Path, RepoListing]:
    """Discover every archive, then cut the classes out in chunks; with a pool of `jobs` processes (spawned:
    the orchestrator may hold threads) unless jobs is 1. `keys`: each archive's cache key (its version);
    `seconds`: the time limit of each step of one archive (its discovery, each chunk of its closures)."""
    lines = [manifest.get(location.name) for location in locations]
    if jobs <= 1:
        found = dict(zip(locations, map(discover, locations, lines, [seconds] * len(locations))))
        return {location: listing_of(found[location], cut_out(location, found[location]["classes"], keys[location],
                                                              found[location]["externals"], seconds))
                for location in locations}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        found = dict(zip(locations, pool.map(discover, locations, lines, [seconds] * len(locations))))
        chunks = [(location, found[location]["classes"][start:start + CHUNK]) for location in
                  sorted(locations, key=lambda l: -len(found[l]["classes"]))
                  for start in range(0, len(found[location]["classes"]), CHUNK)]
        pieces = pool.map(cut_out, [c[0] for c in chunks], [c[1] for c in chunks], [keys[c[0]] for c in chunks],
                          [found[c[0]]["externals"] for c in chunks], [seconds] * len(chunks))
        cut: dict[Path, list] = {location: [] for location in locations}
        for (location, _), piece in zip(chunks, pieces):
            cut[location].append(piece)
    return {location: listing_of(found[location], merge_pieces(cut[location])) for location in locations}


def merge_pieces(pieces: list[tuple]) -> tuple[list, int, Optional[str]]:
    """Entries, dropped counts and the first error of several chunks of one archive, entries back in file
    order."""
    entries = [entry for piece in pieces for entry in piece[0]]
    errors = [piece[2] for piece in pieces if piece[2]]
    return sorted(entries, key=lambda e: e["order"]), sum(piece[1] for piece in pieces), \
        errors[0] if errors else None


def listing_of(found: dict, cut: tuple) -> RepoListing:
    """The RepoListing of one archive from its discovery and its closures; usages joined to their entries."""
    entries, dropped, error = cut
    for entry in entries:
        usages = found["usages"].get(f"{entry['path']}:{entry['class_name']}")
        if usages:
            entry["hints"] = usages
        del entry["order"]
    return RepoListing(archive=found["archive"], provenance=found["provenance"], entries=entries,
                       dropped=dropped, extensions=found["extensions"],
                       packages=found["packages"], error=found["error"] or error)


def discover(location: Path, manifest_line: Optional[dict], seconds: Optional[float] = LIST_SECONDS) -> dict:
    """One archive's provenance, candidate classes [(path, name, lineno, order)], their usages by the
    repository's own files, the extensions its setup.py builds, its own packages and the libraries it imports
    (a pool task). A repository that cannot be read, or whose discovery takes longer than `seconds`, is an
    `error` of its own: the others go on."""
    found = {"archive": location.name, "provenance": {"repo": location.name}, "classes": [], "usages": {},
             "extensions": [], "packages": [], "externals": [], "error": None}
    try:
        with time_limit(seconds, f"listing {location.name}"):
            _discover(location, manifest_line, found)
    except Exception as exc:  # ArchiveError, the time limit, or a bug meeting odd code: this repository's error
        found.update(classes=[], error=f"{type(exc).__name__}: {exc}")
    return found


def _discover(location: Path, manifest_line: Optional[dict], found: dict) -> None:
    from scraper.generator import parse_source, provenance_for, read_repository
    from scraper.modules.needs import ImportNames, extension_names, own_packages
    from scraper.modules.usage import repository_usages

    source = read_repository(location)
    found["provenance"] = provenance_fields(provenance_for(source, {location.name: manifest_line}
                                                           if manifest_line else {}))
    imports = ImportNames()
    for file in source.files:
        tree = parse_source(file.text, file.path).tree
        imports.add(tree)
        if all(word in file.text for word in PREFILTER):
            for node in module_classes(tree):
                found["classes"].append((file.path, node.name, node.lineno, len(found["classes"])))
        del tree  # one file's tree at a time
    usages = repository_usages(source.files, [(path, name) for path, name, _, _ in found["classes"]])
    found["usages"] = {f"{path}:{name}": value for (path, name), value in usages.items()}
    found["extensions"] = sorted(extension_names(source.files))
    found["packages"] = sorted(own_packages(file.path for file in source.files))
    found["externals"] = sorted(imports.external(file.path for file in source.files))


class ListingTimeout(Exception):
    """One repository's listing took longer than its time limit."""


@contextlib.contextmanager
def time_limit(seconds: Optional[float], what: str) -> Iterator[None]:
    """Raise ListingTimeout in the block after `seconds` (SIGALRM: the main thread of a process only, as pool
    tasks run; elsewhere, or with None, no limit)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise ListingTimeout(f"{what} took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def provenance_fields(provenance) -> dict:
    """The Provenance fields a module entry carries."""
    return {key: getattr(provenance, key) for key in ("repo", "commit", "license", "stars")}


_INDEXES: dict[str, object] = {}  # this process's archive indexes by cache key, most recent last


def cut_out(location: Path, classes: list, key: str, externals: list = (), seconds: Optional[float] = LIST_SECONDS
            ) -> tuple[list, int, Optional[str]]:
    """Closures of `classes` [(path, name, lineno, order)] of one archive (whose cache key is `key`, importing the
    libraries `externals`): (entries of the self-contained ones, how many were not, None or why the chunk was
    given up: past `seconds`, or the archive could not be read). A pool task."""
    entries, dropped = [], 0
    try:
        with time_limit(seconds, f"listing {location.name}"):
            index = archive_index(location, key, externals)
            for path, name, lineno, order in classes:
                entry = cut_one(index, path, name, lineno)
                if entry is None:
                    dropped += 1
                else:
                    entries.append({**entry, "order": order})
    except Exception as exc:  # the time limit, an unreadable archive or a bug: this chunk's classes are lost
        return entries, len(classes) - len(entries), f"{type(exc).__name__}: {exc}"
    return entries, dropped, None


def cut_one(index, path: str, name: str, lineno: int) -> Optional[dict]:
    """The entry of one class with its closure, or None when the closure is not self-contained (or cannot be
    cut out)."""
    from scraper.generator import extract_closure
    from scraper.modules.needs import required_imports

    try:
        closure = extract_closure(index, path, name, lineno)
    except ListingTimeout:
        raise
    except Exception as exc:  # KeyError, RecursionError on absurd code, or a bug meeting odd code: one class
        log.debug("%s:%s: %s", path, name, exc)
        return None
    if not closure.self_contained:
        return None
    return {"class_name": name, "code": closure.code, "path": path, "lineno": lineno,
            "imports": required_imports(closure.code)}


def archive_index(location: Path, key: str, externals: list = ()):
    """The RepoIndex of an archive (files parsed on demand), kept for the next chunks of the same archive (of
    the same content: `key`). Every library the repository imports from outside (`externals`, found by
    `discover`) is allowed (kept as an import in the closures), not only the generator's default list: whether
    it is installed is decided per run (scraper.modules.needs.skip_reason)."""
    from scraper.generator import RepoIndex, read_repository

    if key not in _INDEXES:
        while len(_INDEXES) >= INDEX_MEMO:
            _INDEXES.pop(next(iter(_INDEXES))).drop()  # its trees go now, not at a cyclic collection
        source = read_repository(location)
        allowed = RepoIndex({}).allowed_imports | set(externals)  # the generator's list and more
        _INDEXES[key] = RepoIndex.from_source(source, allowed_imports=allowed)
    return _INDEXES[key]


# ---------------------------------------------------------------------------------------------------- cache


def cache_key(location: Path, manifest_line: Optional[dict]) -> str:
    """sha256 of the archive's content (a folder: its .py entries' paths, sizes and mtimes, links not followed,
    at any depth), its manifest line and the code version. A repository that cannot be read gets a key of its
    error (its listing then says what is wrong with it): never an exception that stops the others."""
    from scraper.fileio import walk_tree

    digest = hashlib.sha256()
    digest.update(code_version().encode())
    digest.update(json.dumps(manifest_line, sort_keys=True, default=str).encode())
    try:
        if location.is_file():
            with open(location, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        else:
            for entry in walk_tree(location):
                if entry.name.endswith(".py"):
                    digest.update(f"{entry.path}\0{entry.stat.st_size}\0{entry.stat.st_mtime_ns}\n".encode())
    except OSError as exc:
        digest.update(f"unreadable: {type(exc).__name__}: {exc}".encode())
    return digest.hexdigest()


_CODE_VERSION: list[str] = []


def code_version() -> str:
    """sha256 of the code a listing depends on: this package and the worker's import checks (LISTING_CODE), and
    every module of scraper/generator (its closures)."""
    if not _CODE_VERSION:
        package = Path(__file__).resolve().parent.parent
        files = [package / name for name in LISTING_CODE] + sorted((package / "generator").rglob("*.py"))
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.read_bytes())
        _CODE_VERSION.append(digest.hexdigest())
    return _CODE_VERSION[0]


def cache_path(cache_dir: Path, location: Path, key: str) -> Path:
    """<cache_dir>/<archive name>.<key prefix>.json"""
    return Path(cache_dir) / f"{location.name}.{key[:20]}.json"


def read_cached(cache_dir: Optional[Path], location: Path, key: str) -> Optional[RepoListing]:
    """The cached listing of an archive under this key; None when there is none (or it is unreadable)."""
    if cache_dir is None:
        return None
    try:
        data = json.loads(cache_path(cache_dir, location, key).read_text(encoding="utf-8"))
        return RepoListing(**data) if data.get("archive") == location.name else None
    except (OSError, ValueError, TypeError):
        return None


def write_cached(cache_dir: Optional[Path], location: Path, key: str, listing: RepoListing) -> None:
    """Cache a listing (atomically), removing this archive's listings under other keys."""
    if cache_dir is None or listing.error:
        return
    path = cache_path(cache_dir, location, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{location.name}.*.json"):
        if stale != path:
            stale.unlink(missing_ok=True)
    atomic_write_text(path, json.dumps(asdict(listing)))


def module_classes(tree: ast.Module) -> list[ast.ClassDef]:
    """Top-level classes of a file that subclass torch.nn.Module (`nn.Module`, `torch.nn.Module`, `Module`, or
    another such class of the same file) and define or inherit a `forward` from one of those. Each class is
    decided once, after its same-file bases (an explicit stack: a chain of 20,000 classes costs no more than
    20,000 classes)."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {name: [dotted(base) for base in node.bases] for name, node in classes.items()}
    decided: dict[str, Optional[bool]] = {}  # name -> None (no module), else whether it has a forward
    for start in classes:
        stack, on_stack = [start], {start}
        while stack:
            name = stack[-1]
            waiting = [b for b in bases[name] if b in classes and b not in decided and b not in on_stack]
            if waiting and name not in decided:
                stack += waiting
                on_stack.update(waiting)
                continue
            stack.pop()
            on_stack.discard(name)
            if name not in decided:
                decided[name] = module_forward(classes[name], bases[name], decided)
    return [classes[name] for name in classes if decided.get(name)]


MODULE_BASES = ("nn.Module", "torch.nn.Module", "Module")


def module_forward(node: ast.ClassDef, bases: list, decided: dict) -> Optional[bool]:
    """None when the class is no nn.Module (none of its bases is one, as far as `decided` knows), else whether
    it defines or inherits a forward."""
    if not any(base in MODULE_BASES or decided.get(base) is not None for base in bases):
        return None
    own = any(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "forward"
              for item in node.body)
    return own or any(bool(decided.get(base)) for base in bases)
