"""Issue 23, route 7 (the generator's half): parsing scraped files is bounded. The hostile inputs: a 5 KB zip of
4 × 1 MiB `x=1` files (their syntax trees: ~350 bytes a source byte) beside a kernel importing from one of them,
a file under the size caps that binds one name 20,000 times (each copy looked at every binding before it: 436 s),
and a repository of ten 45,000-line files a kernel reads (its trees stay in the index) run with a memory bound.
Each run is a subprocess whose peak memory comes from resource.getrusage."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
KERNEL = "import triton\nimport triton.language as tl\n{imports}\n\n\n@triton.jit\ndef k(p):\n    tl.store(p, {value})\n"
# Run the generator on one archive (argv: seconds, then its arguments); print its exit status (-1: killed at the
# time limit) and the peak memory (MB) of the processes it waited for.
MEASURE = '''
import resource, subprocess, sys
try:
    status = subprocess.run([sys.executable, "-m", "scraper.generator.main", *sys.argv[2:], "-q"],
                            timeout=float(sys.argv[1])).returncode
except subprocess.TimeoutExpired:
    status = -1
print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
'''


def zipball(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, text in files.items():
            archive.writestr(f"owner-repo-0123abc/{name}", text)
    return path


def generate(archives: list[Path], out: Path, *flags: str, timeout: float = 120) -> tuple[int, int, dict]:
    """(exit status, peak MB, stats.json) of the generator on `archives` in a subprocess, killed after
    `timeout` seconds."""
    named = [arg for archive in archives for arg in ("--generate-one", str(archive))]
    done = subprocess.run([sys.executable, "-c", MEASURE, str(timeout), *named, "-o", str(out), *flags],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    status, peak = map(int, done.stdout.split())
    assert status != -1, f"the generator ran past {timeout} s"
    return status, peak, json.loads((out / "stats.json").read_text())


def test_a_small_zip_of_huge_files_costs_little_memory(tmp_path):
    files = {f"pkg/data{i}.py": "x=1\n" * (1 << 18) for i in range(4)}
    files["pkg/k.py"] = KERNEL.format(imports="from pkg.data0 import x", value="x")
    archive = zipball(tmp_path / "owner__repo.zip", files)
    assert archive.stat().st_size < 8192
    status, peak, stats = generate([archive], tmp_path / "out", "--jobs", "1")
    assert status == 0 and peak < 300, peak
    assert stats["counts"]["files_not_parsed_too_many_lines"] == 1 and stats["counts"]["kernels_extracted"] == 1


def test_a_name_bound_20000_times_costs_little_time(tmp_path):
    archive = zipball(tmp_path / "owner__repo.zip", {
        "pkg/data.py": "x=1\n" * 20_000, "pkg/k.py": KERNEL.format(imports="from pkg.data import x", value="x")})
    status, _, stats = generate([archive], tmp_path / "out", "--jobs", "1", timeout=90)
    assert status == 0 and stats["counts"]["not_self_contained_too_many_bindings"] == 1


def test_a_worker_past_its_memory_bound_costs_its_repository(tmp_path):
    names = [f"v{i}" for i in range(10)]
    files = {f"pkg/{name}.py": f"{name} = 1\n" + "y = [1, 2]\n" * 30_000 for name in names}
    files["pkg/k.py"] = KERNEL.format(imports="\n".join(f"from pkg.{n} import {n}" for n in names),
                                      value=" + ".join(names))
    big = zipball(tmp_path / "owner__big.zip", files)
    small = zipball(tmp_path / "owner__small.zip", {"pkg/k.py": KERNEL.format(imports="", value="1")})
    status, peak, stats = generate([big, small], tmp_path / "out", "--jobs", "2", "--worker-memory-mb", "200")
    assert status == 0 and peak < 400, peak  # without the bound: ~730 MB
    rows = [json.loads(line) for line in (tmp_path / "out" / "kernels.jsonl").read_text().splitlines()]
    assert [row["repo"] for row in rows if row["self_contained"]] == ["owner/small"]
