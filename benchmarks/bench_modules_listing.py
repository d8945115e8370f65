"""Time the --suite modules listing (every nn.Module class of a folder of repositories, cut out with its closure)
before and after issue 17, in the same run: the baseline is the pre-issue code (`git archive` of BASELINE into
a temporary folder), listing serially; then this checkout's listing with a cold cache on every core, and again
with the warm cache. Each listing runs in a fresh interpreter (no import is shared).

    python benchmarks/bench_modules_listing.py .gpu/repos [--jobs N] [--baseline COMMIT]

Prints the candidates each lists and the times, with the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE = "75b2ae4"  # main when issue 17 started: one process, no cache

OLD = ("import sys; from pathlib import Path; from scraper.modules.classes import modules_from_repositories; "
       "print(len(modules_from_repositories(Path(sys.argv[1]))))")
NEW = ("import sys; from pathlib import Path; from scraper.modules.listing import list_repositories; "
       "print(sum(len(x.entries) for x in list_repositories(Path(sys.argv[1]), Path(sys.argv[2]), "
       "int(sys.argv[3]) or None)))")


def checkout(commit: str, into: Path) -> Path:
    """The files of `commit` (git archive) under `into`."""
    archive = into / "baseline.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit], stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "code", filter="data")
    return into / "code"


def timed(code: str, root: Path, *args: str) -> tuple[float, str]:
    """(seconds, printed count) of `python -c code args` with `root` first on the import path."""
    env = dict(os.environ, PYTHONPATH=str(root))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=root, env=env, capture_output=True, text=True,
                          check=True)
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repos", type=Path, help="folder of repository zips or folders")
    parser.add_argument("--jobs", type=int, default=0, help="listing processes (default: every core)")
    parser.add_argument("--baseline", default=BASELINE, help="commit of the code to compare with")
    args = parser.parse_args(argv)
    repos = args.repos.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        old_seconds, old_count = timed(OLD, checkout(args.baseline, scratch), str(repos))
        cache = scratch / "cache"
        cold, count = timed(NEW, REPO_ROOT, str(repos), str(cache), str(args.jobs))
        warm, _ = timed(NEW, REPO_ROOT, str(repos), str(cache), str(args.jobs))
    jobs = args.jobs or len(os.sched_getaffinity(0))
    print(f"{len(list(repos.iterdir()))} entries in {repos}")
    print(f"  baseline {args.baseline}, one process, no cache   {old_seconds:7.2f} s  {old_count} candidates")
    print(f"  this checkout, {jobs} processes, cold cache   {cold:7.2f} s  {count} candidates  "
          f"ratio {cold / old_seconds:.2f}")
    print(f"  this checkout, warm cache                   {warm:7.2f} s  ratio {warm / old_seconds:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
