"""The REAL worker (scraper/worker/run.py) on CPU, without torch.compile (--backend none: the program is built
and run eagerly), so the model-side logic is checked here: the programs written for timm / transformers models
(against small stand-in `timm` and `transformers` modules placed first on PYTHONPATH), the nn.Module suite's
closure from a real repository fixture, constructor and input inference, and failures by phase."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import run_inductor_suite

REPO_ROOT = Path(__file__).resolve().parent.parent
REPOS = REPO_ROOT / "tests" / "fixtures" / "repos"

STUB_TIMM = '''
import torch
from torch import nn

def create_model(name, pretrained=True):
    assert pretrained is False, "the suite must not download weights"
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 7))
    model.pretrained_cfg = {"input_size": (3, 20, 24)}
    return model
'''

STUB_TRANSFORMERS = '''
import types
import torch
from torch import nn

class TinyConfig:
    def __init__(self):
        self.num_hidden_layers, self.vocab_size, self.hidden = 12, 50, 6
        self.max_position_embeddings = -1   # as XLNet: no limit
        self.pad_token_id, self.eos_token_id, self.is_encoder_decoder = None, 1, False

class TinyForCausalLM(nn.Module):
    config_class = TinyConfig
    main_input_name = "input_ids"
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(nn.Linear(config.hidden, config.hidden) for _ in range(config.num_hidden_layers))
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab_size)
    def forward(self, input_ids, labels=None):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        logits = self.head(h)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return types.SimpleNamespace(logits=logits, loss=loss, seen=(tuple(input_ids.shape), labels is not None))
'''

CONV = '''
import torch
from torch import nn

class ConvBlock(nn.Module):
    def __init__(self, channels, dropout):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.drop = nn.Dropout(dropout)
    def forward(self, x):
        return self.drop(torch.relu(self.conv(x))) + x
'''

BROKEN_IMPORT = "import torch\nfrom torch import nn\nimport not_a_module_anywhere\nclass Net(nn.Module):\n    pass\n"
BAD_FORWARD = ("import torch\nfrom torch import nn\nclass Net(nn.Module):\n"
               "    def forward(self, x):\n        raise ValueError('never works')\n")


def manifest(out: Path) -> dict[str, dict]:
    lines = (out / "suite" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["model"]: row for row in map(json.loads, lines)}


def run_cpu(out: Path, *args: str) -> int:
    return run_inductor_suite.main(["--out", str(out), "--gpus", "none", "--device", "cpu", "--backend", "none",
                                    "-q", *args])


@pytest.fixture
def stubs(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "stubs"
    folder.mkdir()
    (folder / "timm.py").write_text(STUB_TIMM, encoding="utf-8")
    (folder / "transformers.py").write_text(STUB_TRANSFORMERS, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(folder))  # the worker's environment starts from ours
    return folder


def test_timm_and_transformers_programs_build_and_run(tmp_path, stubs):
    out = tmp_path / "tcd"
    assert run_cpu(out, "--suite", "timm", "--models", "stubnet:3") == 0
    row = manifest(out)["stubnet"]
    assert row["status"] == "ok" and row["device"] == "cpu" and row["phase"] is None
    # Conv(3->5, k3) + Linear(5->7): 3*5*9+5 + 5*7+7 parameters.
    assert row["parameters"] == 3 * 5 * 9 + 5 + 5 * 7 + 7
    program = (out / row["program"]).read_text()
    assert "MODEL = 'stubnet'" in program and "BATCH_SIZE = 3" in program
    assert row["versions"]["torch"] and row["versions"]["python"] == sys.version.split()[0]

    assert run_cpu(out, "--suite", "huggingface", "--models", "TinyForCausalLM:2", "--mode", "training",
                   "--seq-len", "9") == 0
    row = manifest(out)["TinyForCausalLM"]
    assert row["status"] == "ok"
    # 12 layers in the config, capped at --hf-layers 2: embed 50*6, head 6*50+50, 2 layers of 6*6+6.
    assert row["parameters"] == 50 * 6 + 6 * 50 + 50 + 2 * (6 * 6 + 6)
    # The program alone builds the same model: run its build() in a fresh interpreter.
    check = ("import importlib.util,sys; s=importlib.util.spec_from_file_location('p', sys.argv[1]); "
             "m=importlib.util.module_from_spec(s); s.loader.exec_module(m); model,a,k=m.build('cpu'); "
             "print(len(model.layers), tuple(k['input_ids'].shape), sorted(k), model.training)")
    shown = subprocess.run([sys.executable, "-c", check, str(out / row["program"])], capture_output=True,
                           text=True, env={"PYTHONPATH": str(stubs), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert shown.stdout.split("\n")[0] == "2 (2, 9) ['input_ids', 'labels'] True", shown.stderr


def test_a_missing_library_stops_the_suite_before_any_worker(tmp_path):
    """Without timm the suite says so and exits 2 before starting a worker (it used to start one per model and
    record each a build failure, 17 s apiece)."""
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed")
    out = tmp_path / "tcd"
    code = run_inductor_suite.main(["--out", str(out), "--gpus", "none", "--device", "cpu", "--backend", "none",
                                    "-q", "--suite", "timm", "--models", "resnet18"])
    assert code == 2 and not (out / "suite" / "manifest.jsonl").exists()


def test_modules_from_a_repository_with_their_closure(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Block calls a @triton.jit kernel: on CPU, interpreted
    out = tmp_path / "tcd"
    assert run_cpu(out, "--suite", "modules", "--repos", str(REPOS)) == 0
    row = manifest(out)["acme-kernels/acme/layers.py:Block"]
    assert row["status"] == "ok"
    assert row["module"] == {"repo": "acme-kernels", "path": "acme/layers.py", "license": "MIT", "lineno": 9,
                             "class_name": "Block", "kind": "library"}
    # Block is Linear(HIDDEN=8, 8): only inputs whose last dimension is 8 work.
    assert row["init_kwargs"] == {} and row["input_shapes"][0][-1] == 8
    source = (out / "suite" / "sources" / "acme-kernels_acme_layers_py_Block.py").read_text()
    assert "def add_kernel(" in source and "class Block(nn.Module):" in source and "from ." not in source
    program = (out / row["program"]).read_text()
    assert program.startswith(source.rstrip("\n") + "\n")  # the module's own source, then build()
    ran = subprocess.run([sys.executable, str(out / row["program"])], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.strip() == "Tensor", ran.stderr


def test_modules_file_inference_and_failures_by_phase(tmp_path):
    modules_file = tmp_path / "modules.jsonl"
    entries = [{"name": "conv", "class_name": "ConvBlock", "code": CONV, "repo": "me/convs"},
               {"name": "broken", "class_name": "Net", "code": BROKEN_IMPORT},
               {"name": "bad_forward", "class_name": "Net", "code": BAD_FORWARD},
               {"name": "no_class", "class_name": "Missing", "code": CONV}]
    modules_file.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    out = tmp_path / "tcd"
    assert run_cpu(out, "--suite", "modules", "--modules-file", str(modules_file)) == 1
    rows = manifest(out)
    conv = rows["conv"]
    # The constructor's arguments as the expressions the program writes: sizes 64, dropout off.
    assert conv["status"] == "ok" and conv["init_kwargs"] == {"channels": "64", "dropout": "0.0"}
    assert conv["input_shapes"][0][1] == 64  # Conv2d(channels=64, ...) wants 64 input channels
    assert conv["module"] == {"repo": "me/convs", "class_name": "ConvBlock"}
    assert rows["broken"]["phase"] == "import"
    assert rows["broken"]["error"] == "ModuleNotFoundError: No module named 'not_a_module_anywhere'"
    assert rows["bad_forward"]["phase"] == "inputs" and "never works" in rows["bad_forward"]["error"]
    assert rows["no_class"]["phase"] == "import" and "Missing is not an nn.Module class" in rows["no_class"]["error"]
