"""Where a repository came from: the scraper's manifest.jsonl when it lists the archive, else what the archive
itself tells (the `<owner>__<name>.zip` file name, the zipball top folder's sha7, a LICENSE file, .git/HEAD)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scraper.generator.archives import RepoSource, license_from_text
from scraper.records import iter_jsonl

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass
class Provenance:
    """Provenance fields copied onto every record of one repository."""

    repo: str  # owner/name (or the archive / directory name when nothing better is known)
    commit: Optional[str] = None
    license: Optional[str] = None
    stars: Optional[int] = None
    html_url: Optional[str] = None
    origin: str = "archive"  # "manifest" when the scraper's manifest listed it

    @property
    def slug(self) -> str:
        """Folder name under generated/: owner__name (GitHub owners cannot contain `_`, so it cannot collide)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.repo.replace("/", "__")).strip("._") or "repo"


def load_manifest(download_dir: Path) -> dict[str, dict]:
    """Manifest entries by archive file name; the latest line for a full_name wins. Missing file -> {}."""
    path = Path(download_dir) / MANIFEST_NAME
    if not path.is_file():
        return {}
    by_name: dict[str, dict] = {}
    for entry in iter_jsonl(path):
        if isinstance(entry.get("full_name"), str):
            by_name[entry["full_name"]] = entry
    return {entry["archive"]: entry for entry in by_name.values() if isinstance(entry.get("archive"), str)}


def repo_from_archive_name(name: str) -> str:
    """`owner__name.zip` -> `owner/name`; `local__dir.zip` -> `local/dir`; anything else -> its stem."""
    stem = name[:-4] if name.endswith(".zip") else name
    owner, sep, rest = stem.partition("__")
    return f"{owner}/{rest}" if sep and owner and rest else stem


def git_head(directory: Path) -> Optional[str]:
    """Commit SHA of a local clone from .git/HEAD (read as text, nothing run), else None."""
    git = Path(directory) / ".git"
    try:
        head = (git / "HEAD").read_text(errors="replace").strip()
        if head.startswith("ref: "):
            ref = head[5:].strip()
            if ".." in ref:
                return None
            head = (git / ref).read_text(errors="replace").strip() if (git / ref).is_file() else ""
        return head if _SHA.match(head) else None
    except OSError:
        return None


def provenance_for(source: RepoSource, manifest: dict[str, dict]) -> Provenance:
    """Provenance of a repository: manifest entry for its archive name when listed, else the archive's hints."""
    entry = manifest.get(source.name)
    if entry:
        return Provenance(
            repo=entry["full_name"], commit=entry.get("commit_sha") or source.commit_hint,
            license=entry.get("license") or license_from_text(source.license_text),
            stars=entry.get("stars") if isinstance(entry.get("stars"), int) else None,
            html_url=entry.get("html_url"), origin="manifest",
        )
    commit = source.commit_hint
    if commit is None and Path(source.location).is_dir():
        commit = git_head(Path(source.location))
    return Provenance(repo=repo_from_archive_name(source.name), commit=commit,
                      license=license_from_text(source.license_text))
