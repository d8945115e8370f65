"""`--local PATH[=owner/name]`: ingest git clones, plain folders and zip archives as if downloaded.

A folder becomes a zip in GitHub's zipball layout (one top folder `<owner>-<name>-<sha7>/`). Git is never run: a
scraped clone's `.git/config` would run its commands (`core.fsmonitor`, hooks, ...) as the user. For a git clone
(a `.git` folder whose HEAD names a commit) the files its index lists (`.git/index` read as a file by
`scraper.github.gitindex`: what `git ls-files` would list, the committed files plus any staged since), the commit
and branch from `.git`'s HEAD and refs; when the index cannot be read (missing, damaged, split, too large), and
for any other folder, every regular file except `.git`, `__pycache__/` and other caches (so also files a
`.gitignore` names). Left out: symbolic links and paths through one (they could point outside the tree), paths the
index lists that climb out with `..`, name `.git` or hold control characters (`scraper.zipsafe.safe_member_path`).
Members get a fixed timestamp so the same tree gives the same bytes and sha256, which keeps reruns idempotent.
A zip is copied when it already has one top folder and safe member names, and re-packed under one otherwise.
The name is `local/<folder or zip stem>` unless `=owner/name` is given; the license is guessed from a
LICENSE-like file by the generator's `license_from_text`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Iterator, Optional

from scraper.repos import LICENSE_NAMES, git_head, is_full_name, license_from_text, read_regular
from scraper.zipsafe import MemberRefused, SafeZip, safe_member_path
from scraper.github.download import RepoInfo, manifest_entry, scan_archive
from scraper.github.gitindex import head_branch, index_paths
from scraper.github.manifest import (
    PART_SUFFIX, append_entry, archive_name, is_finished, read_manifest, sha256_file, top_folder,
)

log = logging.getLogger(__name__)

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_LICENSE_BYTES = 1 << 20
NO_CAP = 1 << 62


class LocalError(Exception):
    """A --local path that cannot be ingested (missing, not a zip, unsafe member names ...)."""


def parse_local_arg(arg: str) -> tuple[Path, Optional[str]]:
    """`PATH` or `PATH=owner/name` -> (path, full_name or None)."""
    path, sep, name = arg.rpartition("=")
    if sep and is_full_name(name) and path:
        return Path(path), name
    return Path(arg), None


_JUNK_DIRS = {".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints", ".venv", "venv"}


def _walk_files(folder: Path) -> list[str]:
    """Every file under `folder` (links to folders not followed), caches, `.git` and compiled Python aside."""
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in _JUNK_DIRS and not d.endswith(".egg-info")]
        rel = Path(root).relative_to(folder)
        names += [(rel / f).as_posix() for f in files if not f.endswith((".pyc", ".pyo"))]
    return names


def tree_files(folder: Path, sha: Optional[str]) -> Iterator[str]:
    """Relative POSIX paths of the regular files to pack, sorted: for a clone (`sha`: its commit) the paths its
    index lists; else, or when the index is not read, every file but caches and `.git`. Either way only the paths
    `_packable` accepts."""
    names = index_paths(folder, len(sha) // 2) if sha else None
    if names is None:
        names = _walk_files(folder)
    root = os.path.realpath(folder)
    for name in sorted(set(names)):
        if _packable(folder, root, name):
            yield name


def _packable(folder: Path, root: str, name: str) -> bool:
    """True for a safe relative path (no `..`, no control characters, no `.git` part) of a regular file reached
    without going through a symbolic link (an index can list `linked_folder/file`)."""
    if safe_member_path(name) != name or ".git" in name.lower().split("/"):
        return False
    path = folder / name
    return os.path.realpath(path) == os.path.join(root, name) and path.is_file() and not path.is_symlink()


def pack_folder(folder: Path, top: str, target: Path, max_bytes: Optional[int], sha: Optional[str]) -> None:
    """Zip `folder`'s files (`tree_files`) under `top/` into `target` (deterministic bytes)."""
    total = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(f"{top}/", FIXED_TIME), b"")
        for name in tree_files(folder, sha):
            left = NO_CAP if max_bytes is None else max_bytes - total
            data = read_regular(folder / name, max(left, 0))
            if data is None:  # replaced by a link or a FIFO since it was listed
                continue
            total += len(data)
            if max_bytes is not None and total > max_bytes:
                raise LocalError(f"{folder}: more than {max_bytes / 2**20:.0f} MiB of files (--max-size-mb)")
            info = zipfile.ZipInfo(f"{top}/{name}", FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def copy_zip(source: Path, top: str, target: Path, max_bytes: Optional[int]) -> None:
    """Copy a zip that is already in zipball layout; re-pack one that is not (each member read through the capped
    reader of scraper.zipsafe). Refuses unsafe member names and archives zipsafe refuses."""
    try:
        with SafeZip(source) as archive:
            infos = archive.members
            unsafe = [i.filename for i in infos if safe_member_path(i.filename) is None or _is_symlink(i)]
            if unsafe:
                raise LocalError(f"{source}: unsafe member name {unsafe[0]!r}")  # repr: escaped
            total = sum(i.file_size for i in infos)
            if max_bytes is not None and total > max_bytes:
                raise LocalError(f"{source}: {total / 2**20:.0f} MiB uncompressed, over --max-size-mb")
            tops = {i.filename.replace("\\", "/").split("/", 1)[0] for i in infos}
            nested = all("/" in i.filename.replace("\\", "/") for i in infos)
            if len(tops) == 1 and nested:
                shutil.copyfile(source, target)
                return
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
                for info in infos:
                    if not info.is_dir():
                        member = zipfile.ZipInfo(f"{top}/{info.filename}", FIXED_TIME)
                        member.compress_type = zipfile.ZIP_DEFLATED
                        out.writestr(member, archive.read(info))
    except MemberRefused as exc:
        raise LocalError(f"{source}: a member was not read ({exc.reason}: {exc})") from None
    except zipfile.BadZipFile as exc:  # UnsafeArchive too
        raise LocalError(f"{source}: not a zip archive or refused ({exc})") from None


def license_of_folder(folder: Path) -> Optional[str]:
    """SPDX id guessed from the folder's LICENSE-like file (the generator's guesser: one place for that fact)."""
    for name in LICENSE_NAMES:
        data = read_regular(folder / name, MAX_LICENSE_BYTES)
        if data is not None:
            return license_from_text(data[:MAX_LICENSE_BYTES].decode("utf-8", errors="replace"))
    return None


def ingest(arg: str, download_dir: Path, max_bytes: Optional[int], mask=None) -> tuple[str, dict]:
    """Ingest one `--local` argument; returns (status, manifest entry) where status is "ingested" or
    "unchanged" (same archive bytes as the manifest already lists). Raises LocalError for bad input. `mask`:
    applied to the manifest line's strings (see `append_entry`)."""
    path, full_name = parse_local_arg(arg)
    if not path.exists():
        raise LocalError(f"{path}: no such file or folder")
    stem = path.resolve().name.removesuffix(".zip") if path.is_file() else path.resolve().name
    full_name = full_name or f"local/{re.sub(r'[^A-Za-z0-9._-]', '_', stem)}"
    sha = git_head(path) if path.is_dir() else None
    target = Path(download_dir) / archive_name(full_name)
    part = target.with_name(f".{target.name}{PART_SUFFIX}")
    try:
        if path.is_dir():
            pack_folder(path, top_folder(full_name, sha), part, max_bytes, sha)
        else:
            copy_zip(path, top_folder(full_name, sha), part, max_bytes)
        return _finish(path, full_name, sha, part, target, download_dir, mask)
    finally:
        part.unlink(missing_ok=True)


def _finish(path: Path, full_name: str, sha: Optional[str], part: Path, target: Path,
            download_dir: Path, mask=None) -> tuple[str, dict]:
    digest = sha256_file(part)
    previous = read_manifest(download_dir).get(full_name.lower())
    if previous and previous.get("sha256") == digest and is_finished(download_dir, previous):
        return "unchanged", previous
    os.replace(part, target)
    info = RepoInfo(full_name=full_name, default_branch=head_branch(path) if sha else None, stars=None,
                    license=license_of_folder(path) if path.is_dir() else None,
                    size_kb=(target.stat().st_size + 1023) // 1024, html_url=None)
    # no search found it: `discovery` is [] (a line without the key would read as Triton's)
    entry = manifest_entry(info, sha, target, digest, target.stat().st_size, scan_archive(target).counts, [],
                           origin="local")
    append_entry(download_dir, entry, mask=mask)
    return "ingested", entry
