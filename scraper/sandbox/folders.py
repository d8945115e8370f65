"""Host folders a sandbox writes into: private to the sandbox user before, made safe to read after.

A sandbox can leave anything in a folder bound read-write: a symlink to /etc/shadow or ~/.ssh/id_rsa (which the
next stage, running outside, would follow), a fifo that blocks a reader, a set-uid file. `take_out` runs once
every process of the sandbox is gone and leaves only plain files (0644) and folders (0755), owned by this
process's user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from scraper.sandbox.wall import OUTSIDE_ID


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
        shutil.rmtree(folder, ignore_errors=True)


def take_out(folder: Path) -> None:
    """Remove everything but regular files and folders under `folder` (not following links); files 0644,
    folders 0755, all owned by this process's user."""
    uid, gid = os.getuid(), os.getgid()
    for root, dirs, files in os.walk(folder):  # does not descend into a symlinked folder
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                os.unlink(path)
                continue
            if os.geteuid() == 0:
                os.lchown(path, uid, gid)
            os.chmod(path, 0o755 if stat.S_ISDIR(mode) else 0o644)
