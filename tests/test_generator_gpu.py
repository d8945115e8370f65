"""On a machine with an NVIDIA GPU: generated modules compile with the real Triton compiler and run correctly.

Skipped without `nvidia-smi` (the CPU test machine); the interpreter test in test_generator_cli.py covers CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from scraper.generator import main as generator_main
from scraper.records import read_records
from tests.generator_helpers import FIXTURE_REPO

RUN_ON_GPU = textwrap.dedent("""
    import importlib.util, sys
    import torch, triton

    paths = dict(arg.split("=", 1) for arg in sys.argv[1:])
    def load(name):
        spec = importlib.util.spec_from_file_location(name, paths[name])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, name)

    x = torch.arange(256, dtype=torch.float32, device="cuda")
    y = torch.full((256,), 0.5, device="cuda")
    out = torch.empty_like(x)
    load("add_kernel")[(4,)](x, y, out, 256, BLOCK=64)
    assert torch.equal(out, 2 * x + 1 + y + 3)
    out = torch.empty_like(x)
    load("scale_kernel")[lambda meta: (triton.cdiv(256, meta["BLOCK"]),)](x, out, 256)
    assert torch.allclose(out, 2 * x + 1e-6)
    out = torch.zeros(128, device="cuda")
    load("k_heuristics")[(1,)](x, out, 100, BLOCK=128)
    assert torch.equal(out[:100], x[:100] + 1)
    out = torch.empty(64, device="cuda")
    load("k_module_attribute")[(1,)](x, out, BLOCK=64)
    assert torch.equal(out, 2 * x[:64] + 1)
    out = torch.empty(16, device="cuda")
    load("k_from_import")[(1,)](x, out, BLOCK=16)
    assert torch.equal(out, 2 * x[:16])
    print("compiled and ran on the GPU")
""")


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")
def test_generated_kernels_compile_and_run_on_gpu(tmp_path):
    assert generator_main.main(["--generate-one", str(FIXTURE_REPO), "-o", str(tmp_path), "-q"]) == 0
    files = {r.extra["qualname"]: tmp_path / r.file for r in read_records(tmp_path / "kernels.jsonl")}
    names = ["add_kernel", "scale_kernel", "k_heuristics", "k_module_attribute", "k_from_import"]
    done = subprocess.run([sys.executable, "-c", RUN_ON_GPU, *(f"{n}={files[n]}" for n in names)],
                          env={**os.environ, "TRITON_INTERPRET": "0"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compiled and ran on the GPU" in done.stdout
