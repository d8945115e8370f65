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


# Modules whose tests start sandboxed workers (bubblewrap, the wall, the suite's model workers): the `sandbox`
# marker, so `pytest -m "not sandbox and not slow"` is a quick loop while CI runs everything (README). By module,
# as the tests mirror the packages: scraper/wall, scraper/sandbox, scraper/validate, scraper/suite, the demo.
SANDBOX_MODULES = ("test_sandbox_", "test_wall_", "test_validate_", "test_suite", "test_demo", "test_cli_interrupt")
# Modules whose shared fixture alone takes tens of seconds (a stage-1 run over every fixture, a dataset build):
# `slow` for each of their tests, beside the tests marked slow one by one.
SLOW_MODULES = {"test_kernel_pairs", "test_pairs_h200", "test_pairs", "test_kernelbench", "test_inductor",
                "test_dataset_e2e", "test_dataset_tasks", "test_torchtune", "test_dataset_splits",
                "test_inductor_interpret", "test_default_folders", "test_build", "test_report", "test_same_outputs"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.stem
        if module.startswith(SANDBOX_MODULES):
            item.add_marker(pytest.mark.sandbox)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def fixture_corpus(tmp_path_factory):
    """(root, corpus): one corpus built by the real stages on the fixtures for the whole session
    (tests/corpus_helpers.py, every plain debug fixture). Read it as it is; a test that changes it copies it."""
    from corpus_helpers import PLAIN_ALL, build_corpus

    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root, PLAIN_ALL)
