"""Kernel-level pairs (scraper.pairs.kernel_level, kernel_pairs) on the real debug folders: the shared fixtures
(tests/fixtures/torch_compile_debug: 312 kernels in 18 graphs, made on an H100) and the H200 suite run
(tests/fixtures/suite_run/pairs_h200.tar.gz: three timm and three Hugging Face models).

Oracles from the fixtures, not from the code under test: the kernels of each graph are counted as its
`async_compile.triton(` calls; what a kernel computes is checked by running its Triton kernel (TRITON_INTERPRET=1)
against the PyTorch the pair says it computes."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import get_kernels_from_debug_info

REPO_ROOT = Path(__file__).resolve().parent.parent
H200 = REPO_ROOT / "tests" / "fixtures" / "suite_run" / "pairs_h200.tar.gz"


@pytest.fixture(scope="module")
def h200_root(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("h200")
    with tarfile.open(H200) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="module")
def stage(tcd_roots, h200_root, tmp_path_factory) -> Path:
    """Stage 1 over both fixtures into one output folder."""
    out = tmp_path_factory.mktemp("kernel_pairs") / "out"
    inputs = [*map(str, tcd_roots.values()), str(h200_root / "tcd_timm"), str(h200_root / "tcd_hf")]
    assert get_kernels_from_debug_info.main([*inputs, "-o", str(out), "-q"]) == 0
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def kernel_pairs(out: Path) -> list[dict]:
    return [pair for pair in lines(out / "pairs.jsonl") if pair["pair_level"] == "kernel"]


def fixture_kernels(tcd_roots, h200_root) -> dict[str, int]:
    """Triton kernels per graph folder name, counted in the fixtures' own output_code.py files."""
    counts: dict[str, int] = {}
    roots = [*tcd_roots.values(), h200_root]
    for path in (p for root in roots for p in Path(root).rglob("output_code.py")):
        counts[f"{path.parents[2].name}/{path.parent.name}"] = path.read_text().count("async_compile.triton(")
    return counts


def test_every_kernel_has_a_pair_or_a_named_reason(stage, tcd_roots, h200_root):
    expected = fixture_kernels(tcd_roots, h200_root)
    assert sum(expected.values()) == 312 + 39
    pairs = kernel_pairs(stage)
    covered = [kernel for pair in pairs for kernel in pair["kernels"]]
    dropped = [row for row in lines(stage / "pairs_rejects.jsonl") if row["reason"].startswith("kernel_pair_")]
    # every kernel is in exactly one pair or one reject row (a pair of a split reduction holds two kernels)
    per_graph: dict[str, int] = {}
    for pair in pairs:
        per_graph[pair["folder"]] = per_graph.get(pair["folder"], 0) + len(pair["kernels"])
    for row in dropped:
        per_graph[row["folder"]] = per_graph.get(row["folder"], 0) + 1
    assert sum(per_graph.values()) == len(covered) + len(dropped) == 312 + 39
    assert all(re.fullmatch(r"kernel_pair_[a-z_]+", row["reason"]) and row["error"] for row in dropped)
    counts = json.loads((stage / "stats.json").read_text())["counts"]
    assert sum(v for k, v in counts.items() if k.startswith("dropped_kernel_pair_")) == len(dropped)
    share = len(covered) / (312 + 39)
    assert share >= 0.90, f"kernel-level pairs cover {share:.1%} of the kernels"


def test_kernel_problems_are_kernelbench_problems_with_finite_references(stage):
    pairs = kernel_pairs(stage)
    assert pairs
    for pair in pairs:
        code = pair["python_code"]
        compile(code, pair["kernel"], "exec")
        assert "class Model(nn.Module):" in code and "def get_inputs():" in code and "def get_init_inputs():" in code
        assert "class ModelNew(nn.Module):" in pair["triton_code"] and "@triton.jit" in pair["triton_code"]
        assert pair["needs_cuda"] or pair["reference_finite"] is True
        assert pair["ops"] == sorted(pair["ops"]) and pair["original_triton_code"]
        assert pair["uuid"] and pair["id"] and pair["kernel"] == pair["kernels"][0]


def test_problems_run_on_their_own_and_return_one_finite_tensor(stage, tmp_path):
    """A fresh interpreter runs a spread of the problems as KernelBench does (seed, Model(*init), inputs cast to
    float32 first, as its evaluator casts them): one finite tensor each."""
    pairs = [p for p in kernel_pairs(stage) if not p["needs_cuda"]][::7]
    assert len(pairs) >= 20
    for index, pair in enumerate(pairs):
        (tmp_path / f"p{index}.py").write_text(pair["python_code"])
    script = f'''
import importlib.util, math, sys, torch
for index in range({len(pairs)}):
    spec = importlib.util.spec_from_file_location(f"p{{index}}", r"{tmp_path}/p" + str(index) + ".py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(42)
    model = module.Model(*module.get_init_inputs())
    inputs = [x.to(torch.float32) for x in module.get_inputs()]
    out = model(*inputs)
    assert isinstance(out, torch.Tensor) and out.is_floating_point(), index
    assert bool(torch.isfinite(out).all()), index
print("ok")
'''
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_triton_code_of_a_kernel_pair_fits_a_context(stage):
    pairs = kernel_pairs(stage)
    median = statistics.median(len(p["triton_code"]) for p in pairs)
    assert median <= 4000, median
    graph_level = [p for p in lines(stage / "pairs.jsonl") if p["pair_level"] != "kernel"]
    assert statistics.median(len(p["triton_code"]) for p in graph_level) > 4 * median


def inputs_of(code: str) -> dict:
    """{input name: values} of a problem's INPUTS table."""
    return {m[1]: m[2] for m in re.finditer(r"^\s+\('(\w+)', \([^)]*\), \([^)]*\), torch\.\w+, '([^']+)'\),$", code,
                                              re.M)}


def test_inputs_hold_values_that_make_the_reference_meaningful(stage):
    pairs = kernel_pairs(stage)
    # resnet18's first batch norm: sqrt(var + eps) of its running variance, arg3_1 in the graph
    bn = next(p for p in pairs if p["model"] == "resnet18" and p["graph"] == "resnet18__0_inference_0.0"
              and "batch_norm_legit_no_training_relu_2" in p["kernel"])
    assert inputs_of(bn["python_code"])["arg3_1"] == "positive"
    assert inputs_of(bn["python_code"])["arg2_1"] == "normal"  # the running mean may be anything
    # BERT's embeddings: token ids index the 30522-row table
    bert = next(p for p in pairs if p["model"] == "BertForMaskedLM" and "embedding" in p["kernel"])
    assert inputs_of(bert["python_code"])["arg0_1"] == "index 30522"


def test_the_same_fused_kernel_in_two_graphs_is_one_id(stage):
    """GPT2LMHeadModel's graph is in two fixture archives (plain and max-autotune): kernels they share have the same
    program, so the same id (the dataset keeps one row and counts its copies)."""
    pairs = [p for p in kernel_pairs(stage) if p["model"] == "GPT2LMHeadModel"]
    by_folder: dict = {}
    for pair in pairs:
        by_folder.setdefault(pair["folder"], set()).add(pair["id"])
    assert len(by_folder) == 2
    first, second = by_folder.values()
    assert first & second


def distinct_cpu_pairs(stage: Path) -> list[dict]:
    seen, found = set(), []
    for pair in kernel_pairs(stage):
        if pair["id"] not in seen and not pair["needs_cuda"]:
            seen.add(pair["id"])
            found.append(pair)
    return found


@pytest.mark.slow
def test_the_cpu_check_passes_the_kernel_pairs_the_interpreter_can_run(stage, tmp_path):
    """`python -m scraper.pairs.check --device cpu` (TRITON_INTERPRET=1) over every distinct kernel pair: Model
    against the Triton kernel itself. Kernels calling libdevice (erf, tanh, rsqrt ...) cannot run in the
    interpreter: counted, never hidden."""
    from scraper.pairs import check

    pairs = [p for p in distinct_cpu_pairs(stage) if "libdevice." not in p["triton_code"]]  # libdevice: below
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    check.main([str(path), "--device", "cpu", "--jobs", "2", "--runs", "0", "--warmup", "0", "--timeout", "240",
                "-q"])
    checked = lines(path)
    not_judged = [p for p in checked if (p["check"] or {}).get("phase") == "interpreter_libdevice"]
    assert not not_judged
    judged = [p for p in checked if p["pair_correct"] is not None]
    passed = [p for p in judged if p["pair_correct"]]
    assert len(judged) + len(not_judged) == len(checked)
    assert len(judged) >= 180 and len(passed) / len(judged) >= 0.98, (len(passed), len(judged))  # 185 of 185 here
    assert all(p["check"]["kernelbench_allclose"] for p in passed)


STAND_INS = ("rsqrt", "sqrt", "exp", "exp2", "log", "log2", "erf", "floor", "ceil", "sin", "cos", "abs")


def libdevice_calls(pair: dict) -> set:
    return set(re.findall(r"\blibdevice\.(\w+)\(", pair["triton_code"]))


def elements(pair: dict) -> int:
    """The elements of a kernel problem's inputs, from its INPUTS table (the interpreter's time grows with them)."""
    sizes = re.findall(r"^    \('\w+', \(([\d, ]*)\)", pair["python_code"], re.MULTILINE)
    return sum(math.prod(int(n) for n in size.replace(" ", "").split(",") if n) for size in sizes)


@pytest.mark.slow
def test_the_cpu_check_judges_libdevice_kernels_with_triton_language_stand_ins(stage, tmp_path):
    """The interpreter has no libdevice: the dry run gives the kernels triton.language's rsqrt, sqrt, exp, erf ...
    (the same functions), records which per pair and judges them; a kernel calling another one (tanh) is counted
    as interpreter_libdevice, not judged. The smallest 16 distinct pairs of each kind (interpreting is slow)."""
    from scraper.pairs import check

    pairs = [p for p in distinct_cpu_pairs(stage) if libdevice_calls(p)]
    standable = sorted((p for p in pairs if libdevice_calls(p) <= set(STAND_INS)), key=elements)[:16]
    others = sorted((p for p in pairs if not libdevice_calls(p) <= set(STAND_INS)), key=elements)[:2]
    assert len(standable) == 16 and others
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in standable + others))
    check.main([str(path), "--device", "cpu", "--jobs", "2", "--runs", "0", "--warmup", "0", "--timeout", "240",
                "-q"])
    checked = {p["id"]: p for p in lines(path)}
    judged = [checked[p["id"]] for p in standable]
    assert all(p["pair_correct"] is not None for p in judged)
    assert all(p["check"]["libdevice_stand_ins"] == sorted(libdevice_calls(p)) for p in judged)
    assert sum(p["pair_correct"] for p in judged) / len(judged) >= 0.95
    assert all(checked[p["id"]]["check"]["phase"] == "interpreter_libdevice" for p in others)
    summary = json.loads((tmp_path / "pairs_check.json").read_text())
    assert summary["judged_with_libdevice_stand_ins"] == len(judged)
    assert summary["not_passed_by_phase"]["interpreter_libdevice"] == len(others)


def test_a_convolution_read_from_its_extern_result_is_the_latest_of_its_shape(stage, tmp_path):
    """convnext_atto's block kernels list every convolution of the block in their fragment (the earlier ones reached
    them through a buffer the kernel reads): the extern result the kernel reads is the last convolution's, plus its
    bias, so the problem needs no other convolution's weights; those the interpreter can run pass the CPU check."""
    from scraper.pairs import check

    pairs = [p for p in kernel_pairs(stage) if p["model"] == "convnext_atto" and "_convolution_" in p["kernel"]
             and "_bias = " in p["python_code"]]
    assert len(pairs) >= 8
    for pair in pairs:
        assert "torch.ops.aten.convolution" not in pair["python_code"]  # computed outside the kernel: an input
        assert pair["reference_finite"] is True
    runnable = list({p["id"]: p for p in pairs if "libdevice." not in p["triton_code"]}.values())
    assert runnable
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in runnable))
    assert check.main([str(path), "--device", "cpu", "--jobs", "2", "--runs", "0", "--warmup", "0", "-q"]) == 0
    assert all(p["pair_correct"] is True for p in lines(path))


def resnet18_forward(tcd_roots) -> str:
    """The fixture's resnet18 training forward (output_code.py's text)."""
    paths = [p for root in tcd_roots.values() for p in Path(root).rglob("output_code.py")
             if p.parent.name == "resnet18__0_forward_1.0"]
    assert len(paths) == 1
    return paths[0].read_text()


def launched(text: str) -> list[tuple[str, list[str]]]:
    """(kernel, argument names) of every launch in call(), in order, read from the file with a regex."""
    return [(name, [a.strip() for a in args.split(",")])
            for name, args in re.findall(r"^\s+(triton_\w+)\.run\(([^)]*)\)", text, re.MULTILINE)]


def test_a_training_batch_norm_is_one_pair_of_its_kernels_in_call_order(stage, tcd_roots, tmp_path):
    """resnet18's first training BatchNorm is four kernels: a Welford split in two partial passes, the kernel that
    finishes it (mean, rsqrt, and the running mean / variance updated in place: `copy_` into primals_4/5) and the
    normalize + ReLU that reads its M2 buffer, which no FX node names. One pair holds all four, in call() order;
    Model takes the convolution's output and the running statistics; the CPU check passes it (libdevice.rsqrt by
    triton.language's rsqrt in the interpreter)."""
    from scraper.pairs import check

    launches = launched(resnet18_forward(tcd_roots))
    names = [name for name, _ in launches]
    first = next(i for i, name in enumerate(names) if name.endswith("_legit_functional_9"))
    expected = names[first:first + 4]
    assert expected[-1].endswith("_relu_12") and expected[2].endswith("_copy__11")
    running = launches[first + 2][1][3:5]  # the finishing kernel's in_ptr3, in_ptr4: the running mean and variance
    pairs = [p for p in kernel_pairs(stage) if p["folder"].endswith("resnet18__0_forward_1.0")]
    pair = next(p for p in pairs if p["kernel"] == expected[0])
    assert pair["kernels"] == expected
    forward = re.search(r"def forward\(self, ([^)]*)\)", pair["python_code"]).group(1).split(", ")
    assert set(running) <= set(forward) and "convolution" in forward
    assert not any(k in p["kernels"] for p in pairs if p is not pair for k in expected)  # in no other pair
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(pair) + "\n")
    assert check.main([str(path), "--device", "cpu", "--jobs", "1", "--runs", "0", "--warmup", "0", "-q"]) == 0
    checked = lines(path)[0]
    assert checked["pair_correct"] is True and checked["check"]["libdevice_stand_ins"] == ["rsqrt"]


def test_a_kernel_reading_an_internal_buffer_without_its_writer_is_dropped_with_the_reason(stage, tcd_roots):
    """resnet18's second block: the normalize + add + ReLU kernel reads the M2 buffer a later launch of a shared
    finishing kernel wrote. Its pair would take that buffer as a random input Model never uses (the two sides would
    disagree), so it is dropped as reads_internal, naming the buffer."""
    launches = launched(resnet18_forward(tcd_roots))
    name, args = next((n, a) for n, a in launches if n.endswith("_add_relu_17"))
    writers = [(n, a) for n, a in launches if n.endswith("_copy__15")]
    assert len(writers) > 1 and writers[0][1][6] != args[2] == writers[1][1][6]  # its in_ptr2: the 2nd launch's M2
    rejects = [r for r in lines(stage / "pairs_rejects.jsonl") if r.get("kernel") == name]
    assert [r["reason"] for r in rejects] == ["kernel_pair_reads_internal"] and args[2] in rejects[0]["error"]
    assert not any(name in p["kernels"] for p in kernel_pairs(stage))


def graph_text(tcd_roots, graph: str) -> str:
    """output_code.py of one graph of the shared fixtures."""
    paths = [p for root in tcd_roots.values() for p in Path(root).rglob("output_code.py") if p.parent.name == graph]
    assert len(paths) == 1
    return paths[0].read_text()


def returned(code: str, cls: str) -> list[str]:
    """The names `cls.forward` returns (one, or those it packs), read with a regex."""
    body = code.split(f"class {cls}(nn.Module):", 1)[1]
    value = re.search(r"^        return (.*)$", body, re.MULTILINE).group(1)
    packed = re.fullmatch(r"pack\((.*)\)", value)
    return [v.strip() for v in packed.group(1).split(",")] if packed else [value.strip()]


def check_on_cpu(pairs: list[dict], tmp_path: Path) -> list[dict]:
    from scraper.pairs import check

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    check.main([str(path), "--device", "cpu", "--jobs", "2", "--runs", "0", "--warmup", "0", "-q"])
    return lines(path)


def test_a_buffer_an_extern_op_reads_next_holds_the_value_that_op_takes(stage, tcd_roots, tmp_path):
    """resnet18's backward: a BatchNorm-backward kernel stores into the convolution's old buffer (`buf21 =
    convolution_17 # reuse`), which the fragment lists only under Inductor's name (writes `sub_31, sub_35, buf21,
    buf29`); call() then passes that buffer to `convolution_backward(buf21, relu_12, primals_104, ...)`, the
    fragment's `convolution_backward_2(mul_165, relu_12, primals_104, ...)`: so the buffer holds mul_165, not
    sub_35, the value listed before it. Oracle: those two lines of output_code.py, read with regexes; then the CPU
    check (its Triton against its Model) passes each such kernel."""
    text = graph_text(tcd_roots, "resnet18__0_backward_3.1")
    nodes = dict(re.findall(r"%convolution_backward_\d+ : .*?convolution_backward\.default\]\(args = \(%(\w+), "
                            r"(%\w+, %\w+)", text))  # fragment: taken value -> its graph inputs
    taken = {inputs.replace("%", ""): value for value, inputs in nodes.items()}
    calls = dict(re.findall(r"= torch\.ops\.aten\.convolution_backward\.default\((\w+), (\w+, \w+)", text))
    expected = {}  # kernel -> the values its in_out pointers hold, in order
    for name, args in launched(text):
        held = [taken.get(calls.get(arg)) for arg in args[:2]]
        if held[0] is not None:
            expected[name] = [h for h in held if h is not None]
    assert len(expected) >= 3
    pairs = {p["kernel"]: p for p in kernel_pairs(stage) if p["folder"].endswith("resnet18__0_backward_3.1")}
    for name, values in expected.items():
        assert returned(pairs[name]["python_code"], "Model")[:len(values)] == values, name
        assert returned(pairs[name]["triton_code"], "ModelNew")[:len(values)] == [f"in_out_ptr{i}" for i in
                                                                                   range(len(values))]
    checked = check_on_cpu([pairs[name] for name in expected], tmp_path)
    assert [p["pair_correct"] for p in checked] == [True] * len(expected)


def test_a_pointer_the_kernel_only_loads_is_read_not_returned(stage, tcd_roots, tmp_path):
    """mobilenetv3's last block: Inductor passes the convolution's buffer as `in_out_ptr0` but the kernel only
    loads it (what it would store there is dead: only the mean is used), so that pointer is an input and the pair
    returns the mean alone; before, Model returned the BatchNorm's output while the buffer kept the convolution.
    Oracle: the kernel's text in output_code.py (no `tl.store(in_out_ptr0`)."""
    graph = "mobilenetv3_small_050__0_inference_0.0"
    text = graph_text(tcd_roots, graph)
    name = "triton_per_fused__native_batch_norm_legit_no_training_hardswish_mean_42"
    source = text.split(f"def {name}(", 1)[1].split("''', device_str=", 1)[0]
    assert "tl.load(in_out_ptr0" in source and "tl.store(in_out_ptr0" not in source
    pair = next(p for p in kernel_pairs(stage) if p["folder"].endswith(graph) and p["kernel"] == name)
    assert returned(pair["triton_code"], "ModelNew") == ["in_out_ptr1"]
    assert len(returned(pair["python_code"], "Model")) == 1
    assert [p["pair_correct"] for p in check_on_cpu([pair], tmp_path)] == [True]
