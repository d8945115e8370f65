#!/usr/bin/env python3
"""Time the suite orchestrator's own overhead: N models through run_inductor_suite.py's pool with a no-op
worker (writes its result and exits; no torch), against a plain loop that starts the same N subprocesses with
`subprocess.run`, measured in the same run. On the GPU a model takes 30-90 s, so what matters is that the pool,
timeouts, manifest appends and stats add next to nothing per model, and that K workers overlap K models.

    python benchmarks/bench_suite.py            # 40 models
    python benchmarks/bench_suite.py -n 10 -k 2
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scraper.stats import Stats  # noqa: E402
from scraper.suite.model_lists import ModelSpec  # noqa: E402
from scraper.suite.orchestrate import Job, Settings, run_suite  # noqa: E402

NOOP_WORKER = '''
import json, sys
args = sys.argv[1:]
with open(args[args.index("--result") + 1], "w") as f:
    json.dump({"success": True, "graphs": [], "kernels": 0}, f)
'''


def baseline(worker: Path, count: int) -> float:
    """Seconds for `count` plain `subprocess.run`s of the no-op worker, one after the other."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(count):
            subprocess.run([sys.executable, str(worker), "--result", f"{tmp}/{index}.json"], check=True)
    return time.perf_counter() - started


def through_pool(worker: Path, count: int, slots: int) -> float:
    """Seconds for `count` models through run_suite with `slots` workers (manifest, logs, stats included)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(suite="timm", out=Path(tmp), worker=worker, timeout=60)
        jobs = [Job(ModelSpec(f"model{index}")) for index in range(count)]
        started = time.perf_counter()
        entries = run_suite(settings, jobs, [None] * slots, Stats("suite"))
        elapsed = time.perf_counter() - started
    assert len(entries) == count and all(entry["success"] for entry in entries)
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--models", type=int, default=40, help="models (default: 40)")
    parser.add_argument("-k", "--workers", type=int, default=2, help="workers for the parallel pass (default: 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "noop_worker.py"
        worker.write_text(NOOP_WORKER, encoding="utf-8")
        base = baseline(worker, args.models)
        one = through_pool(worker, args.models, 1)
        many = through_pool(worker, args.models, args.workers)
    print(f"{args.models} no-op models")
    print(f"  baseline: plain subprocess.run loop   {base:7.2f} s  ({1000 * base / args.models:.1f} ms/model)")
    print(f"  run_suite, 1 worker                   {one:7.2f} s  ratio {one / base:.2f}")
    print(f"  run_suite, {args.workers} workers                  {many:7.2f} s  ratio {many / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
