"""--suite modules: torch.nn.Module classes found in scraped repositories, each with its dependency closure.

A modules file is JSONL, one module per line:
    {"class_name": "ResBlock", "source_file": "path/to/closure.py"}          # or "code": "<module text>"
    optional: "name" (the id used for graphs, programs, logs; default "<repo>/<path>:<class_name>" or the
    class name), "repo", "path", "commit", "license" (kept in the manifest as provenance).
Without --modules-file the list is built from the generator's output folder (scraper.generator): see
`modules_from_generated`. Nothing here imports or executes the scraped code: the worker does, in its own process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from scraper.cli import REPO_ROOT
from scraper.records import atomic_write_text, iter_jsonl
from scraper.suite.lists import ModelSpec, parse_models_arg, safe_name
from scraper.suite.orchestrate import Job

log = logging.getLogger(__name__)

DEFAULT_GENERATED = REPO_ROOT / "scraper" / "generator" / "generated"
PROVENANCE_KEYS = ("repo", "path", "commit", "license", "stars", "lineno")


def module_name(entry: dict) -> str:
    """The id of a module entry: its "name", else "<repo>/<path>:<class_name>", else the class name."""
    if entry.get("name"):
        return str(entry["name"])
    if entry.get("repo") and entry.get("path"):
        return f"{entry['repo']}/{entry['path']}:{entry['class_name']}"
    return str(entry["class_name"])


def load_module_jobs(modules_file: Optional[Path], generated: Path, suite_dir: Path,
                     only: Optional[str] = None) -> list[Job]:
    """Jobs for the modules of `modules_file` (or found under `generated`), optionally only the names in
    `only` (a --models string). Inline "code" is written to suite/sources/<name>.py for the worker."""
    if modules_file is not None:
        entries = list(iter_jsonl(modules_file))
    else:
        entries = modules_from_generated(generated)
    wanted = {spec.name for spec in parse_models_arg(only)} if only else None
    jobs, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        job = entry_job(entry, suite_dir, f"{modules_file or generated}:{number}")
        if job is None or job.name in seen or (wanted is not None and job.name not in wanted):
            continue
        seen.add(job.name)
        jobs.append(job)
    if not jobs:
        raise ValueError(f"no modules to run from {modules_file or generated}")
    return jobs


def entry_job(entry: dict, suite_dir: Path, where: str) -> Optional[Job]:
    """A Job for one modules-file entry, or None (with a warning) when the entry is unusable."""
    if not entry.get("class_name") or not (entry.get("source_file") or entry.get("code")):
        log.warning("%s: a module needs class_name and source_file or code; skipped", where)
        return None
    name = module_name(entry)
    if entry.get("code") is not None:
        source = suite_dir / "sources" / f"{safe_name(name)}.py"
        atomic_write_text(source, entry["code"])
    else:
        source = Path(entry["source_file"])
    meta = {key: entry[key] for key in PROVENANCE_KEYS if entry.get(key) is not None}
    meta["class_name"] = entry["class_name"]
    return Job(ModelSpec(name, entry.get("batch_size")), source=source, class_name=entry["class_name"], meta=meta)


def modules_from_generated(generated: Path) -> list[dict]:
    """Module entries built from the generator's output (filled in once its closure API exists)."""
    raise ValueError(f"no --modules-file given and no module list could be built from {generated}")
