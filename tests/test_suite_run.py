"""A real suite run (tests/fixtures/suite_run/suite_run.tar.gz: part of the H100 run of docs/suite.md, 3 Hugging
Face models, one of which failed): its manifest agrees with the debug folders, get_kernels_from_debug_info.py
extracts it, and scraper.suiterun joins every extracted kernel back to its model and PyTorch program."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

import get_kernels_from_debug_info
import run_inductor_suite
from scraper.records import read_records
from scraper.suiterun import SuiteRoot

ARCHIVE = Path(__file__).resolve().parent / "fixtures" / "suite_run" / "suite_run.tar.gz"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("suite_run")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(target, filter="data")
    return target / "suite_run"


def manifest_rows(root: Path) -> dict[str, dict]:
    lines = (root / "suite" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["model"]: row for row in map(json.loads, lines)}


def test_manifest_matches_the_debug_folders(suite_run):
    rows = manifest_rows(suite_run)
    assert {m: r["status"] for m, r in rows.items()} == {
        "GPT2LMHeadModel": "ok", "BertForMaskedLM": "ok", "XLNetLMHeadModel": "failed"}
    for model in ("GPT2LMHeadModel", "BertForMaskedLM"):
        row = rows[model]
        assert row["graphs"] == [f"{model}__0_inference_0.0"]  # named by set_model_name
        output_code = suite_run / row["run_dir"] / "torchinductor" / row["graphs"][0] / "output_code.py"
        # Independent count: kernel definitions in the generated module.
        assert row["kernels"] == len(re.findall(r"^def triton_", output_code.read_text(), flags=re.M)) > 0
        assert row["versions"]["torch"].startswith("2.") and row["versions"]["gpu"].startswith("NVIDIA")
        program = (suite_run / row["program"]).read_text()
        assert f"MODEL = {model!r}" in program and "def build(device" in program
    failed = rows["XLNetLMHeadModel"]
    assert failed["graphs"] == [] and failed["phase"] == "build" and failed["error"].startswith("RuntimeError")
    assert failed["error"] in (suite_run / failed["log"]).read_text()


def test_extracted_kernels_join_back_to_their_model_and_program(suite_run, tmp_path):
    out = tmp_path / "kernels"
    assert get_kernels_from_debug_info.main([str(suite_run), "-o", str(out), "-q"]) == 0
    records = read_records(out / "kernels.jsonl")
    rows = manifest_rows(suite_run)
    assert len(records) == rows["GPT2LMHeadModel"]["kernels"] + rows["BertForMaskedLM"]["kernels"]
    root = SuiteRoot(suite_run)
    for record in records:
        side = root.side(root.entry_for(record.run_dir, record.graph))
        assert side.model == record.model and side.suite == "huggingface"
        assert f"MODEL = {record.model!r}" in side.program
    assert root.entry_for("run_elsewhere", "x__0_inference_0.0") is None


def test_rerun_over_the_real_run_skips_what_it_did(suite_run, tmp_path):
    # --redo none: every model already in the manifest is skipped, so no worker starts (no torch needed here).
    suite_run = Path(shutil.copytree(suite_run, tmp_path / "copy"))
    code = run_inductor_suite.main(["--suite", "huggingface", "--out", str(suite_run), "--gpus", "none", "-q",
                                    "--models", "GPT2LMHeadModel,BertForMaskedLM,XLNetLMHeadModel"])
    assert code == 0
    stats = json.loads((suite_run / "suite" / "stats.json").read_text())["counts"]
    assert stats["skipped_done"] == 2 and stats["skipped_failed_before"] == 1
    assert len(manifest_rows(suite_run)) == 3
