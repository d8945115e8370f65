"""`--local PATH[=owner/name]`: ingest git clones, plain folders and zip archives as if downloaded.

A folder becomes a zip in GitHub's zipball layout (one top folder `<owner>-<name>-<sha7>/`): for a git clone the
committed files (`git ls-files`, what a zipball of HEAD holds) and the commit from `git rev-parse HEAD`; for a
folder inside another git work tree its files that git does not ignore; for a plain folder every regular file
except `.git/`, `__pycache__/` and other caches. Symbolic links are left out (they could point outside the tree).
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
import subprocess
import zipfile
from pathlib import Path
from typing import Iterator, Optional

from scraper.repos import LICENSE_NAMES, git_head, is_full_name, license_from_text
from scraper.zipsafe import MemberRefused, SafeZip, safe_member_path
from scraper.github.download import RepoInfo, count_triton_files, manifest_entry
from scraper.github.manifest import (
    PART_SUFFIX, append_entry, archive_name, is_finished, read_manifest, sha256_file, top_folder,
)

log = logging.getLogger(__name__)

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
class LocalError(Exception):
    """A --local path that cannot be ingested (missing, not a zip, unsafe member names ...)."""


def parse_local_arg(arg: str) -> tuple[Path, Optional[str]]:
    """`PATH` or `PATH=owner/name` -> (path, full_name or None)."""
    path, sep, name = arg.rpartition("=")
    if sep and is_full_name(name) and path:
        return Path(path), name
    return Path(arg), None




def git_branch(folder: Path) -> Optional[str]:
    """The checked-out branch of a clone (None when detached or unknown)."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "symbolic-ref", "--short", "-q", "HEAD"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


_JUNK_DIRS = {".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints", ".venv", "venv"}


def _git_files(folder: Path, committed_only: bool) -> Optional[list[str]]:
    """Files git knows under `folder` (committed ones for a clone; else also untracked, not ignored), or None
    when `folder` is not inside a git work tree."""
    command = ["git", "-C", str(folder), "ls-files", "-z", "--cached"]
    if not committed_only:
        command += ["--others", "--exclude-standard"]
    try:
        out = subprocess.run(command, capture_output=True, timeout=300, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return [n for n in out.stdout.decode("utf-8", "surrogateescape").split("\0") if n]


def _walk_files(folder: Path) -> list[str]:
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in _JUNK_DIRS and not d.endswith(".egg-info")]
        rel = Path(root).relative_to(folder)
        names += [(rel / f).as_posix() for f in files if not f.endswith((".pyc", ".pyo"))]
    return names


def tree_files(folder: Path, is_clone: bool) -> Iterator[str]:
    """Relative POSIX paths of the regular files to pack, sorted: a clone's committed files; for a folder inside
    a git work tree its tracked and untracked-but-not-ignored files; else every file but caches and `.git/`."""
    names = _git_files(folder, committed_only=is_clone)
    if names is None:
        names = _walk_files(folder)
    for name in sorted(set(names)):
        path = folder / name
        if path.is_file() and not path.is_symlink():
            yield name


def pack_folder(folder: Path, top: str, target: Path, max_bytes: Optional[int], is_clone: bool) -> None:
    """Zip `folder`'s files under `top/` into `target` (deterministic bytes)."""
    total = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(f"{top}/", FIXED_TIME), b"")
        for name in tree_files(folder, is_clone):
            data = (folder / name).read_bytes()
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
                raise LocalError(f"{source}: unsafe member name {unsafe[0]!r}")
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
        path = folder / name
        if path.is_file():
            return license_from_text(path.read_text("utf-8", errors="replace"))
    return None


def ingest(arg: str, download_dir: Path, max_bytes: Optional[int]) -> tuple[str, dict]:
    """Ingest one `--local` argument; returns (status, manifest entry) where status is "ingested" or
    "unchanged" (same archive bytes as the manifest already lists). Raises LocalError for bad input."""
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
            pack_folder(path, top_folder(full_name, sha), part, max_bytes, is_clone=sha is not None)
        else:
            copy_zip(path, top_folder(full_name, sha), part, max_bytes)
        return _finish(path, full_name, sha, part, target, download_dir)
    finally:
        part.unlink(missing_ok=True)


def _finish(path: Path, full_name: str, sha: Optional[str], part: Path, target: Path,
            download_dir: Path) -> tuple[str, dict]:
    digest = sha256_file(part)
    previous = read_manifest(download_dir).get(full_name.lower())
    if previous and previous.get("sha256") == digest and is_finished(download_dir, previous):
        return "unchanged", previous
    os.replace(part, target)
    info = RepoInfo(full_name=full_name, default_branch=git_branch(path) if sha else None, stars=None,
                    license=license_of_folder(path) if path.is_dir() else None,
                    size_kb=(target.stat().st_size + 1023) // 1024, html_url=None)
    entry = manifest_entry(info, sha, target, digest, target.stat().st_size, count_triton_files(target),
                           origin="local")
    append_entry(download_dir, entry)
    return "ingested", entry
