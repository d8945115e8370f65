"""Our pairs under KernelBench's own evaluation code (ScalingIntelligence/KernelBench, as published: its src/ folder
given by $KERNELBENCH_SRC, or .kb/src in the repository root; never part of this repository), on the CPU as far as
the interpreter goes.

`eval_kernel_against_ref` asserts CUDA, so the child runs the same steps it does with KernelBench's own functions:
`load_original_model_and_inputs` (exec of python_code), `set_seed` then `Model(*get_init_inputs())` under no_grad,
`load_custom_model_with_tempfile` (triton_code imported from a file, as it does for backend="triton"), `set_seed`
then `ModelNew(*get_init_inputs())`, and `run_and_check_correctness` unchanged: 5 trials, each input cast to float32
(integers too), both models `.to(dtype=float32)`, one output tensor compared by shape and `allclose(atol=rtol=1e-4)`.
Only what has no CPU counterpart is replaced: `torch.cuda.synchronize` (a no-op) and Inductor's
`empty_strided_cuda` allocator (the CPU one); kernels run under TRITON_INTERPRET=1 (those calling libdevice, which
the interpreter lacks, are left out and counted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pairs_helpers import old_pairs, read_lines, recorded_pairs, recorded_root, suite_roots  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent


def kernelbench_src() -> Path | None:
    for candidate in (os.environ.get("KERNELBENCH_SRC"), REPO_ROOT / ".kb" / "src"):
        if candidate and (Path(candidate) / "kernelbench" / "eval.py").is_file():
            return Path(candidate)
    return None


pytestmark = pytest.mark.skipif(kernelbench_src() is None, reason="KernelBench's source is not here: set "
                                "KERNELBENCH_SRC to the src/ folder of a ScalingIntelligence/KernelBench checkout")

CHILD = r'''
import importlib.util, json, sys, types
sys.path.insert(0, sys.argv[1])
for name, attribute, value in (("openai", "OpenAI", object), ("litellm", "completion", None),
                               ("dotenv", "load_dotenv", lambda *a, **k: None)):
    if importlib.util.find_spec(name) is None:  # kernelbench/utils.py imports LLM clients the eval never calls
        module = sys.modules[name] = types.ModuleType(name)
        setattr(module, attribute, value)
import torch
torch.cuda.synchronize = lambda *args, **kwargs: None  # nothing to wait for on the CPU
from kernelbench import eval as kb

def cpu_empty_strided(size, stride, dtype):
    return torch.empty_strided(size, stride, dtype=dtype)

results = []
for job in json.load(open(sys.argv[2])):
    context = {}
    Model, get_init_inputs, get_inputs = kb.load_original_model_and_inputs(job["python_code"], context)
    kb.set_seed(42)
    with torch.no_grad():
        kb.set_seed(42)
        model = Model(*get_init_inputs())
    ModelNew, temp = kb.load_custom_model_with_tempfile(job["triton_code"], entry_point="ModelNew")
    ModelNew.forward.__globals__["empty_strided_cuda"] = cpu_empty_strided
    with torch.no_grad():
        kb.set_seed(42)
        new = ModelNew(*get_init_inputs())
    result = kb.run_and_check_correctness(model, new, get_inputs, {}, num_correct_trials=5, seed=42,
                                          device=torch.device("cpu"), backend="triton", precision=torch.float32)
    results.append({"id": job["id"], "compiled": result.compiled, "correctness": result.correctness,
                    "metadata": {k: str(v)[:300] for k, v in result.metadata.items()}})
print(json.dumps(results))
'''


def evaluate(pairs: list[dict], tmp_path: Path) -> dict:
    """{pair id: KernelBench's result} of the pairs, in one interpreted child."""
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{k: p[k] for k in ("id", "python_code", "triton_code")} for p in pairs]))
    done = subprocess.run([sys.executable, "-c", CHILD, str(kernelbench_src()), str(jobs)], capture_output=True,
                          text=True, timeout=1200, cwd=tmp_path,
                          env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return {row["id"]: row for row in json.loads(done.stdout.strip().splitlines()[-1])}


def interpretable(pair: dict) -> bool:
    return not pair.get("needs_cuda") and "libdevice." not in pair["triton_code"]


def small(pair: dict, limit: int = 1 << 18) -> bool:
    """Inputs of at most `limit` elements in all (the interpreter runs a kernel program by program)."""
    total = 0
    for size in re.findall(r"^\s+\('\w+', \(([^)]*)\), ", pair["python_code"], re.M):
        count = 1
        for n in filter(None, (x.strip() for x in size.split(","))):
            count *= int(n)
        total += count
    return total <= limit


def test_kernel_pairs_pass_kernelbench_evaluation(old_pairs, tmp_path):
    """A spread of kernel-level pairs (one per id; pointwise, reductions, index inputs, several outputs packed),
    each passing all 5 of KernelBench's trials."""
    seen, pairs = set(), []
    for pair in read_lines(old_pairs / "pairs.jsonl"):
        if pair["pair_level"] == "kernel" and pair["id"] not in seen and interpretable(pair) and small(pair):
            seen.add(pair["id"])
            pairs.append(pair)
    pairs = pairs[::3]
    assert len(pairs) >= 20
    assert any("index " in p["python_code"] for p in pairs)  # integer inputs survive the float32 cast
    assert any("return pack(" in p["python_code"] for p in pairs)  # several outputs, compared as one tensor
    results = evaluate(pairs, tmp_path)
    failed = {pid: r for pid, r in results.items() if not r["correctness"]}
    assert len(results) == len(pairs) and not failed, failed


def test_graph_and_model_level_pairs_pass_kernelbench_evaluation(old_pairs, recorded_pairs, tmp_path):
    """A model-level pair (a scraped module: ModelNew builds its weights as Model does, nothing loaded) and a
    graph-level one of the same module."""
    model = [p for p in read_lines(recorded_pairs / "pairs.jsonl") if p["pair_level"] == "model"
             and interpretable(p)]
    graph = [p for p in read_lines(old_pairs / "pairs.jsonl") if p["pair_level"] == "graph"
             and p["suite"] == "modules" and interpretable(p)]
    assert model and graph
    pairs = [model[0], graph[0]]
    results = evaluate(pairs, tmp_path)
    assert all(results[p["id"]]["correctness"] for p in pairs), results


def test_a_broken_kernel_fails_kernelbench_evaluation(old_pairs, tmp_path):
    """The evaluation is no rubber stamp: the same pair with its kernel's store scaled fails it."""
    pair = next(p for p in read_lines(old_pairs / "pairs.jsonl") if p["pair_level"] == "kernel"
                and interpretable(p) and small(p) and "tl.store(out_ptr0 + (" in p["triton_code"]
                and "torch.float32, 'normal')" in p["python_code"])
    store = re.compile(r"tl\.store\((out_ptr0 \+ \([^()]*\)), (\w+)")
    broken = dict(pair, id="broken", triton_code=store.sub(r"tl.store(\1, \2 * 1.01", pair["triton_code"], count=1))
    assert broken["triton_code"] != pair["triton_code"]
    results = evaluate([pair, broken], tmp_path)
    assert results[pair["id"]]["correctness"] is True
    assert results["broken"]["compiled"] is True and results["broken"]["correctness"] is False
