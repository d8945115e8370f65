"""A small TorchBench-shaped checkout written by the tests (tests/test_suite_torchbench.py): the same module layout
and model API as github.com/pytorch/benchmark (torchbenchmark/__init__.py importing the top-level utils/,
torchbenchmark/util/model.py with a BenchmarkModel base, torchbenchmark/models/<name>/__init__.py with a `Model`
class whose get_module() returns (model, example_inputs)), written from scratch: none of TorchBench's code.

Each model stands for one case the suite must handle; the numbers the tests check (parameters, batch sizes) are
the ones written here."""

from __future__ import annotations

from pathlib import Path

INIT = '''
import os
import sys
from pathlib import Path

REPO_PATH = Path(os.path.abspath(__file__)).parent.parent
DATA_PATH = os.path.join(REPO_PATH, "torchbenchmark", "data", ".data")

sys.path.insert(0, str(REPO_PATH))
from utils import TORCH_DEPS  # noqa: E402  (TorchBench's package needs the repository's utils/ folder too)
'''

UTILS = 'TORCH_DEPS = ["numpy", "torch"]\n'

MODEL_BASE = '''
import argparse


class BenchmarkModel:
    """What the suite relies on of TorchBench's base class: test, device, batch size rules, --precision."""

    DEFAULT_TRAIN_BSIZE = None
    DEFAULT_EVAL_BSIZE = None

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        assert test in ("train", "eval"), test
        self.test, self.device = test, device
        parser = argparse.ArgumentParser()
        parser.add_argument("--precision", default="fp16" if device == "cuda" else "fp32")
        self.precision = parser.parse_args(extra_args).precision
        assert self.precision == "fp32", "the suite casts dtypes itself"
        if batch_size and getattr(self, "ALLOW_CUSTOMIZE_BSIZE", True):
            self.batch_size = batch_size
        else:
            self.batch_size = self.DEFAULT_TRAIN_BSIZE if test == "train" else self.DEFAULT_EVAL_BSIZE
        if not self.batch_size:
            raise NotImplementedError(f"Model's DEFAULT_{test.upper()}_BSIZE is not implemented.")

    def get_module(self):
        raise NotImplementedError("get_module")
'''

HEADER = '''import os
import torch
from torch import nn
from torchbenchmark import DATA_PATH
from torchbenchmark.util.model import BenchmarkModel
'''

MODELS = {
    # Conv2d(3->4, k3) + Linear(4->2): 3*4*9+4 + 4*2+2 = 122 parameters; images of 3x8x8.
    "tinyconv": HEADER + '''
class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 3
    DEFAULT_TRAIN_BSIZE = 5

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        super().__init__(test=test, device=device, batch_size=batch_size, extra_args=extra_args)
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(4, 2)).to(device)
        self.example_inputs = (torch.randn(self.batch_size, 3, 8, 8, device=device),)

    def get_module(self):
        return self.model, self.example_inputs
''',
    # Embedding(11, 6) + Linear(6 -> 11): 66 + 77 = 143 parameters; inputs as keyword arguments (a dict).
    "tinylm": HEADER + '''
class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(11, 6), nn.Linear(6, 11)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.embed(input_ids))
        loss = None if labels is None else nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return {"logits": logits, "loss": loss}


class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 2
    DEFAULT_TRAIN_BSIZE = 4

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        super().__init__(test=test, device=device, batch_size=batch_size, extra_args=extra_args)
        self.model = LM().to(device)
        ids = torch.randint(0, 11, (self.batch_size, 7), device=device)
        self.example_inputs = {"input_ids": ids}
        if test == "train":
            self.example_inputs["labels"] = ids

    def get_module(self):
        return self.model, self.example_inputs
''',
    # Refuses other batch sizes, like TorchBench models with ALLOW_CUSTOMIZE_BSIZE = False. Linear(4, 4): 20.
    "fixed_batch": HEADER + '''
class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 2
    ALLOW_CUSTOMIZE_BSIZE = False

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        assert batch_size is None, "this model refuses a batch size"
        super().__init__(test=test, device=device, batch_size=batch_size, extra_args=extra_args)
        self.model = nn.Linear(4, 4).to(device)

    def get_module(self):
        return self.model, [torch.randn(self.batch_size, 4, device=self.device)]
''',
    # Its forward takes gradients itself, as TorchBench's maml (PyTorch runs it with grad enabled).
    "maml": HEADER + '''
class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        (grad,) = torch.autograd.grad((self.weight * x).sum(), self.weight)
        return x - grad


class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 1

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        super().__init__(test=test, device=device, batch_size=batch_size, extra_args=extra_args)
        self.model = Inner().to(device)

    def get_module(self):
        return self.model, (torch.randn(self.batch_size, 3, device=self.device),)
''',
    # Loads pretrained weights: torch.hub would download them. Linear(3, 3): 12 parameters.
    "pretrained_net": HEADER + '''
WEIGHTS_URL = "https://download.example.invalid/checkpoints/pretrained_net-0123abcd.pth"


class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 2

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        super().__init__(test=test, device=device, batch_size=batch_size, extra_args=extra_args)
        self.model = nn.Linear(3, 3)
        self.model.load_state_dict(torch.hub.load_state_dict_from_url(WEIGHTS_URL, progress=False))
        self.model.to(device)

    def get_module(self):
        return self.model, (torch.randn(self.batch_size, 3, device=self.device),)
''',
    # Reads a data set that TorchBench's install.py would have put under torchbenchmark/data/.data/.
    "needs_data": HEADER + '''
class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 2

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        super().__init__(test=test, device=device, batch_size=batch_size, extra_args=extra_args)
        with open(os.path.join(DATA_PATH, "needs_data_inputs", "train.csv")) as handle:
            self.rows = handle.read()
''',
    # Imports a package that is not installed.
    "needs_pkg": HEADER + '''
import not_installed_pkg_xyz  # noqa: E402,F401


class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 2
''',
    # TorchBench's way of saying "not here": NotImplementedError.
    "cuda_only": HEADER + '''
class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 2

    def __init__(self, test, device, batch_size=None, extra_args=[]):
        if device != "cuda":
            raise NotImplementedError("Model requires CUDA")
        super().__init__(test=test, device=device, batch_size=batch_size, extra_args=extra_args)
''',
    # A real failure: neither a download nor a package.
    "broken": HEADER + '''
class Model(BenchmarkModel):
    DEFAULT_EVAL_BSIZE = 2

    def get_module(self):
        raise ValueError("broken on purpose")
''',
}

RUNNABLE = ("fixed_batch", "maml", "tinyconv", "tinylm")


def write_checkout(root: Path) -> Path:
    """Write the TorchBench-shaped checkout under `root` (the repository root); returns `root`."""
    files = {
        "utils/__init__.py": UTILS,
        "torchbenchmark/__init__.py": INIT,
        "torchbenchmark/util/__init__.py": "",
        "torchbenchmark/util/model.py": MODEL_BASE,
        "torchbenchmark/models/__init__.py": "",
        "torchbenchmark/models/ADDING_MODELS.md": "how to add a model\n",
        "torchbenchmark/models/fb/__init__.py": "",  # internal models: not listed
        "torchbenchmark/models/not_a_model/README.md": "no __init__.py: not a model\n",
        "torchbenchmark/canary_models/__init__.py": "",
        "torchbenchmark/data/index.yaml": "INPUT_TARBALLS:\n  - needs_data_inputs.tar.gz\n",
    }
    files.update({f"torchbenchmark/models/{name}/__init__.py": text for name, text in MODELS.items()})
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
