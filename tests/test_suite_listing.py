"""--suite modules' listing (scraper.modules.listing, modules, usage, needs): a repository zip written here, with
library modules, copies in tests / benchmarks / examples / third_party, a test that calls one module with the
only values it accepts, modules importing compiled extensions that are not installed, and a logger set up by a
module-level call. Oracles: the layout of that repository (what is library code, what imports what), and the
listing made without cache and in one process."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest

import run_inductor_suite
from scraper.modules import listing

TOP = "acme-layers-0123abc"
NORM = '''import torch
from torch import nn


class ScaledNorm(nn.Module):
    def __init__(self, dim, n_bins):
        super().__init__()
        assert n_bins == 37, "only the repository's test knows this"
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        assert x.shape[0] == 3, "nor this"
        return self.norm(x)
'''
FILES = {
    "setup.py": "from setuptools import setup\nfrom torch.utils.cpp_extension import CUDAExtension\n"
                "setup(name='layers', ext_modules=[CUDAExtension(name='layers_fast', sources=['x.cu'])])\n",
    "layers/__init__.py": "",
    "layers/norm.py": NORM,
    "layers/fused.py": "import torch\nimport layers_fast\nfrom torch import nn\n\n\nclass Fused(nn.Module):\n"
                       "    def forward(self, x):\n        return layers_fast.run(x)\n",
    "layers/flash.py": "import torch\nimport flash_attn_2_cuda\nfrom torch import nn\n\n\nclass Flash(nn.Module):\n"
                       "    def forward(self, x):\n        return flash_attn_2_cuda.fwd(x)\n",
    "layers/fallback.py": "import torch\nfrom torch import nn\n\ntry:\n    from flash_attn import flash_fn\n"
                          "except ImportError:\n    flash_fn = None\n\n\nclass Fallback(nn.Module):\n"
                          "    def forward(self, x):\n        return x if flash_fn is None else flash_fn(x)\n",
    "layers/lazy.py": "import torch\nfrom torch import nn\n\n\ndef norm_class():\n"
                      "    from layers.norm import ScaledNorm\n    return ScaledNorm\n\n\n"
                      "class Lazy(nn.Module):\n    def forward(self, x):\n"
                      "        return norm_class()(x.shape[-1], 37)(x)\n",
    "layers/log.py": '''import logging
import sys

import torch
from torch import nn

_handler = None


def _setup_logger():
    global _handler
    _handler = logging.StreamHandler(sys.stderr)


_setup_logger()


def get_logger(name):
    logger = logging.getLogger(name)
    logger.addHandler(_handler)
    return logger


logger = get_logger("layers")


class Logged(nn.Module):
    def forward(self, x):
        logger.warning("forward of %s", tuple(x.shape))
        return x * 2
''',
    "tests/test_norm.py": '''import pytest
import torch

from layers.norm import ScaledNorm


@pytest.mark.parametrize("dim", [12, 24])
def test_norm(dim):
    module = ScaledNorm(dim, n_bins=37)
    x = torch.randn(3, 5, dim)
    assert module(x).shape == x.shape
''',
    "tests/helpers.py": "import torch\nfrom torch import nn\n\n\nclass TestNet(nn.Module):\n"
                        "    def forward(self, x):\n        return x + 1\n",
    "benchmarks/bench_norm.py": "import torch\nfrom torch import nn\n\n\nclass BenchNet(nn.Module):\n"
                                "    def forward(self, x):\n        return x - 1\n",
    "examples/demo.py": "import torch\nfrom torch import nn\n\n\nclass DemoNet(nn.Module):\n"
                        "    def forward(self, x):\n        return x * 3\n",
    "third_party/copy/norm.py": NORM,
}
LIBRARY = {"layers/norm.py:ScaledNorm", "layers/log.py:Logged", "layers/fallback.py:Fallback"}
SKIPPED = {"layers/fused.py:Fused": "missing extension layers_fast",
           "layers/flash.py:Flash": "missing extension flash_attn_2_cuda",
           "layers/lazy.py:Lazy": "missing package layers"}  # imports its own package in a function


def write_zip(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"{TOP}/{name}", text)
    return path


@pytest.fixture
def repos(tmp_path) -> Path:
    folder = tmp_path / "repos"
    folder.mkdir()
    write_zip(folder / "acme__layers.zip", FILES)
    return folder


def listed(out: Path, repos: Path, *extra: str) -> dict[str, str]:
    """--list of the modules suite: {name without the repository: comment}."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_inductor_suite.main(["--suite", "modules", "--repos", str(repos), "--out", str(out), "--list",
                                        "-q", *extra]) == 0
    lines = [line.split("  # ") for line in printed.getvalue().splitlines()]
    return {name.removeprefix("acme/layers/"): comment for name, comment in lines}


def test_per_repo_prefers_library_code_that_can_run(tmp_path, repos):
    chosen = listed(tmp_path / "o", repos, "--per-repo", "3", "--list-jobs", "1")
    assert set(chosen) == LIBRARY and set(chosen.values()) == {"library"}
    everything = listed(tmp_path / "o", repos, "--list-jobs", "1")
    assert {name: comment.split(", ")[0] for name, comment in everything.items()} == {
        **{name: "library" for name in LIBRARY | set(SKIPPED)}, "tests/helpers.py:TestNet": "test",
        "benchmarks/bench_norm.py:BenchNet": "benchmark", "examples/demo.py:DemoNet": "example",
        "third_party/copy/norm.py:ScaledNorm": "vendored"}
    for name, reason in SKIPPED.items():
        assert everything[name] == f"library, skipped: {reason}"
    # Runnable code of any kind before modules that cannot run here; a copy of a library class last.
    six = listed(tmp_path / "o", repos, "--per-repo", "6", "--list-jobs", "1")
    assert set(six) == LIBRARY | {"tests/helpers.py:TestNet", "benchmarks/bench_norm.py:BenchNet",
                                   "examples/demo.py:DemoNet"}


def test_dry_run_uses_the_repository_test_and_skips_before_the_gpu(tmp_path, repos):
    out = tmp_path / "tcd"
    run_inductor_suite.main(["--suite", "modules", "--repos", str(repos), "--out", str(out), "--gpus", "none",
                             "--device", "cpu", "--backend", "none", "-q", "--list-jobs", "1"])
    rows = {json.loads(line)["model"].removeprefix("acme/layers/"): json.loads(line)
            for line in (out / "suite" / "manifest.jsonl").read_text().splitlines()}
    norm = rows["layers/norm.py:ScaledNorm"]
    assert norm["status"] == "ok", norm.get("inference")
    assert norm["init_kwargs"]["n_bins"] == "37" and norm["input_shapes"] == [[3, 5, 12]]
    assert norm["inference"]["init"] == norm["inference"]["inputs"] == "usage tests/test_norm.py:9"
    assert rows["layers/log.py:Logged"]["status"] == "ok"  # the closure carries `_setup_logger()`
    assert rows["layers/fallback.py:Fallback"]["status"] == "ok"  # its guarded import kept with its fallback
    for name, reason in SKIPPED.items():
        row = rows[name]
        assert row["status"] == "skipped" and row["skip_reason"] == reason == row["error"]
        assert row["log"] is None and row["program"] is None and row["gpu"] is None  # no worker ran
    stats = json.loads((out / "suite" / "stats.json").read_text())["counts"]
    assert stats["models_skipped"] == 3 and stats["models_skipped_missing_extension_flash_attn_2_cuda"] == 1


def test_listing_is_cached_per_archive(tmp_path, repos, monkeypatch):
    listed(tmp_path / "o", repos, "--list-jobs", "1")
    cached = list((tmp_path / "o" / "suite" / "listing").glob("acme__layers.zip.*.json"))
    assert len(cached) == 1
    discovered = []
    monkeypatch.setattr(listing, "discover", lambda *a: discovered.append(a) or pytest.fail("listed again"))
    again = listed(tmp_path / "o", repos, "--per-repo", "1", "--list-jobs", "1")
    assert len(again) == 1 and not discovered
    monkeypatch.undo()
    write_zip(repos / "acme__layers.zip", {**FILES, "layers/extra.py": FILES["examples/demo.py"]})
    assert "layers/extra.py:DemoNet" in listed(tmp_path / "o", repos, "--list-jobs", "1")
    assert [p.name for p in (tmp_path / "o" / "suite" / "listing").glob("acme__layers.zip.*.json")] != \
        [p.name for p in cached]  # one file per archive: the stale listing replaced


def test_a_new_code_version_lists_again(tmp_path, repos, monkeypatch):
    cache = tmp_path / "cache"
    first = listing.list_repositories(repos, cache, jobs=1)
    monkeypatch.setattr(listing, "_CODE_VERSION", ["another version"])
    calls = []
    real = listing.discover
    monkeypatch.setattr(listing, "discover", lambda *a: calls.append(a) or real(*a))
    assert [asdict(x) for x in listing.list_repositories(repos, cache, jobs=1)] == [asdict(x) for x in first]
    assert len(calls) == 1


def test_parallel_listing_equals_the_serial_one(tmp_path, repos):
    write_zip(repos / "other__copy.zip", {name: text for name, text in FILES.items() if "test" not in name})
    serial = [asdict(x) for x in listing.list_repositories(repos, None, jobs=1)]
    parallel = [asdict(x) for x in listing.list_repositories(repos, None, jobs=2)]
    assert parallel == serial and [x["archive"] for x in serial] == ["acme__layers.zip", "other__copy.zip"]
    names = {entry["class_name"] for entry in serial[0]["entries"]}
    assert names == {"ScaledNorm", "Fused", "Flash", "Lazy", "Logged", "Fallback", "TestNet", "BenchNet", "DemoNet"}
    assert serial[0]["extensions"] == ["layers_fast"]


def test_requested_names_that_are_not_candidates_are_named(tmp_path, repos, capfd):
    chosen = listed(tmp_path / "o", repos, "--list-jobs", "1", "--models",
                    "acme/layers/layers/norm.py:ScaledNorm,acme/layers/layers/gone.py:Gone")
    assert set(chosen) == {"layers/norm.py:ScaledNorm"}
    warnings = [line for line in capfd.readouterr().err.splitlines() if "not candidates" in line]
    assert len(warnings) == 1 and warnings[0].endswith("acme/layers/layers/gone.py:Gone")
