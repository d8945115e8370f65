"""Where a repository came from: the scraper's manifest.jsonl when it lists the archive, else what the archive
itself tells (the `<owner>__<name>.zip` file name, the zipball top folder's sha7, a LICENSE file, .git/HEAD)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scraper.generator.archives import RepoSource
from scraper.repos import by_archive, git_head, license_from_text, read_download_manifest, repo_of_archive

log = logging.getLogger(__name__)


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
    """The download folder's manifest entries by archive file name (the latest line for a repository wins)."""
    return by_archive(read_download_manifest(download_dir))






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
    return Provenance(repo=repo_of_archive(source.name), commit=commit,
                      license=license_from_text(source.license_text))
