"""--validate on the stage CLIs and create_json.py --require: the levels land in the manifests and filter rows."""

import json
import shutil
import subprocess
import sys

from conftest import REPO_ROOT
from scraper.records import read_records


def run(script, *args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_inductor_validate_then_require_compiles(tcd_roots, tmp_path):
    inductor_out = tmp_path / "inductor_kernels"
    result = run("get_kernels_from_debug_info.py", tcd_roots["tcd_userkernel"], "-o", inductor_out,
                 "--validate", "compiles", "--validate-jobs", "1")
    assert result.returncode == 0, result.stderr
    records = read_records(inductor_out / "kernels.jsonl")
    assert sorted(r.name for r in records) == ["scaled_add", "triton_poi_fused_mul_relu_0"]
    for record in records:
        assert (record.parses, record.imports, record.compiles) == (True, True, True), record.validation
        assert record.validation["compiles"]["ok"] is True
    stats = json.loads((inductor_out / "stats.json").read_text())
    assert stats["validation"]["inductor"]["compiles"] == 1.0
    assert (inductor_out / "validate_cache.jsonl").is_file()

    # A folder of plain .py kernels (no manifest, no signature): imports can pass, compiles cannot be checked.
    github_dir = tmp_path / "plain"
    shutil.copytree(REPO_ROOT / "examples/repos/kernelsmith/softmax-triton", github_dir)
    out = tmp_path / "ds" / "triton_functions.jsonl"
    result = run("create_json.py", inductor_out, github_dir, "-o", out, "--format", "jsonl",
                 "--require", "compiles", "--validate-jobs", "1", "--no-card", "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["source"] for row in rows} == {"inductor"}
    assert len(rows) == 2
    stats = json.loads((out.parent / "stats.json").read_text())
    assert stats["counts"]["dropped_not_compiles"] >= 1
    rejected = [json.loads(line) for line in (out.parent / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejected} >= {"not_compiles"}


def test_generator_validate_fills_levels(tmp_path):
    out = tmp_path / "generated"
    result = run("scraper/generator/main.py", "--generate-one", REPO_ROOT / "examples/repos/kernelsmith/softmax-triton",
                 "-o", out, "--jobs", "1", "--validate", "imports", "--validate-jobs", "1")
    assert result.returncode == 0, result.stderr
    records = read_records(out / "kernels.jsonl")
    assert records and all(r.source == "github" for r in records)
    for record in records:
        assert record.parses is True and record.imports is True, record.validation
        assert record.compiles is None  # not asked for (and no signature is known)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["validation"]["github"]["imports"] == 1.0
    assert stats["validation"]["github"]["records"] == len(records)
