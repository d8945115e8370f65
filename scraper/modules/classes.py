"""--suite modules, discovery: torch.nn.Module classes found in scraped repositories, each with its dependency
closure, as `Candidate`s the suite's host side turns into jobs (scraper.suite.command).

A modules file is JSONL, one module per line:
    {"class_name": "ResBlock", "source_file": "path/to/closure.py"}          # or "code": "<module text>"
    optional: "name" (the id used for graphs, programs, logs; default "<repo>/<path>:<class_name>" or the
    class name), "repo", "path", "commit", "license", "kind" (kept in the manifest as provenance), "hints" (how
    the repository calls the class: scraper.modules.usage).
Without --modules-file the list is built from the downloaded repositories (the GitHub stage's download folder,
zips or folders): every top-level nn.Module subclass with a forward, cut out with the generator's dependency
closure (`modules_from_repositories`, listed by scraper.modules.listing), those needing a module that is not
installed marked with a `skip_reason` (scraper.modules.needs) and, with --per-repo, library code chosen first
(`choose`). Nothing here imports or executes the scraped code: the worker does, in its own process, behind the
wall. This package imports nothing of the suite's host side (scraper.suite) nor of the worker's, but the static
import checks they share (scraper.worker.infer.guarded).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from dataclasses import dataclass, field

from scraper.fileio import iter_jsonl
from scraper.paths import DEFAULT_DOWNLOAD_DIR
from scraper.suiterun import safe_name
from scraper.zipsafe import printable

log = logging.getLogger(__name__)

DEFAULT_REPOS = DEFAULT_DOWNLOAD_DIR
PROVENANCE_KEYS = ("repo", "path", "commit", "license", "stars", "lineno", "kind")
LISTING_CACHE = "listing"  # under suite/: the cached listing of each archive (scraper.modules.listing)


@dataclass
class Candidate:
    """One module to run: its id, its source (a file, or `code` written there when the job runs), the class to
    build, its provenance, the repository's own calls of it, and why it is not run (a missing package)."""

    name: str
    source: Path
    class_name: str
    meta: dict = field(default_factory=dict)
    code: Optional[str] = None
    hints: Optional[list] = None
    skip_reason: Optional[str] = None
    batch_size: Optional[int] = None


def module_name(entry: dict) -> str:
    """The id of a module entry: its "name", else "<repo>/<path>:<class_name>", else the class name."""
    if entry.get("name"):
        return str(entry["name"])
    if entry.get("repo") and entry.get("path"):
        return f"{entry['repo']}/{entry['path']}:{entry['class_name']}"
    return str(entry["class_name"])


def load_candidates(modules_file: Optional[Path], repos: Path, suite_dir: Path, only: Optional[str] = None,
                    per_repo: Optional[int] = None, list_jobs: Optional[int] = None) -> list[Candidate]:
    """The candidates of `modules_file` (or found in the repositories of `repos` by `list_jobs`
    processes, the listing cached in suite/listing/), optionally only the names in `only` (a --models string).
    Inline "code" is written to suite/sources/<name>.py when the job runs."""
    if modules_file is not None:
        entries = list(iter_jsonl(modules_file))
    else:
        entries = modules_from_repositories(repos, per_repo, suite_dir / LISTING_CACHE, list_jobs)
    # Module names hold a colon (`repo/path.py:Class`): --models is a plain comma-separated list here.
    wanted = {name.strip() for name in only.split(",") if name.strip()} if only else None
    candidates, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        candidate = entry_candidate(entry, suite_dir, f"{modules_file or repos}:{number}")
        if candidate is None or candidate.name in seen or (wanted is not None and candidate.name not in wanted):
            continue
        seen.add(candidate.name)
        candidates.append(candidate)
    missing = sorted((wanted or set()) - seen)
    if missing:  # a name the listing no longer offers (a test file, no self-contained closure): say which
        log.warning("%d of the --models names are not candidates of %s (not listed, or without a self-contained "
                    "closure): %s", len(missing), modules_file or repos, ", ".join(missing[:10])
                    + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
    if not candidates:
        raise ValueError(f"no modules to run from {modules_file or repos}")
    return candidates


def entry_candidate(entry: dict, suite_dir: Path, where: str) -> Optional[Candidate]:
    """The candidate of one modules-file entry, or None (with a warning) when the entry is unusable."""
    if not entry.get("class_name") or not (entry.get("source_file") or entry.get("code")):
        log.warning("%s: a module needs class_name and source_file or code; skipped", where)
        return None
    name = module_name(entry)
    code = entry.get("code")
    source = suite_dir / "sources" / f"{safe_name(name)}.py" if code is not None else Path(entry["source_file"])
    meta = {key: entry[key] for key in PROVENANCE_KEYS if entry.get(key) is not None}
    meta["class_name"] = entry["class_name"]
    return Candidate(name, source, entry["class_name"], meta, code, entry.get("hints"), entry.get("skip_reason"),
                     entry.get("batch_size"))


def modules_from_repositories(download_dir: Path, per_repo: Optional[int] = None,
                              cache_dir: Optional[Path] = None, jobs: Optional[int] = None) -> list[dict]:
    """Module entries for the nn.Module classes of every repository (zip or folder) in `download_dir`, cut out
    with the generator's static dependency closure (scraper.modules.listing: in parallel, cached in `cache_dir`);
    only closures the generator reports self-contained are kept. Each entry carries its `kind` (library, example,
    benchmark, test, vendored), the repository's own `hints` (scraper.modules.usage) and, when a module it imports
    is not installed here, a `skip_reason`. With `per_repo`, at most that many per repository, chosen by
    `choose`. Static analysis only: nothing is imported or executed."""
    from scraper.modules.listing import list_repositories

    entries, errors = [], 0
    listings = list_repositories(download_dir, cache_dir, jobs)
    for listing in listings:
        if listing.error:  # that repository's error; the others go on
            errors += 1
            log.warning("%s: not listed: %s", printable(listing.archive), printable(listing.error))
            continue
        found = [repository_entry(entry, listing) for entry in listing.entries]
        chosen = choose(found, per_repo)
        log.info("%s: %d nn.Module classes with a self-contained closure, %d without; %s",
                 printable(listing.provenance["repo"]), len(found), listing.dropped, choice_summary(found, chosen))
        entries.extend(chosen)
    if errors:
        log.warning("%d of %d repositories could not be listed (above)", errors, len(listings))
    return entries


def repository_entry(entry: dict, listing) -> dict:
    """A modules-file entry for one cached candidate: provenance, kind, hints and skip reason."""
    from scraper.modules.needs import skip_reason

    found = {key: value for key, value in entry.items() if key != "imports"}
    found.update(listing.provenance, kind=source_kind(entry["path"]))
    reason = skip_reason(entry.get("imports") or {}, listing.extensions, listing.packages)
    if reason:
        found["skip_reason"] = reason
    return found


# What a path says about the code in it, best first: --per-repo prefers library code.
KINDS = ("library", "example", "benchmark", "test", "vendored")
VENDORED_DIRS = {"third_party", "thirdparty", "3rdparty", "vendor", "vendored", "_vendor", "external", "extern",
                 "deps", "submodules", "site-packages"}
TEST_DIRS = {"test", "tests", "testing", "unittest", "unittests", "unit_tests"}
EXAMPLE_DIRS = {"example", "examples", "demo", "demos", "tutorial", "tutorials", "notebooks", "scripts", "tools",
                "docs", "playground", "recipes", "sandbox", "samples"}


def source_kind(path: str) -> str:
    """library | example | benchmark | test | vendored, from a file's path in its repository."""
    parts = [part.lower() for part in path.split("/")]
    folders, name = parts[:-1], parts[-1]
    if VENDORED_DIRS & set(folders):
        return "vendored"
    if TEST_DIRS & set(folders) or name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py":
        return "test"
    if any(part.startswith("bench") for part in folders) or name.startswith("bench"):
        return "benchmark"
    if EXAMPLE_DIRS & set(folders) or name.startswith(("example", "demo")):
        return "example"
    return "library"


def choose(entries: list[dict], per_repo: Optional[int]) -> list[dict]:
    """At most `per_repo` entries of one repository (all without it), best first: runnable here before
    skipped, library code before examples, benchmarks, tests and vendored copies, a class name not seen yet
    before a second class of the same name, then path order. The chosen keep their path order."""
    if not per_repo or len(entries) <= per_repo:
        return entries
    seen: dict[str, int] = {}
    ranks = []
    for number, entry in enumerate(entries):
        repeats = seen.get(entry["class_name"], 0)
        seen[entry["class_name"]] = repeats + 1
        ranks.append((bool(entry.get("skip_reason")), KINDS.index(entry["kind"]), repeats > 0, number))
    return [entries[rank[-1]] for rank in sorted(sorted(ranks)[:per_repo], key=lambda rank: rank[-1])]


def choice_summary(found: list[dict], chosen: list[dict]) -> str:
    """`chose 12 of 84: library 12; left out: test 30, example 5`-like text, plus the skipped ones."""
    def counts(entries):
        return ", ".join(f"{kind} {sum(e['kind'] == kind for e in entries)}" for kind in KINDS
                         if any(e["kind"] == kind for e in entries)) or "none"
    left = [entry for entry in found if not any(entry is c for c in chosen)]
    skipped = sum(bool(entry.get("skip_reason")) for entry in chosen)
    return (f"chose {len(chosen)} of {len(found)}: {counts(chosen)}" + (f"; left out: {counts(left)}" if left else "")
            + (f"; {skipped} of the chosen need a module not installed here" if skipped else ""))
