#!/usr/bin/env python3
"""Time the Inductor stage on the 18 real fixture graphs against the time to just read the same files.

Prints, per step, the best of --repeat runs (CPU time of this process, one core) and its ratio to the baseline
"read every output_code.py + fx_graph_readable.py" measured in the same run:
  read        the baseline: read the files (bytes + UTF-8 decode)
  parse       ast.parse of every output_code.py (what any ast-based extraction pays at least)
  extract     in memory: find the kernels, clean them, parse their comments (no records, no files)
  records     extract + build the KernelRecords (their id hashes the normalized source: records.kernel_id)
  stage       the whole stage into a fresh output folder (files, kernels.jsonl, stats.json, fsyncs)
  rerun       the whole stage again on the same output folder (nothing changes, nothing is rewritten)

    python benchmarks/bench_inductor.py [torch_compile_debug ...] [--repeat 5]
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scraper.inductor import clean_kernel, extract_kernels, parse_comment, read_output_code  # noqa: E402
from scraper.inductor.layout import find_output_codes  # noqa: E402
from scraper.records import KernelRecord  # noqa: E402
from scraper.stats import Stats  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "torch_compile_debug"


def best_cpu_time(step, repeat: int) -> float:
    """Smallest CPU time (seconds, this process) of `repeat` calls of `step()`."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return min(times)


def read_all(paths: list[Path]) -> list[str]:
    texts = []
    for path in paths:
        texts.append(path.read_bytes().decode("utf-8"))
        fx = path.parent / "fx_graph_readable.py"
        if fx.exists():
            fx.read_bytes().decode("utf-8")
    return texts


def extract_in_memory(paths: list[Path], make_records: bool) -> int:
    count = 0
    for path in paths:
        for kernel in read_output_code(path.read_bytes().decode("utf-8"), str(path)).kernels:
            clean = clean_kernel(kernel.source, kernel.name)
            info = parse_comment(kernel.comment)
            if make_records:
                KernelRecord(name=kernel.name, code=clean.code, source="inductor", kind=clean.kind,
                             original=kernel.source, aten_ops=info.get("aten_ops"), launch=clean.launch)
            count += 1
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, help="debug folders (default: the unpacked test fixtures)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per step; the best is reported (default 5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = args.inputs or unpack_fixtures(Path(tmp) / "in")
        paths, _ = find_output_codes(inputs)
        kernels = extract_in_memory(paths, make_records=False)
        size = sum(p.stat().st_size for p in paths)
        print(f"{len(paths)} graphs, {kernels} kernels, {size / 1e6:.1f} MB of output_code.py; best of {args.repeat}")
        out = Path(tmp) / "out"

        def fresh_stage():
            shutil.rmtree(out, ignore_errors=True)
            extract_kernels(inputs, out, Stats("bench"))

        steps = {
            "read": lambda: read_all(paths),
            "parse": lambda: [ast.parse(text) for text in read_all(paths)],
            "extract": lambda: extract_in_memory(paths, make_records=False),
            "records": lambda: extract_in_memory(paths, make_records=True),
            "stage": fresh_stage,
            "rerun": lambda: extract_kernels(inputs, out, Stats("bench")),
        }
        baseline = None
        for name, step in steps.items():
            seconds = best_cpu_time(step, args.repeat)
            baseline = baseline or seconds
            print(f"  {name:<8} {seconds * 1000:8.1f} ms  {seconds / baseline:6.1f}x read")
    return 0


def unpack_fixtures(dest: Path) -> list[Path]:
    roots = []
    for archive in sorted(FIXTURES.glob("tcd_*.tar.gz")):
        with tarfile.open(archive) as tar:
            tar.extractall(dest / archive.name.removesuffix(".tar.gz"), filter="data")
        roots.append(dest / archive.name.removesuffix(".tar.gz"))
    return roots


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
