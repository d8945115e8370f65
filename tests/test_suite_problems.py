"""The KernelBench problems the REAL worker writes beside its programs (scraper.kernelbench), for timm and
transformers models (small stand-in libraries, as tests/test_suite_worker.py) and for a scraped module that is
itself called `Model`: each runs in a fresh interpreter as `Model(*get_init_inputs())(*get_inputs())` and equals
the output of its program's own build() (the oracle: the program, run eagerly)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import run_inductor_suite
from test_suite_worker import STUB_TIMM, STUB_TRANSFORMERS

CLASH = '''
import torch
from torch import nn

class Model(nn.Module):           # the name the interface wants for itself
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
    def forward(self, x):
        return self.fc(x).relu(), x.sum()

def get_inputs():                  # a scraped helper of the same name as the interface's
    return "not the interface's"
'''

COMPARE = textwrap.dedent("""
    import importlib.util, json, sys, torch
    def load(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    problem, program = load(sys.argv[1], "problem"), load(sys.argv[2], "program")
    with torch.no_grad():
        got = problem.Model(*problem.get_init_inputs())(*problem.get_inputs())
        model, args, kwargs = program.build("cpu")
        want = model(*args, **kwargs)
    if not isinstance(want, (torch.Tensor, tuple)):  # the stand-in transformers model returns a namespace
        want = want.logits
    if isinstance(want, tuple):  # several tensors: the problem returns them as one (KernelBench compares one)
        want = torch.cat([t.reshape(-1).to(torch.float32) for t in want])
    print(json.dumps([int(isinstance(got, torch.Tensor)), torch.equal(got, want), got.shape == want.shape]))
""")


@pytest.fixture
def stubs(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "stubs"
    folder.mkdir()
    (folder / "timm.py").write_text(STUB_TIMM, encoding="utf-8")
    (folder / "transformers.py").write_text(STUB_TRANSFORMERS, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


def run_cpu(out: Path, *args: str) -> dict:
    assert run_inductor_suite.main(["--out", str(out), "--gpus", "none", "--device", "cpu", "--backend", "none",
                                    "-q", *args]) == 0
    return {row["model"]: row for row in map(json.loads, (out / "suite" / "manifest.jsonl").read_text()
                                              .splitlines())}


def compare(out: Path, row: dict, pythonpath: str) -> list:
    done = subprocess.run([sys.executable, "-c", COMPARE, str(out / row["problem"]), str(out / row["program"])],
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_timm_and_transformers_problems_match_their_programs(tmp_path, stubs):
    out = tmp_path / "tcd"
    rows = run_cpu(out, "--suite", "timm", "--models", "stubnet:2")
    rows.update(run_cpu(out, "--suite", "huggingface", "--models", "TinyForCausalLM:2", "--seq-len", "5"))
    assert rows["stubnet"]["problem"] == "suite/problems/timm/inference-float32/stubnet.py"
    assert compare(out, rows["stubnet"], str(stubs)) == [1, True, True]
    # the stand-in returns a namespace: its one tensor (loss is None without labels; `seen` holds no tensor)
    assert compare(out, rows["TinyForCausalLM"], str(stubs)) == [1, True, True]
    problem = (out / rows["TinyForCausalLM"]["problem"]).read_text()
    assert problem.startswith((out / rows["TinyForCausalLM"]["program"]).read_text().rstrip("\n"))


def test_a_scraped_class_called_model_keeps_its_name_for_build(tmp_path):
    modules_file = tmp_path / "modules.jsonl"
    modules_file.write_text(json.dumps({"name": "clash", "class_name": "Model", "code": CLASH}) + "\n")
    out = tmp_path / "tcd"
    row = run_cpu(out, "--suite", "modules", "--modules-file", str(modules_file))["clash"]
    # arguments are recorded as the expressions written into the program (docs/suite.md); the inference picks a
    # width since nothing in the snippet says one
    assert list(row["init_kwargs"]) == ["width"] and int(row["init_kwargs"]["width"]) > 0
    text = (out / row["problem"]).read_text()
    assert "The program defines Model, get_inputs itself" in text
    assert compare(out, row, str(Path(run_inductor_suite.__file__).resolve().parent)) == [1, True, True]
