"""A real pairs run on an H200 (timm and Hugging Face inference, torch 2.11, Triton 3.6): three models of each suite
with the pairing record their workers wrote, and the six pairs that passed the GPU check there
(`pairs_h200_checked.jsonl.gz`: pair_correct, speedup). On CPU: the pairs rebuilt here from the debug folders are
exactly the programs that passed on the GPU, their kernels are the ones Inductor embedded, and the Hugging Face
problems run as is and compute what their suite programs compute."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import re
import tarfile
from pathlib import Path

import pytest

from pairs_helpers import extract, read_lines
from scraper.kernelbench import INTERFACE_VERSION, MARKER

PROGRAM_HEADER = " the model's program (the problem's own)\n"

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "suite_run"
CHECKED = [json.loads(line) for line in gzip.open(FIXTURES / "pairs_h200_checked.jsonl.gz", "rt")]


@pytest.fixture(scope="module")
def h200(tmp_path_factory):
    """The fixture's two debug roots (tcd_timm, tcd_hf) and the pairs extracted from them here."""
    root = tmp_path_factory.mktemp("h200")
    with tarfile.open(FIXTURES / "pairs_h200.tar.gz") as archive:
        archive.extractall(root, filter="data")
    roots = [root / "tcd_timm", root / "tcd_hf"]
    out = extract(roots, root / "kernels")
    return roots, {pair["model"]: pair for pair in read_lines(out / "pairs.jsonl")
                   if pair["pair_level"] != "kernel"}


def test_the_fixture_pairs_passed_the_gpu_check():
    assert len(CHECKED) == 6 and {pair["suite"] for pair in CHECKED} == {"timm", "huggingface"}
    for pair in CHECKED:
        assert pair["pair_correct"] is True and pair["accuracy"] == "pass" and pair["speedup"] > 0
        assert pair["pair_level"] == "model"


@pytest.mark.parametrize("model", sorted(pair["model"] for pair in CHECKED))
def test_rebuilt_on_cpu_is_the_program_that_passed_on_the_gpu(h200, model):
    _, rebuilt = h200
    checked = next(pair for pair in CHECKED if pair["model"] == model)
    # the kernels and call() that passed are the same; ModelNew now builds its own weights (KernelBench's
    # evaluator gives it none) and the problem returns one tensor, so the program comes first in both
    assert kernels_and_call(rebuilt[model]["triton_code"]) == kernels_and_call(checked["triton_code"])
    program = checked["python_code"][: checked["python_code"].index(MARKER)]
    assert rebuilt[model]["python_code"].startswith(program) and INTERFACE_VERSION in rebuilt[model]["python_code"]
    assert rebuilt[model]["triton_code"].split(PROGRAM_HEADER, 1)[1].startswith(program.rstrip("\n"))


def kernels_and_call(triton_code: str) -> str:
    """The part of a model-level triton_code from the kernels' imports to the end of call()."""
    start = triton_code.index("import torch\nimport triton\n")
    ends = [triton_code.find(mark, start) for mark in ("\ndef pack(", "\n# Model's parameters")]
    return triton_code[start: min(end for end in ends if end > 0)]


def test_every_embedded_kernel_is_defined_and_launched(h200):
    roots, rebuilt = h200
    for root in roots:
        for code in root.rglob("output_code.py"):
            text = code.read_text(encoding="utf-8")
            embedded = set(re.findall(r"^(\w+) = async_compile\.triton\('(\w+)'", text, re.MULTILINE))
            model = code.parent.name.split("__0_")[0]
            triton_code = rebuilt[model]["triton_code"]
            tree = ast.parse(triton_code)
            defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
            launched = set(re.findall(r"^\s+(\w+)\[", triton_code, re.MULTILINE))
            assert {name for _, name in embedded} <= defined and {var for var, _ in embedded} <= launched
            assert any(isinstance(node, ast.ClassDef) and node.name == "ModelNew" for node in tree.body)


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["BartForCausalLM", "BlenderbotSmallForCausalLM"])
def test_huggingface_problems_run_as_is_and_match_their_program(h200, model):
    """The problem builds the same model as the program the GPU compiled (same seed, same shapes) on CPU."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers", reason="the Hugging Face problems need transformers (requirements-dev)")
    roots, _ = h200
    folder = roots[1] / "suite"
    program = load(next(folder.glob(f"programs/**/{model}.py")), f"program_{model}")
    problem = load(next(folder.glob(f"problems/**/{model}.py")), f"problem_{model}")
    reference, args, kwargs = program.build("cpu")
    candidate = problem.Model(*problem.get_init_inputs())
    inputs = problem.get_inputs()
    assert [tuple(t.shape) for t in inputs] == [tuple(t.shape) for t in [*args, *kwargs.values()]]
    with torch.no_grad():
        expected = reference(*args, **kwargs)
        got = candidate(*inputs)
    expected = expected.logits if hasattr(expected, "logits") else expected
    got = got.logits if hasattr(got, "logits") else got
    got = got[0] if isinstance(got, (tuple, list)) else got
    assert torch.allclose(got, expected, atol=1e-5)
