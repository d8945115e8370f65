"""End to end: `scraper/generator/main.py` on the fixture repository as a directory and as zipball archives."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scraper.generator import main as generator_main
from scraper.records import read_records
from tests.generator_helpers import (EXPECTED_COUNT, EXPECTED_KERNELS, FIXTURE_REPO, NOT_SELF_CONTAINED,
                                     coarse_unbound_names, make_zipball)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPECTED_PAIRS = sorted((path, name) for path, names in EXPECTED_KERNELS.items() for name in names)


@pytest.fixture(scope="module")
def dir_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_dir")
    assert generator_main.main(["--generate-one", str(FIXTURE_REPO), "-o", str(out), "--jobs", "1", "-q"]) == 0
    return out


def test_every_kernel_is_written_with_its_record(dir_run):
    records = read_records(dir_run / "kernels.jsonl")
    assert sorted((r.path, r.extra["qualname"]) for r in records) == EXPECTED_PAIRS
    assert len({r.file for r in records}) == EXPECTED_COUNT  # the two _fwd_kernel do not collide
    for record in records:
        assert (dir_run / record.file).read_text() == record.code
        assert record.source == "github" and record.repo == "acme-kernels" and record.license == "MIT"
        compile(record.code, record.file, "exec")
        expected_ok = (record.path, record.extra["qualname"]) not in NOT_SELF_CONTAINED
        assert record.self_contained is expected_ok and (coarse_unbound_names(record.code) == set()) is expected_ok
        first = (FIXTURE_REPO / record.path).read_bytes().splitlines()[record.lineno - 1].decode("utf-8", "replace")
        indent = first[: len(first) - len(first.lstrip())]
        assert textwrap.dedent(indent + record.original) in record.code or record.extra["dropped_decorators"]


def test_stats_and_errors_by_phase(dir_run):
    counts = json.loads((dir_run / "stats.json").read_text())["counts"]
    assert counts["kernels_found"] == counts["kernels_extracted"] == EXPECTED_COUNT
    assert counts["kernels_self_contained"] == EXPECTED_COUNT - len(NOT_SELF_CONTAINED)
    newer = 1 if sys.version_info < (3, 12) else 0  # the 3.12 f-string file parses on 3.12
    assert counts["files_salvaged"] == 2 + newer and counts["repositories"] == 1
    assert (counts["files_salvaged_python2"], counts.get("files_salvaged_newer_python", 0),
            counts["files_salvaged_other"]) == (1, newer, 1)
    with open(dir_run / "errors.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_phase = {}
    for row in rows:
        by_phase.setdefault(row["phase"], set()).add(row["where"].split(":")[1])
    assert by_phase["parse"] == {"acme/broken/py2.py", "acme/broken/garbage.py"} | (
        {"acme/broken/py312_fstring.py"} if sys.version_info < (3, 12) else set())
    assert by_phase["decode"] == {"acme/broken/latin1.py"}
    assert by_phase["deps"] == {"acme/ops/external.py", "acme/ops/nested.py"}


def _download_dir(tmp_path: Path) -> Path:
    download = tmp_path / "download"
    download.mkdir()
    make_zipball(FIXTURE_REPO, download / "acme__kernels.zip")
    make_zipball(FIXTURE_REPO / "acme" / "ops", download / "evil__repo.zip", top="evil-repo-0000000",
                 extra={"evil-repo-0000000/../../escape.py": b"import triton\n@triton.jit\ndef k(x):\n    pass\n",
                        "evil-repo-0000000/huge.py": b"# triton\n" + b"x = 1\n" * 400_000})  # 2.4 MB > the 2 MiB cap
    (download / "broken__zip.zip").write_bytes(b"PK\x03\x04 not really a zip")
    manifest = {"full_name": "acme/kernels", "commit_sha": "c" * 40, "default_branch": "main", "stars": 321,
                "license": "Apache-2.0", "size_kb": 10, "archive": "acme__kernels.zip", "sha256": "x",
                "fetched_at": "2026-01-01T00:00:00Z", "origin": "github", "html_url": "https://github.com/acme/kernels"}
    (download / "manifest.jsonl").write_text(json.dumps(manifest) + "\n")
    return download


def test_generate_all_zips_manifest_bad_input_and_resume(tmp_path):
    download, out = _download_dir(tmp_path), tmp_path / "generated"
    argv = ["--generate-all", "--download-dir", str(download), "-o", str(out), "--jobs", "2", "-q"]
    assert generator_main.main(argv) == 0
    records = read_records(out / "kernels.jsonl")
    acme = [r for r in records if r.repo == "acme/kernels"]
    assert sorted((r.path, r.extra["qualname"]) for r in acme) == EXPECTED_PAIRS
    assert {(r.commit, r.stars, r.license) for r in acme} == {("c" * 40, 321, "Apache-2.0")}
    assert all(r.file.startswith("acme__kernels/") for r in acme)
    evil = [r for r in records if r.repo == "evil/repo"]
    assert {r.commit for r in evil} == {"0000000"} and "escape.py" not in {r.path for r in evil}
    assert not (tmp_path / "escape.py").exists() and not (out.parent / "escape.py").exists()
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["reason"], r.get("path")) for r in rejects) == [
        ("bad_archive", None), ("too_large", "huge.py"), ("unsafe_path", "evil-repo-0000000/../../escape.py")]
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert counts["repositories"] == 2 and counts["errors_archive"] == 1

    # rerun: nothing redone, nothing duplicated
    before = (out / "kernels.jsonl").read_text()
    assert generator_main.main(argv) == 0
    assert (out / "kernels.jsonl").read_text() == before
    # the two good archives are skipped; the corrupt one (ok: false) is looked at again
    assert json.loads((out / "stats.json").read_text())["counts"]["repositories_skipped_done"] == 2

    # crash in the middle of acme: its done-marker missing and a torn last line -> redone once, no duplicates
    done = [line for line in (out / "archives.jsonl").read_text().splitlines() if "acme__kernels" not in line]
    (out / "archives.jsonl").write_text("\n".join(done) + "\n")
    with open(out / "kernels.jsonl", "a") as handle:
        handle.write('{"name": "torn')
    assert generator_main.main(argv) == 0
    again = read_records(out / "kernels.jsonl")
    assert sorted(r.id for r in again) == sorted(r.id for r in records)


def test_command_from_its_folder_and_help(tmp_path):
    folder = REPO_ROOT / "scraper" / "generator"
    env = {**os.environ, "PYTHONPATH": ""}
    shown = subprocess.run([sys.executable, "main.py", "--help"], cwd=folder, env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "--generate-all" in shown.stdout and "--jobs" in shown.stdout
    out = tmp_path / "gen"
    done = subprocess.run([sys.executable, "main.py", "--generate-one", str(FIXTURE_REPO), "-o", str(out)],
                          cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "kernels_found" in done.stderr and not done.stdout
    assert len((out / "kernels.jsonl").read_text().splitlines()) == EXPECTED_COUNT
    missing = subprocess.run([sys.executable, "main.py", "--generate-all", "--download-dir", str(tmp_path / "nope")],
                             cwd=folder, env=env, capture_output=True, text=True)
    assert missing.returncode == 3 and "does not exist" in missing.stderr


RUN_GENERATED = textwrap.dedent("""
    import importlib.util, sys
    import torch

    def load(path):
        spec = importlib.util.spec_from_file_location(path.replace("/", "_").replace(".", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    add_mod, heur_mod, loop_mod, modobj_mod = (load(p) for p in sys.argv[1:5])
    x = torch.arange(100, dtype=torch.float32)
    y = torch.full((100,), 0.5)
    out = torch.empty_like(x)
    add_mod.add_kernel[(2,)](x, y, out, 100, BLOCK=64)
    assert torch.equal(out, 2 * x + 1 + y + 3), out
    out = torch.zeros(128)
    heur_mod.k_heuristics[(1,)](x, out, 100, BLOCK=128)
    assert torch.equal(out[:100], x + 1) and torch.equal(out[100:], torch.zeros(28)), out
    assert len(loop_mod.CONFIGS) == 4
    out = torch.empty(64)
    modobj_mod.k_module_attribute[(1,)](x, out, BLOCK=64)
    assert torch.equal(out, 2 * x[:64] + 1), out
    print("generated kernels ran")
""")


def test_generated_modules_import_and_run_under_the_interpreter(dir_run):
    by_name = {r.extra["qualname"]: dir_run / r.file for r in read_records(dir_run / "kernels.jsonl")}
    paths = [str(by_name[name]) for name in ("add_kernel", "k_heuristics", "k_loop_configs", "k_module_attribute")]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", RUN_GENERATED, *paths], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generated kernels ran" in done.stdout


def test_an_internal_error_costs_one_kernel_not_the_run(tmp_path, monkeypatch):
    from scraper.generator import run as run_module

    real = run_module.extract_closure

    def flaky(index, path, qualname, lineno=None):
        if qualname == "add_kernel":
            raise RuntimeError("simulated bug")
        return real(index, path, qualname, lineno)

    monkeypatch.setattr(run_module, "extract_closure", flaky)
    assert generator_main.main(["--generate-one", str(FIXTURE_REPO), "-o", str(tmp_path), "--jobs", "1",
                                "-q"]) == 0
    names = [r.extra["qualname"] for r in read_records(tmp_path / "kernels.jsonl")]
    assert len(names) == EXPECTED_COUNT - 1 and "add_kernel" not in names
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["name"]) for r in rejects] == [("extract_failed", "add_kernel")]


def test_a_folder_edited_below_its_top_level_is_redone(tmp_path):
    """A local clone updated in place (a file changed in a subfolder: the top folder's own mtime stays) must not
    keep its old kernels on the rerun."""
    repo = tmp_path / "downloads" / "me__clone"
    (repo / "pkg").mkdir(parents=True)
    kernel = repo / "pkg" / "ops.py"
    kernel.write_text("import triton\n\n\n@triton.jit\ndef old_name(x):\n    pass\n")
    out = tmp_path / "gen"
    argv = ["--generate-all", "--download-dir", str(tmp_path / "downloads"), "-o", str(out), "--jobs", "1"]
    assert generator_main.main(argv) == 0
    top_mtime = repo.stat().st_mtime_ns
    kernel.write_text("import triton\n\n\n@triton.jit\ndef new_name(x):\n    pass\n")
    later = kernel.stat().st_mtime_ns + 2_000_000_000
    os.utime(kernel, ns=(later, later))
    os.utime(repo, ns=(top_mtime, top_mtime))  # what an in-place edit of a nested file looks like
    assert generator_main.main(argv) == 0
    assert [r.name for r in read_records(out / "kernels.jsonl")] == ["new_name"]
    assert not (out / "me__clone" / "pkg" / "ops" / "old_name.py").exists()
    assert generator_main.main(argv) == 0  # unchanged now: skipped, nothing duplicated
    assert [r.name for r in read_records(out / "kernels.jsonl")] == ["new_name"]
    assert json.loads((out / "stats.json").read_text())["counts"]["repositories_skipped_done"] == 1


def test_stats_of_a_resumed_run_describe_the_whole_output(tmp_path):
    """Issue #26 item 5: a rerun that skips finished archives used to save only its own counts (586 of 880
    kernels). The oracle is the kernels written by hand in the fixtures, not the generator's output."""
    other = tmp_path / "downloads" / "me__two"
    (other / "pkg").mkdir(parents=True)
    (other / "pkg" / "ops.py").write_text(
        "import triton\n\n\n@triton.jit\ndef one(x):\n    pass\n\n\n@triton.jit\ndef two(x):\n    pass\n")
    out = tmp_path / "gen"
    first = ["--generate-one", str(FIXTURE_REPO), "-o", str(out), "--jobs", "1", "-q"]
    assert generator_main.main(first) == 0
    # the resumed run: acme is finished (skipped), me__two is new
    assert generator_main.main(first + ["--generate-one", str(other)]) == 0
    saved = json.loads((out / "stats.json").read_text())
    assert saved["counts"]["kernels_extracted"] == EXPECTED_COUNT + 2 == len(read_records(out / "kernels.jsonl"))
    assert saved["counts"]["kernels_found"] == EXPECTED_COUNT + 2 and saved["counts"]["repositories"] == 2
    assert saved["this_run"]["counts"]["kernels_extracted"] == 2
    assert saved["this_run"]["counts"]["repositories_skipped_done"] == 1
    # a third run skips both: the whole output still counted, nothing of it done now
    assert generator_main.main(first + ["--generate-one", str(other)]) == 0
    saved = json.loads((out / "stats.json").read_text())
    assert saved["counts"]["kernels_extracted"] == EXPECTED_COUNT + 2
    assert "kernels_extracted" not in saved["this_run"]["counts"]
    # archives.jsonl of an older version (entries without counts): the kept kernels are counted from the manifest
    entries = [json.loads(line) for line in (out / "archives.jsonl").read_text().splitlines()]
    (out / "archives.jsonl").write_text("".join(
        json.dumps({k: v for k, v in entry.items() if k != "counts"}) + "\n" for entry in entries))
    assert generator_main.main(first + ["--generate-one", str(other)]) == 0
    assert json.loads((out / "stats.json").read_text())["counts"]["kernels_extracted"] == EXPECTED_COUNT + 2
