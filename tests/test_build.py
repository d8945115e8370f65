"""`triton-data build` on the CPU (scraper/builder/): the bundled repositories (examples/repos, plus the modules
fixture so that the modules suite has an nn.Module to run behind the wall) and a real TORCH_COMPILE_DEBUG fixture,
every stage in order: three datasets and the report. Killed at a random point and rerun, it ends with the same
files; two shards merged give the datasets of one unsharded build. The oracles are the first build's own files,
the stage-1 pairs file (which pairs the check passed), and the unsharded build."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from scraper.console import main as triton_data

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "torch_compile_debug" / "tcd_timm.tar.gz"
DATASETS = ("triton_functions.json", "triton_pairs.json", "triton_problems.json")
VARYING = ("speedup",)  # a timing: differs from run to run


def need_wall():
    from scraper.sandbox.wall import SandboxUnavailable, check_wall

    try:
        check_wall()
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here for the modules suite: {exc}")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    need_wall()
    base = tmp_path_factory.mktemp("inputs")
    repos = base / "repos"
    shutil.copytree(ROOT / "examples" / "repos", repos)
    shutil.copytree(ROOT / "tests" / "fixtures" / "repos" / "acme-kernels", repos / "acme" / "acme-kernels")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(base / "tcd", filter="data")
    return {"repos": repos, "debug": base / "tcd" / "torch_compile_debug"}


def argv(inputs: dict, out: Path, *extra: str) -> list[str]:
    return ["build", "-o", str(out), "--repos", str(inputs["repos"]), "--suites", "modules", "--per-repo", "2",
            "--debug-root", str(inputs["debug"]), "--device", "cpu", "--backend", "none", "--gpus", "none",
            "--check-limit", "3", "--check-timeout", "60", "-q", *extra]


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("built") / "corpus"
    started = time.monotonic()
    assert triton_data(argv(inputs, out)) == 0
    return out, time.monotonic() - started


def rows(path: Path) -> list:
    """A dataset's rows without the fields that are timings, in a fixed order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return sorted(json.dumps({k: v for k, v in row.items() if k not in VARYING}, sort_keys=True) for row in data)


def test_a_build_makes_the_three_datasets_and_the_report(built):
    out, _ = built
    state = json.loads((out / "build.json").read_text())
    assert state["finished"] and {e["state"] for e in state["stages"].values()} == {"done"}
    assert set(state["stages"]) == {"github", "generate", "suite:modules", "inductor", "check", "dataset:completion",
                                    "dataset:pairs", "dataset:problems", "report"}
    pairs = [json.loads(line) for line in (out / "kernels" / "pairs.jsonl").read_text().splitlines()]
    passed = {p["id"] for p in pairs if p.get("pair_correct") is True and p["pair_level"] in ("kernel", "module")}
    assert passed, "the CPU check passed none of the first pairs"
    exported = json.loads((out / "datasets" / "triton_pairs.json").read_text())
    assert {row["id"] for row in exported} == passed  # exactly the checked pairs, nothing unchecked
    functions = json.loads((out / "datasets" / "triton_functions.json").read_text())
    assert {row["source"] for row in functions} == {"inductor", "github"}  # both engines' kernels
    problems = json.loads((out / "datasets" / "triton_problems.json").read_text())
    assert problems and all("class Model" in row["python_code"] for row in problems)
    report = json.loads((out / "report.json").read_text())
    assert report and "<html" in (out / "report.html").read_text().lower()
    manifest = (out / "suites" / "modules" / "suite" / "manifest.jsonl").read_text().splitlines()
    assert manifest and all(json.loads(line).get("sandbox_pid") for line in manifest)  # behind the wall


def test_a_rerun_of_a_finished_build_runs_nothing_again(built, inputs, capsys):
    out, _ = built
    before = {name: (out / "datasets" / name).stat().st_mtime_ns for name in DATASETS}
    assert triton_data(argv(inputs, out)[:-1]) == 0  # not quiet: it says what it kept
    said = capsys.readouterr().err
    assert said.count("done in an earlier run, kept") == 9
    assert {name: (out / "datasets" / name).stat().st_mtime_ns for name in DATASETS} == before


def test_a_build_killed_at_a_random_point_and_rerun_ends_with_the_same_files(built, inputs, tmp_path):
    out, seconds = built
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(1.0, seconds * 0.9)
    killed = tmp_path / "corpus"
    command = [sys.executable, "-m", "scraper.console", *argv(inputs, killed)]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)  # the build and the stage it was running, at once
    process.wait()
    assert triton_data(argv(inputs, killed)) == 0, f"seed {seed}, killed after {delay:.1f} s"
    for name in DATASETS:
        assert rows(killed / "datasets" / name) == rows(out / "datasets" / name), f"{name}: seed {seed}"
    assert (killed / "kernels" / "kernels.jsonl").read_text() == (out / "kernels" / "kernels.jsonl").read_text()


def test_two_shards_merged_equal_one_unsharded_build(inputs, tmp_path):
    # no check: a shard checks its own first pairs, not the unsharded build's first ones
    whole = tmp_path / "whole"
    assert triton_data(argv(inputs, whole, "--no-check")) == 0
    shards = [tmp_path / f"shard_{index}" for index in range(2)]
    for index, shard in enumerate(shards):
        assert triton_data(argv(inputs, shard, "--no-check", "--shard", f"{index}/2")) == 0
    sizes = [len((s / "kernels" / "kernels.jsonl").read_text().splitlines()) for s in shards]
    assert all(sizes), "a shard got no graph: the split is not a split"
    merged = tmp_path / "merged"
    assert triton_data(["build", "--merge", *map(str, shards), "-o", str(merged), "-q"]) == 0
    for name in ("triton_functions.json", "triton_problems.json"):
        assert rows(merged / "datasets" / name) == rows(whole / "datasets" / name), name
    ids = lambda root: sorted(json.loads(line)["id"] for line in (root / "kernels" / "pairs.jsonl").open())  # noqa
    assert ids(merged) == ids(whole)
    assert (merged / "report.html").is_file()


def test_a_folder_of_other_files_is_refused_untouched(tmp_path, inputs):
    (tmp_path / "notes.txt").write_text("mine")
    assert triton_data(argv(inputs, tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_the_plan_says_what_runs_and_for_how_long(capsys, tmp_path):
    assert triton_data(["build", "-o", str(tmp_path / "c"), "--hours", "0.5", "--plan"]) == 0
    said = capsys.readouterr().err
    # 0.5 h: the suites share 60% (540 s each, plus half of that a model may take), the check 25% (450 s)
    assert "suite:timm           about 810 s" in said and "check                about 450 s" in said
    assert not (tmp_path / "c").exists()  # a plan touches nothing


def test_a_cpu_build_checks_correctness_only(tmp_path):
    """The interpreter's timings say nothing: a CPU build's check runs each side once, a GPU build's times them."""
    from scraper.builder.plan import Options, make_plan

    def check_argv(device):
        stages = make_plan(Options(corpus=tmp_path / "c", suites=["timm"], device=device))
        return next(stage.argv for stage in stages if stage.name == "check")

    cpu, gpu = check_argv("cpu"), check_argv(None)
    assert cpu[cpu.index("--runs") + 1] == "0" and cpu[cpu.index("--warmup") + 1] == "0"
    assert "--runs" not in gpu and "--warmup" not in gpu
