#!/usr/bin/env python3
"""Benchmark of the archive scan (`scraper.github.download.scan_archive`): every `.py` member read through zipsafe
with its CRC checked, then each discovery's text test (Triton, nn.Module subclass). Baselines measured in the same
run: the same reads without a test (the floor), and with the Triton patterns alone, as the scan ran them before
the pytorch discovery (without the `in` check that now comes first). The input is a PyTorch-heavy archive: by
default the installed torch package's own `.py` files, nearly all of which name both `torch` and `Module`, so the
nn.Module test's pre-filter lets them all through.

    python benchmarks/bench_scan.py [--source DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from scraper.github.discovery import _JIT, _TRITON  # noqa: E402
from scraper.github.download import scan_archive  # noqa: E402
from scraper.repos import MAX_SCAN_BYTES  # noqa: E402
from scraper.zipsafe import DEFAULT_LIMITS, SafeZip  # noqa: E402


def build_archive(source: Path, target: Path) -> int:
    """A zipball-like archive of the .py files under `source` (each within the scan's cap); returns their count."""
    files = [path for path in sorted(source.rglob("*.py")) if path.stat().st_size <= MAX_SCAN_BYTES]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, f"owner-name-0123456/{path.relative_to(source.parent)}")
    return len(files)


def triton_patterns(text: bytes) -> bool:
    """The Triton test as the scan ran it before: both patterns over the whole text."""
    return bool(_TRITON.search(text) and _JIT.search(text))


def read_members(path: Path, test=None) -> int:
    """Read every .py member through zipsafe (CRC checked), counting those `test` accepts."""
    count = 0
    with SafeZip(path, DEFAULT_LIMITS) as archive:
        for info in archive.members:
            if info.filename.endswith(".py"):
                data = archive.read(info)
                count += bool(test and test(data))
    return count


def best_of(rounds: int, work) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path(torch.__file__).parent)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "bench.zip"
        files = build_archive(args.source, archive)
        size = sum(info.file_size for info in zipfile.ZipFile(archive).infolist())
        print(f"{files} .py files, {size / 1e6:.1f} MB ({archive.stat().st_size / 1e6:.1f} MB zipped) of {args.source}")
        floor = best_of(args.rounds, lambda: read_members(archive))
        rows = [("read + CRC, no test (floor)", floor),
                ("before: + Triton patterns", best_of(args.rounds, lambda: read_members(archive, triton_patterns))),
                ("scan_archive: Triton + nn.Module", best_of(args.rounds, lambda: scan_archive(archive)))]
        for label, seconds in rows:
            print(f"  {label:34s} {seconds:6.2f} s  {size / 1e6 / seconds:6.1f} MB/s  ratio {seconds / floor:5.2f}")
        print(f"  counts: {scan_archive(archive).counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
