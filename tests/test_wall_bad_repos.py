"""Issue 23, route 10: one bad repository is that repository's counted error, and the others go on. The hostile
inputs, each a local clone in the download folder beside a good one: a dangling `.py` symlink (listing's cache key
stat-ed every file: `--suite modules` exited 2 for every repository), a symlink loop (`RuntimeError: Symlink loop`
was not caught: the generator stopped) and a kernel 1,200 folders deep (the recursive os.walk raised
RecursionError)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import run_inductor_suite
from scraper.generator.main import main as generator_main
from scraper.modules import listing

KERNEL = '''import triton
import triton.language as tl


@triton.jit
def {name}(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n) * 2, mask=offsets < n)
'''
NET = "import torch\nfrom torch import nn\n\n\nclass {name}(nn.Module):\n    def forward(self, x):\n        return x * 2\n"


def deep_folder(folder: Path, depth: int) -> str:
    """`depth` nested folders `d` under `folder` (made through descriptors); their path below `folder`."""
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    return "/".join(["d"] * depth)


@pytest.fixture
def downloads(tmp_path):
    """A download folder of local clones: owner__good, and three bad ones that also hold a good kernel."""
    folder = tmp_path / "downloads"
    for name in ("owner__good", "owner__dangling", "owner__loop", "owner__deep"):
        (folder / name / "pkg").mkdir(parents=True)
        kernel = name.split("__")[1]
        (folder / name / "pkg" / "ops.py").write_text(KERNEL.format(name=f"{kernel}_kernel") +
                                                     NET.format(name=f"{kernel.title()}Net"))
    (folder / "owner__dangling" / "pkg" / "gone.py").symlink_to(folder / "nowhere.py")
    (folder / "owner__loop" / "pkg" / "a.py").symlink_to("b.py")
    (folder / "owner__loop" / "pkg" / "b.py").symlink_to("a.py")
    (folder / "owner__loop" / "pkg" / "round").symlink_to("..")
    inner = deep_folder(folder / "owner__deep", 1200)
    fd = os.open(folder / "owner__deep" / inner, os.O_RDONLY)
    os.close(os.open("deep.py", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    yield folder
    subprocess.run(["rm", "-rf", str(tmp_path)], check=True)  # pytest's own clean-up recurses


def test_the_generator_reads_every_good_repository(downloads, tmp_path):
    out = tmp_path / "generated"
    code = generator_main(["--generate-all", "--download-dir", str(downloads), "-o", str(out), "--jobs", "2", "-q"])
    assert code == 0
    names = sorted(json.loads(line)["name"] for line in (out / "kernels.jsonl").read_text().splitlines())
    assert names == ["dangling_kernel", "deep_kernel", "good_kernel", "loop_kernel"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["repositories"] == 4
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {(row["archive"], row["path"]) for row in rejects} >= {
        ("owner__dangling", "pkg/gone.py"), ("owner__loop", "pkg/a.py"), ("owner__loop", "pkg/b.py")}


def test_the_listing_reads_every_good_repository(downloads, tmp_path):
    found = {entry.archive: entry for entry in listing.list_repositories(downloads, tmp_path / "cache", jobs=1)}
    assert sorted(found) == ["owner__dangling", "owner__deep", "owner__good", "owner__loop"]
    classes = {archive: [e["class_name"] for e in entry.entries] for archive, entry in found.items()}
    assert classes == {"owner__dangling": ["DanglingNet"], "owner__deep": ["DeepNet"], "owner__good": ["GoodNet"],
                       "owner__loop": ["LoopNet"]}


def test_suite_modules_lists_every_good_repository(downloads, tmp_path, capsys):
    code = run_inductor_suite.main(["--suite", "modules", "--repos", str(downloads), "--out", str(tmp_path / "tcd"),
                                    "--list", "--list-jobs", "1", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert all(f"{kind.title()}Net" in printed for kind in ("good", "dangling", "loop", "deep")), printed
