"""Shared test fixtures. Stage-specific helpers live in their own tests/<stage>_*.py modules."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TCD_ARCHIVES = sorted((FIXTURES / "torch_compile_debug").glob("tcd_*.tar.gz"))

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def unpack_tcd(dest: Path) -> dict[str, Path]:
    """Unpack every fixture archive into dest/<archive name>/; returns {archive name: its torch_compile_debug}."""
    roots = {}
    for archive in TCD_ARCHIVES:
        name = archive.name.removesuffix(".tar.gz")
        target = dest / name
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        roots[name] = target / "torch_compile_debug"
    return roots


@pytest.fixture(scope="session")
def tcd_roots(tmp_path_factory) -> dict[str, Path]:
    """The real torch_compile_debug folders of tests/fixtures, unpacked once per session (read-only use)."""
    return unpack_tcd(tmp_path_factory.mktemp("tcd"))
