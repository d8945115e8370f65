"""Files a live sandbox sends out over a pipe, written by the host itself: the way out of a persistent walled worker
(scraper.worker.serve --walled), whose job folder the host must not read while the sandbox still runs (a file it
checked could be swapped for a link to ~/.ssh before it is moved).

The stream is untrusted (the scraped module runs in the process that writes it):

    {"path": "debug/run_1/torchinductor/m/output_code.py", "size": 1234}\\n  then 1234 bytes   (`count` times)

`receive_files` writes each file under a folder of its own making (0700, made here, never seen by the sandbox),
so only plain files and folders exist there, created with O_EXCL; a name with a part outside SAFE_PART, `.` or
`..`, a path deeper than the bound, a header over MAX_HEADER bytes or not JSON, a repeated path, more entries or
bytes than `Bounds` allows, or a stream that ends or stalls before the deadline: StreamError, and the caller
keeps nothing of it.
"""

from __future__ import annotations

import json
import os
import re
import select
import time
from pathlib import Path

from scraper.sandbox.folders import MIB, Bounds

SAFE_PART = re.compile(r"[A-Za-z0-9_.,+=@%-]{1,255}")
MAX_HEADER = 4096  # a header is a path and a size: far less
CHUNK = MIB


class StreamError(ValueError):
    """The stream is not what a worker sends (module docstring)."""


class StreamOverBound(StreamError):
    """More entries, bytes or levels than the bounds allow: `reason` says which, as take_out's bound check would."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamEnded(StreamError):
    """The worker closed the pipe (it died, or exited)."""


class StreamStalled(StreamError):
    """Nothing came before the deadline."""


class Reader:
    """Bytes of a pipe `fd` up to `deadline` (time.monotonic()), starting with what `buffer` already holds."""

    def __init__(self, fd: int, buffer: bytes, deadline: float) -> None:
        self.fd, self.buffer, self.deadline = fd, buffer, deadline

    def fill(self) -> None:
        """Read what is there (waiting up to the deadline); StreamError when it ends or the deadline passes."""
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            raise StreamStalled("the worker stopped sending before the end of its files")
        chunk = os.read(self.fd, CHUNK)
        if not chunk:
            raise StreamEnded("the stream ended before the end of its files")
        self.buffer += chunk

    def line(self, limit: int) -> bytes:
        """The next line without its newline, at most `limit` bytes long."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > limit:
                raise StreamError(f"a header longer than {limit} bytes")
            self.fill()
        line, self.buffer = self.buffer.split(b"\n", 1)
        if len(line) > limit:
            raise StreamError(f"a header longer than {limit} bytes")
        return line

    def chunks(self, size: int):
        """`size` bytes, in pieces of at most CHUNK."""
        while size > 0:
            if not self.buffer:
                self.fill()
            piece, self.buffer = self.buffer[:size], self.buffer[size:]
            size -= len(piece)
            yield piece


def receive_files(reader: Reader, count, folder: Path, bounds: Bounds) -> int:
    """Write the `count` files of the stream under `folder` (which must be empty and the caller's own); returns
    the bytes written. StreamError when anything is off (module docstring): the caller removes `folder`."""
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= bounds.entries:
        if isinstance(count, int) and not isinstance(count, bool) and count > bounds.entries:
            raise StreamOverBound(f"it holds more than {bounds.entries} entries")
        raise StreamError(f"a file count of {count!r} (at most {bounds.entries})")
    total, made = 0, set()
    for number in range(1, count + 1):
        parts, size = header(reader.line(MAX_HEADER), bounds)
        total += size
        if total > bounds.bytes:
            raise StreamOverBound(f"it holds more than {bounds.bytes // MIB} MiB")
        make_parents(folder, parts, made)
        if number + len(made) > bounds.entries:  # files and folders, as take_out counts them
            raise StreamOverBound(f"it holds more than {bounds.entries} entries")
        write_file(folder.joinpath(*parts), reader.chunks(size))
    return total


def header(line: bytes, bounds: Bounds) -> tuple[list[str], int]:
    """The path parts and size one header names."""
    try:
        data = json.loads(line)
        path, size = data["path"], data["size"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise StreamError(f"a header that is not one: {line[:80]!r}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise StreamError(f"a size of {size!r}")
    if not isinstance(path, str):
        raise StreamError(f"a path of {path!r}")
    parts = path.split("/")
    if len(parts) > bounds.depth:
        raise StreamOverBound(f"it goes deeper than {bounds.depth} levels")
    for part in parts:
        if part in (".", "..") or not SAFE_PART.fullmatch(part):
            raise StreamError(f"a path with an unsafe part: {path[:120]!r}")
    return parts, size


def make_parents(folder: Path, parts: list[str], made: set) -> None:
    """The folders above a file, made here (so nothing in the tree is a link), added to `made`."""
    for depth in range(1, len(parts)):
        key = tuple(parts[:depth])
        if key in made:
            continue
        made.add(key)
        try:
            os.mkdir(folder.joinpath(*key), 0o755)
        except FileExistsError:
            raise StreamError(f"a folder that is a file too: {'/'.join(key)[:120]!r}") from None


def write_file(path: Path, pieces) -> None:
    """A new file (never an existing one, never through a link) with the pieces' bytes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except (FileExistsError, IsADirectoryError):
        raise StreamError(f"a path sent twice: {str(path)[-120:]!r}") from None
    with os.fdopen(fd, "wb") as handle:
        for piece in pieces:
            handle.write(piece)
