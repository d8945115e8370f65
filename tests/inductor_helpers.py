"""Helpers and fixtures for the Inductor stage tests (imported by tests/test_inductor*.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_README = REPO_ROOT / "tests" / "fixtures" / "torch_compile_debug" / "README.md"
# A row of the per-graph table in the fixtures' README: | tcd_x.tar.gz | graph folder | kernels | kernel paths |
_TABLE_ROW = re.compile(r"^\|\s*(tcd_\w+)\.tar\.gz\s*\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*$")


def readme_counts() -> dict[tuple[str, str], tuple[int, int]]:
    """{(archive, graph folder): (kernels, `# kernel path:` comments)} from the fixtures' README table."""
    rows = {}
    for line in FIXTURE_README.read_text(encoding="utf-8").splitlines():
        match = _TABLE_ROW.match(line)
        if match:
            rows[(match[1], match[2])] = (int(match[3]), int(match[4]))
    return rows


def archive_of(path: str | Path) -> str:
    """The fixture archive (tcd_*) a path below the unpacked fixtures belongs to."""
    return next(part for part in Path(path).parts if part.startswith("tcd_"))


def load_manifest(out: Path) -> list[dict]:
    """The lines of `out/kernels.jsonl` as dicts (plain json, not the code under test)."""
    return [json.loads(line) for line in (out / "kernels.jsonl").read_text(encoding="utf-8").splitlines()]


def run_extraction(inputs: list[Path], out: Path, *extra: str) -> int:
    """Run the real CLI's main() in this process."""
    import get_kernels_from_debug_info

    return get_kernels_from_debug_info.main([*map(str, inputs), "-o", str(out), "-q", *extra])


def run_interpreted(script: str, cwd: Path, stdin: str = "", timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python with TRITON_INTERPRET=1 (Triton on CPU tensors), `stdin` as its input."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", script], input=stdin, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def extracted(tcd_roots, tmp_path_factory) -> tuple[Path, list[dict]]:
    """All five fixture archives extracted once: (output folder, its kernels.jsonl lines). Read-only."""
    out = tmp_path_factory.mktemp("inductor_out") / "inductor_kernels"
    assert run_extraction(list(tcd_roots.values()), out) == 0
    return out, load_manifest(out)
