"""What the GitHub stage and the generator share about downloaded repositories: the download folder's manifest,
archive name <-> repository name, commit SHA patterns, the commit of a clone, license detection, and which files
are worth reading. One home for each of these facts; both stages (and the modules suite) import it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Optional

from scraper.fileio import Done

DOWNLOAD_MANIFEST = "manifest.jsonl"  # the GitHub stage's record of each downloaded archive
# GitHub's rules: an owner is 1-39 letters, digits or single hyphens; a repository name letters, digits, `._-`.
FULL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a whole commit id (SHA-1 or SHA-256 repositories)
SHA_PREFIX = re.compile(r"[0-9a-f]{7,64}")  # a whole or abbreviated one (zipball top folders: 7)
MAX_SCAN_BYTES = 2 << 20  # a .py file larger than this is generated data, not kernel source: not read
SKIP_DIRS = frozenset({".git", "__pycache__", ".tox", ".venv", "venv", "node_modules", ".eggs", ".mypy_cache",
                       ".pytest_cache", ".ipynb_checkpoints"})


def is_full_name(text: object) -> bool:
    """True for `owner/name` made of the characters GitHub allows (so it is safe as a file name part), and not
    `.`/`..` as the name."""
    return isinstance(text, str) and bool(FULL_NAME.match(text)) and text.split("/", 1)[1] not in (".", "..")


def archive_name(full_name: str) -> str:
    """`owner/name` -> `owner__name.zip`. GitHub owners cannot contain `_`, so the first `__` splits back."""
    owner, name = full_name.split("/", 1)
    return f"{owner}__{name}.zip"


def repo_of_archive(file_name: str) -> str:
    """Inverse of `archive_name`: `owner__name.zip` (or a folder `owner__name`) -> `owner/name`; a name without
    `__` is returned as its stem (a local folder or zip of unknown origin)."""
    stem = file_name.removesuffix(".zip")
    owner, sep, rest = stem.partition("__")
    return f"{owner}/{rest}" if sep and owner and rest else stem


def top_folder(full_name: str, commit_sha: Optional[str]) -> str:
    """The single top folder of a GitHub zipball: `<owner>-<name>-<sha7>`; `<owner>-<name>-nocommit` when the commit
    is unknown (not hex, so nothing reads it as a commit)."""
    owner, name = full_name.split("/", 1)
    return f"{owner}-{name}-{commit_sha[:7] if commit_sha else 'nocommit'}"


def latest_by_full_name(path: str | Path) -> dict[str, dict]:
    """{full_name.lower(): its latest line} of a JSONL file keyed by full_name; {} when it does not exist."""
    return Done(path, key=lambda entry: entry["full_name"].lower() if isinstance(entry.get("full_name"), str)
                else None).entries


def read_download_manifest(download_dir: str | Path) -> dict[str, dict]:
    """The download folder's manifest as {full_name.lower(): its latest line}; {} when there is none."""
    return latest_by_full_name(Path(download_dir) / DOWNLOAD_MANIFEST)


def by_archive(manifest: dict[str, dict]) -> dict[str, dict]:
    """The entries of `read_download_manifest` keyed by their archive's file name."""
    return {entry["archive"]: entry for entry in manifest.values() if isinstance(entry.get("archive"), str)}


def list_archives(download_dir: str | Path) -> list[Path]:
    """Zip archives and directories (local clones) in a download folder, sorted by name; hidden ones left out."""
    found = []
    for entry in sorted(Path(download_dir).iterdir()):
        if entry.name.startswith("."):
            continue
        if (entry.is_file() and entry.suffix == ".zip") or entry.is_dir():
            found.append(entry)
    return found


MAX_REF_FILE = 4096  # HEAD or a loose ref: one line
MAX_PACKED_REFS = 64 << 20  # packed-refs of a repository with a few hundred thousand tags


def read_regular(path: str | Path, limit: int) -> Optional[bytes]:
    """At most `limit` + 1 bytes of a regular file (the caller tells "too large" by the length); None when `path`
    is missing, a symbolic link, a FIFO, a device or a folder. A scraped tree's files are read this way: a FIFO
    would block forever, `/dev/zero` never ends, a link could point anywhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read(limit + 1)


def _read_text(path: Path, limit: int) -> str:
    """A small regular file's text ("" when it is not one or is over `limit`)."""
    data = read_regular(path, limit)
    return data.decode("utf-8", errors="replace") if data is not None and len(data) <= limit else ""


def git_head(folder: str | Path) -> Optional[str]:
    """The commit checked out in a git clone, read from its files (HEAD, the loose ref, else packed-refs, each a
    regular file within a cap), never by running git: a scraped clone's config could make git run commands. None
    when it is not a clone or the commit cannot be told."""
    git = Path(folder) / ".git"
    head = _read_text(git / "HEAD", MAX_REF_FILE).strip()
    if head.startswith("ref: "):
        head = _resolve_ref(git, head[5:].strip())
    return head if head and COMMIT_SHA.fullmatch(head) else None


def _resolve_ref(git: Path, ref: str) -> str:
    """The SHA a ref names: its loose file, else its line in packed-refs; "" when neither has it."""
    if ".." in ref or ref.startswith("/") or "\0" in ref:
        return ""
    loose = _read_text(git / ref, MAX_REF_FILE).strip()
    if loose:
        return loose
    for line in _read_text(git / "packed-refs", MAX_PACKED_REFS).splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref:
            return sha.strip()
    return ""


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
