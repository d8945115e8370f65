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
import tokenize
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from scraper.zipsafe import DEFAULT_LIMITS, Limits, MemberRefused, SafeZip, UnsafeArchive, safe_member_path

log = logging.getLogger(__name__)

MAX_FILE_BYTES = DEFAULT_LIMITS.member_bytes  # a .py above this is generated data, not a kernel file
MAX_ARCHIVE_BYTES = DEFAULT_LIMITS.total_bytes  # bytes read from one repository
MAX_FILES = DEFAULT_LIMITS.members
LICENSE_BYTES = 64 * 1024  # the head of a LICENSE file is enough to name the license
SKIP_DIRS = {".git", "__pycache__", ".tox", ".venv", "venv", "node_modules", ".eggs"}
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
    """Every .py under `root` (a local clone); symlinks leaving the tree are refused."""
    if not root.is_dir():
        raise ArchiveError(f"not a directory: {root}")
    real_root = root.resolve()
    source = RepoSource(location=str(root), name=root.name)
    total = 0
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS)
        for name in sorted(names):
            full = Path(directory, name)
            relative = full.relative_to(root).as_posix()
            if not name.endswith(".py"):
                source.other_files += 1
                if relative in LICENSE_NAMES and full.is_file():
                    source.license_text = _file_license(full)
                continue
            total += _read_dir_file(full, relative, real_root, source, max_file_bytes, max_total - total)
    return source


def _read_capped(handle, cap: int) -> Optional[bytes]:
    data = handle.read(cap + 1)
    return None if len(data) > cap else data


def _read_dir_file(full: Path, relative, real_root, source, max_file_bytes, budget) -> int:
    try:
        resolved = full.resolve()
        if real_root not in resolved.parents:
            source.problems.append(FileProblem(relative, "unsafe_path", "symlink leaves the repository"))
            return 0
        if not resolved.is_file():
            source.problems.append(FileProblem(relative, "not_a_file", "not a regular file"))
            return 0
        if budget <= 0:
            source.problems.append(FileProblem(relative, "archive_cap", "repository size cap reached"))
            return 0
        with open(resolved, "rb") as handle:
            data = _read_capped(handle, min(max_file_bytes, budget))
    except OSError as exc:
        source.problems.append(FileProblem(relative, "read_error", f"{type(exc).__name__}: {exc}"))
        return 0
    return _add_file(source, relative, data, max_file_bytes)


def _add_file(source, relative: str, data: Optional[bytes], max_file_bytes: int) -> int:
    """Decode one file read under the cap into `source`; returns its bytes (0 when it was over the cap: None)."""
    if data is None:
        source.problems.append(FileProblem(relative, "too_large", f"over {max_file_bytes} bytes"))
        return 0
    text, error = decode_source(data)
    source.files.append(SourceFile(relative, text, error))
    return len(data)


def _file_license(path: Path) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return handle.read(LICENSE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None


def read_repository(location: str | os.PathLike, **caps) -> RepoSource:
    """A repository from a zip archive or a directory (raises ArchiveError when it cannot be read at all)."""
    path = Path(location)
    if path.is_dir():
        return read_directory(path, **caps)
    if not path.exists():
        raise ArchiveError(f"no such file or directory: {path}")
    return read_zip(path, **caps)


LICENSE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "LICENSE.rst")
# Enough to name the common licenses from their text; anything else stays unknown (None). The family whose
# marker comes first in the text wins (MPL-2.0 names the GNU licenses further down, LGPL-3.0 the GPL).
_LICENSE_MARKERS = [
    ("Apache-2.0", "apache license"), ("MIT", "permission is hereby granted, free of charge"),
    ("BSD", "redistribution and use in source and binary forms"), ("MPL-2.0", "mozilla public license"),
    ("GNU", "gnu general public license"), ("GNU", "gnu lesser general public license"),
    ("GNU", "gnu library general public license"), ("GNU", "gnu affero general public license"),
]
# (GNU license title, version) -> SPDX id, as GitHub's license API names them; "-or-later" is added when the
# text puts the work under "version N or (at your option) any later version".
_GNU_IDS = {
    ("general", "1"): "GPL-1.0", ("general", "2"): "GPL-2.0", ("general", "3"): "GPL-3.0",
    ("library", "2"): "LGPL-2.0", ("lesser", "2.1"): "LGPL-2.1", ("lesser", "3"): "LGPL-3.0",
    ("affero", "3"): "AGPL-3.0",
}
# title, then the first "version N" in the same sentence: "GPL ... Version 2, June 1991" (a license's own
# heading) or "GPL as published by the Free Software Foundation; either version 2 of the License" (a notice)
_GNU_TITLE = re.compile(
    r"gnu (?:(affero|lesser|library) )?general public license([^.]{0,160}?)\bversion (\d+(?:\.\d+)?)")
# one id alone on its line (an expression such as `MIT OR Apache-2.0` is not one license: the text decides)
_SPDX_TAG = re.compile(r"spdx-license-identifier:[ \t]*([a-z0-9.+-]+)[ \t]*(?:\*/|-->)?[ \t]*$", re.I | re.M)


def license_from_text(text: Optional[str]) -> Optional[str]:
    """SPDX id guessed from a LICENSE/COPYING file's text, else None: Apache-2.0, MIT, BSD-3-Clause/BSD-2-Clause,
    MPL-2.0, and the GNU licenses by title and version (GPL-1.0/2.0/3.0, LGPL-2.0/2.1/3.0, AGPL-3.0, with
    `-or-later` when the text says "or (at your option) any later version" outside the license's own
    how-to-apply appendix). An `SPDX-License-Identifier: <id>` line in the first 2 KiB wins."""
    if not text:
        return None
    tag = _SPDX_TAG.search(text[:2048])
    if tag:
        return tag.group(1)
    flat = _flatten(text)
    found = [(flat.find(marker), spdx) for spdx, marker in _LICENSE_MARKERS if marker in flat]
    if not found:
        return None
    family = min(found)[1]
    if family == "BSD":
        return "BSD-3-Clause" if "neither the name" in flat else "BSD-2-Clause"
    return _gnu_license(flat) if family == "GNU" else family


def _flatten(text: str) -> str:
    """Lower case, comment markers (`#`, `//`, ` * `) at line starts dropped, whitespace runs as one space."""
    lines = (line.strip().lstrip("#*/;!-").strip() for line in text.lower().splitlines())
    return " ".join(" ".join(lines).split())


def _gnu_license(flat: str) -> Optional[str]:
    match = _GNU_TITLE.search(flat)
    if not match:
        return None
    version = match.group(3).removesuffix(".0")
    spdx = _GNU_IDS.get((match.group(1) or "general", version))
    # the license texts end with "How to Apply These Terms", whose sample notice says "any later version"
    terms = flat.split("how to apply these terms")[0]
    if spdx and "or (at your option) any later version" in terms:
        spdx += "-or-later"
    return spdx
