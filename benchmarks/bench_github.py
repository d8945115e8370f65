#!/usr/bin/env python3
"""Benchmark of the GitHub stage's download path against the local fake GitHub server.

Baseline (the floor, measured in the same run): one plain `requests` GET per archive, straight to the archive
URL, bytes written to disk, one at a time. The scraper does four requests per repository (metadata, head commit,
zipball redirect, archive), hashes, verifies every CRC, scans the .py members and appends the manifest line. With a
simulated network round trip (`--latency`, default 20 ms per answer), `--jobs` overlaps the waiting.

    python benchmarks/bench_github.py [--repos 120] [--files 30] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_github import KERNEL, FakeGitHub, FakeRepo  # noqa: E402
from scraper.github.client import GitHubClient  # noqa: E402
from scraper.github.pipeline import Options, run  # noqa: E402


def make_repos(count: int, files: int) -> list[FakeRepo]:
    """`count` repositories of `files` Python files each, a third of them Triton kernels."""
    repos = []
    for i in range(count):
        tree = {f"pkg/mod{j}.py": (KERNEL if j % 3 == 0 else "def f(x):\n    return x\n" * 40) + f"# {i} {j}\n"
                for j in range(files)}
        repos.append(FakeRepo(f"bench{i}/repo{i}", tree))
    return repos


def baseline(fake: FakeGitHub, repos: list[FakeRepo], folder: Path) -> float:
    """Seconds to GET every archive once with one session and write it to disk."""
    session = requests.Session()
    start = time.perf_counter()
    for repo in repos:
        response = session.get(f"{fake.url}/_codeload/{repo.full_name}/legacy.zip/{repo.sha}")
        response.raise_for_status()
        (folder / f"{repo.full_name.replace('/', '__')}.zip").write_bytes(response.content)
    return time.perf_counter() - start


def scraper(fake: FakeGitHub, repos: list[FakeRepo], folder: Path, jobs: int) -> float:
    """Seconds for the stage to fetch every repository of a --repos list with `jobs` threads."""
    listing = folder / "repos.txt"
    listing.write_text("".join(f"{r.full_name}\n" for r in repos))
    start = time.perf_counter()
    status = run(Options(folder / "dl", repos_file=listing, jobs=jobs), GitHubClient(fake.url, "bench-token"))
    elapsed = time.perf_counter() - start
    assert status == 0 and len((folder / "dl" / "manifest.jsonl").read_text().splitlines()) == len(repos)
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, default=120)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the server waits before each answer")
    args = parser.parse_args(argv)
    repos = make_repos(args.repos, args.files)
    with FakeGitHub(repos, latency=args.latency) as fake, tempfile.TemporaryDirectory() as tmp:
        rows = [("baseline: 1 GET per archive, sequential", baseline(fake, repos, Path(tmp)))]
        for jobs in (1, 4, 8):
            folder = Path(tmp) / f"jobs{jobs}"
            folder.mkdir()
            rows.append((f"scrape_github --jobs {jobs} (4 requests/repo + verify + scan)",
                         scraper(fake, repos, folder, jobs)))
    base = rows[0][1]
    print(f"{args.repos} repositories x {args.files} files, {args.latency * 1000:.0f} ms per answer")
    for label, seconds in rows:
        print(f"  {label:<58} {seconds:7.2f} s  {args.repos / seconds:7.1f} repo/s  ratio {seconds / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
