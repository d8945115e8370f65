"""Issue 23, route 8: listing --suite modules candidates is linear in what it reads, and each repository has a
time limit. The hostile inputs: one 40 KB line `from aaaa…` with no ` import` (a regular expression over the text
backtracked quadratically: the review's 150 KB line ran for minutes), a chain of 3,000 classes each deriving from
the next (the fixed point over same-file bases was quadratic), and a repository too large to list in the time
given, beside one that lists at once."""

from __future__ import annotations

import ast
import time
import zipfile
from types import SimpleNamespace

from scraper.modules import listing, needs

NET = "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"


def test_a_long_from_line_is_read_in_linear_time():
    files = [SimpleNamespace(path="pkg/mod.py", text="from " + "a" * 40_000 + "\nimport einops\n"),
             SimpleNamespace(path="pkg/other.py", text="import torch\ndef f():\n    import flash_attn\n")]
    started = time.monotonic()
    found = needs.external_imports(files)
    assert time.monotonic() - started < 2
    assert found == {"einops", "torch"}  # flash_attn is imported inside a function only


def test_a_chain_of_classes_is_decided_in_linear_time():
    count = 3000
    code = "from torch import nn\n" + "".join(f"class C{i}(C{i + 1}):\n    pass\n" for i in range(count))
    code += f"class C{count}(nn.Module):\n    def forward(self, x):\n        return x\n"
    tree = ast.parse(code)
    started = time.monotonic()
    found = listing.module_classes(tree)
    assert time.monotonic() - started < 1
    assert len(found) == count + 1


def blocks(count: int) -> str:
    """A file of `count` nn.Modules, each with a helper its closure copies."""
    return "import torch\nfrom torch import nn\n" + "".join(
        f"def helper{i}(x):\n    return x * {i}\n\nclass Block{i}(nn.Module):\n    def forward(self, x):\n"
        f"        return helper{i}(x)\n\n" for i in range(count))


def test_a_repository_past_its_time_limit_is_its_own_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "big__blocks.zip", "w") as archive:
        archive.writestr("big-blocks-0123abc/blocks/all.py", blocks(3000))
    with zipfile.ZipFile(tmp_path / "small__net.zip", "w") as archive:
        archive.writestr("small-net-0123abc/net/model.py", NET)
    started = time.monotonic()
    listings = {found.archive: found for found in listing.list_repositories(tmp_path, None, jobs=1, seconds=2)}
    assert time.monotonic() - started < 20
    assert "took longer than 2 s" in listings["big__blocks.zip"].error
    assert listings["small__net.zip"].error is None and [e["class_name"] for e in listings["small__net.zip"].entries] \
        == ["Net"]
