#!/usr/bin/env python3
"""Benchmark scraper.validate on the 312 real Inductor kernels of tests/fixtures.

Prints, for `imports`: kernels/s of the worker pool (end to end, and after worker start-up) behind the bubblewrap
wall, against two baselines measured in the same run: the same pool without the wall (--unsafe-no-sandbox: what
the wall costs), and a fresh `python` that imports triton + Inductor's runtime and runs one module (the obvious
implementation), on a sample of kernels with the same number of parallel jobs. For `compiles`: how many of the
kernels compile with the installed Triton, kernels/s, and the failures grouped by reason.

    python benchmarks/bench_validate.py --jobs 2            # both levels, all 312 kernels
    python benchmarks/bench_validate.py --levels imports    # imports only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scraper.cli import add_logging_args, setup_logging  # noqa: E402
from scraper.records import KernelRecord, read_records  # noqa: E402
from scraper.stats import Stats, error_group_key  # noqa: E402
from scraper.validate import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, level_fractions, validate_records  # noqa: E402
from scraper.validate.api import make_job  # noqa: E402
from scraper.validate.pool import WorkerPool  # noqa: E402

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "torch_compile_debug"

# The baseline: one fresh interpreter per kernel, as a naive sandbox would do it.
NAIVE = """
import os, sys, importlib.util
os.environ["TRITON_INTERPRET"] = "1"
import triton
from torch._inductor.runtime import triton_helpers, triton_heuristics
path, name = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("kernel_module", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(type(getattr(module, name)).__name__)
"""


# The compiles baseline: the same check_compiles, serially in a plain process (no fork, no sandbox), so the
# difference is what the sandbox costs and the rest is the compiler's own time.
RAW_COMPILE = """
import json, os, sys, tempfile, time
from scraper.validate.worker import preload, warm_compiler
from scraper.validate.compiles import check_compiles
from scraper.validate.imports import write_module
preload()
base = tempfile.mkdtemp()
warm_compiler(base)
jobs = json.load(open(sys.argv[1]))
started = time.perf_counter()
ok = 0
for number, job in enumerate(jobs):
    scratch = os.path.join(base, str(number))
    os.makedirs(scratch)
    os.environ["TRITON_CACHE_DIR"] = os.path.join(scratch, "cache")
    write_module(scratch, job["code"])
    ok += bool(check_compiles(job, scratch).get("ok"))
    sys.modules.pop("kernel_module", None)
print(json.dumps({"seconds": time.perf_counter() - started, "ok": ok}))
"""


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="sandbox workers (default 2)")
    parser.add_argument("--levels", nargs="+", choices=("imports", "compiles"), default=["imports", "compiles"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N kernels")
    parser.add_argument("--baseline-sample", type=int, default=8, help="kernels run by the naive baseline")
    parser.add_argument("--compile-sample", type=int, default=24, help="kernels compiled by the raw baseline")
    parser.add_argument("--repeat", type=int, default=3, help="imports: runs of each kind, alternating; the best "
                        "counts (other jobs on a shared machine only ever slow a run down)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    add_logging_args(parser)
    return parser.parse_args(argv)


def fixture_records(work: Path) -> list[KernelRecord]:
    """Unpack the fixtures and run the real Inductor stage over them."""
    from scraper.inductor import extract_kernels

    roots = []
    for archive in sorted(FIXTURES.glob("tcd_*.tar.gz")):
        target = work / archive.name.removesuffix(".tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        roots.append(target / "torch_compile_debug")
    extract_kernels(roots, work / "inductor_kernels", Stats("inductor"))
    return read_records(work / "inductor_kernels" / "kernels.jsonl")


def naive_rate(records: list[KernelRecord], jobs: int, work: Path) -> float:
    """Kernels/s of a fresh interpreter per kernel, `jobs` at a time."""
    paths = []
    for number, record in enumerate(records):
        path = work / f"naive_{number}.py"
        path.write_text(record.code)
        paths.append((path, record.name))

    def run(item):
        subprocess.run([sys.executable, "-c", NAIVE, str(item[0]), item[1]], check=True, capture_output=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run, paths))
    return len(paths) / (time.perf_counter() - started)


def timed_validate(records: list[KernelRecord], level: str, jobs: int, unsafe: bool = False) -> tuple[float, Stats]:
    """Seconds for validate_records up to `level`, no cache; `unsafe`: without the wall."""
    stats = Stats("validate")
    started = time.perf_counter()
    validate_records(records, levels=(level,), jobs=jobs, stats=stats, unsafe_no_sandbox=unsafe)
    return time.perf_counter() - started, stats


def pool_rate(records: list[KernelRecord], jobs: int, unsafe: bool = False) -> tuple[float, float]:
    """(worker start-up seconds, kernels/s of started workers) for imports, using the pool directly."""
    jobs_list = [make_job(r, "imports", DEFAULT_TIMEOUT, DEFAULT_MEMORY_MB) for r in records]
    with WorkerPool(jobs, unsafe) as pool:
        started = time.perf_counter()
        pool.run(jobs_list[:jobs], lambda job, result: None)  # one job per worker: every worker is up
        startup = time.perf_counter() - started
        started = time.perf_counter()
        pool.run(jobs_list, lambda job, result: None)
        return startup, len(jobs_list) / (time.perf_counter() - started)


def copies(records: list[KernelRecord]) -> list[KernelRecord]:
    return [KernelRecord.from_dict(r.to_dict()) for r in records]


def bench_imports(records, jobs, sample, work, repeat) -> dict:
    """Pool behind the wall vs the same pool without it (best of `repeat` alternating runs each), and vs the naive
    baseline, for the imports level."""
    baseline = naive_rate(records[:sample], jobs, work)
    runs = {True: [], False: []}
    for _ in range(repeat):
        for unsafe in (False, True):
            runs[unsafe].append(imports_rates(records, jobs, unsafe))
    walled, bare = (best(runs[unsafe]) for unsafe in (False, True))
    print(f"best of {repeat} alternating runs each; end to end, all runs: wall "
          f"{[r['kernels_per_s'] for r in runs[False]]}, no wall {[r['kernels_per_s'] for r in runs[True]]} kernels/s")
    for name, rates in (("behind the bubblewrap wall", walled), ("without it (--unsafe-no-sandbox)", bare)):
        print(f"imports {name}: {rates['passed']}/{len(records)} pass; {rates['seconds']:.2f} s with {jobs} jobs "
              f"= {rates['kernels_per_s']:.1f} kernels/s end to end ({rates['kernels_per_s_after_startup']:.1f} "
              f"kernels/s once the workers are up; start-up {rates['startup_s']:.2f} s)")
    print(f"the wall's cost: {walled['kernels_per_s'] / bare['kernels_per_s']:.2f}x the speed without it end to "
          f"end, {walled['kernels_per_s_after_startup'] / bare['kernels_per_s_after_startup']:.2f}x after start-up")
    print(f"imports baseline (fresh python + import triton per kernel, {sample} kernels, {jobs} jobs): "
          f"{baseline:.2f} kernels/s -> ratio {walled['kernels_per_s'] / baseline:.1f}x end to end, "
          f"{walled['kernels_per_s_after_startup'] / baseline:.1f}x after start-up")
    return {"kernels": len(records), "walled": walled, "unwalled": bare, "baseline_kernels_per_s": round(baseline, 2)}


def best(runs: list[dict]) -> dict:
    """The fastest figures of several runs, field by field (start-up: the shortest)."""
    return {key: (min if key in ("seconds", "startup_s") else max)(run[key] for run in runs) for key in runs[0]}


def imports_rates(records, jobs: int, unsafe: bool) -> dict:
    """Figures of the imports level end to end (validate_records) and with started workers (the pool)."""
    total, stats = timed_validate(copies(records), "imports", jobs, unsafe)
    startup, steady = pool_rate(records, jobs, unsafe)
    return {"passed": stats.counts["validate_imports_ok"], "seconds": round(total, 2),
            "kernels_per_s": round(len(records) / total, 1), "kernels_per_s_after_startup": round(steady, 1),
            "startup_s": round(startup, 2)}


def raw_compile_rate(records: list[KernelRecord], jobs: int, work: Path) -> float:
    """Kernels/s of check_compiles in `jobs` plain processes (no fork, no sandbox), each on its share of
    `records`, counted from when all have imported torch/triton: the compiler's own speed."""
    procs = []
    for number in range(jobs):
        jobs_file = work / f"raw_jobs_{number}.json"
        share = records[number::jobs]
        jobs_file.write_text(json.dumps([make_job(r, "compiles", DEFAULT_TIMEOUT, DEFAULT_MEMORY_MB) for r in share]))
        procs.append(subprocess.Popen([sys.executable, "-c", RAW_COMPILE, str(jobs_file)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, cwd=REPO_ROOT))
    seconds = [json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"] for p in procs]
    return len(records) / max(seconds)


def sandboxed_compile_rate(records: list[KernelRecord], jobs: int) -> float:
    """Kernels/s of the same compiles through started, warmed-up workers."""
    work = [make_job(r, "compiles", DEFAULT_TIMEOUT, DEFAULT_MEMORY_MB) for r in records]
    with WorkerPool(jobs) as pool:
        pool.run(work[:jobs], lambda job, result: None)  # start and warm every worker
        started = time.perf_counter()
        pool.run(work, lambda job, result: None)
        return len(work) / (time.perf_counter() - started)


def bench_compiles(records, jobs, sample, work) -> dict:
    """Compile every kernel; group the failures; compare with the compiler alone on a sample."""
    raw = raw_compile_rate(records[:sample], jobs, work)
    sandboxed = sandboxed_compile_rate(records[:sample], jobs)
    records = copies(records)
    total, stats = timed_validate(records, "compiles", jobs)
    passed = [r for r in records if r.compiles]
    failed = [r for r in records if not r.compiles]
    reasons = Counter(error_group_key(r.validation["compiles"].get("error", "")) for r in failed)
    by_kind = Counter((r.kind, bool(r.compiles)) for r in records)
    sources = Counter(r.validation["compiles"].get("config_source") for r in records if r.compiles is not None)
    seconds = [r.validation["compiles"].get("seconds", 0) for r in records if r.compiles is not None]
    print(f"compiles: {len(passed)}/{len(records)} pass (triton {records[0].validation['triton']}, target "
          f"{records[0].validation.get('target')}); {total:.1f} s with {jobs} jobs, imports level and start-up "
          f"included = {len(records) / total:.2f} kernels/s; per kernel {sum(seconds) / max(len(seconds), 1):.2f} s "
          f"mean, {max(seconds):.2f} s max")
    print(f"compiles baseline (first {sample} kernels, {jobs} plain processes, no fork, no sandbox): {raw:.2f} "
          f"kernels/s vs {sandboxed:.2f} kernels/s through the sandbox -> ratio {sandboxed / raw:.2f}")
    print("compiles by kind (kind, passed): " + json.dumps({f"{k}/{ok}": n for (k, ok), n in sorted(by_kind.items())}))
    print("config chosen from: " + json.dumps(dict(sources)))
    for reason, count in reasons.most_common(10):
        print(f"  {count:>4} x {reason}")
    return {"kernels": len(records), "passed": len(passed), "seconds": round(total, 1),
            "kernels_per_s": round(len(records) / total, 2), "sample_raw_kernels_per_s": round(raw, 2),
            "sample_sandboxed_kernels_per_s": round(sandboxed, 2), "failures": dict(reasons),
            "config_sources": dict(sources), "fractions": level_fractions(records)}


def main(argv=None) -> int:
    """Run the benchmark and print the figures."""
    args = parse_args(argv)
    setup_logging(args)
    figures = {"jobs": args.jobs}
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        work = Path(tmp)
        records = fixture_records(work)[: args.limit]
        print(f"{len(records)} Inductor kernels from {FIXTURES.relative_to(REPO_ROOT)}")
        if "imports" in args.levels:
            figures["imports"] = bench_imports(records, args.jobs, args.baseline_sample, work, args.repeat)
        if "compiles" in args.levels:
            figures["compiles"] = bench_compiles(records, args.jobs, args.compile_sample, work)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
