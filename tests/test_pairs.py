"""PyTorch -> Triton pairs and KernelBench problems (scraper.pairs, scraper.kernelbench) from the real fixture debug
roots (H100 runs): old-format roots give graph-level pairs, a root with the pairing record gives model-level ones;
triton_code is checked against the output_code.py it came from (counted independently), and run on CPU tensors
under TRITON_INTERPRET=1 against its python_code and against the suite program's own eager output."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pairs_helpers import (  # noqa: F401  (fixtures)
    REPO_ROOT, extract, old_pairs, read_lines, recorded_pairs, recorded_root, run_interpreted, suite_roots)
from scraper.pairs import check
from scraper.kernelbench import problem_text

LAUNCH = re.compile(r"^\s+(\w+)\[.*\]\(", re.MULTILINE)
RUN = re.compile(r"^\s+(\w+)\.run\(", re.MULTILINE)
# Kernels that call libdevice (erf, ...), which the interpreter does not provide.
INTERPRETABLE = re.compile(r"libdevice\.")


def pairs_of(out: Path) -> list[dict]:
    """The graph- and model-level pairs (tests/test_kernel_pairs.py has the kernel-level ones)."""
    return [pair for pair in read_lines(out / "pairs.jsonl") if pair["pair_level"] != "kernel"]


def graph_rejects(out: Path) -> list[dict]:
    return [row for row in read_lines(out / "pairs_rejects.jsonl") if not row["reason"].startswith("kernel_pair_")]


def graphs_with_triton_kernels(roots: list[Path]) -> int:
    """Graph folders whose output_code.py defines a Triton kernel, counted in the inputs themselves."""
    return sum(1 for root in roots for code in root.rglob("output_code.py")
               if "async_compile.triton(" in code.read_text(encoding="utf-8"))


def call_body(text: str) -> str:
    return text[text.index("def call("):]


def test_old_debug_roots_give_a_graph_level_pair_per_graph(old_pairs, tcd_roots, suite_roots):
    pairs = pairs_of(old_pairs)
    rejected = graph_rejects(old_pairs)
    roots = [*tcd_roots.values(), *suite_roots.values()]
    assert len(pairs) + len(rejected) == graphs_with_triton_kernels(roots) == 24
    assert [(r["reason"], r["folder"]) for r in rejected] == [
        ("pair_graph_has_user_kernels", "ScaledAdd/ScaledAdd__0_inference_0.0")]
    assert {p["pair_level"] for p in pairs} == {"graph"}
    assert sum(p["suite"] is not None for p in pairs) == graphs_with_triton_kernels(list(suite_roots.values()))
    for pair in pairs:
        assert pair["level_reason"] == ("no_pairing" if pair["suite"] else "no_suite")
        assert pair["entry_point"] == "Model" and pair["pair_correct"] is None
    stats = json.loads((old_pairs / "stats.json").read_text())["counts"]
    assert stats["pairs_graph_level"] == len(pairs) and stats["dropped_pair_graph_has_user_kernels"] == 1


def test_every_triton_code_defines_model_new_and_launches_every_kernel(old_pairs):
    for pair in pairs_of(old_pairs):
        tree = ast.parse(pair["triton_code"])
        top = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert "ModelNew" in top and "call" in top, pair["folder"]
        source = (old_pairs / pair["folder"] / "output_code.py").read_text(encoding="utf-8")
        launched = RUN.findall(call_body(source))  # Inductor's launches, counted in its own file
        assert LAUNCH.findall(call_body(pair["triton_code"])) == launched
        for name in set(launched):
            decorators = [ast.unparse(d) for d in top[name].decorator_list]
            assert decorators == ["triton.jit"], (pair["folder"], name)
        assert "stream" not in call_body(pair["triton_code"]) and "_DeviceGuard" not in pair["triton_code"]
        assert "# kernel path" not in pair["triton_code"]


def test_problem_files_run_and_match_their_programs(old_pairs, suite_roots):
    """Every model problem of the fixtures: Model(*get_init_inputs())(*get_inputs()) on the CPU equals what the
    program's own build() gives (the Hugging Face ones need transformers)."""
    index = read_lines(old_pairs / "problems" / "problems.jsonl")
    models = [entry for entry in index if entry["level"] == "model"]
    assert {e["model"] for e in models} == {e["model"] for r in suite_roots.values()
                                            for m in (r / "suite").glob("manifest*.jsonl") for e in read_lines(m)
                                            if e["status"] == "ok"}
    runnable = [e for e in models if e["suite"] == "modules" or has_module("transformers")]
    assert len(runnable) >= 5
    script = PROBLEM_VS_PROGRAM
    pairs = [[str(old_pairs / e["file"]), str(program_of(suite_roots, e))] for e in runnable]
    result = subprocess.run([sys.executable, "-c", script, json.dumps(pairs)], capture_output=True, text=True,
                            timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == [True] * len(runnable)


PROBLEM_VS_PROGRAM = textwrap.dedent("""
    import importlib.util, json, sys, torch
    def load(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    same = []
    for number, (problem_file, program_file) in enumerate(json.loads(sys.argv[1])):
        problem = load(problem_file, f"problem{number}")
        with torch.no_grad():
            got = problem.Model(*problem.get_init_inputs())(*problem.get_inputs())
            model, args, kwargs = load(program_file, f"program{number}").build("cpu")
            want = model(*args, **kwargs)
        got = got if isinstance(got, tuple) else (got,)
        if isinstance(want, torch.Tensor):
            want = [want]
        else:  # a Hugging Face ModelOutput
            want = [t for t in (want.to_tuple() if hasattr(want, "to_tuple") else want) if isinstance(t, torch.Tensor)]
        same.append(len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want)))
    print(json.dumps(same))
""")


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def program_of(suite_roots: dict, entry: dict) -> Path:
    """The program file of a problem's model, found in the fixture's manifest."""
    for root in suite_roots.values():
        for manifest in (root / "suite").glob("manifest*.jsonl"):
            for line in read_lines(manifest):
                if line["model"] == entry["model"] and line.get("program"):
                    return root / line["program"]
    raise AssertionError(entry["model"])


def test_model_level_pairs_from_the_pairing_record(recorded_pairs, recorded_root):
    pairs = {p["model"]: p for p in pairs_of(recorded_pairs)}
    assert {p["pair_level"] for p in pairs.values()} == {"model"} and len(pairs) == 4
    for model, pair in pairs.items():
        program = (recorded_root / pair["program_file"]).read_text(encoding="utf-8")
        assert pair["python_code"] == problem_text(program, model)
        assert pair["repo_name"] == "timm-src" and pair["path"].startswith("timm/")
        weights = re.findall(r"\('(model\.[\w.]+)', \(", pair["triton_code"])
        assert weights == sorted(set(weights), key=weights.index)  # each once
    eca = pairs["timm-src/timm/layers/eca.py:EcaModule"]
    assert "weight('model.conv.weight')" in eca["triton_code"] and "inputs[0]" in eca["triton_code"]
    assert eca["accuracy"] == "pass" and pairs["timm-src/timm/layers/activations_me.py:HardMishMe"]["accuracy"] \
        == "fail"


def test_correct_level_of_kernels_follows_their_models_accuracy(recorded_pairs):
    kernels = read_lines(recorded_pairs / "kernels.jsonl")
    by_model = {}
    for record in kernels:
        by_model.setdefault(record["extra"]["pytorch"]["model"], set()).add(record["correct"])
    assert by_model["timm-src/timm/layers/eca.py:EcaModule"] == {True}
    assert by_model["timm-src/timm/layers/activations_me.py:HardMishMe"] == {False}
    assert by_model["timm-src/timm/layers/mlp.py:GlobalResponseNormMlp"] == {None}  # no check recorded
    evidence = next(r for r in kernels if r["correct"])["validation"]["correct"]
    assert evidence == {"ok": True, "accuracy": "pass", "model": "timm-src/timm/layers/eca.py:EcaModule",
                        "max_error": 2.5e-7, "tolerance": 1e-3}


RUN_PAIRS = textwrap.dedent("""
    import importlib.util, json, sys, torch
    def load(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    report = []
    for number, (problem_file, triton_file, program_file) in enumerate(json.loads(sys.argv[1])):
        problem, new = load(problem_file, f"problem{number}"), load(triton_file, f"triton{number}")
        new.empty_strided_cuda = lambda size, stride, dtype: torch.empty_strided(size, stride, dtype=dtype)
        torch.manual_seed(0)  # as KernelBench's evaluator: each side built under the same seed, no weights copied
        model = problem.Model(*problem.get_init_inputs())
        torch.manual_seed(0)
        model_new = new.ModelNew(*problem.get_init_inputs())
        inputs = problem.get_inputs()
        with torch.no_grad():
            want = model(*[x.clone() for x in inputs])
            got = model_new(*[x.clone() for x in inputs])
        want, got = (want if isinstance(want, tuple) else (want,)), (got if isinstance(got, tuple) else (got,))
        if program_file:  # and the suite program's own eager output
            built, args, kwargs = load(program_file, f"program{number}").build("cpu")
            with torch.no_grad():
                program_output = built(*args, **kwargs)
            if not isinstance(program_output, torch.Tensor):  # several outputs: Model packs them into one
                program_output = torch.cat([t.reshape(-1).float() for t in program_output])
            torch.testing.assert_close((program_output,), want)
        report.append([float((a - b).abs().max()) for a, b in zip(want, got)])
    print(json.dumps(report))
""")


def write_pair(folder: Path, pair: dict) -> tuple[str, str]:
    name = f"{pair['pair_level']}_{re.sub(r'[^A-Za-z0-9]', '_', pair['folder'])}"
    problem, triton = folder / f"{name}_problem.py", folder / f"{name}_triton.py"
    problem.write_text(pair["python_code"], encoding="utf-8")
    triton.write_text(pair["triton_code"], encoding="utf-8")
    return str(problem), str(triton)


def test_pairs_compute_what_their_problems_compute(recorded_pairs, recorded_root, old_pairs, tmp_path):
    """Under TRITON_INTERPRET=1: model-level ModelNew (built as KernelBench's evaluator builds it: the same seed,
    nothing loaded) equals Model equals the program; graph-level ModelNew equals the ATen graph. Kernels that call
    libdevice are left out (the interpreter has no libdevice)."""
    model_level = [p for p in pairs_of(recorded_pairs) if not INTERPRETABLE.search(p["triton_code"])]
    graph_level = [p for p in pairs_of(old_pairs) if p["suite"] == "modules"
                   and not INTERPRETABLE.search(p["triton_code"])]
    assert len(model_level) == 3 and len(graph_level) == 3
    graph_level = [p for p in graph_level if "EcaModule" in p["folder"]]  # the same graphs: one is enough
    jobs = [[*write_pair(tmp_path, p), str(recorded_root / p["program_file"])] for p in model_level]
    jobs += [[*write_pair(tmp_path, p), None] for p in graph_level]
    result = run_interpreted(RUN_PAIRS, cwd=tmp_path, args=[json.dumps(jobs)])
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.splitlines()[-1])
    assert all(len(e) == 1 and e[0] <= 1e-5 for e in errors), errors


def test_check_without_a_gpu_leaves_pairs_unchecked(recorded_pairs, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    shutil.copy(recorded_pairs / "pairs.jsonl", path)
    before = path.read_bytes()
    assert check.main([str(path)]) == 1
    assert path.read_bytes() == before
    assert "no GPU" in capsys.readouterr().err


def test_check_dry_run_on_cpu_passes_a_pair_and_catches_a_broken_one(recorded_pairs, tmp_path):
    (eca,) = [p for p in pairs_of(recorded_pairs) if p["model"].endswith("EcaModule")]
    broken = dict(eca, folder="broken", triton_code=eca["triton_code"].replace("tmp3 = tmp0 * tmp2",
                                                                                 "tmp3 = tmp0 * tmp2 * 1.5"))
    broken["id"] = "broken"
    assert broken["triton_code"] != eca["triton_code"]
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(eca) + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    code = check.main([str(path), "--device", "cpu", "--jobs", "2", "--runs", "1", "--warmup", "0", "-q"])
    assert code == 1  # one pair failed
    checked = {p["folder"]: p for p in read_lines(path)}
    assert checked[eca["folder"]]["pair_correct"] is True and checked[eca["folder"]]["speedup"] > 0
    assert checked[eca["folder"]]["check"]["max_error"] == 0.0
    assert checked["broken"]["pair_correct"] is False and checked["broken"]["check"]["phase"] == "compare"
    summary = json.loads((tmp_path / "pairs_check.json").read_text())
    assert summary["passed"] == 1 and summary["failed"] == 1


def test_triton_data_pairs_check_is_the_check(recorded_pairs, tmp_path):
    """`triton-data pairs check` (issue #25) runs the same check as `python -m scraper.pairs.check`, as a subprocess
    the way a user types it; its --help and usage errors name that command."""
    (eca,) = [p for p in pairs_of(recorded_pairs) if p["model"].endswith("EcaModule")]
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(eca) + "\n", encoding="utf-8")
    console = [sys.executable, "-m", "scraper.console", "pairs"]
    done = subprocess.run([*console, "check", str(path), "--device", "cpu", "--runs", "0", "--warmup", "0", "-q"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_lines(path)[0]["pair_correct"] is True
    assert json.loads((tmp_path / "pairs_check.json").read_text())["passed"] == 1
    helped = subprocess.run([*console, "check", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: triton-data pairs check ")
    wrong = subprocess.run([*console, "chek"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown action 'chek'" in wrong.stderr and "check" in wrong.stderr


def test_rerun_keeps_pairs_and_their_check(recorded_root, recorded_pairs, tmp_path):
    out = Path(shutil.copytree(recorded_pairs, tmp_path / "out"))
    pairs = pairs_of(out)
    pairs[0].update(pair_correct=True, speedup=1.5)
    (out / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    extract([recorded_root], out)
    again = pairs_of(out)
    assert [p["id"] for p in again] == [p["id"] for p in pairs]
    assert (again[0]["pair_correct"], again[0]["speedup"]) == (True, 1.5)


def test_a_pairing_record_cannot_write_code_into_triton_code():
    """The pairing record of a walled --suite modules run comes from a process that ran scraped code: only
    checked ints, string reprs and dtype names reach triton_code."""
    from scraper.pairs.launch import PairError
    from scraper.pairs.modelnew import model_level as modelnew_text
    from scraper.suiterun import PairingError, PairingGraph

    def model_level(name, graph, state, offset):  # the record as stage 1 reads it: typed, then turned into code
        return modelnew_text(name, PairingGraph.from_dict(graph), state, offset)

    graph = {"inputs": [{"kind": "input", "index": 0}, {"kind": "parameter", "name": "w'); import os; ('"}],
             "returns": [0]}
    state = {"w'); import os; ('": {"shape": [4], "dtype": "float32"}}
    text = model_level("m", graph, state, 0)
    assert "weight(\"model.w'); import os; ('\")" in text  # a string literal, not code
    for bad_graph, bad_state in (({**graph, "inputs": [{"kind": "input", "index": "0]; import os; x = [0"}]}, {}),
                                 ({**graph, "returns": ["0] + [os.system('x')"]}, state),
                                 (graph, {"w'); import os; ('": {"shape": [4], "dtype": "float32; import os"}})):
        with pytest.raises((PairError, PairingError)):
            model_level("m", bad_graph, bad_state, 0)
