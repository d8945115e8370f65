"""Hostile zip archives for the tests, written byte by byte: zipfile cannot write them (it compresses what it is
given, never lies in a header and never lets two directory entries share data).

`zeros(method, size)` is the compressed form of `size` zero bytes (bzip2 packs 256 MiB into about 200 bytes);
`write_zip(path, members)` writes local headers, data and a central directory whose entries may point at another
member's header (`RawMember.shares`: the overlapping entries of a "non-recursive zip bomb"). `peak_growth_mib`
measures what reading one costs in memory, in a fresh interpreter.
"""

from __future__ import annotations

import bz2
import functools
import lzma
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
# zip's LZMA member header: LZMA SDK version 9.20, 5 bytes of properties (lc=3, lp=0, pb=2; 1 MiB dictionary)
_LZMA_FILTER = {"id": lzma.FILTER_LZMA1, "dict_size": 1 << 20, "lc": 3, "lp": 0, "pb": 2}
_LZMA_HEADER = b"\x09\x14" + struct.pack("<H", 5) + bytes([(2 * 5 + 0) * 9 + 3]) + (1 << 20).to_bytes(4, "little")


@dataclass
class RawMember:
    """One directory entry: its name, stored bytes (already compressed), method, and the CRC and size it declares.
    `shares`: index of an earlier member whose header and data this entry points at instead of its own."""

    name: str
    payload: bytes = b""
    method: int = zipfile.ZIP_STORED
    crc: int = 0
    size: int = 0
    shares: Optional[int] = None


def compress(method: int, chunks) -> bytes:
    """The member bytes zip stores for the data in `chunks` (an iterable of bytes) under `method`."""
    compressor = {
        zipfile.ZIP_DEFLATED: lambda: zlib.compressobj(9, zlib.DEFLATED, -15),
        zipfile.ZIP_BZIP2: lambda: bz2.BZ2Compressor(9),
        zipfile.ZIP_LZMA: lambda: lzma.LZMACompressor(lzma.FORMAT_RAW, filters=[_LZMA_FILTER]),
    }[method]()
    out = [compressor.compress(chunk) for chunk in chunks]
    out.append(compressor.flush())
    return (_LZMA_HEADER if method == zipfile.ZIP_LZMA else b"") + b"".join(out)


@functools.lru_cache(maxsize=None)
def zeros(method: int, size: int) -> RawMember:
    """A member (name to be set) holding `size` zero bytes, honestly declared (CRC and size are right)."""
    block = bytes(1 << 20)
    chunks = [block] * (size >> 20) + [bytes(size & ((1 << 20) - 1))]
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return RawMember("", compress(method, chunks), method, crc, size)


def member(name: str, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> RawMember:
    """An honest member holding `data`."""
    payload = data if method == zipfile.ZIP_STORED else compress(method, [data])
    return RawMember(name, payload, method, zlib.crc32(data), len(data))


def write_zip(path: Path, members: list[RawMember]) -> Path:
    """Write `members` as a zip archive (no zip64: every size below 4 GiB)."""
    local, central, offsets = bytearray(), bytearray(), []
    for item in members:
        name = item.name.encode()
        if item.shares is None:
            offsets.append(len(local))
            local += _LOCAL.pack(b"PK\x03\x04", 20, 0, item.method, 0, 0x21, item.crc, len(item.payload),
                                 item.size, len(name), 0) + name + item.payload
        else:
            offsets.append(offsets[item.shares])
        central += _CENTRAL.pack(b"PK\x01\x02", 20, 20, 0, item.method, 0, 0x21, item.crc, len(item.payload),
                                 item.size, len(name), 0, 0, 0, 0, 0, offsets[-1]) + name
    count = min(len(members), 0xFFFF)  # more needs zip64; zipfile reads the directory by its size, not this count
    end = _END.pack(b"PK\x05\x06", 0, 0, count, count, len(central), len(local), 0)
    Path(path).write_bytes(bytes(local + central + end))
    return Path(path)


def peak_growth_mib(setup: str, action: str, env: Optional[dict] = None) -> tuple[float, str]:
    """Run `setup` then `action` (Python source) in a fresh interpreter at the repository root; returns how much
    the process's peak resident memory grew during `action` (MiB) and what `action` printed."""
    code = "\n".join([setup, "import resource", "_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
                      action, "print('PEAK_GROWTH_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - _base)"])
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed, _, growth = done.stdout.rpartition("PEAK_GROWTH_KIB ")
    return int(growth) / 1024, printed
