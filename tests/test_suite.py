"""run_inductor_suite.py orchestration with a FAKE compile step (no torch, no GPU): model lists, sharding, the
worker pool and its GPUs, the manifest, failures, crashes, timeouts, interruption and resume.

The fake worker (written to tmp_path) takes the real worker's arguments and behaves by the model's name:
ok* writes a graph folder with as many kernels as the digits in its name say, fail* reports a failed compile,
crash* exits without a result, kill* dies by SIGKILL, sleep* hangs (with a child process) until killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_inductor_suite
from scraper.suite import model_lists
from scraper.suite.orchestrate import visible_gpus, worker_slots

REPO_ROOT = Path(__file__).resolve().parent.parent

FAKE_WORKER = r'''
import json, os, re, signal, subprocess, sys, time, types
a = types.SimpleNamespace(**json.load(open(sys.argv[1])))  # the WorkerJob (scraper/worker/job.py)
seen = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch_compile_debug": os.environ.get("TORCH_COMPILE_DEBUG"),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"), "batch_seen": a.batch_size,
        "secrets_seen": sorted(k for k in ("GITHUB_TOKEN", "HF_TOKEN") if k in os.environ),
        "max_autotune_seen": a.max_autotune, "mode_seen": a.mode}
def result(**fields):
    fields.update(seen)
    with open(a.result, "w") as f:
        json.dump(fields, f)
open(a.program, "w").write("# program of %s\n" % a.model)
name = a.model
def debug_folder():
    """What TORCH_COMPILE_DEBUG would leave: run_<...>-pid_<pid>/torchinductor/<graph>/output_code.py."""
    run_dir = "run_fake-pid_%d" % os.getpid()
    graph = "%s__0_%s_0.0" % (a.graph_name, a.mode)
    folder = os.path.join(a.out, run_dir, "torchinductor", graph)
    os.makedirs(folder)
    kernels = int(re.sub(r"\D", "", name) or 0)
    with open(os.path.join(folder, "output_code.py"), "w") as f:
        f.write("".join("k%d = async_compile.triton('k%d', 'src')\n" % (i, i) for i in range(kernels)))
    return run_dir, graph, kernels
if name.startswith("ok"):
    run_dir, graph, kernels = debug_folder()
    result(success=True, phase=None, error=None, run_dir=run_dir, graphs=[graph], kernels=kernels)
elif name.startswith("fail"):
    result(success=False, phase="compile", error="RuntimeError: boom in " + name, graphs=[], kernels=0)
    sys.exit(1)
elif name.startswith("crash"):
    print("Fatal Python error: Segmentation fault (fake)", flush=True)
    sys.exit(3)
elif name.startswith("kill"):
    os.kill(os.getpid(), signal.SIGKILL)
elif name.startswith("sleep"):
    debug_folder()  # one graph done before hanging
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(os.path.join(a.out, name + ".pids"), "w") as f:
        f.write("%d %d" % (os.getpid(), child.pid))
    time.sleep(120)
'''


@pytest.fixture
def fake_worker(tmp_path) -> Path:
    path = tmp_path / "fake_worker.py"
    path.write_text(FAKE_WORKER, encoding="utf-8")
    return path


def run_suite_cli(out: Path, worker: Path, *args: str) -> int:
    """run_inductor_suite.main with the fake worker, no GPU unless the test names some."""
    argv = ["-o", str(out), "--worker", str(worker), "-q", *args]
    if "--gpus" not in args:
        argv += ["--gpus", "none"]
    return run_inductor_suite.main(argv)


def manifest(out: Path, name: str = "manifest.jsonl") -> list[dict]:
    """The manifest lines, read with plain json."""
    path = out / "suite" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by its parent) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- model lists


@pytest.mark.parametrize("suite", ["timm", "huggingface"])
def test_default_lists_are_readable_and_useful(suite):
    path = model_lists.default_list_path(suite)
    specs = model_lists.read_model_list(path)
    # Independent reading: every non-comment, non-blank line is one model, no name twice.
    lines = [l.split("#")[0].split() for l in path.read_text().splitlines() if l.split("#")[0].strip()]
    assert [spec.name for spec in specs] == [words[0] for words in lines]
    assert len({spec.name for spec in specs}) == len(specs) >= 30
    assert all(spec.batch_size and spec.batch_size > 0 for spec in specs)


def test_safe_names():
    assert model_lists.safe_name("owner/repo/pkg/mod.py:Block") == "owner_repo_pkg_mod_py_Block"
    assert model_lists.safe_name("convnextv2_nano.fcmae_ft_in22k_in1k") == "convnextv2_nano_fcmae_ft_in22k_in1k"
    long_a, long_b = "a/" * 100 + "X", "a/" * 100 + "Y"
    cut_a, cut_b = model_lists.safe_name(long_a), model_lists.safe_name(long_b)
    assert len(cut_a) == len(cut_b) == 120 and cut_a != cut_b


def test_list_lines_and_models_argument():
    assert model_lists.parse_list_line("  resnet18 16  # a comment") == model_lists.ModelSpec("resnet18", 16)
    assert model_lists.parse_list_line("# only a comment") is None
    assert model_lists.parse_list_line("BertForMaskedLM,8") == model_lists.ModelSpec("BertForMaskedLM", 8)
    with pytest.raises(ValueError, match="name \\[batch_size\\]"):
        model_lists.parse_list_line("resnet18 sixteen", "f.txt:3")
    assert model_lists.parse_models_arg("a, b:16,,a") == [model_lists.ModelSpec("a"), model_lists.ModelSpec("b", 16)]


def test_models_file_and_bad_lines(tmp_path, fake_worker, capsys):
    good = tmp_path / "mine.txt"
    good.write_text("# mine\nok1 4\n\nok2\n", encoding="utf-8")
    assert run_suite_cli(tmp_path / "o", fake_worker, "--suite", "timm", "--models-file", str(good), "--list") == 0
    assert capsys.readouterr().out.split() == ["ok1", "ok2"]
    bad = tmp_path / "bad.txt"
    bad.write_text("ok1 4 extra\n", encoding="utf-8")
    assert run_suite_cli(tmp_path / "o", fake_worker, "--suite", "timm", "--models-file", str(bad)) == 2
    assert "bad.txt:1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_list_deterministically(count, tmp_path, fake_worker, capsys):
    names = [spec.name for spec in model_lists.read_model_list(model_lists.default_list_path("timm"))]
    shards = []
    for index in range(count):
        assert run_suite_cli(tmp_path, fake_worker, "--suite", "timm", "--shard", f"{index}/{count}", "--list") == 0
        shards.append(capsys.readouterr().out.split())
    assert sorted(sum(shards, [])) == sorted(names)  # every model in exactly one shard
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert model_lists.shard(names, count - 1, count) == shards[-1]  # same answer again


@pytest.mark.parametrize("bad", ["4/4", "1", "-1/3", "a/b", "0/0"])
def test_bad_shard_is_a_usage_error(bad, tmp_path, fake_worker, capsys):
    assert run_suite_cli(tmp_path, fake_worker, "--suite", "timm", f"--shard={bad}", "--list") == 2
    assert "--shard" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- one run


def test_failures_crashes_and_timeouts_are_recorded_and_the_suite_goes_on(tmp_path, fake_worker):
    out = tmp_path / "tcd"
    code = run_suite_cli(out, fake_worker, "--suite", "timm", "--timeout", "10",  # ample for a busy machine
                         "--models", "ok12,fail1,crash1,kill1,sleep1,ok3:16")
    assert code == 1  # some failed
    rows = {row["model"]: row for row in manifest(out)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "ok12": "ok", "ok3": "ok", "fail1": "failed", "crash1": "crashed", "kill1": "crashed", "sleep1": "timeout"}
    assert [rows[n]["success"] for n in ("ok12", "ok3", "fail1")] == [True, True, False]
    assert rows["fail1"]["error"] == "RuntimeError: boom in fail1" and rows["fail1"]["phase"] == "compile"
    assert "status 3" in rows["crash1"]["error"] and "Segmentation fault (fake)" in rows["crash1"]["error"]
    assert "signal 9" in rows["kill1"]["error"]
    assert rows["sleep1"]["error"] == "timed out after 10 s" and rows["sleep1"]["returncode"] is None
    # What the killed worker finished is still found (by its pid) and joins back to it.
    assert rows["sleep1"]["graphs"] == ["sleep1__0_inference_0.0"] and rows["sleep1"]["kernels"] == 1
    assert rows["crash1"]["graphs"] == [] and rows["crash1"]["run_dir"] is None
    # The hung worker AND its child were killed (the whole process group).
    for pid in map(int, (out / "sleep1.pids").read_text().split()):
        assert not alive(pid)
    # Graphs and kernels as the fake worker wrote them; batch sizes from --models or the suite default.
    assert rows["ok12"]["kernels"] == 12 and rows["ok12"]["graphs"] == ["ok12__0_inference_0.0"]
    assert (out / rows["ok12"]["run_dir"] / "torchinductor" / "ok12__0_inference_0.0" / "output_code.py").is_file()
    assert (rows["ok3"]["batch_seen"], rows["ok12"]["batch_seen"]) == (16, 8)
    assert all(row["torch_compile_debug"] == "1" and row["hf_hub_offline"] == "1"
               for row in rows.values() if "torch_compile_debug" in row)
    # Program and log of every model, relative to the output folder.
    assert (out / rows["fail1"]["program"]).read_text() == "# program of fail1\n"
    assert "Segmentation fault (fake)" in (out / rows["crash1"]["log"]).read_text()
    stats = json.loads((out / "suite" / "stats.json").read_text())
    assert stats["counts"]["models"] == 6 and stats["counts"]["models_ok"] == 2
    assert stats["counts"]["kernels"] == 16 and stats["counts"]["graphs"] == 3
    assert stats["counts"]["errors_timeout"] == 1 and stats["counts"]["errors_compile"] == 1
    assert (out / "suite" / "errors.csv").read_text().count("\n") == 1 + 4


def test_rerun_skips_done_models_and_redo_reruns_failures(tmp_path, fake_worker, capsys):
    out = tmp_path / "tcd"
    models = "ok1,fail1,crash1"
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", models) == 1
    assert len(manifest(out)) == 3
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", models) == 0  # nothing to do
    assert len(manifest(out)) == 3
    # The summary also gives the totals of every run into this folder.
    assert "(timm, inference, float32): crashed 1, failed 1, ok 1" in capsys.readouterr().err
    counts = json.loads((out / "suite" / "stats.json").read_text())["counts"]
    assert counts["skipped_done"] == 1 and counts["skipped_failed_before"] == 2 and "models" not in counts
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", models, "--redo", "failed") == 1
    assert sorted(row["model"] for row in manifest(out)[3:]) == ["crash1", "fail1"]
    # Another mode is another job; --max-autotune reaches the worker.
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", "ok1", "--mode", "training",
                         "--max-autotune") == 0
    last = manifest(out)[-1]
    assert (last["mode"], last["mode_seen"], last["max_autotune_seen"]) == ("training", "training", True)
    assert last["graphs"] == ["ok1__0_training_0.0"]
    assert last["program"] == "suite/programs/timm/training-float32-max_autotune/ok1.py"
    assert (out / "suite/programs/timm/inference-float32/ok1.py").is_file()  # the other variant is kept
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", "ok1", "--redo", "all") == 0
    assert len(manifest(out)) == 7


def test_shards_write_their_own_manifest_and_resume_across_them(tmp_path, fake_worker):
    out = tmp_path / "tcd"
    models = "ok1,ok2,ok3,ok4,ok5"
    for index in range(2):
        assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", models, "--shard", f"{index}/2") == 0
    assert [r["model"] for r in manifest(out, "manifest-0-of-2.jsonl")] == ["ok1", "ok3", "ok5"]
    assert [r["model"] for r in manifest(out, "manifest-1-of-2.jsonl")] == ["ok2", "ok4"]
    assert (out / "suite" / "stats-1-of-2.json").is_file()
    # An unsharded rerun over the same folder sees all five as done.
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", models) == 0
    assert manifest(out) == []


def test_one_worker_per_gpu_with_its_own_cuda_visible_devices(tmp_path, fake_worker, monkeypatch):
    out = tmp_path / "tcd"
    models = ",".join(f"ok{i}" for i in range(6))
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_for_workers")  # scraped modules run in workers: no secrets there
    monkeypatch.setenv("HF_TOKEN", "hf_not_for_workers")
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", models, "--gpus", "0,1,2") == 0
    rows = manifest(out)
    assert len(rows) == 6
    assert all(row["gpu"] in ("0", "1", "2") and row["cuda_visible_devices"] == row["gpu"] for row in rows)
    assert all(row["secrets_seen"] == [] for row in rows)


def test_gpu_detection_and_slots(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1, 3")
    assert visible_gpus() == ["1", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    assert visible_gpus("none") == [] and visible_gpus("2,0") == ["2", "0"]
    assert worker_slots(["0", "1"], 2) == ["0", "0", "1", "1"]
    assert worker_slots([], 3) == [None, None, None]


def test_time_budget_starts_nothing_after_it_is_spent(tmp_path, fake_worker):
    out = tmp_path / "tcd"
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", "ok1,ok2,ok3", "--time-budget", "0") == 0
    assert manifest(out) == []
    assert json.loads((out / "suite" / "stats.json").read_text())["counts"]["not_started"] == 3
    assert run_suite_cli(out, fake_worker, "--suite", "timm", "--models", "ok1,ok2,ok3") == 0
    assert len(manifest(out)) == 3  # the rerun took them up


def test_sigterm_kills_running_workers_and_records_nothing(tmp_path, fake_worker):
    out = tmp_path / "tcd"
    argv = [sys.executable, str(REPO_ROOT / "run_inductor_suite.py"), "--suite", "timm", "--models", "sleep1,ok1",
            "-o", str(out), "--worker", str(fake_worker), "--gpus", "none", "-q"]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    pids_file = out / "sleep1.pids"
    for _ in range(1200):  # up to 60 s on a busy machine
        if pids_file.exists() and pids_file.read_text():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted" in err
    for pid in map(int, pids_file.read_text().split()):
        assert not alive(pid)
    assert manifest(out) == []  # the killed model is not recorded: a rerun redoes it


def test_two_shards_on_disjoint_gpus_at_once_give_the_one_job_manifest(tmp_path, fake_worker):
    # issue 18 on CPU: what a node with two GPUs does with `--shard 0/2 --gpus 0` and `--shard 1/2 --gpus 1`
    # started together into one folder, against one job over both GPUs
    models = ",".join(f"ok{i}" for i in range(7))
    base = [sys.executable, str(Path(run_inductor_suite.__file__)), "--worker", str(fake_worker), "-q",
            "--suite", "timm", "--models", models, "--workers-per-gpu", "2"]
    shards = [subprocess.Popen([*base, "-o", str(tmp_path / "sharded"), "--shard", f"{i}/2", "--gpus", str(i)])
              for i in range(2)]
    assert [shard.wait(timeout=300) for shard in shards] == [0, 0]
    assert run_suite_cli(tmp_path / "one", fake_worker, "--suite", "timm", "--models", models,
                         "--workers-per-gpu", "2", "--gpus", "0,1") == 0
    sharded = {index: manifest(tmp_path / "sharded", f"manifest-{index}-of-2.jsonl") for index in range(2)}
    assert all(row["gpu"] == str(index) == row["cuda_visible_devices"] for index in range(2) for row in sharded[index])
    union = sorted((row["model"], row["status"], row["kernels"]) for rows in sharded.values() for row in rows)
    one = manifest(tmp_path / "one")
    assert union == sorted((row["model"], row["status"], row["kernels"]) for row in one)
    assert len(union) == 7 and {row["gpu"] for row in one} == {"0", "1"}
