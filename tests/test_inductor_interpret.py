"""The clean kernel modules import and run on this CPU-only machine (TRITON_INTERPRET=1, in a subprocess)."""

from __future__ import annotations

import json
import textwrap

from inductor_helpers import extracted, run_interpreted  # noqa: F401


def test_every_clean_module_imports_and_defines_a_jit_kernel(extracted):
    out, rows = extracted
    # All 312 modules in ONE subprocess: torch and Triton are imported once.
    script = textwrap.dedent(
        """
        import importlib.util, json, sys
        failures, kinds = [], {}
        for number, (path, name) in enumerate(json.load(sys.stdin)):
            spec = importlib.util.spec_from_file_location(f"kernel_{number}", path)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                kind = type(getattr(module, name)).__name__
                kinds[kind] = kinds.get(kind, 0) + 1
            except Exception as exc:
                failures.append(f"{path}: {exc!r}")
        print(json.dumps({"failures": failures, "kinds": kinds}))
        """
    )
    payload = json.dumps([[str(out / row["file"]), row["name"]] for row in rows])
    result = run_interpreted(script, cwd=out, stdin=payload)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["failures"] == []
    assert report["kinds"] == {"InterpretedFunction": 312}  # what @triton.jit gives under TRITON_INTERPRET=1


def test_original_module_does_not_import_without_a_gpu(extracted):
    out, rows = extracted
    (row,) = [row for row in rows if row["name"] == "triton_poi_fused_mul_relu_0"]
    original = out.parent / "original_mul_relu.py"
    original.write_text(row["original"], encoding="utf-8")
    result = run_interpreted(f"import runpy; runpy.run_path({str(original)!r})", cwd=out.parent)
    assert result.returncode != 0 and "Could not find an active GPU backend" in result.stderr


RUN_GRAPHS = ("ScaledAdd__0_inference_0.0", "BertForMaskedLM__0_inference_0.0",
              "T5ForConditionalGeneration__3_inference_3.3")
# Expected results are written from the kernels' provenance comments (the ATen ops and the graph fragment),
# computed with PyTorch, not taken from the kernels themselves.
RUN_KERNELS = """
import importlib.util, sys, torch
root = sys.argv[1] if len(sys.argv) > 1 else "."

def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)

torch.manual_seed(0)
results = {}

# ScaledAdd graph: [aten.relu, aten.mul], fragment: mul(relu(buf1), 2), f32[4096]
kernel = load("ScaledAdd/ScaledAdd__0_inference_0.0/kernels/triton_poi_fused_mul_relu_0.py",
              "triton_poi_fused_mul_relu_0")
x = torch.randn(4096); out = torch.empty(4096)
kernel[(4,)](x, out, 4096, XBLOCK=1024)
results["mul_relu"] = torch.equal(out, torch.relu(x) * 2)

# The user-defined kernel, called in output_code.py as scaled_add_0.run(arg0_1, arg1_1, buf0, 4096, 0.5, ...):
# out = x + alpha * y
kernel = load("ScaledAdd/ScaledAdd__0_inference_0.0/kernels/scaled_add.py", "scaled_add")
y = torch.randn(4096)
kernel[(16,)](x, y, out, 4096, 0.5, BLOCK=256)
results["scaled_add"] = torch.allclose(out, x + 0.5 * y)

# BERT: [aten.view, aten.transpose, aten.clone]: bmm_1 f32[8, 128, 64] -> reshape [2, 4, 128, 64]
# -> permute [0, 2, 1, 3] -> clone (contiguous) f32[2, 128, 4, 64]
kernel = load("BertForMaskedLM/BertForMaskedLM__0_inference_0.0/kernels/triton_poi_fused_clone_transpose_view_5.py",
              "triton_poi_fused_clone_transpose_view_5")
bmm = torch.randn(8, 128, 64); out = torch.empty(2, 128, 4, 64)
kernel[(16,)](bmm, out, 65536, XBLOCK=4096)
results["clone_transpose_view"] = torch.equal(out, bmm.reshape(2, 4, 128, 64).permute(0, 2, 1, 3).contiguous())

# T5: [aten.mul]: mul(arg0_1, 0.0625), f32[2, 64, 256]
kernel = load("T5ForConditionalGeneration/T5ForConditionalGeneration__3_inference_3.3/kernels/triton_poi_fused_mul_0.py",
              "triton_poi_fused_mul_0")
x = torch.randn(2, 64, 256); out = torch.empty(2, 64, 256)
kernel[(8,)](x, out, 32768, XBLOCK=4096)
results["mul"] = torch.equal(out, x * 0.0625)
print(results)
"""


def test_pointwise_kernels_match_the_pytorch_ops_of_their_provenance(extracted):
    out, rows = extracted
    by_name = {row["name"]: row for row in rows if row["file"].split("/")[1] in RUN_GRAPHS}
    # The provenance the expectations below were read from.
    assert by_name["triton_poi_fused_mul_relu_0"]["aten_ops"] == ["aten.relu", "aten.mul"]
    assert "aten.mul.Tensor](args = (%relu, 2)" in by_name["triton_poi_fused_mul_relu_0"]["graph_fragment"]
    clone = by_name["triton_poi_fused_clone_transpose_view_5"]
    assert clone["aten_ops"] == ["aten.view", "aten.transpose", "aten.clone"]
    assert "aten.permute.default](args = (%view_14, [0, 2, 1, 3])" in clone["graph_fragment"]
    assert "(args = (%arg0_1, 0.0625)" in by_name["triton_poi_fused_mul_0"]["graph_fragment"]
    assert by_name["scaled_add"]["kind"] == "user_defined"
    result = run_interpreted(RUN_KERNELS, cwd=out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(
        {"mul_relu": True, "scaled_add": True, "clone_transpose_view": True, "mul": True}
    )
