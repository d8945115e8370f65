"""run_inductor_suite.py as a command line like the other stages': -o/--output (--out still works, with a
warning), an output folder it may write (its own suite/, resumed; never someone else's), exit statuses 0/1/2/3
with --keep-going, and progress through scraper.progress (plain lines off a terminal, none with -q).

The workers are test_suite.py's fake one (no torch): ok* compiles, fail* fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import run_inductor_suite
from scraper.suite import command
from scraper.suite.command import build_parser
from test_suite import FAKE_WORKER, manifest


@pytest.fixture
def fake_worker(tmp_path) -> Path:
    path = tmp_path / "fake_worker.py"
    path.write_text(FAKE_WORKER, encoding="utf-8")
    return path


def suite(out: Path, worker: Path, *args: str, flag: str = "-o") -> int:
    """run_inductor_suite.main over the timm suite with the fake worker, without a GPU."""
    return run_inductor_suite.main(["--suite", "timm", flag, str(out), "--worker", str(worker), "--gpus", "none",
                                    "-q", *args])


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes (what a refused run must leave as it was)."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


# ---------------------------------------------------------------------------------------------- -o / --out


def test_the_old_out_flag_still_works_and_says_to_use_output(tmp_path, fake_worker, capsys):
    assert suite(tmp_path / "new", fake_worker, "--models", "ok1") == 0
    assert "deprecated" not in capsys.readouterr().err
    assert suite(tmp_path / "old", fake_worker, "--models", "ok1", flag="--out") == 0
    err = capsys.readouterr().err
    assert err.count("warning: --out is deprecated; use -o/--output") == 1
    assert [row["model"] for row in manifest(tmp_path / "old")] == ["ok1"]
    assert [row["model"] for row in manifest(tmp_path / "new")] == ["ok1"]
    assert not re.search(r"--out\b", build_parser(command.__doc__).format_help())  # hidden from --help


# ---------------------------------------------------------------------------------------------- output folder


def test_someone_elses_suite_folder_is_refused_and_left_alone(tmp_path, fake_worker, capsys):
    out = tmp_path / "project"
    (out / "suite").mkdir(parents=True)
    (out / "suite" / "manifest.jsonl").write_text('{"task": "mine"}\n')  # not a manifest of this stage
    (out / "suite" / "stats.json").write_text('{"mine": true}\n')
    (out / "suite" / "logs").mkdir()
    (out / "suite" / "logs" / "run.log").write_text("my log\n")
    before = tree(out)
    assert suite(out, fake_worker, "--models", "ok1,ok2") == 2
    assert "suite, which run_inductor_suite did not write" in capsys.readouterr().err
    assert tree(out) == before  # nothing replaced, nothing added (no run_* folder, no ownership file)
    assert [path.name for path in out.iterdir()] == ["suite"]


def test_an_output_folder_that_is_a_file_is_refused(tmp_path, fake_worker):
    target = tmp_path / "out"
    target.write_text("a file\n")
    assert suite(target, fake_worker, "--models", "ok1") == 2
    assert target.read_text() == "a file\n"


def test_other_files_of_the_folder_and_an_empty_suite_folder_are_fine(tmp_path, fake_worker):
    out = tmp_path / "torch_compile_debug"
    (out / "suite").mkdir(parents=True)  # empty: nothing to mix with
    (out / "run_mine-pid_1" / "torchinductor").mkdir(parents=True)  # the user's own TORCH_COMPILE_DEBUG=1 run
    (out / "run_mine-pid_1" / "torchinductor" / "notes.txt").write_text("mine\n")
    (out / "notes.txt").write_text("mine too\n")
    assert suite(out, fake_worker, "--models", "ok1") == 0
    assert (out / "notes.txt").read_text() == "mine too\n"
    assert (out / "run_mine-pid_1" / "torchinductor" / "notes.txt").read_text() == "mine\n"
    owned = json.loads((out / ".triton-data.json").read_text())["files"]
    assert owned == {"suite": "run_inductor_suite"}


def test_a_rerun_resumes_in_its_own_folder(tmp_path, fake_worker):
    out = tmp_path / "tcd"
    assert suite(out, fake_worker, "--models", "ok1,fail1") == 1
    assert suite(out, fake_worker, "--models", "ok1,fail1,ok2") == 0  # only ok2 is new
    assert [row["model"] for row in manifest(out)] == ["ok1", "fail1", "ok2"]
    counts = json.loads((out / "suite" / "stats.json").read_text())["counts"]
    assert counts["skipped_done"] == 1 and counts["skipped_failed_before"] == 1 and counts["models"] == 1
    # Shards into one folder: each claims the same suite/ and resumes there.
    for index in range(2):
        assert suite(out, fake_worker, "--models", "ok1,ok3,ok4", "--shard", f"{index}/2") == 0
    assert [row["model"] for row in manifest(out, "manifest-1-of-2.jsonl")] == ["ok3"]
    assert [row["model"] for row in manifest(out, "manifest-0-of-2.jsonl")] == ["ok4"]


def test_a_folder_an_earlier_version_wrote_is_taken_as_its_own(tmp_path, fake_worker):
    """Debug roots written before .triton-data.json existed (the H100 runs, the fixtures) resume as before."""
    out = tmp_path / "tcd"
    assert suite(out, fake_worker, "--models", "ok1") == 0
    (out / ".triton-data.json").unlink()
    assert suite(out, fake_worker, "--models", "ok1,ok2") == 0
    assert [row["model"] for row in manifest(out)] == ["ok1", "ok2"]
    # One that was interrupted before any model ended has no manifest, only its stats.
    interrupted = tmp_path / "interrupted"
    (interrupted / "suite" / "logs").mkdir(parents=True)
    (interrupted / "suite" / "stats.json").write_text(json.dumps({"stage": "suite", "counts": {}}))
    assert suite(interrupted, fake_worker, "--models", "ok1") == 0


def test_list_writes_nothing_unless_it_lists_repositories(tmp_path, fake_worker, capsys):
    out = tmp_path / "never"
    assert suite(out, fake_worker, "--models", "ok1,ok2", "--list") == 0
    assert capsys.readouterr().out.split() == ["ok1", "ok2"] and not out.exists()


# ---------------------------------------------------------------------------------------------- exit statuses


def test_exit_statuses_and_keep_going(tmp_path, fake_worker):
    assert suite(tmp_path / "a", fake_worker, "--models", "ok1,ok2") == 0
    assert suite(tmp_path / "b", fake_worker, "--models", "ok1,fail1") == 1
    assert suite(tmp_path / "c", fake_worker, "--models", "ok1,fail1", "--keep-going") == 0
    assert suite(tmp_path / "d", fake_worker, "--models", "fail1,crash1", "--keep-going") == 1  # nothing compiled
    assert suite(tmp_path / "e", fake_worker, "--models", "ok1", "--shard", "3/2") == 2


@pytest.mark.parametrize("args", [
    ["--suite", "timm", "--models-file", "{tmp}/no-such-list.txt"],
    ["--suite", "modules", "--modules-file", "{tmp}/no-such-modules.jsonl", "--unsafe-no-sandbox"],
    ["--suite", "modules", "--repos", "{tmp}/no-such-repos", "--unsafe-no-sandbox"],
    ["--suite", "torchbench", "--torchbench-dir", "{tmp}/no-such-checkout"],
])
def test_a_missing_input_is_exit_status_3_and_writes_nothing(args, tmp_path, fake_worker, capsys):
    out = tmp_path / "out"
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    assert run_inductor_suite.main([*argv, "-o", str(out), "--worker", str(fake_worker), "--gpus", "none"]) == 3
    assert "no such file or folder" in capsys.readouterr().err and not out.exists()


def test_a_folder_that_is_no_torchbench_checkout_is_bad_usage(tmp_path, fake_worker, monkeypatch, capsys):
    monkeypatch.delenv("TORCHBENCH_DIR", raising=False)
    assert run_inductor_suite.main(["--suite", "torchbench", "--torchbench-dir", str(tmp_path), "-o",
                                    str(tmp_path / "out"), "--gpus", "none", "-q"]) == 2
    assert "not a TorchBench checkout" in capsys.readouterr().err
    assert run_inductor_suite.main(["--suite", "torchbench", "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "needs --torchbench-dir" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- progress


def test_off_a_terminal_progress_is_a_few_lines_with_the_counts(tmp_path, fake_worker, monkeypatch, capsys):
    monkeypatch.setenv("TRITON_DATA_PROGRESS_SECONDS", "0")
    argv = ["--suite", "timm", "--models", "ok1,fail1,ok2", "-o", str(tmp_path / "tcd"), "--worker",
            str(fake_worker), "--gpus", "none"]  # one worker: the models end in list order
    assert run_inductor_suite.main(argv) == 1
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar redraws in a log file
    lines = [line for line in err.splitlines() if line.startswith("INFO scraper.progress: timm models: ")]
    counts = [re.search(r"timm models: (\d)/3 model, ok=(\d), failed=(\d) \(", line).groups() for line in lines]
    assert counts == [("1", "1", "0"), ("2", "1", "1"), ("3", "2", "1")]
    assert run_inductor_suite.main([*argv, "-o", str(tmp_path / "quiet"), "-q"]) == 1
    assert "scraper.progress" not in capsys.readouterr().err  # -q: warnings and errors only


# ------------------------------------------------------------------------ what a suite needs, before any worker

SUITE_PACKAGES = {"timm": "timm", "huggingface": "transformers"}  # what their programs import (docs/suite.md)


@pytest.mark.parametrize("suite_name", sorted(SUITE_PACKAGES))
def test_a_suite_whose_package_is_not_installed_stops_before_any_worker(tmp_path, suite_name):
    """The real worker, the real interpreter: where the package is missing here, one line with the pip command and
    exit 2 at once, nothing written (each worker would fail its model with ModuleNotFoundError after ~17 s)."""
    import importlib.util
    import subprocess
    import sys
    import time

    package = SUITE_PACKAGES[suite_name]
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(command_script()), "--suite", suite_name, "--models", "m1,m2",
                           "-o", str(tmp_path / "out"), "--gpus", "none"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert time.monotonic() - started < 15  # no worker started (one imports torch first)
    lines = [line for line in done.stderr.splitlines() if f"pip install {package}" in line]
    assert len(lines) == 1 and f"--suite {suite_name} needs {package}" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def command_script() -> Path:
    return Path(run_inductor_suite.__file__).resolve()


def test_the_check_names_what_is_missing_and_spares_list_and_replacement_workers(tmp_path, monkeypatch, capsys,
                                                                                  fake_worker):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name in ("timm", "transformers") else real(name, *rest))
    for suite_name, package in SUITE_PACKAGES.items():
        assert run_inductor_suite.main(["--suite", suite_name, "-o", str(tmp_path / suite_name), "--gpus", "none",
                                        "--models", "m1"]) == 2
        assert f"needs {package}, which" in capsys.readouterr().err and not (tmp_path / suite_name).exists()
    from scraper import suites

    assert suites.missing_packages("torchbench") == []  # each TorchBench model its own: skipped when missing
    # --list starts no worker, a replacement worker has its own steps: neither needs the suite's packages
    assert run_inductor_suite.main(["--suite", "timm", "--models", "m1,m2", "--list", "-o", str(tmp_path / "l")]) == 0
    assert capsys.readouterr().out.split() == ["m1", "m2"]
    assert suite(tmp_path / "fake", fake_worker, "--models", "ok1") == 0
