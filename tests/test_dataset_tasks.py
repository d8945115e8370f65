"""create_json.py --task pairs / problems on the pairs of the real fixtures, loaded with the real
`datasets.load_dataset("json", ...)` as torchtune does; and --with-reference for the completion task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from datasets import load_dataset

import create_json
from pairs_helpers import old_pairs, read_lines, recorded_pairs, recorded_root, suite_roots  # noqa: F401


def run(*argv: str) -> int:
    return create_json.main([*argv, "-q"])


def test_pairs_task_loads_with_datasets_and_keeps_kernelbook_columns(old_pairs, recorded_pairs, tmp_path, capsys):
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(old_pairs), str(recorded_pairs), "--task", "pairs", "-o", str(out)) == 0
    snippet = capsys.readouterr().out
    assert "torchtune.datasets.instruct_dataset" in snippet and "input: python_code" in snippet
    inputs = read_lines(old_pairs / "pairs.jsonl") + read_lines(recorded_pairs / "pairs.jsonl")
    rows = load_dataset("json", data_files=str(out / "triton_pairs.json"), split="train")
    for column in ("python_code", "triton_code", "entry_point", "repo_name", "licenses", "stars", "sha",
                   "pair_level", "accuracy", "pair_correct", "speedup", "split"):
        assert column in rows.column_names
    stats = json.loads((out / "triton_pairs.stats.json").read_text())["counts"]
    # the recorded HardMishMe model failed its accuracy check: dropped, and named in the stats
    assert stats["dropped_model_inaccurate"] == 1
    assert len(rows) == len(inputs) - 1 == stats["out_rows"]
    assert set(rows["entry_point"]) == {"Model"} and set(rows["pair_level"]) == {"model", "graph"}
    models = {}
    for row in rows:
        models.setdefault(row["model"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in models.values())  # a model never straddles the splits
    train = load_dataset("json", data_files=str(out / "triton_pairs.train.json"), split="train")
    assert len(train) == sum(1 for row in rows if row["split"] == "train")


def test_pairs_task_deduplicates_the_triton_program_and_drops_failed_checks(old_pairs, tmp_path):
    copy = Path(shutil.copytree(old_pairs, tmp_path / "copy"))
    pairs = read_lines(copy / "pairs.jsonl")
    pairs[0]["pair_correct"] = False
    (copy / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    out = tmp_path / "datasets"
    out.mkdir()
    assert run(str(old_pairs), str(copy), "--task", "pairs", "-o", str(out), "--format", "jsonl") == 0
    stats = json.loads((out / "triton_pairs.stats.json").read_text())["counts"]
    distinct = len({p["id"] for p in pairs})
    assert stats["dropped_exact_duplicate"] == 2 * len(pairs) - distinct - 1
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
    assert {"model", "graph"} == set(rows["level"])


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
