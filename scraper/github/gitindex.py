"""What `--local` needs to know of a git clone, read from `.git`'s files: never by running git.

Running git in a scraped tree runs whatever its `.git/config` names (`core.fsmonitor` on `git ls-files`,
`core.sshCommand`, hooks, `diff.external`, ...) as the user, outside any sandbox. So the three facts the stage
takes from a clone are read as files: the commit (`scraper.repos.git_head`: HEAD, the loose ref, packed-refs), the
branch (HEAD), and the paths of the index (`.git/index`, the DIRC format of git's Documentation/gitformat-index,
versions 2, 3 and 4), which is what `git ls-files --cached` lists. Every file is read as a regular file within a
cap (`scraper.repos.read_regular`); an index that is too large, damaged (its checksum), of another version, or
split (`core.splitIndex`: most entries live in another file) is not read, and the caller walks the folder.

The index is the scraped tree's own file too: its paths are checked by the caller before any file is read.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Optional

from scraper.repos import MAX_REF_FILE, read_regular

MAX_INDEX_BYTES = 256 << 20  # the index of a checkout of 400 000 files is about 60 MiB
MAX_ENTRIES = 2_000_000
_HEADER = struct.Struct(">4sII")  # "DIRC", version, number of entries
_STAT_BYTES = 40  # ctime and mtime (seconds, nanoseconds), dev, ino, mode, uid, gid, size: ten 32-bit fields
_MODE_AT = 24
_EXTENDED = 0x4000  # flags: a second 16-bit flags field follows (version 3 and later)
_INTENT_TO_ADD = 0x2000  # extended flags: `git add -N`, nothing committed yet
_REGULAR = 0o100000  # the file type bits of modes 100644 and 100755 (not links 120000, submodules 160000, folders)
# git check-ref-format's rules for a branch: no control characters, space or ~^:?*[\, no `..`, `@{`, `//`,
# no part starting with `.` or ending with `.lock`, not starting with `-` or `/`, not ending with `/` or `.`
_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|(?:^|/)\.|\.lock(?:/|$)|^[-/]|[/.]$")
MAX_REF = 255


def is_branch_name(text: object) -> bool:
    """True for a string git would take as a branch name (`git check-ref-format --branch`), at most 255 chars,
    and not `@` or `HEAD`; also used for the default branch a server names."""
    return (isinstance(text, str) and 0 < len(text) <= MAX_REF and text not in ("@", "HEAD")
            and not _REF_BAD.search(text) and text.isprintable())


class BadIndex(ValueError):
    """An index this module does not read (the caller falls back to walking the folder)."""


def head_branch(folder: Path) -> Optional[str]:
    """The branch HEAD names (`ref: refs/heads/<branch>`), when it is a valid branch name; None when detached,
    unknown, or not a clone."""
    data = read_regular(Path(folder) / ".git" / "HEAD", MAX_REF_FILE)
    if data is None or len(data) > MAX_REF_FILE:
        return None
    head = data.decode("utf-8", errors="replace").strip()
    branch = head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else None
    return branch if is_branch_name(branch) else None


def index_paths(folder: Path, oid_size: int) -> Optional[list[str]]:
    """The paths of the regular files in `folder/.git/index`, in index order (a path in conflict comes once per
    stage; intent-to-add entries, links, submodules and sparse folders are left out), or None when the index is
    missing or not read (see the module). `oid_size`: 20 for a SHA-1 repository, 32 for SHA-256."""
    data = read_regular(Path(folder) / ".git" / "index", MAX_INDEX_BYTES)
    if data is None or len(data) > MAX_INDEX_BYTES:
        return None
    try:
        return parse_index(data, oid_size)
    except (BadIndex, struct.error):
        return None


def parse_index(data: bytes, oid_size: int) -> list[str]:
    """The regular files' paths of an index file's bytes; BadIndex (or struct.error) when it is not one."""
    _check_sum(data, oid_size)
    signature, version, count = _HEADER.unpack_from(data, 0)
    if signature != b"DIRC" or version not in (2, 3, 4) or count > MAX_ENTRIES:
        raise BadIndex(f"not an index of version 2-4 with at most {MAX_ENTRIES} entries")
    names, previous, at = [], b"", _HEADER.size
    for _ in range(count):
        name, mode, intent, at = _entry(data, at, oid_size, version, previous)
        previous = name
        if mode & 0o170000 == _REGULAR and not intent:
            names.append(name.decode("utf-8", "surrogateescape"))
    _check_extensions(data, at, oid_size)
    return names


def _check_sum(data: bytes, oid_size: int) -> None:
    """The trailing hash of everything before it (all zeros when git wrote it with `index.skipHash`)."""
    if len(data) < _HEADER.size + oid_size:
        raise BadIndex("too short")
    body, trailer = data[:-oid_size], data[-oid_size:]
    digest = (hashlib.sha1 if oid_size == 20 else hashlib.sha256)(body).digest()
    if trailer != digest and trailer != bytes(oid_size):
        raise BadIndex("checksum does not match")


def _entry(data: bytes, start: int, oid_size: int, version: int, previous: bytes) -> tuple[bytes, int, bool, int]:
    """(path, mode, intent-to-add, offset of the next entry) of the entry at `start`."""
    mode = struct.unpack_from(">I", data, start + _MODE_AT)[0]
    at = start + _STAT_BYTES + oid_size
    (flags,) = struct.unpack_from(">H", data, at)
    at += 2
    extended = 0
    if flags & _EXTENDED:
        if version < 3:
            raise BadIndex("extended flags in a version 2 index")
        (extended,) = struct.unpack_from(">H", data, at)
        at += 2
    if version == 4:
        strip, at = _varint(data, at)
        if strip > len(previous):
            raise BadIndex("path prefix longer than the previous path")
        suffix, at = _until_nul(data, at)
        return previous[:len(previous) - strip] + suffix, mode, bool(extended & _INTENT_TO_ADD), at
    name, end = _until_nul(data, at)
    # versions 2 and 3: 1 to 8 NUL bytes pad the entry to a multiple of 8 bytes from its start
    return name, mode, bool(extended & _INTENT_TO_ADD), start + ((at - start + len(name) + 8) & ~7)


def _until_nul(data: bytes, at: int) -> tuple[bytes, int]:
    """The bytes from `at` to the next NUL, and the offset after that NUL."""
    end = data.find(b"\0", at, len(data))
    if end < 0:
        raise BadIndex("path without its NUL")
    return data[at:end], end + 1


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """git's offset varint (version 4's prefix length, git's `decode_varint`), and the offset after it."""
    byte, at = _byte(data, at)
    value = byte & 0x7F
    for _ in range(8):
        if not byte & 0x80:
            return value, at
        byte, at = _byte(data, at)
        value = (value + 1) << 7 | (byte & 0x7F)
    raise BadIndex("number too long")


def _byte(data: bytes, at: int) -> tuple[int, int]:
    if at >= len(data):
        raise BadIndex("cut inside a number")
    return data[at], at + 1


def _check_extensions(data: bytes, at: int, oid_size: int) -> None:
    """The extensions after the entries must fill the file up to its hash, and none may be `link` (a split index,
    whose other entries are in another file)."""
    end = len(data) - oid_size
    while at < end:
        signature, size = struct.unpack_from(">4sI", data, at)
        if signature == b"link":
            raise BadIndex("split index")
        at += 8 + size
    if at != end:
        raise BadIndex("entries or extensions overrun the hash")
