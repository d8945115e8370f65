"""The accuracy check (scraper.accuracy): the comparison on hand-made tensors whose errors are known, and the
REAL worker on CPU: --backend none (compiled == eager: pass, error 0), a backend that perturbs every output by a
known amount (fail, max_error = that amount), training (loss and gradients compared), --no-accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import run_inductor_suite
from scraper import accuracy
from scraper.accuracy import compare, flat_tensors, tolerance_for

PERTURBATION = 0.01
CONV = '''
import torch
from torch import nn

class ConvBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
    def forward(self, x):
        return torch.relu(self.conv(x)) + x
'''
# A worker that registers a backend adding PERTURBATION to every output of the graph, then runs the real worker.
PERTURBING_WORKER = f'''
import sys
import torch
from scraper.worker import run as worker

@torch._dynamo.register_backend(name="perturbed")
def perturbed(gm, example_inputs):
    def run(*args):
        return [out + {PERTURBATION} if isinstance(out, torch.Tensor) else out for out in gm(*args)]
    return run

sys.exit(worker.main())
'''


def test_equal_outputs_pass_with_no_error():
    tensors = {"output[0]": torch.randn(4, 5), "output[1]": torch.arange(6)}
    verdict = compare(tensors, {k: v.clone() for k, v in tensors.items()}, None, 1e-3)
    assert verdict.ok and verdict.max_error == 0.0 and verdict.compared == 2


def test_an_error_beyond_the_tolerance_fails_with_its_size():
    eager = {"output[0]": torch.zeros(3, 3)}
    result = {"output[0]": torch.zeros(3, 3)}
    result["output[0]"][1, 2] = 0.05
    verdict = compare(eager, result, None, 1e-3)
    assert not verdict.ok and verdict.max_error == pytest.approx(0.05)
    assert "no float64 reference" in verdict.failures[0]
    result["output[0]"][1, 2] = 5e-4  # within rtol = atol = 1e-3
    assert compare(eager, result, None, 1e-3).ok


def test_the_float64_reference_forgives_what_eager_gets_as_wrong():
    # Eager and compiled are both off the float64 truth by about the same rmse: torch's same() lets that pass.
    truth = torch.linspace(0, 1, 100, dtype=torch.float64)
    eager = (truth + 0.01).float()
    compiled = (truth - 0.01).float()
    assert compare({"o": eager}, {"o": compiled}, {"o": truth}, 1e-3).ok
    # Compiled 10x further from the truth than eager: fails.
    assert not compare({"o": eager}, {"o": (truth - 0.1).float()}, {"o": truth}, 1e-3).ok


def test_shapes_integers_and_nans():
    assert not compare({"o": torch.zeros(2, 3)}, {"o": torch.zeros(3, 2)}, None, 1e-3).ok
    assert not compare({"o": torch.tensor([1, 2])}, {"o": torch.tensor([1, 3])}, None, 1e-3).ok
    nan = torch.tensor([float("nan"), 1.0])
    assert compare({"o": nan}, {"o": nan.clone()}, None, 1e-3).ok
    assert not compare({"o": nan}, {"o": torch.tensor([0.0, 1.0])}, None, 1e-3).ok
    assert not compare({"o": torch.ones(1)}, {}, None, 1e-3).ok


def test_flat_tensors_order_and_tolerances():
    a, b, c = torch.ones(1), torch.zeros(2), torch.full((3,), 2.0)
    assert [t.shape[0] for t in flat_tensors({"x": a, "y": (b, None, [c]), "n": 3})] == [1, 2, 3]
    assert tolerance_for("inference", "float32") < tolerance_for("inference", "bfloat16")
    assert tolerance_for("inference", "float32") < tolerance_for("training", "float32")


def run_modules(tmp_path: Path, *args: str) -> dict:
    modules_file = tmp_path / "modules.jsonl"
    modules_file.write_text(json.dumps({"name": "conv", "class_name": "ConvBlock", "code": CONV}) + "\n")
    out = tmp_path / "tcd"
    run_inductor_suite.main(["--out", str(out), "--gpus", "none", "--device", "cpu", "-q", "--suite", "modules",
                             "--modules-file", str(modules_file), *args])
    line = (out / "suite" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[-1]
    return json.loads(line)


def test_worker_without_compiling_passes_with_no_error(tmp_path):
    row = run_modules(tmp_path, "--backend", "none")
    assert row["status"] == "ok" and row["accuracy"] == "pass" and row["max_error"] == 0.0
    assert row["accuracy_detail"]["compared"] == 1 and row["accuracy_detail"]["float64_reference"] is True


def test_worker_catches_a_backend_that_perturbs_the_outputs(tmp_path):
    worker = tmp_path / "perturbing_worker.py"
    worker.write_text(PERTURBING_WORKER, encoding="utf-8")
    row = run_modules(tmp_path, "--backend", "perturbed", "--worker", str(worker))
    assert row["status"] == "ok"  # the model compiled and ran; its result is wrong
    assert row["accuracy"] == "fail"
    assert row["max_error"] == pytest.approx(PERTURBATION, rel=1e-3)


def test_worker_training_compares_loss_and_gradients(tmp_path):
    row = run_modules(tmp_path, "--backend", "none", "--mode", "training")
    # one output, the loss, and the gradients of conv.weight and conv.bias
    assert row["accuracy"] == "pass" and row["accuracy_detail"]["compared"] == 4


def test_no_accuracy_skips_the_check(tmp_path):
    row = run_modules(tmp_path, "--backend", "none", "--no-accuracy")
    assert row["status"] == "ok" and row.get("accuracy") is None


class FusedAttentionGraph(torch.nn.Module):
    """What an FX graph of an attention model calls: a fused kernel by name (no float64 kernel, no CPU kernel)
    and float32 written as a dtype."""

    def forward(self, query, key, value, bias):
        bias = torch.ops.prims.convert_element_type.default(bias, torch.float32)
        out = torch.ops.aten._scaled_dot_product_efficient_attention.default(query, key, value, bias, False, 0.0,
                                                                            True, scale=0.5)
        return out[0] + torch.ops.aten.full.default([1], 1.0, dtype=torch.float32)


def test_the_float64_run_computes_fused_attention_as_math_attention():
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 4) for _ in range(3))
    bias = torch.randn(2, 3, 5, 5)
    named = accuracy.float64_run(FusedAttentionGraph(), (query, key, value, bias), {}, False, None)
    assert named is not None
    got = named["output[0]"]
    assert got.dtype == torch.float64
    want = torch.nn.functional.scaled_dot_product_attention(query.double(), key.double(), value.double(),
                                                            attn_mask=bias.double() + torch.full((5, 5), float("-inf")).triu(1).double(),
                                                            scale=0.5) + 1.0
    torch.testing.assert_close(got, want)


class DropoutAttentionGraph(torch.nn.Module):
    def forward(self, query, key, value):
        return torch.ops.aten._scaled_dot_product_efficient_attention.default(query, key, value, None, False, 0.5)[0]


def test_fused_attention_with_dropout_gets_no_float64_reference():
    # dropout draws random numbers: math attention without it would be a different computation, not a reference
    query, key, value = (torch.randn(1, 2, 4, 8) for _ in range(3))
    assert accuracy.float64_run(DropoutAttentionGraph(), (query, key, value), {}, False, None) is None
