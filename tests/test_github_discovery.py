"""`scrape_github.py --discover pytorch` against the fake server: Python repositories using PyTorch, searched with
the same partitioning, confirmed by an nn.Module subclass in the archive, each manifest line naming the discoveries
that found it, resumable like the Triton discovery."""

from __future__ import annotations

import time

import pytest

from scraper.github.discovery import has_nn_module


@pytest.mark.parametrize("text, expected", [
    ("from torch import nn\nclass A(nn.Module):\n    pass\n", True),
    ("import torch.nn as nn\nclass A(nn.Module, metaclass=M):\n    pass\n", True),
    ("import torch.nn\nclass A(torch.nn.Module):\n    pass\n", True),
    ("import torch as th\nclass A(th.nn.Module):\n    pass\n", True),
    ("from torch import (\n    nn,  # layers\n    optim,\n)\nclass A(nn.Module):\n    pass\n", True),
    ("from torch.nn import Module as Base\nclass A(Base):\n    pass\n", True),
    ("import torch\n\n    class Inner(torch.nn.Module):\n        pass\n", True),  # nested: still a subclass
    ('from torch import nn\nclasses = "("\nclass A(nn.Module):\n    pass\n', True),  # not a class statement
    ("from flax import linen as nn\nclass A(nn.Module):\n    pass\n", False),  # Flax's Module
    ("import torch\nclass A(nn.Module):\n    pass\n", False),  # nn is not bound to torch's
    ("import torchvision as torch\nclass A(torch.nn.Module):\n    pass\n", False),
    ("from torch import nn\nclass A(Module):\n    pass\n", False),
    ("from torch import nn\nclass A(nn.ModuleList):\n    pass\n", False),
    ("from torch import nn\nx = nn.Module()\n", False),  # used, not subclassed
])
def test_which_files_hold_an_nn_module_subclass(text, expected):
    assert has_nn_module(text.encode()) is expected


HOSTILE_TEXTS = {  # 2 MiB each, the generator's cap for one file; each names torch and Module, so none is skipped
    "unclosed_class": b"import torch\nModule\n" + b"class a(\n" * 230_000,
    "unclosed_import": b"import torch\nModule\n" + b"from torch import (\n" * 100_000,
    "spaces_then_classes": b"import torch\nModule\n" + b" " * 1_000_000 + b"class a( " * 100_000,
    "one_import_line": b"import torch\nModule\nimport " + b"a, " * 700_000,
    "many_imports": b"Module\n" + b"import torch as t\n" * 120_000,
}


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_hostile_files_cost_what_plain_ones_do(name):
    text = HOSTILE_TEXTS[name][: 2 << 20]
    started = time.perf_counter()
    assert has_nn_module(text) is False
    assert time.perf_counter() - started < 1.0  # about 0.1 s; patterns over the whole text took 5 s
