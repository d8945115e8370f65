"""Inputs of create_json.py: manifests, folders scanned for jit kernels, and bad input that must not stop a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import create_json
from dataset_helpers import ADD_KERNEL, EXAMPLES, SOFTMAX_KERNEL, github_record


def write_manifest(folder: Path, items: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kernels.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def build(tmp_path: Path, *inputs, extra=(), status=0) -> tuple[list, dict, list]:
    out = tmp_path / "not" / "yet" / "there" / "ds.json"
    assert create_json.main([str(i) for i in inputs] + ["-o", str(out), "-q", *extra]) == status
    stats = json.loads((out.parent / "stats.json").read_text())
    rejects = [json.loads(line) for line in (out.parent / "rejects.jsonl").read_text().splitlines()]
    return json.loads(out.read_text()), stats, rejects


def test_bad_inputs_are_counted_and_the_run_goes_on(tmp_path):
    good = write_manifest(tmp_path / "good", [github_record("add_kernel", ADD_KERNEL, "a/a", license="MIT")])
    with open(good, "a") as handle:
        handle.write('{"name": "torn", "code": "x\n')  # malformed line
        handle.write(json.dumps(github_record("empty", "   \n", "a/a")) + "\n")  # no source text
        handle.write(json.dumps({"name": "no_code_key", "source": "github"}) + "\n")  # not a record
        handle.write(json.dumps(github_record("surrogate", "x = '\ud800'\n", "a/a")) + "\n")  # cannot be UTF-8
        handle.write(json.dumps(github_record("softmax_kernel", SOFTMAX_KERNEL, "b/b")) + "\n")
    (tmp_path / "empty").mkdir()
    rows, stats, rejects = build(tmp_path, good, tmp_path / "missing", tmp_path / "empty", status=3)
    assert sorted(row["kernel_name"] for row in rows) == ["add_kernel", "softmax_kernel"]
    assert build(tmp_path, good, tmp_path / "missing", extra=["--keep-going"])[0] == rows  # 0: told to go on
    # torn line, record without code key, code that cannot be UTF-8 (no id), missing folder, empty folder
    assert stats["counts"]["errors_load"] == 5
    assert stats["counts"]["dropped_no_code"] == 1
    assert [r["name"] for r in rejects if r["reason"] == "no_code"] == ["empty"]
    messages = " ".join(e["example"] for e in stats["errors"]["load"])
    assert "does not exist" in messages and "malformed JSON line" in messages and "no kernels.jsonl" in messages


def test_an_input_with_no_kernel_writes_an_empty_dataset_and_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "ds.json"
    assert create_json.main([str(tmp_path / "empty"), "-o", str(out), "-q"]) == 1
    assert json.loads(out.read_text()) == []  # no stale rows of an earlier run stay behind
    assert json.loads((tmp_path / "stats.json").read_text())["counts"]["out_rows"] == 0
    captured = capsys.readouterr()
    assert "no kernel is left" in captured.err and "torchtune" not in captured.out
    assert str(tmp_path / "empty") in captured.err  # the message names where it looked


def test_folder_without_manifest_is_scanned_with_the_generator_detector(tmp_path):
    # the bundled example repositories as plain folders: every @triton.jit function becomes a row
    repos = tmp_path / "repos"
    shutil.copytree(EXAMPLES, repos)
    (repos / "broken.py").write_text("import triton\n@triton.jit\ndef half(:\n")  # does not parse: counted, skipped
    rows, stats, _ = build(tmp_path, repos, extra=["--near-threshold", "0"])
    expected = {}
    for file in EXAMPLES.rglob("*.py"):  # oracle: the decorator text, read here with plain string tests
        lines = file.read_text().splitlines()
        for before, line in zip(lines, lines[1:]):
            if before.strip().startswith("@triton.jit") and line.lstrip().startswith("def "):
                expected[line.split("def ")[1].split("(")[0]] = file
    names = {row["kernel_name"] for row in rows}
    assert set(expected) <= names
    for row in rows:
        assert row["source"] == "github" and row["path"].endswith(".py")
        assert row["text"].removeprefix("```python\n").removesuffix("\n```") in (repos / row["path"]).read_text()
    assert stats["counts"]["scanned_kernels"] >= len(expected)


def test_single_manifest_file_and_output_folder_created(tmp_path):
    manifest = write_manifest(tmp_path / "in", [github_record("add_kernel", ADD_KERNEL, "a/a")])
    rows, stats, _ = build(tmp_path, manifest)
    assert [row["kernel_name"] for row in rows] == ["add_kernel"]
    assert stats["counts"]["in_github"] == 1


def test_output_may_be_an_existing_folder(tmp_path):
    manifest = write_manifest(tmp_path / "in", [github_record("add_kernel", ADD_KERNEL, "a/a")])
    (tmp_path / "out").mkdir()
    assert create_json.main([str(manifest), "-o", str(tmp_path / "out"), "--format", "jsonl", "-q"]) == 0
    lines = (tmp_path / "out" / "triton_functions.jsonl").read_text().splitlines()
    assert [json.loads(line)["kernel_name"] for line in lines] == ["add_kernel"]


def test_scan_of_real_repository_code(tmp_path):
    # benchmarks/third_party/corpus: real Triton code from PyPI wheels (Liger-Kernel), a folder without kernels.jsonl
    corpus = Path(__file__).resolve().parent.parent / "benchmarks" / "third_party" / "corpus" / "linkedin__Liger-Kernel"
    rows, stats, rejects = build(tmp_path, corpus, extra=["--near-threshold", "0"])
    decorated = set()  # oracle: `@triton.jit` line, then (after other decorators) the def it decorates
    for file in corpus.rglob("*.py"):
        lines = file.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("@triton.jit"):
                following = next(l for l in lines[number + 1:] if not l.strip().startswith("@"))
                decorated.add((file.relative_to(corpus).as_posix(), following.split("def ")[1].split("(")[0]))
    assert len(decorated) > 20
    found = {(row["path"], row["kernel_name"]) for row in rows}
    exact_copies = stats["counts"].get("dropped_exact_duplicate", 0)
    assert decorated <= found | {(r["path"], r["name"]) for r in rejects}
    assert len(rows) + exact_copies == stats["counts"]["scanned_kernels"]
    for row in rows:  # each row is the kernel's exact text in its file
        assert row["text"].removeprefix("```python\n").removesuffix("\n```") in (corpus / row["path"]).read_text()


def test_output_folder_that_cannot_be_made_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    good = write_manifest(tmp_path / "good", [github_record("add_kernel", ADD_KERNEL, "a/a")])
    assert create_json.main([str(good), "-o", str(blocker / "ds.json"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(blocker) in err and "Traceback" not in err
