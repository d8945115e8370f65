"""Issue 23, route 11: what sandboxed code answers is cleaned to valid UTF-8 and finite numbers before anything is
written. The hostile inputs: a kernel whose error text holds a lone surrogate (the manifest writer could not
encode it, and the whole validate run was thrown away, on every rerun), a kernel that puts NaN and Infinity into
its own answer (kernels.jsonl was no longer strict JSON), and a suite worker whose result holds both."""

from __future__ import annotations

import json
from pathlib import Path

import run_inductor_suite
import scraper.validate.__main__ as validate_cli
from scraper.records import KernelRecord, write_jsonl
from test_sandbox_attacks import KERNEL

SURROGATE = 'raise RuntimeError("broken \\ud800 text")\n'
# The check's child writes its answer with json.dumps: the module wraps it to add what JSON cannot hold.
NOT_FINITE = '''
import json
_dumps = json.dumps
json.dumps = lambda result, **options: _dumps(dict(result, score=float("nan"), best=float("inf"),
                                                    nested={"low": float("-inf")}), **options)
'''
# A suite worker (behind the wall, like the real one) whose result holds a lone surrogate and NaN.
WORKER = r'''
import json, sys
job = json.load(open(sys.argv[1]))
open(job["result"], "w").write('{"success": false, "phase": "compile", "error": "bad \\ud800 text", '
                               '"max_error": NaN, "compile_seconds": Infinity}')
sys.exit(1)
'''


def refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def strict(text: str) -> list:
    """Every line of a JSONL text parsed as strict JSON (NaN, Infinity refused); the text must be valid UTF-8."""
    text.encode("utf-8")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


def test_a_lone_surrogate_in_an_error_text_is_written_as_valid_utf8(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [KernelRecord(name="kern", code=KERNEL + SURROGATE, source="github"),
                           KernelRecord(name="kern", code=KERNEL, source="github")])
    assert validate_cli.main([str(manifest), "--level", "imports", "--jobs", "1", "-q"]) == 0
    rows = strict(manifest.read_bytes().decode("utf-8"))
    assert [row["imports"] for row in rows] == [False, True]
    assert "broken \ufffd text" in rows[0]["validation"]["imports"]["error"]
    strict((tmp_path / "validate_cache.jsonl").read_bytes().decode("utf-8"))
    assert validate_cli.main([str(manifest), "--level", "imports", "--jobs", "1", "-q"]) == 0  # and on a rerun


def test_nan_and_infinity_in_a_kernels_answer_never_reach_kernels_jsonl(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [KernelRecord(name="kern", code=KERNEL + NOT_FINITE, source="github")])
    assert validate_cli.main([str(manifest), "--level", "imports", "--jobs", "1", "-q"]) == 0
    row = strict(manifest.read_bytes().decode("utf-8"))[0]
    answer = row["validation"]["imports"]
    assert row["imports"] is True and answer["score"] is None and answer["nested"] == {"low": None}
    strict((tmp_path / "validate_cache.jsonl").read_bytes().decode("utf-8"))


def test_a_suite_workers_result_is_cleaned_before_the_manifest(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    modules = tmp_path / "modules.jsonl"
    modules.write_text(json.dumps({"name": "net", "class_name": "Net", "code": "class Net: pass\n"}) + "\n")
    out = tmp_path / "tcd"
    assert run_inductor_suite.main(["--suite", "modules", "--modules-file", str(modules), "--out", str(out),
                                    "--worker", str(worker), "--gpus", "none", "-q"]) == 1
    row = strict((out / "suite" / "manifest.jsonl").read_bytes().decode("utf-8"))[0]
    assert row["error"] == "bad \ufffd text" and row["max_error"] is None and row["compile_seconds"] is None
    for path in Path(out, "suite").rglob("*.json"):  # the result kept beside the manifest, stats.json
        json.loads(path.read_bytes().decode("utf-8"), parse_constant=refuse)
