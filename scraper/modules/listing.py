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
import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from scraper.modules.usage import dotted
from scraper.records import atomic_write_text

log = logging.getLogger(__name__)

CHUNK = 12  # classes per closure task: small enough to spread one big repository over the pool
PREFILTER = ("forward", "Module")  # a file without both words defines no candidate class
# What a listing depends on besides the generator: this package and the import checks it shares with the worker.
LISTING_CODE = ("modules/listing.py", "modules/classes.py", "modules/usage.py", "modules/needs.py",
                "worker/infer/guarded.py")
INDEX_MEMO = 2  # archive indexes a pool process keeps (tasks arrive grouped by archive)


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


def list_repositories(download_dir: Path, cache_dir: Optional[Path] = None, jobs: Optional[int] = None) \
        -> list[RepoListing]:
    """The listing of every archive/folder of `download_dir` (cached ones read back, the others made by `jobs`
    processes: default every available core; 1 = in this process)."""
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
        listings.update(make_listings(todo, manifest, keys, jobs or available_cores()))
        for location in todo:
            write_cached(cache_dir, location, keys[location], listings[location])
    return [listings[location] for location in keys]


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_listings(locations: list[Path], manifest: dict, keys: dict, jobs: int) -> dict[Path, RepoListing]:
    """Discover every archive, then cut the classes out in chunks; with a pool of `jobs` processes (spawned:
    the orchestrator may hold threads) unless jobs is 1. `keys`: each archive's cache key (its version)."""
    if jobs <= 1:
        found = {location: discover(location, manifest.get(location.name)) for location in locations}
        return {location: listing_of(found[location], cut_out(location, found[location]["classes"], keys[location]))
                for location in locations}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        found = dict(zip(locations, pool.map(discover, locations, [manifest.get(l.name) for l in locations])))
        chunks = [(location, found[location]["classes"][start:start + CHUNK]) for location in
                  sorted(locations, key=lambda l: -len(found[l]["classes"]))
                  for start in range(0, len(found[location]["classes"]), CHUNK)]
        pieces = pool.map(cut_out, [c[0] for c in chunks], [c[1] for c in chunks], [keys[c[0]] for c in chunks])
        cut: dict[Path, list] = {location: [] for location in locations}
        for (location, _), piece in zip(chunks, pieces):
            cut[location].append(piece)
    return {location: listing_of(found[location], merge_pieces(cut[location])) for location in locations}


def merge_pieces(pieces: list[tuple[list, int]]) -> tuple[list, int]:
    """Entries and dropped counts of several chunks of one archive, entries back in file order."""
    entries = [entry for piece in pieces for entry in piece[0]]
    return sorted(entries, key=lambda e: e["order"]), sum(piece[1] for piece in pieces)


def listing_of(found: dict, cut: tuple[list, int]) -> RepoListing:
    """The RepoListing of one archive from its discovery and its closures; usages joined to their entries."""
    entries, dropped = cut
    for entry in entries:
        usages = found["usages"].get(f"{entry['path']}:{entry['class_name']}")
        if usages:
            entry["hints"] = usages
        del entry["order"]
    return RepoListing(archive=found["archive"], provenance=found["provenance"], entries=entries,
                       dropped=dropped, extensions=found["extensions"],
                       packages=found["packages"], error=found["error"])


def discover(location: Path, manifest_line: Optional[dict]) -> dict:
    """One archive's provenance, candidate classes [(path, name, lineno, order)], their usages by the
    repository's own files, the extensions its setup.py builds and its own packages (a pool task)."""
    from scraper.generator import ArchiveError, parse_source, provenance_for, read_repository
    from scraper.modules.needs import extension_names, own_packages
    from scraper.modules.usage import repository_usages

    found = {"archive": location.name, "provenance": {"repo": location.name}, "classes": [], "usages": {},
             "extensions": [], "packages": [], "error": None}
    try:
        source = read_repository(location)
    except ArchiveError as exc:
        found["error"] = str(exc)
        return found
    found["provenance"] = provenance_fields(provenance_for(source, {location.name: manifest_line}
                                                           if manifest_line else {}))
    for file in source.files:
        if all(word in file.text for word in PREFILTER):
            for node in module_classes(parse_source(file.text, file.path).tree):
                found["classes"].append((file.path, node.name, node.lineno, len(found["classes"])))
    usages = repository_usages(source.files, [(path, name) for path, name, _, _ in found["classes"]])
    found["usages"] = {f"{path}:{name}": value for (path, name), value in usages.items()}
    found["extensions"] = sorted(extension_names(source.files))
    found["packages"] = sorted(own_packages(file.path for file in source.files))
    return found


def provenance_fields(provenance) -> dict:
    """The Provenance fields a module entry carries."""
    return {key: getattr(provenance, key) for key in ("repo", "commit", "license", "stars")}


_INDEXES: dict[str, object] = {}  # this process's archive indexes by cache key, most recent last


def cut_out(location: Path, classes: list, key: str) -> tuple[list, int]:
    """Closures of `classes` [(path, name, lineno, order)] of one archive (whose cache key is `key`): (entries of
    the self-contained ones, how many were not). A pool task."""
    from scraper.generator import extract_closure
    from scraper.modules.needs import required_imports

    index = archive_index(location, key)
    entries, dropped = [], 0
    for path, name, lineno, order in classes:
        try:
            closure = extract_closure(index, path, name, lineno)
        except (KeyError, RecursionError) as exc:
            log.debug("%s:%s: %s", path, name, exc)
            dropped += 1
            continue
        if not closure.self_contained:
            dropped += 1
            continue
        entries.append({"class_name": name, "code": closure.code, "path": path, "lineno": lineno,
                        "imports": required_imports(closure.code), "order": order})
    return entries, dropped


def archive_index(location: Path, key: str):
    """The RepoIndex of an archive (files parsed on demand), kept for the next chunks of the same archive (of
    the same content: `key`). Every
    library the repository imports from outside is allowed (kept as an import in the closures), not only the
    generator's default list: whether it is installed is decided per run (scraper.modules.needs.skip_reason)."""
    from scraper.generator import RepoIndex, read_repository
    from scraper.modules.needs import external_imports

    if key not in _INDEXES:
        while len(_INDEXES) >= INDEX_MEMO:
            _INDEXES.pop(next(iter(_INDEXES)))
        source = read_repository(location)
        allowed = RepoIndex({}).allowed_imports | external_imports(source.files)  # the generator's list and more
        _INDEXES[key] = RepoIndex.from_source(source, allowed_imports=allowed)
    return _INDEXES[key]


# ---------------------------------------------------------------------------------------------------- cache


def cache_key(location: Path, manifest_line: Optional[dict]) -> str:
    """sha256 of the archive's content (a folder: its files' paths, sizes and mtimes), its manifest line and
    the code version."""
    digest = hashlib.sha256()
    digest.update(code_version().encode())
    digest.update(json.dumps(manifest_line, sort_keys=True, default=str).encode())
    if location.is_file():
        with open(location, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        for path in sorted(location.rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path.relative_to(location)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
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
    another such class of the same file) and define or inherit a `forward` from one of those."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    modules: dict[str, bool] = {}  # name -> has forward (own or inherited within the file)
    changed = True
    while changed:  # fixed point over same-file base classes, whatever their order in the file
        changed = False
        for name, node in classes.items():
            if name in modules:
                continue
            bases = [dotted(base) for base in node.bases]
            if any(b in ("nn.Module", "torch.nn.Module", "Module") or b in modules for b in bases):
                own = any(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "forward"
                          for item in node.body)
                modules[name] = own or any(modules.get(b, False) for b in bases)
                changed = True
    return [classes[name] for name in classes if modules.get(name)]
