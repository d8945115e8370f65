"""The download folder's manifest: one JSON line per repository archive (the latest line for a name wins).

Line format (shared contract with the generator): full_name, commit_sha, default_branch, stars, license (SPDX id
or null), size_kb, archive (file name in the download folder), sha256, fetched_at (ISO-8601 UTC), origin
("github" | "local"), html_url; plus keys readers may ignore: `archive_bytes`, `triton_files` (count of .py files
that mention triton and jit), `nn_module_files` (count of .py files defining a torch.nn.Module subclass) and
`discovery`, the discoveries that found the repository (`["triton"]`, `["pytorch"]`, `["triton", "pytorch"]` in
the order they found it; `[]` for a --local input, which no search found). A line without `discovery` was written
before there was more than one: it reads as Triton's (`discoveries_of`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import zipfile
from pathlib import Path
from typing import Callable, Optional

from scraper.fileio import append_jsonl
from scraper.repos import (  # noqa: F401  (re-exported: the GitHub stage's names for the shared facts)
    DOWNLOAD_MANIFEST,
    FULL_NAME,
    archive_name,
    latest_by_full_name as read_latest,
    read_download_manifest as read_manifest,
    repo_of_archive as full_name_of_archive,
    top_folder,
)

log = logging.getLogger(__name__)

NO_TRITON = "no_triton.jsonl"  # repositories whose archive had no Triton code, so reruns skip them
NO_NN_MODULE = "no_nn_module.jsonl"  # the same for the pytorch discovery: no nn.Module subclass
EARLIER_DISCOVERY = "triton"  # what a line without `discovery` was found by: the only discovery there was
PART_SUFFIX = ".part"

_append_lock = threading.Lock()


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


def append_entry(download_dir: Path, entry: dict, file_name: str = DOWNLOAD_MANIFEST,
                 mask: Optional[Callable[[str], str]] = None) -> None:
    """Append one complete manifest line (thread-safe; a crash loses at most this line). Every line of the
    manifest and of no_triton.jsonl is written here: `mask` (the client's, which hides the token) is applied to
    every string in it, whatever field a server may have put the token in."""
    if mask is not None:
        entry = _masked(entry, mask)
    with _append_lock:
        append_jsonl(Path(download_dir) / file_name, entry)


def _masked(value, mask: Callable[[str], str]):
    """`value` with `mask` applied to each string in it (dict values and list items walked)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, mask) for item in value]
    return value


def discoveries_of(entry: dict) -> list[str]:
    """The discoveries a manifest line names (its `discovery` list; a single name is read as a list of one);
    `[EARLIER_DISCOVERY]` for a line written before lines named them."""
    found = entry.get("discovery", [EARLIER_DISCOVERY])
    if isinstance(found, str):
        found = [found]
    return [name for name in found if isinstance(name, str)] if isinstance(found, list) else [EARLIER_DISCOVERY]


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
