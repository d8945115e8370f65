"""create_json.py end to end on the real outputs of the two earlier stages (Inductor fixtures + bundled repos).

Oracles: the number of distinct Inductor kernels comes from an ast walk over the fixtures' output_code.py files
with this test's own identity rule (dataset_helpers.simple_kernel_key); similarity of near duplicates from exact
shingle sets; the output is read back with the real `datasets.load_dataset`, as torchtune reads it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

import create_json
from dataset_helpers import (build_stage_outputs, embedded_inductor_kernels, run_script, simple_kernel_key,
                             true_jaccard)

FENCE_OPEN, FENCE_CLOSE = "```python\n", "\n```"


@pytest.fixture(scope="module")
def stage_outputs(tcd_roots, tmp_path_factory):
    return build_stage_outputs(tcd_roots, tmp_path_factory.mktemp("stages"))


@pytest.fixture(scope="module")
def fixture_kernels(tcd_roots):
    return [kernel for root in tcd_roots.values() for kernel in embedded_inductor_kernels(root)]


def run(argv, capsys=None) -> str:
    assert create_json.main([str(a) for a in argv] + ["-q"]) == 0
    return capsys.readouterr().out if capsys else ""


def read_json(path: Path):
    return json.loads(path.read_text())


def test_exact_dedup_collapses_repeated_inductor_kernels(stage_outputs, fixture_kernels, tmp_path):
    inductor, _ = stage_outputs
    distinct = len({simple_kernel_key(k) for k in fixture_kernels})
    assert len(fixture_kernels) == 312  # the fixture README's count
    assert distinct < len(fixture_kernels)  # the fixture models do repeat kernels
    out = tmp_path / "out" / "exact.json"
    run([inductor, "-o", out, "--near-threshold", "0", "--val-fraction", "0"])
    rows = read_json(out)
    assert len(rows) == distinct
    stats = read_json(out.parent / "stats.json")
    assert stats["counts"]["dropped_exact_duplicate"] == len(fixture_kernels) - distinct
    assert len({row["id"] for row in rows}) == len(rows)
    assert {simple_kernel_key(row["text"].removeprefix(FENCE_OPEN).removesuffix(FENCE_CLOSE)) for row in rows} == {
        simple_kernel_key(k) for k in fixture_kernels}
    # cluster sizes add up to every input kernel
    assert sum(row["cluster_size"] for row in rows) == len(fixture_kernels)
    rejects = [json.loads(line) for line in (out.parent / "rejects.jsonl").read_text().splitlines()]
    kept_ids = {row["id"] for row in rows}
    assert len(rejects) == len(fixture_kernels) - distinct
    assert all(r["reason"] == "exact_duplicate" and r["duplicate_of"] in kept_ids for r in rejects)


def test_row_text_is_the_stage_kernel_file_fenced(stage_outputs, tmp_path):
    inductor, generated = stage_outputs
    out = tmp_path / "d.json"
    run([inductor, generated, "-o", out])
    files = defaultdict(set)  # id -> text of each kernel file the stages wrote for it (copies share an id)
    for folder in (inductor, generated):
        for line in (folder / "kernels.jsonl").read_text().splitlines():
            record = json.loads(line)
            files[record["id"]].add((folder / record["file"]).read_text().strip("\n"))
    rows = read_json(out)
    for row in rows:
        assert row["text"].startswith(FENCE_OPEN) and row["text"].endswith(FENCE_CLOSE)
        assert row["text"][len(FENCE_OPEN):-len(FENCE_CLOSE)] in files[row["id"]]
    assert {r["kernel_name"] for r in rows if r["source"] == "github"} >= {"softmax_kernel", "matmul_kernel"}


def test_full_build_loads_with_datasets_in_both_formats(stage_outputs, fixture_kernels, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    inductor, generated = stage_outputs
    n_github = len((generated / "kernels.jsonl").read_text().splitlines())
    outputs = {}
    for fmt in ("json", "jsonl"):
        out = tmp_path / fmt / f"triton_functions.{fmt}"
        printed = run([inductor, generated, "-o", out, "--format", fmt], capsys)
        assert "torchtune.datasets.text_completion_dataset" in printed
        assert f"data_files: {out.with_name(f'triton_functions.train.{fmt}')}" in printed
        loaded = datasets.load_dataset("json", data_files=str(out), split="train")
        assert all(isinstance(text, str) and text.strip() for text in loaded["text"])
        outputs[fmt] = loaded
        train = datasets.load_dataset("json", data_files=str(out.with_name(f"triton_functions.train.{fmt}")),
                                      split="train")
        assert set(train["split"]) == {"train"}
    assert outputs["json"]["id"] == outputs["jsonl"]["id"]  # same rows, same order, either format
    rows = outputs["json"]
    stats = read_json(tmp_path / "json" / "stats.json")["counts"]
    assert stats["in_records"] == len(fixture_kernels) + n_github
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
    assert stats["out_rows"] == len(rows) == stats["in_records"] - dropped
    assert stats["dropped_near_duplicate"] > 0
    assert set(rows["source"]) == {"inductor", "github"}
    assert set(rows["split"]) == {"train", "validation"}


def test_no_repository_or_model_in_both_splits(stage_outputs, tmp_path):
    inductor, generated = stage_outputs
    out = tmp_path / "d.json"
    run([inductor, generated, "-o", out, "--val-fraction", "0.3"])
    splits_of = defaultdict(set)
    for row in read_json(out):
        splits_of[row["repo"] or row["model"]].add(row["split"])
    assert all(len(splits) == 1 for splits in splits_of.values()), splits_of
    assert {s for splits in splits_of.values() for s in splits} == {"train", "validation"}


def test_near_duplicates_are_similar_to_the_kernel_they_point_to(stage_outputs, tmp_path):
    inductor, _ = stage_outputs
    out = tmp_path / "d.json"
    run([inductor, "-o", out])
    codes = {}
    for line in (inductor / "kernels.jsonl").read_text().splitlines():
        record = json.loads(line)
        codes[record["id"]] = record["code"]
    rejects = [json.loads(line) for line in (out.parent / "rejects.jsonl").read_text().splitlines()]
    near = [r for r in rejects if r["reason"] == "near_duplicate"]
    assert near
    kept_ids = {row["id"] for row in read_json(out)}
    similarities = [true_jaccard(codes[r["id"]], codes[r["duplicate_of"]]) for r in near]
    assert all(r["duplicate_of"] in kept_ids for r in near)
    # Clusters are connected components, so a member may reach its keeper through another member; most are
    # direct matches at the threshold, and none is unrelated.
    assert min(similarities) >= 0.5
    assert sum(s >= 0.75 for s in similarities) >= 0.9 * len(similarities)


def test_card_and_histogram(stage_outputs, tmp_path):
    inductor, generated = stage_outputs
    out = tmp_path / "ds" / "triton_functions.json"
    run([inductor, generated, "-o", out])
    card = (out.parent / "README.md").read_text()
    header = card.split("---\n")[1]
    assert "path: triton_functions.train.json" in header and "path: triton_functions.validation.json" in header
    # licenses of the example repositories (MIT, Apache-2.0), and Inductor kernels have none
    assert {"- mit", "- apache-2.0", "- unknown"} <= set(header.splitlines())
    rows = read_json(out)
    assert f"| inductor | {sum(r['source'] == 'inductor' for r in rows)} |" in card
    assert (out.parent / "token_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_is_idempotent(stage_outputs, tmp_path):
    inductor, generated = stage_outputs
    out = tmp_path / "d.json"
    run([inductor, generated, "-o", out])
    first = (out.read_bytes(), (out.parent / "rejects.jsonl").read_bytes())
    run([inductor, generated, "-o", out])
    assert (out.read_bytes(), (out.parent / "rejects.jsonl").read_bytes()) == first


def test_cli_as_a_script_data_to_stdout_messages_to_stderr(stage_outputs, tmp_path):
    inductor, generated = stage_outputs
    out = tmp_path / "ds.jsonl"
    done = run_script("create_json.py", inductor, generated, "-o", out, "--format", "jsonl")
    assert done.stdout.splitlines() == [
        "dataset:", "  _component_: torchtune.datasets.text_completion_dataset", "  source: json",
        f"  data_files: {tmp_path / 'ds.train.jsonl'}", "  column: text", "  split: train"]
    counts = read_json(tmp_path / "stats.json")["counts"]
    assert "== create_json summary ==" in done.stderr
    assert f"in {counts['in_records']}, duplicates " in done.stderr
    assert f"out {counts['out_rows']}: train {counts['out_train']} " in done.stderr
    assert len(out.read_text().splitlines()) == counts["out_rows"]
    assert "--decontaminate" in run_script("create_json.py", "--help").stdout
