"""create_json.py --task pairs / problems on the pairs of the real fixtures, loaded with the real
`datasets.load_dataset("json", ...)` as torchtune does; and --with-reference for the completion task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import load_dataset

import create_json
from pairs_helpers import old_pairs, read_lines, recorded_pairs, recorded_root, suite_roots  # noqa: F401


def run(*argv: str) -> int:
    return create_json.main([*argv, "-q"])


EVERYTHING = ("--include-unchecked", "--pair-level", "kernel,module,model,graph", "--max-tokens", "1000000")


def test_pairs_task_loads_with_datasets_and_keeps_kernelbook_columns(old_pairs, recorded_pairs, tmp_path, capsys):
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(old_pairs), str(recorded_pairs), "--task", "pairs", "-o", str(out), *EVERYTHING) == 0
    snippet = capsys.readouterr().out
    assert "torchtune.datasets.instruct_dataset" in snippet and "input: python_code" in snippet
    inputs = read_lines(old_pairs / "pairs.jsonl") + read_lines(recorded_pairs / "pairs.jsonl")
    rows = load_dataset("json", data_files=str(out / "triton_pairs.json"), split="train")
    for column in ("python_code", "triton_code", "entry_point", "repo_name", "licenses", "stars", "sha",
                   "original_triton_code", "module_name", "uuid", "repo_link",  # KernelBook's columns, all
                   "pair_level", "accuracy", "pair_correct", "speedup", "split", "kernel", "needs_cuda", "packages"):
        assert column in rows.column_names
    stats = json.loads((out / "triton_pairs.stats.json").read_text())["counts"]
    # the recorded HardMishMe model failed its accuracy check: its pairs are dropped, and named in the stats
    inaccurate = [p for p in inputs if p.get("accuracy") == "fail"]
    assert inaccurate and stats["dropped_model_inaccurate"] == len(inaccurate)
    assert len(rows) == len({p["id"] for p in inputs if p.get("accuracy") != "fail"}) == stats["out_rows"]
    assert set(rows["entry_point"]) == {"Model"} and set(rows["pair_level"]) == {"kernel", "model", "graph"}
    assert all(len(uuid) == 36 for uuid in rows["uuid"]) and len(set(rows["uuid"])) == len(rows)
    models = {}
    for row in rows:
        models.setdefault(row["model"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in models.values())  # a model never straddles the splits
    train = load_dataset("json", data_files=str(out / "triton_pairs.train.json"), split="train")
    assert len(train) == sum(1 for row in rows if row["split"] == "train")


def marked(source: Path, graphs: Path, dest: Path) -> tuple[Path, dict]:
    """A copy of a pairs folder (with a graph-level pair of another added) where some pairs passed the check:
    three kernel-level ones, one of them far over the default token cap, a module-level and a graph-level one."""
    copy = Path(shutil.copytree(source, dest))
    pairs = read_lines(copy / "pairs.jsonl")
    pairs.append(next(p for p in read_lines(graphs / "pairs.jsonl") if p["pair_level"] == "graph"))
    kernel = list({p["id"]: p for p in pairs if p["pair_level"] == "kernel" and p.get("accuracy") != "fail"
                   and sum(q["id"] == p["id"] for q in pairs) == 1}.values())[:3]
    module = min((p for p in pairs if p["pair_level"] == "model" and p["suite"] == "modules"
                  and p.get("accuracy") != "fail"), key=lambda p: len(p["python_code"] + p["triton_code"]))
    graph = next(p for p in pairs if p["pair_level"] == "graph")
    for pair in [*kernel, module, graph]:
        pair["pair_correct"], pair["speedup"] = True, 1.25
    kernel[2]["triton_code"] += "\n# " + "padding " * 6000  # ~48k characters: over 8,192 tokens
    (copy / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return copy, {"kernel": kernel, "module": module, "graph": graph, "all": pairs}


def test_pairs_export_by_default_checked_kernel_and_module_pairs_within_the_token_cap(recorded_pairs, old_pairs,
                                                                                       tmp_path, capsys):
    copy, chosen = marked(recorded_pairs, old_pairs, tmp_path / "copy")
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(copy), "--task", "pairs", "-o", str(out)) == 0
    err = capsys.readouterr().err
    rows = load_dataset("json", data_files=str(out / "triton_pairs.json"), split="train")
    want = {p["id"] for p in chosen["kernel"][:2]} | {chosen["module"]["id"]}
    assert set(rows["id"]) == want and set(rows["pair_correct"]) == {True}
    stats = json.loads((out / "triton_pairs.stats.json").read_text())["counts"]
    assert stats["dropped_too_many_tokens"] == 1 and stats["dropped_pair_level_graph"] == sum(
        p["pair_level"] == "graph" for p in chosen["all"])
    unchecked = [p for p in chosen["all"] if p["pair_correct"] is None and p["pair_level"] != "graph"]
    assert stats["dropped_unchecked"] == len(unchecked) > 0
    assert "pairs left out:" in err and "unchecked" in err
    rejects = read_lines(out / "triton_pairs.rejects.jsonl")
    assert {r["reason"] for r in rejects} == {"unchecked", "pair_level_graph", "too_many_tokens"}
    # the levels and the cap are choices: the graph-level pair and the long kernel pair come back on request
    again = tmp_path / "again"
    again.mkdir()
    assert run(str(copy), "--task", "pairs", "-o", str(again), "--pair-level", "kernel,graph",
               "--max-tokens", "100000") == 0
    rows = load_dataset("json", data_files=str(again / "triton_pairs.json"), split="train")
    assert set(rows["id"]) == {p["id"] for p in chosen["kernel"]} | {chosen["graph"]["id"]}


def test_pairs_export_with_nothing_checked_says_how_to_get_rows(recorded_pairs, tmp_path, capsys):
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(recorded_pairs), "--task", "pairs", "-o", str(out)) == 1  # nothing checked: no row
    assert "--include-unchecked" in capsys.readouterr().err
    assert run(str(recorded_pairs), "--task", "pairs", "-o", str(out), "--include-unchecked") == 0


def test_pair_level_must_be_known(recorded_pairs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(str(recorded_pairs), "--task", "pairs", "-o", str(tmp_path), "--pair-level", "kernel,fused")
    assert exit_info.value.code == 2 and "fused" in capsys.readouterr().err


def test_pairs_task_deduplicates_the_triton_program_and_drops_failed_checks(old_pairs, tmp_path):
    copy = Path(shutil.copytree(old_pairs, tmp_path / "copy"))
    pairs = read_lines(copy / "pairs.jsonl")
    pairs[0]["pair_correct"] = False
    (copy / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(old_pairs), str(copy), "--task", "pairs", "-o", str(out), "--format", "jsonl",
               *EVERYTHING) == 0
    stats = json.loads((out / "triton_pairs.stats.json").read_text())["counts"]
    distinct = len({p["id"] for p in pairs})
    twins = len(pairs) - distinct  # pairs of one id in one file (the same kernel in two graphs)
    assert stats["dropped_exact_duplicate"] == len(pairs) + twins - 1
    assert stats["out_rows"] == distinct  # the failed copy went, its twin stayed
    assert stats["dropped_failed_check"] == 1
    rejects = read_lines(out / "triton_pairs.rejects.jsonl")
    assert {r["reason"] for r in rejects} == {"exact_duplicate", "failed_check"}


def test_problems_task_is_the_problem_pool(old_pairs, tmp_path):
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(old_pairs), "--task", "problems", "-o", str(out)) == 0
    rows = load_dataset("json", data_files=str(out / "triton_problems.json"), split="train")
    index = read_lines(old_pairs / "problems" / "problems.jsonl")
    assert len(rows) == len({entry["id"] for entry in index})
    assert all("class Model(" in text and "def get_inputs(" in text and "def get_init_inputs(" in text
               for text in rows["python_code"])
    assert {"model", "graph", "kernel"} == set(rows["level"])
    kernel_rows = [row for row in rows if row["level"] == "kernel"]
    assert all(row["kernel"] and row["needs_cuda"] in (True, False) for row in kernel_rows)
    assert all(row["reference_finite"] is True for row in kernel_rows if row["needs_cuda"] is False)


def test_with_reference_puts_the_pytorch_above_each_inductor_kernel(old_pairs, tmp_path):
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(old_pairs), "-o", str(out), "--with-reference", "--no-card", "--near-threshold", "0") == 0
    rows = json.loads((out / "triton_functions.json").read_text())
    records = {r["name"]: r for r in read_lines(old_pairs / "kernels.jsonl")}
    row = next(r for r in rows if r["kernel_name"] == "triton_red_fused_mean_0")
    comment = records["triton_red_fused_mean_0"]["comment"]
    assert "Original ATen: [aten.mean]" in comment  # what the header must say, from Inductor's own comment
    assert row["text"].startswith("```python\n# PyTorch (ATen) this kernel implements: aten.mean\n# Graph fragment:")
    assert row["text"].endswith(records["triton_red_fused_mean_0"]["code"].strip("\n") + "\n```")
