"""Read the Python files of a repository from a zip archive or a directory, safely.

Scraped archives are untrusted. Zips are read through `scraper.zipsafe` (the pipeline's one reader of zip
archives): entries with absolute paths or `..` components are refused, every member is decompressed with a
hard byte cap whatever its compression method (the zip header's size is not trusted: reads stop at the cap),
every byte decompressed counts against the archive's budget, and an archive whose central directory is too
large or whose entries share data is refused whole. Bytes that are not UTF-8 are decoded by their PEP 263
cookie or, failing that, with replacement characters. Nothing is extracted to disk and nothing is executed.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import tokenize
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from scraper.fileio import walk_tree
from scraper.repos import LICENSE_NAMES, SKIP_DIRS
from scraper.zipsafe import DEFAULT_LIMITS, Limits, MemberRefused, SafeZip, UnsafeArchive, printable, safe_member_path

log = logging.getLogger(__name__)

MAX_FILE_BYTES = DEFAULT_LIMITS.member_bytes  # a .py above this is generated data, not a kernel file
MAX_ARCHIVE_BYTES = DEFAULT_LIMITS.total_bytes  # bytes read from one repository
MAX_FILES = DEFAULT_LIMITS.members
LICENSE_BYTES = 64 * 1024  # the head of a LICENSE file is enough to name the license
# GitHub zipball top folder: <owner>-<name>-<sha7>
_ZIPBALL_TOP = re.compile(r"^(?P<slug>.+)-(?P<sha>[0-9a-f]{7,40})$")


class ArchiveError(Exception):
    """The archive as a whole cannot be read (corrupt zip, missing path, refused as unsafe)."""


@dataclass
class SourceFile:
    """One Python file of a repository: its path inside the repository and its decoded text."""

    path: str
    text: str
    decode_error: Optional[str] = None  # set when the bytes were not valid in their declared encoding


@dataclass
class FileProblem:
    """A file that was refused or could not be read, with the phase and reason for the stats."""

    path: str
    reason: str  # unsafe_path | too_large | archive_cap | unsupported | read_error | not_a_file
    message: str


@dataclass
class RepoSource:
    """A repository as the generator sees it: its name, what the archive tells about it, and its files."""

    location: str
    name: str  # archive file name (or directory name)
    top: Optional[str] = None  # zipball top folder, when there is one
    commit_hint: Optional[str] = None  # sha7 from the zipball top folder
    files: list = field(default_factory=list)  # SourceFile
    problems: list = field(default_factory=list)  # FileProblem
    other_files: int = 0  # entries that are not .py
    license_text: Optional[str] = None  # the repository's root LICENSE file, when it has one


def decode_source(data: bytes) -> tuple[str, Optional[str]]:
    """Decode Python source bytes: BOM / PEP 263 cookie / UTF-8; else UTF-8 with replacement (and a message)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:  # unknown codec in the cookie
        encoding, cookie_error = "utf-8", str(exc)
    else:
        cookie_error = None
    try:
        text = data.decode(encoding)
        if text.startswith("\ufeff"):
            text = text[1:]
        return text, cookie_error
    except (UnicodeDecodeError, LookupError) as exc:
        return data.decode("utf-8", errors="replace"), f"not valid {encoding}: {exc}"


def zipball_top(names: list[str]) -> Optional[str]:
    """The single top folder all entries share (GitHub's zipball layout), else None."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and any("/" in n for n in names):
        return tops.pop()
    return None


def read_zip(path: Path, max_file_bytes: int = MAX_FILE_BYTES, max_total: int = MAX_ARCHIVE_BYTES) -> RepoSource:
    """Every .py of a zip archive (zipball top folder stripped), with refused entries listed as problems.
    `max_total` caps the bytes decompressed from the archive, read or refused."""
    limits = Limits(member_bytes=max_file_bytes, total_bytes=max_total, members=MAX_FILES)
    try:
        with SafeZip(path, limits) as archive:
            return _read_members(archive, path)
    except UnsafeArchive as exc:
        raise ArchiveError(f"refused: {exc}") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"cannot open zip: {exc}") from exc


def _read_members(archive: SafeZip, path: Path) -> RepoSource:
    """The RepoSource of an opened archive: its .py files, its LICENSE, and what was refused."""
    infos = archive.members
    top = zipball_top([n for n in (safe_member_path(i.filename) for i in infos) if n])
    source = RepoSource(location=str(path), name=path.name, top=top, commit_hint=_commit_from_top(top))
    for info in infos:
        if info.is_dir():
            continue
        relative = safe_member_path(info.filename)
        if relative is None:
            source.problems.append(FileProblem(info.filename, "unsafe_path", "absolute or `..` path refused"))
            continue
        if top and relative.startswith(top + "/"):
            relative = relative[len(top) + 1:]
        if relative.endswith(".py") and not _skipped_dir(relative):
            _read_zip_member(archive, info, relative, source)
            continue
        source.other_files += 1
        if relative in LICENSE_NAMES:
            source.license_text = _zip_license(archive, info)
    if archive.left_out:
        source.problems.append(FileProblem(path.name, "archive_cap", f"only the first {MAX_FILES} entries read"))
    return source


def _read_zip_member(archive: SafeZip, info, relative: str, source: RepoSource) -> None:
    """Read one member into `source`, or list why it was not read (a damaged member is a read_error)."""
    try:
        data = archive.read(info)
    except MemberRefused as exc:
        source.problems.append(FileProblem(relative, exc.reason, str(exc)))
        return
    except UnsafeArchive:
        raise
    except zipfile.BadZipFile as exc:
        source.problems.append(FileProblem(relative, "read_error", f"{type(exc).__name__}: {exc}"))
        return
    text, error = decode_source(data)
    source.files.append(SourceFile(relative, text, error))


def _zip_license(archive: SafeZip, info) -> Optional[str]:
    try:
        return archive.read_prefix(info, LICENSE_BYTES).decode("utf-8", errors="replace")
    except UnsafeArchive:
        raise
    except (zipfile.BadZipFile, MemberRefused):
        return None


def _skipped_dir(relative: str) -> bool:
    return any(part in SKIP_DIRS for part in relative.split("/")[:-1])


def _commit_from_top(top: Optional[str]) -> Optional[str]:
    match = _ZIPBALL_TOP.match(top or "")
    return match.group("sha") if match else None


def read_directory(root: Path, max_file_bytes: int = MAX_FILE_BYTES, max_total: int = MAX_ARCHIVE_BYTES) -> RepoSource:
    """Every .py under `root` (a local clone), at any depth (an iterative walk that never follows a folder
    link: scraper.fileio.walk_tree); a link to a file is followed only when it stays in the tree, and a dangling
    link, a loop or a file that cannot be opened is that file's problem, never the repository's."""
    if not root.is_dir():
        raise ArchiveError(f"not a directory: {root}")
    real_root = os.path.realpath(root)
    source = RepoSource(location=str(root), name=root.name)
    total = 0
    try:
        for entry in walk_tree(root, enter=lambda folder: folder.name not in SKIP_DIRS):
            if stat.S_ISDIR(entry.stat.st_mode):
                continue
            if not entry.name.endswith(".py"):
                source.other_files += 1
                if entry.path in LICENSE_NAMES and stat.S_ISREG(entry.stat.st_mode):
                    source.license_text = _entry_head(entry, LICENSE_BYTES)
                continue
            total += _read_dir_file(root, entry, real_root, source, max_file_bytes, max_total - total)
    except OSError as exc:  # a folder moved while it was read: what was read so far, and why not the rest
        source.problems.append(FileProblem(root.name, "read_error", f"{type(exc).__name__}: {exc}"))
    return source


def _read_capped(handle, cap: int) -> Optional[bytes]:
    data = handle.read(cap + 1)
    return None if len(data) > cap else data


def _read_dir_file(root: Path, entry, real_root: str, source, max_file_bytes, budget) -> int:
    """Read one .py entry of a directory into `source` (its bytes), or list why it was not read (0)."""
    relative = entry.path
    if printable(relative) != relative:  # as for a zip member: the name is printed, and becomes a file name
        source.problems.append(FileProblem(relative, "unsafe_path", "control characters in the file name"))
        return 0
    if budget <= 0:
        source.problems.append(FileProblem(relative, "archive_cap", "repository size cap reached"))
        return 0
    try:
        if stat.S_ISLNK(entry.stat.st_mode):
            return _read_linked_file(root, entry, real_root, source, max_file_bytes, budget)
        if not stat.S_ISREG(entry.stat.st_mode):
            source.problems.append(FileProblem(relative, "not_a_file", "not a regular file"))
            return 0
        fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=entry.folder_fd)
        with os.fdopen(fd, "rb") as handle:
            data = _read_capped(handle, min(max_file_bytes, budget))
    except OSError as exc:
        source.problems.append(FileProblem(relative, "read_error", f"{type(exc).__name__}: {exc}"))
        return 0
    return _add_file(source, relative, data, max_file_bytes)


def _read_linked_file(root: Path, entry, real_root: str, source, max_file_bytes, budget) -> int:
    """A .py that is a link: read only when it leads to a regular file inside the repository (a dangling link
    or a loop raises OSError: the caller lists it)."""
    resolved = os.path.realpath(os.path.join(root, entry.path))
    if not resolved.startswith(real_root.rstrip("/") + "/"):
        source.problems.append(FileProblem(entry.path, "unsafe_path", "symlink leaves the repository"))
        return 0
    if not stat.S_ISREG(os.stat(resolved).st_mode):
        source.problems.append(FileProblem(entry.path, "not_a_file", "not a regular file"))
        return 0
    with open(resolved, "rb") as handle:
        return _add_file(source, entry.path, _read_capped(handle, min(max_file_bytes, budget)), max_file_bytes)


def _entry_head(entry, size: int) -> Optional[str]:
    """The first `size` bytes of a regular file of a walk, as text (None when it cannot be read)."""
    try:
        fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=entry.folder_fd)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(size).decode("utf-8", errors="replace")
    except OSError:
        return None


def _add_file(source, relative: str, data: Optional[bytes], max_file_bytes: int) -> int:
    """Decode one file read under the cap into `source`; returns its bytes (0 when it was over the cap: None)."""
    if data is None:
        source.problems.append(FileProblem(relative, "too_large", f"over {max_file_bytes} bytes"))
        return 0
    text, error = decode_source(data)
    source.files.append(SourceFile(relative, text, error))
    return len(data)


def read_repository(location: str | os.PathLike, **caps) -> RepoSource:
    """A repository from a zip archive or a directory (raises ArchiveError when it cannot be read at all)."""
    path = Path(location)
    if path.is_dir():
        return read_directory(path, **caps)
    if not path.exists():
        raise ArchiveError(f"no such file or directory: {path}")
    return read_zip(path, **caps)
