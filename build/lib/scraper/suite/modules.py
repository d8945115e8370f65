"""--suite modules: torch.nn.Module classes found in scraped repositories, each with its dependency closure.

A modules file is JSONL, one module per line:
    {"class_name": "ResBlock", "source_file": "path/to/closure.py"}          # or "code": "<module text>"
    optional: "name" (the id used for graphs, programs, logs; default "<repo>/<path>:<class_name>" or the
    class name), "repo", "path", "commit", "license" (kept in the manifest as provenance).
Without --modules-file the list is built from the downloaded repositories (the GitHub stage's download folder,
zips or folders): every top-level nn.Module subclass with a forward, cut out with the generator's dependency
closure (`modules_from_repositories`). Nothing here imports or executes the scraped code: the worker does, in its
own process.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Optional

from scraper.fileio import iter_jsonl
from scraper.paths import DEFAULT_DOWNLOAD_DIR
from scraper.repos import list_archives
from scraper.suite.lists import ModelSpec, parse_models_arg, safe_name
from scraper.suite.orchestrate import Job

log = logging.getLogger(__name__)

DEFAULT_REPOS = DEFAULT_DOWNLOAD_DIR
PROVENANCE_KEYS = ("repo", "path", "commit", "license", "stars", "lineno")


def module_name(entry: dict) -> str:
    """The id of a module entry: its "name", else "<repo>/<path>:<class_name>", else the class name."""
    if entry.get("name"):
        return str(entry["name"])
    if entry.get("repo") and entry.get("path"):
        return f"{entry['repo']}/{entry['path']}:{entry['class_name']}"
    return str(entry["class_name"])


def load_module_jobs(modules_file: Optional[Path], repos: Path, suite_dir: Path, only: Optional[str] = None,
                     per_repo: Optional[int] = None) -> list[Job]:
    """Jobs for the modules of `modules_file` (or found in the repositories of `repos`), optionally only the
    names in `only` (a --models string). Inline "code" is written to suite/sources/<name>.py when the job runs."""
    if modules_file is not None:
        entries = list(iter_jsonl(modules_file))
    else:
        entries = modules_from_repositories(repos, per_repo)
    wanted = {spec.name for spec in parse_models_arg(only)} if only else None
    jobs, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        job = entry_job(entry, suite_dir, f"{modules_file or repos}:{number}")
        if job is None or job.name in seen or (wanted is not None and job.name not in wanted):
            continue
        seen.add(job.name)
        jobs.append(job)
    if not jobs:
        raise ValueError(f"no modules to run from {modules_file or repos}")
    return jobs


def entry_job(entry: dict, suite_dir: Path, where: str) -> Optional[Job]:
    """A Job for one modules-file entry, or None (with a warning) when the entry is unusable."""
    if not entry.get("class_name") or not (entry.get("source_file") or entry.get("code")):
        log.warning("%s: a module needs class_name and source_file or code; skipped", where)
        return None
    name = module_name(entry)
    code = entry.get("code")
    source = suite_dir / "sources" / f"{safe_name(name)}.py" if code is not None else Path(entry["source_file"])
    meta = {key: entry[key] for key in PROVENANCE_KEYS if entry.get(key) is not None}
    meta["class_name"] = entry["class_name"]
    return Job(ModelSpec(name, entry.get("batch_size")), source=source, class_name=entry["class_name"], meta=meta,
               code=code)


def modules_from_repositories(download_dir: Path, per_repo: Optional[int] = None) -> list[dict]:
    """Module entries for the nn.Module classes of every repository (zip or folder) in `download_dir`, cut out
    with the generator's static dependency closure (scraper.generator.extract_closure); only closures
    the generator reports self-contained are kept. Static analysis only: nothing is imported or executed."""
    from scraper.generator import ArchiveError, load_manifest, provenance_for, read_repository

    manifest = load_manifest(download_dir) if Path(download_dir).is_dir() else {}
    entries = []
    for location in (list_archives(download_dir) if Path(download_dir).is_dir() else []):
        try:
            source = read_repository(location)
        except ArchiveError as exc:
            log.warning("%s: %s", location.name, exc)
            continue
        found = repository_modules(source, provenance_for(source, manifest))
        entries.extend(found[:per_repo] if per_repo else found)
    return entries


def repository_modules(source, provenance) -> list[dict]:
    """Self-contained nn.Module closures of one repository (a scraper.generator.archives.RepoSource)."""
    from scraper.generator import RepoIndex, extract_closure, parse_source

    index = RepoIndex.from_source(source)
    entries, dropped = [], 0
    for file in source.files:
        parsed = parse_source(file.text, file.path)
        index.add_parsed(file.path, parsed)
        for node in module_classes(parsed.tree):
            try:
                closure = extract_closure(index, file.path, node.name, node.lineno)
            except (KeyError, RecursionError) as exc:
                log.debug("%s:%s: %s", file.path, node.name, exc)
                dropped += 1
                continue
            if not closure.self_contained:
                dropped += 1
                continue
            entries.append({"class_name": node.name, "code": closure.code, "repo": provenance.repo,
                            "path": file.path, "commit": provenance.commit, "license": provenance.license,
                            "stars": provenance.stars, "lineno": node.lineno})
    log.info("%s: %d nn.Module classes with a self-contained closure, %d without", provenance.repo,
             len(entries), dropped)
    return entries


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
            bases = [base_name(base) for base in node.bases]
            if any(b in ("nn.Module", "torch.nn.Module", "Module") or b in modules for b in bases):
                own = any(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "forward"
                          for item in node.body)
                modules[name] = own or any(modules.get(b, False) for b in bases)
                changed = True
    return [classes[name] for name in classes if modules.get(name)]


def base_name(node: ast.expr) -> str:
    """Dotted text of a base class expression (`torch.nn.Module`), "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = base_name(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""
