"""Fixtures for the pair tests (tests/test_pairs*.py, tests/test_dataset_tasks.py): the real debug roots of
tests/fixtures unpacked, extracted with get_kernels_from_debug_info.py as they are (debug roots made before the
pairing record existed), and a copy of the modules run given the pairing record its worker would write today
(recorded on CPU with aot_eager from the fixture's own programs: the same Dynamo graph, so the same placeholders in
the same order as on the GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITE_ARCHIVES = {name: REPO_ROOT / "tests" / "fixtures" / "suite_run" / f"{name}.tar.gz"
                  for name in ("suite_run", "suite_modules")}
MODULES_MANIFEST = "suite/manifest-0-of-15.jsonl"
# What the modules fixture's models got when a test gives them an accuracy check (scraper.accuracy).
ACCURACY = {"timm-src/timm/layers/eca.py:EcaModule": ("pass", 2.5e-7),
            "timm-src/timm/layers/activations_me.py:HardMishMe": ("fail", 0.5)}


def unpack(name: str, dest: Path) -> Path:
    with tarfile.open(SUITE_ARCHIVES[name]) as tar:
        tar.extractall(dest, filter="data")
    return dest / name


def extract(inputs: list[Path], out: Path) -> Path:
    import get_kernels_from_debug_info

    assert get_kernels_from_debug_info.main([*map(str, inputs), "-o", str(out), "-q"]) == 0
    return out


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_program(path: Path):
    spec = importlib.util.spec_from_file_location(f"program_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_pairings(root: Path) -> None:
    """Give every ok model of a modules debug root the pairing record (and the accuracy of ACCURACY) its worker
    writes today, in its manifest line."""
    import torch

    from scraper.worker.recording import GraphRecorder

    manifest = root / MODULES_MANIFEST
    entries = read_lines(manifest)
    for entry in entries:
        if entry["status"] != "ok" or not entry["kernels"]:
            continue
        model, args, kwargs = load_program(root / entry["program"]).build("cpu")
        torch._dynamo.reset()
        recorder = GraphRecorder("aot_eager")
        with torch.no_grad():
            output = torch.compile(model, backend=recorder)(*args, **kwargs)
        pairing = recorder.finish(model, args, kwargs, output)
        pairing["kernels"] = {"by_file": {}, "by_name": {}}  # the H100 run's chosen configs were not kept
        pairing["graphs"][0]["aot"][0]["folder"] = entry["graphs"][0]
        relative = entry["program"].replace("suite/programs/", "suite/pairing/").removesuffix(".py") + ".json"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(json.dumps(pairing), encoding="utf-8")
        entry["pairing"] = relative
        if entry["model"] in ACCURACY:
            entry["accuracy"], entry["max_error"] = ACCURACY[entry["model"]]
            entry["accuracy_detail"] = {"tolerance": 1e-3}
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")


def run_interpreted(script: str, cwd: Path, args: tuple = (), timeout: int = 900) -> subprocess.CompletedProcess:
    """`script` (with `args`) in a fresh Python with TRITON_INTERPRET=1 (Triton kernels on CPU tensors)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def suite_roots(tmp_path_factory) -> dict[str, Path]:
    """The two suite fixtures unpacked once (read-only)."""
    base = tmp_path_factory.mktemp("suite_fixtures")
    return {name: unpack(name, base) for name in SUITE_ARCHIVES}


@pytest.fixture(scope="session")
def old_pairs(tcd_roots, suite_roots, tmp_path_factory) -> Path:
    """Every fixture debug root extracted as it is: the Inductor stage's output folder (read-only)."""
    inputs = [*tcd_roots.values(), suite_roots["suite_run"], suite_roots["suite_modules"]]
    return extract(inputs, tmp_path_factory.mktemp("old") / "inductor_kernels")


@pytest.fixture(scope="session")
def recorded_root(suite_roots, tmp_path_factory) -> Path:
    """A copy of the modules fixture with pairing records and accuracy in its manifest."""
    root = Path(shutil.copytree(suite_roots["suite_modules"], tmp_path_factory.mktemp("recorded") / "tcd"))
    record_pairings(root)
    return root


@pytest.fixture(scope="session")
def recorded_pairs(recorded_root, tmp_path_factory) -> Path:
    """The recorded modules root extracted (read-only)."""
    return extract([recorded_root], tmp_path_factory.mktemp("recorded_out") / "inductor_kernels")
