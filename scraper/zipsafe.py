"""Zip archives from the network, read safely: the one home of zip-path safety and capped member reading.

Used by the GitHub stage (checking a downloaded zipball) and the generator (reading one), so both see the same
limits. Scraped archives are hostile input, and `zipfile` trusts them where this module does not:

* zipfile parses the whole central directory into memory (about 500 bytes per entry), so the directory's size is
  checked first, from the end record, against `Limits.directory_bytes`;
* zipfile decompresses a bzip2 or LZMA member's compressed chunk whole, whatever `read(n)` asked for (a 2 KB
  archive became 6 GiB): here every member is decompressed from its raw bytes with an output limit on every
  call (`max_length`), whatever its compression method, and every byte decompressed, kept or not, counts against
  the archive's budget (`Limits.total_bytes`);
* Python 3.11's zipfile lets several directory entries share one member's data (the "non-recursive zip bomb"
  multiplies one member by the number of entries): here each member's data must end before the next member's
  header, and an archive where they overlap is refused whole.

Member names are checked by `safe_member_path` (absolute paths, drive letters, `..`, and control or
direction-changing characters, which would reach a terminal or an editor as escape sequences when a name is
printed). A member whose bytes were read whole is checked against its CRC and size; one read only in part (over
its cap) is not, since that would mean decompressing it all. `printable` escapes such characters in any text
before it goes into a log line or an error message.
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional

from scraper.repos import MAX_SCAN_BYTES

CHUNK = 1 << 16
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header: signature, version, flags, method, time, date, crc,
#                                      compressed and uncompressed size, name and extra field lengths
_END = struct.Struct("<4s4H2LH")  # end of central directory: ..., entries, directory size and offset, comment
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end record: ..., entries on disk, entries, size, offset
_ENCRYPTED = 0x1


@dataclass(frozen=True)
class Limits:
    """Caps on what one archive may cost. `member_bytes`: a member larger than this is not read (for the
    generator a .py above 2 MiB is generated data, not a kernel file); `total_bytes`: bytes decompressed from one
    archive, kept or not; `members`: entries considered (the rest are left out and counted); `directory_bytes`:
    size of the central directory, which zipfile holds in memory (16 MiB: about 100 000 entries of 120-character
    paths, at most about 170 MiB of memory)."""

    member_bytes: int = MAX_SCAN_BYTES
    total_bytes: int = 512 * 1024 * 1024
    members: int = 100_000
    directory_bytes: int = 16 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class UnsafeArchive(zipfile.BadZipFile):
    """An archive refused whole: a central directory over its cap, entries sharing data, unsafe member names."""


class MemberRefused(Exception):
    """A member that was not read whole; `reason`: too_large (over its cap), archive_cap (the archive's budget
    is spent) or unsupported (encrypted, or a compression method zip readers rarely know)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# C0 and C1 controls, DEL, bidirectional overrides and isolates, zero-width and line/paragraph separators, BOM,
# and lone surrogates (undecodable bytes kept by `surrogateescape`, which a UTF-8 log stream cannot even encode)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")


def printable(text: object) -> str:
    """`str(text)` with every control, direction-changing or invisible character written as a `\\xNN` /
    `\\uNNNN` escape, so text from a server or an archive cannot move the cursor, retitle a terminal, forge a
    log line or hide what it says when printed."""
    return _UNPRINTABLE.sub(_escape, str(text))


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_member_path(name: str) -> Optional[str]:
    """The normalized relative POSIX path of an archive entry, or None when it is absolute, escapes with `..` or
    holds a character `printable` would escape (a name is printed, and becomes a file name)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or _UNPRINTABLE.search(name):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        return None
    return "/".join(parts)


class SafeZip:
    """A zip archive opened within `limits` (a context manager). Raises zipfile.BadZipFile when it is not a
    readable zip, UnsafeArchive when it is refused whole.

    `members`: the first `limits.members` directory entries (directories included); `left_out`: how many entries
    came after them; `budget`: bytes that may still be decompressed."""

    def __init__(self, path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.budget = limits.total_bytes
        self._file = open(path, "rb")
        try:
            self._zip = _open_zip(self._file, limits)
            infos = self._zip.infolist()
            self._ends = _member_ends(infos, self._zip.start_dir)
        except BaseException:
            self._file.close()
            raise
        self.members = infos[: limits.members]
        self.left_out = len(infos) - len(self.members)

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def read(self, info: zipfile.ZipInfo, cap: Optional[int] = None) -> bytes:
        """The member's bytes, checked against its CRC and size. Raises MemberRefused past `cap` (default
        `limits.member_bytes`) or the archive's budget, zipfile.BadZipFile when the data is damaged."""
        cap = self.limits.member_bytes if cap is None else cap
        limit = self._charge_limit(cap)
        data = self._inflate(info, limit)
        if len(data) > limit:
            reason = "too_large" if limit == cap else "archive_cap"
            raise MemberRefused(reason, f"over {limit} bytes" if reason == "too_large" else "archive budget spent")
        return data

    def read_prefix(self, info: zipfile.ZipInfo, size: int) -> bytes:
        """The first `size` bytes of the member (checked when that is all of it); within the archive's budget."""
        limit = self._charge_limit(size)
        return self._inflate(info, limit)[:size]

    def _charge_limit(self, cap: int) -> int:
        if self.budget <= 0:
            raise MemberRefused("archive_cap", "archive budget spent")
        return min(cap, self.budget)

    def _inflate(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        """Up to `limit` + 1 decompressed bytes of the member (charged to the budget); all of it is checked."""
        decoder = _decoder(info)
        left, out = info.compress_size, bytearray()
        try:
            self._file.seek(self._data_start(info))
            while len(out) <= limit and not decoder.eof:
                chunk = b""
                if decoder.needs_input:
                    if left == 0:
                        break
                    chunk = self._file.read(min(CHUNK, left))
                    if not chunk:
                        raise zipfile.BadZipFile(f"{printable(info.filename)}: data cut short")
                    left -= len(chunk)
                out += decoder.decompress(chunk, limit + 1 - len(out))
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise zipfile.BadZipFile(f"{printable(info.filename)}: damaged data ({exc})") from None
        finally:
            self.budget -= len(out)
        if len(out) <= limit and (len(out) != info.file_size or zlib.crc32(out) != info.CRC):
            raise zipfile.BadZipFile(f"{printable(info.filename)}: CRC or size does not match")
        return bytes(out)

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        """Offset of the member's data, after its local header; its data must end before the next member."""
        self._file.seek(info.header_offset)
        header = self._file.read(_LOCAL.size)
        if len(header) != _LOCAL.size or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"{printable(info.filename)}: bad local header")
        name_length, extra_length = _LOCAL.unpack(header)[-2:]
        start = info.header_offset + _LOCAL.size + name_length + extra_length
        if start + info.compress_size > self._ends[info.header_offset]:
            raise UnsafeArchive(f"{printable(info.filename)}: member data overlaps the next member")
        return start


def _open_zip(handle, limits: Limits) -> zipfile.ZipFile:
    """zipfile's view of the archive, opened only when its central directory is within the limits."""
    try:
        directory_bytes = _directory_size(handle)
        if directory_bytes > limits.directory_bytes:
            raise UnsafeArchive(f"central directory of {directory_bytes} bytes, over {limits.directory_bytes}")
        handle.seek(0)
        return zipfile.ZipFile(handle)
    except zipfile.BadZipFile:
        raise
    except (OSError, EOFError, ValueError, struct.error, NotImplementedError) as exc:  # what odd headers raise
        raise zipfile.BadZipFile(f"not a readable zip: {type(exc).__name__}: {printable(exc)}") from None


def _directory_size(handle) -> int:
    """Size of the central directory as the end record (or its zip64 record) declares it, found where
    Python 3.11's zipfile finds it, so the size checked is the size zipfile reads."""
    handle.seek(0, os.SEEK_END)
    file_size = handle.tell()
    start = max(0, file_size - _END.size - (1 << 16))
    handle.seek(start)
    tail = handle.read()
    at = len(tail) - _END.size
    if at < 0 or tail[at:at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06")  # the record is followed by a comment
    if at < 0 or at + _END.size > len(tail):
        raise zipfile.BadZipFile("no end of central directory record")
    size = _END.unpack_from(tail, at)[5]
    locator_at = start + at - _END64_LOCATOR.size
    if locator_at >= _END64.size:
        handle.seek(locator_at - _END64.size)
        record, locator = handle.read(_END64.size), handle.read(_END64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07" and record[:4] == b"PK\x06\x06":
            size = _END64.unpack(record)[8]
    return size


def _member_ends(infos: list, directory_start: int) -> dict[int, int]:
    """{header offset: where that member's bytes must end}: the next member's header, or the directory. Raises
    UnsafeArchive when entries overlap (checked with the smallest possible local header; reads check exactly)."""
    ordered = sorted(infos, key=lambda info: info.header_offset)
    ends = {}
    for info, after in zip(ordered, ordered[1:] + [None]):
        end = after.header_offset if after is not None else directory_start
        if info.header_offset + _LOCAL.size + info.compress_size > end:
            raise UnsafeArchive(f"directory entries overlap at {info.filename!r} (entries sharing data)")
        ends[info.header_offset] = end
    return ends


class _Stored:
    """STORED data behind the decompressors' interface, so its output is capped per call the same way."""

    def __init__(self, size: int) -> None:
        self._left = size  # input bytes still to come
        self._tail = b""

    @property
    def needs_input(self) -> bool:
        return not self._tail

    @property
    def eof(self) -> bool:
        return self._left == 0 and not self._tail

    def decompress(self, data: bytes, max_length: int) -> bytes:
        self._left -= len(data)
        data = self._tail + data
        self._tail = data[max_length:]
        return data[:max_length]


class _Deflate:
    """zlib's raw deflate with bz2's interface: input left over by `max_length` waits in `unconsumed_tail`."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(-15)

    @property
    def needs_input(self) -> bool:
        return not self._zlib.unconsumed_tail

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._zlib.decompress(self._zlib.unconsumed_tail + data, max_length)


class _Lzma:
    """zip's LZMA: 2 bytes of version, 2 of properties size, the LZMA1 properties, then a raw LZMA1 stream."""

    def __init__(self) -> None:
        self._head = b""
        self._lzma: Optional[lzma.LZMADecompressor] = None

    @property
    def needs_input(self) -> bool:
        return self._lzma is None or self._lzma.needs_input

    @property
    def eof(self) -> bool:
        return self._lzma is not None and self._lzma.eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._lzma is None:
            self._head += data
            size = int.from_bytes(self._head[2:4], "little")
            if len(self._head) < 4 or len(self._head) < 4 + size:
                return b""
            self._lzma = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[_lzma1_filter(self._head[4:4 + size])])
            data = self._head[4 + size:]
        return self._lzma.decompress(data, max_length)


def _lzma1_filter(properties: bytes) -> dict:
    """The LZMA1 filter of a 5-byte properties field (lc/lp/pb packed in one byte, then the dictionary size)."""
    if len(properties) != 5 or properties[0] >= 9 * 5 * 5:
        raise lzma.LZMAError("bad LZMA properties")
    packed = properties[0]
    return {"id": lzma.FILTER_LZMA1, "lc": packed % 9, "lp": packed // 9 % 5, "pb": packed // 45,
            "dict_size": int.from_bytes(properties[1:], "little")}


def _decoder(info: zipfile.ZipInfo):
    """A fresh decompressor for the member's method; MemberRefused for encrypted members and other methods."""
    if info.flag_bits & _ENCRYPTED:
        raise MemberRefused("unsupported", f"{printable(info.filename)}: encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        return _Stored(info.compress_size)
    makers = {zipfile.ZIP_DEFLATED: _Deflate, zipfile.ZIP_BZIP2: bz2.BZ2Decompressor, zipfile.ZIP_LZMA: _Lzma}
    if info.compress_type not in makers:
        raise MemberRefused("unsupported", f"{printable(info.filename)}: compression method {info.compress_type}")
    return makers[info.compress_type]()

