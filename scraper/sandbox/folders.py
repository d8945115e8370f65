"""Host folders a sandbox writes into: private to the sandbox user before, made safe to read after.

A sandbox can leave anything in a folder bound read-write: a symlink to /etc/shadow or ~/.ssh/id_rsa (which the
next stage, running outside, would follow), a fifo that blocks a reader, a set-uid file, 1,200 nested folders,
a gigabyte of debug files. `take_out` runs once every process of the sandbox is gone and leaves only plain files
(0644) and folders (0755), owned by this process's user; with `bounds`, it also says when the folder holds more
(bytes, entries) or goes deeper than they allow, and then nothing of it may be kept. Every walk here is
iterative and never follows a link (scraper.fileio.walk_tree).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from scraper.fileio import remove_tree, walk_tree
from scraper.sandbox.wall import OUTSIDE_ID

MIB = 1024 * 1024


@dataclass(frozen=True)
class Bounds:
    """The most a folder a sandbox wrote may hold: bytes of its files, entries, and depth below it."""

    bytes: int
    entries: int = 50_000
    depth: int = 32

    def describe(self) -> str:
        return f"{self.bytes // MIB} MiB, {self.entries} entries, {self.depth} levels"


@contextlib.contextmanager
def private_folder(parent: Path) -> Iterator[Path]:
    """A new folder under `parent` (0700) that the sandbox user can write (the launcher maps it to OUTSIDE_ID
    when running as root; otherwise it is this user), removed with everything in it afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".sandbox-", dir=parent))
    try:
        if os.geteuid() == 0:
            os.chown(folder, OUTSIDE_ID, OUTSIDE_ID)
        yield folder
    finally:
        remove_tree(folder, ignore_errors=True)


def take_out(folder: Path, bounds: Optional[Bounds] = None) -> Optional[str]:
    """Remove everything but regular files and folders under `folder` (not following links); files 0644,
    folders 0755, all owned by this process's user. None, or why the folder is over `bounds` (the walk stops
    there: the caller removes the folder whole)."""
    uid, gid, as_root = os.getuid(), os.getgid(), os.geteuid() == 0
    size = entries = 0
    for entry in walk_tree(folder):
        entries += 1
        over = _over(bounds, entry.depth, entries, size + entry.stat.st_size * stat.S_ISREG(entry.stat.st_mode))
        if over:
            return over
        mode = entry.stat.st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            os.unlink(entry.name, dir_fd=entry.folder_fd)
            continue
        size += entry.stat.st_size if stat.S_ISREG(mode) else 0
        if as_root:
            os.chown(entry.name, uid, gid, dir_fd=entry.folder_fd, follow_symlinks=False)
        os.chmod(entry.name, 0o755 if stat.S_ISDIR(mode) else 0o644, dir_fd=entry.folder_fd)
    return None


def measure(folder: Path, bounds: Bounds) -> Optional[str]:
    """Why `folder` is over `bounds` (None: it is within them, or could not be measured now: a sandbox writing
    it may move things about). Reads only, and stops at the bound, so a huge folder costs little."""
    size = entries = 0
    try:
        for entry in walk_tree(folder):
            entries += 1
            size += entry.stat.st_size if stat.S_ISREG(entry.stat.st_mode) else 0
            over = _over(bounds, entry.depth, entries, size)
            if over:
                return over
    except OSError:
        return None
    return None


def _over(bounds: Optional[Bounds], depth: int, entries: int, size: int) -> Optional[str]:
    """Why a folder that reached `depth`, `entries` and `size` bytes so far is over `bounds` (None: it is not)."""
    if bounds is None:
        return None
    if depth > bounds.depth:
        return f"it goes deeper than {bounds.depth} levels"
    if entries > bounds.entries:
        return f"it holds more than {bounds.entries} entries"
    if size > bounds.bytes:
        return f"it holds more than {bounds.bytes // MIB} MiB"
    return None
