"""Download one repository pinned to a commit, verify it, and count the files that confirm it (Triton code, an
nn.Module subclass: scraper.github.discovery).

Flow per repository: metadata (`/repos/{o}/{r}`, skipped when a search result already carried it), the default
branch's head commit (`/repos/{o}/{r}/commits/{branch}`), then `/repos/{o}/{r}/zipball/{sha}`, whose 302 to
codeload.github.com the client follows (without the token, since the host changes). The body streams into a
hidden `.part` file in the download folder while its sha256 is computed. One download (every attempt together)
has a deadline, and its body must keep moving (the client's stall deadline); a download past either fails at once
(`download_timeout`, `download_stalled`), since fetching again from a server that trickles costs as much again.
Only a complete archive is renamed to its final name: the byte count matches Content-Length when sent, the
archive passes `scraper.zipsafe`'s limits (safe member names, a bounded directory, no entries sharing data), and
every member the pipeline will read (`.py` files up to the generator's cap) passes its CRC check. The same pass
counts the files each discovery's test accepts. A connection cut mid-body or a damaged member is retried from the
start a few times (urllib3 retries cannot cover a body that is already streaming); a hostile archive is refused at
once.

A `full_name` from the server becomes a file name: it is checked against GitHub's rules first. The other fields
the manifest keeps are checked where they are parsed (`RepoInfo.from_api`): a license must look like an SPDX id
(GitHub's `NOASSERTION` is unknown), `html_url` must be `https://github.com/<full_name>`, the default branch a
name git would accept for a branch, stars and size non-negative integers; a field that is not is stored as
unknown (None) and named in `RepoInfo.dropped`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from scraper.github.client import BodyTooSlow, GitHubClient, GitHubError
from scraper.github.discovery import count_file, zero_counts
from scraper.github.gitindex import is_branch_name
from scraper.github.manifest import PART_SUFFIX, archive_name, utc_now
from scraper.repos import is_full_name
from scraper.zipsafe import DEFAULT_LIMITS, MemberRefused, SafeZip, UnsafeArchive, safe_member_path

log = logging.getLogger(__name__)

DOWNLOAD_DEADLINE = 1800.0  # seconds for one archive, every attempt (500 MiB at 0.3 MB/s); the CLI: 30 x --timeout
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")  # MIT, Apache-2.0, GPL-2.0-or-later, LicenseRef-x...
UNKNOWN_LICENSES = frozenset({"NOASSERTION", "NONE"})  # GitHub's "a license file it could not name"


class Skip(Exception):
    """A repository that is left out for a named reason (too_large, empty, not_found, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def spdx_of(spdx: object) -> Optional[str]:
    """`spdx` (GitHub's `license.spdx_id`) when it looks like an SPDX id; None for NOASSERTION or any other text."""
    if not isinstance(spdx, str) or spdx.upper() in UNKNOWN_LICENSES or not SPDX_ID.fullmatch(spdx):
        return None
    return spdx


def _count(value: object) -> Optional[int]:
    """A non-negative JSON integer (a bool is not one), else None."""
    return value if type(value) is int and value >= 0 else None


def _checked(data: dict, full_name: str) -> tuple[dict, list[str]]:
    """The fields RepoInfo keeps, each valid or None, and the names of those the answer had but were refused."""
    license_data = data.get("license")
    spdx = license_data.get("spdx_id") if isinstance(license_data, dict) else license_data
    raw = {"default_branch": data.get("default_branch"), "stars": data.get("stargazers_count"),
           "license": None if str(spdx).upper() in UNKNOWN_LICENSES else spdx, "size_kb": data.get("size"),
           "html_url": data.get("html_url")}
    kept = {
        "default_branch": raw["default_branch"] if is_branch_name(raw["default_branch"]) else None,
        "stars": _count(raw["stars"]),
        "license": spdx_of(raw["license"]) if isinstance(license_data, dict) else None,
        "size_kb": _count(raw["size_kb"]),
        "html_url": raw["html_url"] if raw["html_url"] == f"https://github.com/{full_name}" else None,
    }
    return kept, [key for key, value in kept.items() if value is None and raw[key] is not None]


@dataclass
class RepoInfo:
    """The metadata the manifest keeps, from `/repos/{o}/{r}` or a repository search item."""

    full_name: str
    default_branch: Optional[str]
    stars: Optional[int]
    license: Optional[str]
    size_kb: Optional[int]
    html_url: Optional[str]
    dropped: tuple = ()  # fields the answer had but that were refused (see the module)

    @classmethod
    def from_api(cls, data: dict) -> "RepoInfo":
        """From GitHub's repository JSON (full or search item); license None when GitHub detected none or could
        not name it. Fields of the wrong type or shape count as missing (and are named in `dropped`); GitHubError
        when `full_name` is not a valid owner/name."""
        if not isinstance(data, dict) or not is_full_name(data.get("full_name")):
            raise GitHubError("repository answer without a valid owner/name full_name")
        kept, dropped = _checked(data, data["full_name"])
        return cls(full_name=data["full_name"], dropped=tuple(dropped), **kept)

    @property
    def complete(self) -> bool:
        """True when a search item carried everything, so `/repos/{o}/{r}` can be skipped."""
        return self.default_branch is not None and self.stars is not None and self.size_kb is not None


@dataclass
class ArchiveScan:
    """What one pass over an archive found: {count_key: files} of each discovery's test (triton_files,
    nn_module_files), and members whose bytes fail their CRC or size."""

    counts: dict = field(default_factory=zero_counts)
    damaged: list = field(default_factory=list)


@dataclass
class Archive:
    """A verified archive in the download folder."""

    path: Path
    sha256: str
    size: int
    counts: dict  # ArchiveScan.counts


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
    if "json" in response.headers.get("Content-Type", ""):  # a server that ignores the media type
        data = client.json_of(response)
        text = str(data.get("sha", "")) if isinstance(data, dict) else ""
    else:
        text = client.read(response).decode("utf-8", errors="replace").strip()
    if not _SHA.fullmatch(text):
        raise client.error(f"{path}: not a commit SHA: {text[:80]!r}")
    return text


def archive_path(download_dir: Path, full_name: str) -> Path:
    """`<download_dir>/<owner>__<name>.zip`; ValueError for a name that is not a valid owner/name."""
    if not is_full_name(full_name):
        raise ValueError(f"not a valid owner/name: {full_name[:120]!r}")
    return Path(download_dir) / archive_name(full_name)


def download_archive(client: GitHubClient, full_name: str, sha: str, download_dir: Path,
                     max_bytes: Optional[int], deadline: float = DOWNLOAD_DEADLINE, attempts: int = 3) -> Archive:
    """Download the zipball of `sha` to `<download_dir>/<owner>__<name>.zip`, verified (see the module).

    Raises Skip('too_large') past `max_bytes`, Skip('unsafe_archive') for an archive refused by zipsafe,
    Skip('download_timeout') when `deadline` seconds (all attempts) passed, Skip('download_stalled') for a body
    that stopped moving, Skip('bad_archive') when no attempt gives a complete one (a cut, a damaged member)."""
    target = archive_path(download_dir, full_name)
    part = target.with_name(f".{target.name}{PART_SUFFIX}")
    last_error, ends = "", time.monotonic() + deadline
    for attempt in range(1, attempts + 1):
        try:
            left = ends - time.monotonic()
            if left <= 0:
                raise Skip("download_timeout", f"archive not complete after {deadline:.0f} s: {last_error}")
            digest, size = _stream_to(client, f"{repo_path(full_name)}/zipball/{sha}", part, max_bytes, left)
            scan = scan_archive(part)
            if scan.damaged:
                raise zipfile.BadZipFile(f"damaged member {scan.damaged[0]}")
        except UnsafeArchive as exc:
            part.unlink(missing_ok=True)
            raise Skip("unsafe_archive", client.scrub(exc)) from None
        except BodyTooSlow as exc:
            part.unlink(missing_ok=True)
            reason = "download_stalled" if exc.reason == "stalled" else "download_timeout"
            raise Skip(reason, client.scrub(exc)) from None
        except (GitHubError, OSError, zipfile.BadZipFile) as exc:
            part.unlink(missing_ok=True)
            if isinstance(exc, GitHubError) and exc.status is not None:
                raise
            last_error = client.scrub(f"{type(exc).__name__}: {exc}")
            log.info("%s: archive attempt %d/%d failed: %s", full_name, attempt, attempts, last_error)
            continue
        except Skip:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        return Archive(target, digest, size, scan.counts)
    raise Skip("bad_archive", f"no complete archive after {attempts} attempts ({last_error})")


def _stream_to(client: GitHubClient, path: str, part: Path, max_bytes: Optional[int],
               deadline: float) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with client.get(path) as response, open(part, "wb") as handle:
        expected = response.headers.get("Content-Length")
        if max_bytes is not None and expected and expected.isdigit() and int(expected) > max_bytes:
            raise Skip("too_large", f"archive is {int(expected) / 2**20:.1f} MiB, over --max-size-mb")
        for chunk in client.chunks(response, deadline):
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


def scan_archive(path: Path) -> ArchiveScan:
    """One pass over an archive: the `.py` members the generator will read (up to its per-file cap, within its
    per-archive budget) are read through zipsafe, checked against their CRC, and counted by each discovery's text
    test (scraper.github.discovery: cheap pre-filters; the generator and the modules suite parse). Members the
    pipeline never reads (data, binaries, oversized files) are not decompressed: their damage would not matter.
    Raises UnsafeArchive (a member name leaving the folder, entries sharing data, a directory over its cap) and
    zipfile.BadZipFile (not a readable zip)."""
    scan = ArchiveScan()
    with SafeZip(path, DEFAULT_LIMITS) as archive:
        unsafe = [info.filename for info in archive.members if safe_member_path(info.filename) is None]
        if unsafe:
            raise UnsafeArchive(f"unsafe member name (leaves the archive's folder or holds control characters): "
                                f"{unsafe[0][:200]!r}")
        for info in archive.members:
            if info.is_dir() or not info.filename.endswith(".py"):
                continue
            try:
                data = archive.read(info)
            except MemberRefused as exc:
                if exc.reason == "archive_cap":
                    break  # the generator stops reading here too
                continue
            except UnsafeArchive:
                raise
            except zipfile.BadZipFile:
                scan.damaged.append(info.filename)
                continue
            count_file(scan.counts, data)
    return scan


def manifest_entry(info: RepoInfo, sha: Optional[str], archive: Path, digest: str, size: int,
                   counts: dict, discovery: list, origin: str = "github") -> dict:
    """One manifest line (the shared contract's keys, plus archive_bytes, the file counts of `scan_archive` and
    the discoveries that found the repository)."""
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
        **counts,
        "discovery": list(discovery),
        "fetched_at": utc_now(),
        "origin": origin,
        "html_url": info.html_url,
    }
