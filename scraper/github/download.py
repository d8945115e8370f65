"""Download one repository pinned to a commit, verify it, and confirm that it holds Triton code.

Flow per repository: metadata (`/repos/{o}/{r}`, skipped when a search result already carried it), the default
branch's head commit (`/repos/{o}/{r}/commits/{branch}`), then `/repos/{o}/{r}/zipball/{sha}`, whose 302 to
codeload.github.com requests follows (dropping the token, since the host changes). The body streams into a
hidden `.part` file in the download folder while its sha256 is computed; only a complete archive (the byte count
matches Content-Length when sent, the zip's central directory reads, every member's CRC checks) is renamed to
its final name. A connection cut mid-body is retried from the start a few times (urllib3 retries cannot cover a
body that requests is already streaming).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import requests

from scraper.github.client import GitHubClient, GitHubError
from scraper.github.manifest import PART_SUFFIX, archive_name, utc_now

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_SCAN_BYTES = 2 << 20  # .py members above 2 MiB are generated data, not kernels: not scanned
_TRITON = re.compile(rb"\btriton\b")
_JIT = re.compile(rb"\bjit\b")
# What reading a damaged or odd zip can raise: truncated deflate data, encrypted or unknown-compression members.
ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError)
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class Skip(Exception):
    """A repository that is left out for a named reason (too_large, empty, not_found, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class RepoInfo:
    """The metadata the manifest keeps, from `/repos/{o}/{r}` or a repository search item."""

    full_name: str
    default_branch: Optional[str]
    stars: Optional[int]
    license: Optional[str]
    size_kb: Optional[int]
    html_url: Optional[str]

    @classmethod
    def from_api(cls, data: dict) -> "RepoInfo":
        """From GitHub's repository JSON (full or search item); license None when GitHub detected none."""
        license_data = data.get("license") or {}
        return cls(
            full_name=data["full_name"],
            default_branch=data.get("default_branch"),
            stars=data.get("stargazers_count"),
            license=license_data.get("spdx_id") or None,
            size_kb=data.get("size"),
            html_url=data.get("html_url"),
        )

    @property
    def complete(self) -> bool:
        """True when a search item carried everything, so `/repos/{o}/{r}` can be skipped."""
        return self.default_branch is not None and self.stars is not None and self.size_kb is not None


def repo_path(full_name: str) -> str:
    """`/repos/owner/name` with both parts URL-quoted."""
    owner, name = full_name.split("/", 1)
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def fetch_info(client: GitHubClient, full_name: str) -> RepoInfo:
    """Repository metadata; Skip('not_found') for 404 (deleted, private, renamed away), 451 (blocked)."""
    try:
        return RepoInfo.from_api(client.get_json(repo_path(full_name)))
    except GitHubError as exc:
        if exc.status in (404, 451):
            raise Skip("not_found", str(exc)) from None
        raise


def fetch_commit(client: GitHubClient, full_name: str, branch: str) -> str:
    """SHA of the head commit of `branch`, asked with GitHub's `application/vnd.github.sha` media type (the bare
    SHA instead of a commit JSON with its whole diff); Skip('empty') for a repository without commits (409)."""
    path = f"{repo_path(full_name)}/commits/{quote(branch, safe='')}"
    try:
        response = client.get(path, headers={"Accept": "application/vnd.github.sha"})
    except GitHubError as exc:
        if exc.status == 409:
            raise Skip("empty", str(exc)) from None
        if exc.status in (404, 422):
            raise Skip("not_found", str(exc)) from None
        raise
    text = response.text.strip()
    if "json" in response.headers.get("Content-Type", ""):  # a server that ignores the media type
        text = str(response.json().get("sha", ""))
    if not _SHA.fullmatch(text):
        raise GitHubError(f"{path}: not a commit SHA: {text[:80]!r}")
    return text


def download_archive(client: GitHubClient, full_name: str, sha: str, download_dir: Path,
                     max_bytes: Optional[int], attempts: int = 3) -> tuple[Path, str, int]:
    """Download the zipball of `sha` to `<download_dir>/<owner>__<name>.zip`; returns (path, sha256, bytes).

    Raises Skip('too_large') past `max_bytes`, Skip('bad_archive') when no attempt gives a valid zip."""
    target = Path(download_dir) / archive_name(full_name)
    part = target.with_name(f".{target.name}{PART_SUFFIX}")
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            digest, size = _stream_to(client, f"{repo_path(full_name)}/zipball/{sha}", part, max_bytes)
            check_zip(part)
        except (requests.RequestException, GitHubError, OSError, *ZIP_ERRORS) as exc:
            part.unlink(missing_ok=True)
            if isinstance(exc, GitHubError) and exc.status is not None:
                raise
            last_error = f"{type(exc).__name__}: {exc}"
            log.info("%s: archive attempt %d/%d failed: %s", full_name, attempt, attempts, last_error)
            continue
        except Skip:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        return target, digest, size
    raise Skip("bad_archive", f"no complete archive after {attempts} attempts ({last_error})")


def _stream_to(client: GitHubClient, path: str, part: Path, max_bytes: Optional[int]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with client.get(path, stream=True) as response:
        expected = response.headers.get("Content-Length")
        if max_bytes is not None and expected and expected.isdigit() and int(expected) > max_bytes:
            raise Skip("too_large", f"archive is {int(expected) / 2**20:.1f} MiB, over --max-size-mb")
        with open(part, "wb") as handle:
            for chunk in response.iter_content(CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise Skip("too_large", f"archive passed {max_bytes / 2**20:.1f} MiB (--max-size-mb)")
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    if expected and expected.isdigit() and int(expected) != size:
        raise OSError(f"got {size} bytes of {expected}")
    return digest.hexdigest(), size


def check_zip(path: Path) -> None:
    """Raise zipfile.BadZipFile unless `path` is a zip whose members all pass their CRC check."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"CRC error in member {bad}")


def count_triton_files(path: Path) -> int:
    """Number of `.py` members whose text mentions both `triton` and `jit` (a cheap pre-filter: the generator
    does the real AST detection). Reads members through zipfile only; nothing is extracted or executed."""
    count = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.endswith(".py") or info.file_size > MAX_SCAN_BYTES:
                continue
            try:
                with archive.open(info) as member:
                    text = member.read(MAX_SCAN_BYTES + 1)
            except (*ZIP_ERRORS, OSError):
                continue
            if _TRITON.search(text) and _JIT.search(text):
                count += 1
    return count


def manifest_entry(info: RepoInfo, sha: Optional[str], archive: Path, digest: str, size: int,
                   triton_files: int, origin: str = "github") -> dict:
    """One manifest line (the shared contract's keys, plus archive_bytes and triton_files)."""
    return {
        "full_name": info.full_name,
        "commit_sha": sha,
        "default_branch": info.default_branch,
        "stars": info.stars,
        "license": info.license,
        "size_kb": info.size_kb,
        "archive": archive.name,
        "sha256": digest,
        "archive_bytes": size,
        "triton_files": triton_files,
        "fetched_at": utc_now(),
        "origin": origin,
        "html_url": info.html_url,
    }
