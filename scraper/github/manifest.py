"""The download folder's manifest: one JSON line per repository archive (the latest line for a name wins).

Line format (shared contract with the generator): full_name, commit_sha, default_branch, stars, license (SPDX id
or null), size_kb, archive (file name in the download folder), sha256, fetched_at (ISO-8601 UTC), origin
("github" | "local"), html_url; plus `archive_bytes` and `triton_files` (count of .py files that mention triton
and jit) which readers may ignore.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
import zipfile
from pathlib import Path
from typing import Optional

from scraper.records import append_jsonl, iter_jsonl

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
NO_TRITON = "no_triton.jsonl"  # repositories whose archive had no Triton code, so reruns skip them
PART_SUFFIX = ".part"
FULL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")

_append_lock = threading.Lock()


def archive_name(full_name: str) -> str:
    """`owner/name` -> `owner__name.zip`. GitHub owners cannot contain `_`, so the first `__` splits back."""
    owner, name = full_name.split("/", 1)
    return f"{owner}__{name}.zip"


def full_name_of_archive(file_name: str) -> str:
    """Inverse of `archive_name`."""
    owner, name = file_name.removesuffix(".zip").split("__", 1)
    return f"{owner}/{name}"


def top_folder(full_name: str, commit_sha: Optional[str]) -> str:
    """The single top folder of a GitHub zipball: `<owner>-<name>-<sha7>`; `<owner>-<name>-nocommit` when the commit
    is unknown (not hex, so nothing reads it as a commit)."""
    owner, name = full_name.split("/", 1)
    return f"{owner}-{name}-{commit_sha[:7] if commit_sha else 'nocommit'}"


def utc_now() -> str:
    """Current time as ISO-8601 UTC with a Z, to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_latest(path: Path) -> dict[str, dict]:
    """{full_name.lower(): its latest line} of a JSONL file keyed by full_name; {} when it does not exist."""
    latest: dict[str, dict] = {}
    if path.exists():
        for entry in iter_jsonl(path):
            if isinstance(entry.get("full_name"), str):
                latest[entry["full_name"].lower()] = entry
    return latest


def read_manifest(download_dir: Path) -> dict[str, dict]:
    """The manifest of `download_dir` as {full_name.lower(): latest entry}."""
    return read_latest(Path(download_dir) / MANIFEST)


def append_entry(download_dir: Path, entry: dict, file_name: str = MANIFEST) -> None:
    """Append one complete manifest line (thread-safe; a crash loses at most this line)."""
    with _append_lock:
        append_jsonl(Path(download_dir) / file_name, entry)


def archive_ok(path: Path, expected_bytes: Optional[int] = None) -> bool:
    """True when `path` is a zip whose central directory reads and whose size matches `expected_bytes`."""
    try:
        if expected_bytes is not None and path.stat().st_size != expected_bytes:
            return False
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
        return True
    except (OSError, zipfile.BadZipFile):
        return False


def is_finished(download_dir: Path, entry: Optional[dict]) -> bool:
    """A manifest entry whose archive is on disk, opens as a zip and has the recorded size."""
    if not entry or not entry.get("archive"):
        return False
    return archive_ok(Path(download_dir) / entry["archive"], entry.get("archive_bytes"))


def remove_partials(download_dir: Path) -> int:
    """Delete temporary `.part` files a killed run left behind; returns how many."""
    removed = 0
    for part in Path(download_dir).glob(f".*{PART_SUFFIX}"):
        part.unlink(missing_ok=True)
        removed += 1
    return removed
