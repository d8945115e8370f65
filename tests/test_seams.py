"""The seams between steps: one writer per manifest, torn lines, stale temporary files, reruns that keep what
they do not redo, distinct files for colliding names, one `git_head`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import get_kernels_from_debug_info
from scraper import records as records_module
from scraper.fileio import JsonlAppender, cut_torn_tail, iter_jsonl
from scraper.generator import main as generator_main
from scraper.records import KernelRecord, ManifestWriter, read_records
from scraper.repos import git_head

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KERNEL = "import triton\n\n\n@triton.jit\ndef {name}(x_ptr):\n    pass\n"


def test_an_append_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"b": ')  # what a crash in the middle of an append leaves
    JsonlAppender(path).append({"c": 3})
    assert path.read_text() == '{"a": 1}\n{"c": 3}\n'
    assert cut_torn_tail(path) == 0  # whole now


def test_a_torn_file_of_one_line_is_cut_to_nothing(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"x" * 70000)  # longer than one backwards block
    assert cut_torn_tail(path) == 70000 and path.read_bytes() == b""


def test_manifest_writer_replaces_only_when_it_finishes_and_clears_dead_runs_temporaries(tmp_path):
    path = tmp_path / "kernels.jsonl"
    path.write_text("old\n")
    dead = tmp_path / ".kernels.jsonl.999999999.tmp"  # no such pid
    dead.write_text("left by a killed run")
    alive = tmp_path / f".kernels.jsonl.{os.getppid()}.tmp"  # a running process's file stays
    alive.write_text("in use")
    with pytest.raises(RuntimeError):
        with ManifestWriter(path) as writer:
            writer.write(KernelRecord(name="k", code=KERNEL.format(name="k"), source="github"))
            raise RuntimeError("the run fails half way")
    assert path.read_text() == "old\n" and not dead.exists() and alive.exists()
    assert not list(tmp_path.glob(f".kernels.jsonl.{os.getpid()}.tmp"))
    with ManifestWriter(path) as writer:
        writer.write(KernelRecord(name="k", code=KERNEL.format(name="k"), source="github"))
    assert [r.name for r in read_records(path)] == ["k"]


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    with tarfile.open(FIXTURES / "suite_run" / "suite_run.tar.gz") as archive:
        archive.extractall(root, filter="data")
    return next(path.parent.parent for path in root.rglob("manifest*.jsonl") if path.parent.name == "suite")


def test_inductor_chain_writes_the_manifest_once_with_every_step_in_it(suite_root, tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(records_module.os, "replace",
                        lambda source, target: (replaced.append(Path(target).name), real_replace(source, target)))
    out = tmp_path / "out"
    argv = [str(suite_root), "-o", str(out), "--validate", "parses", "-q"]
    assert get_kernels_from_debug_info.main(argv) == 0
    assert replaced.count("kernels.jsonl") == 1
    rows = read_records(out / "kernels.jsonl")
    assert rows and all(r.parses is True and r.extra["pytorch"]["suite"] == "huggingface" for r in rows)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["validation"]["inductor"]["records"] == len(rows)


def write_repo(folder: Path, files: dict) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def run_generator(download: Path, out: Path, *extra: str) -> int:
    return generator_main.main(["--generate-all", "--download-dir", str(download), "-o", str(out),
                                "--jobs", "1", "-q", *extra])


def test_a_rerun_keeps_the_rejects_and_errors_of_archives_it_does_not_redo(tmp_path):
    download = tmp_path / "download"
    write_repo(download / "a__one", {"k.py": KERNEL.format(name="k_one"), "bad.py": "def (:\n  triton\n"})
    write_repo(download / "b__two", {"k.py": KERNEL.format(name="k_two"), "bad.py": "def (:\n  triton\n"})
    out = tmp_path / "out"
    assert run_generator(download, out) == 0
    first_errors = (out / "errors.csv").read_text()
    assert {row["where"].split(":")[0] for row in csv.DictReader(first_errors.splitlines())} == {"a__one", "b__two"}
    (download / "b__two" / "k2.py").write_text(KERNEL.format(name="k_three"))  # only b changes: only b is redone
    assert run_generator(download, out) == 0
    errors = list(csv.DictReader((out / "errors.csv").read_text().splitlines()))
    assert sorted(row["where"].split(":")[0] for row in errors) == ["a__one", "b__two"]
    assert sorted(r.name for r in read_records(out / "kernels.jsonl")) == ["k_one", "k_three", "k_two"]


def test_files_whose_names_fold_to_one_module_path_get_distinct_modules(tmp_path):
    repo = write_repo(tmp_path / "repo", {"x y.py": KERNEL.format(name="k"), "x_y.py": KERNEL.format(name="k")})
    out = tmp_path / "out"
    assert generator_main.main(["--generate-one", str(repo), "-o", str(out), "--jobs", "1", "-q"]) == 0
    rows = read_records(out / "kernels.jsonl")
    assert sorted(r.path for r in rows) == ["x y.py", "x_y.py"]
    assert len({r.file for r in rows}) == 2 and all((out / r.file).is_file() for r in rows)


def test_a_validate_rerun_checks_archives_an_earlier_run_did_not(tmp_path):
    download = tmp_path / "download"
    write_repo(download / "a__one", {"k.py": KERNEL.format(name="k_one")})
    out = tmp_path / "out"
    assert run_generator(download, out) == 0
    assert [r.parses for r in read_records(out / "kernels.jsonl")] == [None]
    assert run_generator(download, out, "--validate", "parses") == 0
    assert [r.parses for r in read_records(out / "kernels.jsonl")] == [True]
    assert run_generator(download, out, "--validate", "parses") == 0  # done that far: skipped
    assert json.loads((out / "stats.json").read_text())["counts"]["repositories_skipped_done"] == 1


def test_git_head_reads_loose_and_packed_refs_without_running_git(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    run = lambda *args: subprocess.run(["git", "-C", str(clone), *args], check=True, capture_output=True, text=True)
    run("init", "-q", "-b", "main")
    (clone / "f.py").write_text("x = 1\n")
    run("add", "f.py")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    sha = run("rev-parse", "HEAD").stdout.strip()
    assert git_head(clone) == sha  # loose ref
    run("pack-refs", "--all")
    assert not (clone / ".git" / "refs" / "heads" / "main").exists()
    assert git_head(clone) == sha  # packed-refs only
    assert git_head(tmp_path) is None


def test_validate_command_keeps_lines_that_are_not_records(tmp_path):
    from scraper.validate.__main__ import main as validate_main

    manifest = tmp_path / "kernels.jsonl"
    good = KernelRecord(name="k", code=KERNEL.format(name="k"), source="github")
    manifest.write_text(json.dumps(good.to_dict()) + "\n" + "not json\n")
    assert validate_main([str(manifest), "--level", "parses", "-q"]) == 0
    lines = manifest.read_text().splitlines()
    assert json.loads(lines[0])["parses"] is True and lines[1] == "not json"
    assert [row["line"] for row in iter_jsonl(tmp_path / "validate_rejects.jsonl")] == [2]
