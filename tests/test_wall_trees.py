"""Issue 23, route 9: one hostile job must not stop or corrupt a whole suite run. The hostile input: a worker
behind the wall that leaves 1,200 nested folders and a link to /etc/shadow in its job folder; recursive walks
and removals raised RecursionError there, the pool thread died, the later modules never ran, the suite exited 0
and the job folder with the link stayed in suite/sandbox. Also: a job whose entry cannot be recorded, and a pool
thread whose job raises, cost that job only, and jobs that never ran make the exit status a failure."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import run_inductor_suite
from scraper.stats import Stats
from scraper.suite.command import run_status
from scraper.suite.model_lists import ModelSpec
from scraper.suite.orchestrate import Job, Settings, run_suite

# A replacement worker (it runs behind the wall as the real one does): "deep*" leaves the tree, the others
# succeed with a debug run folder.
WORKER = r'''
import json, os, sys
job = json.load(open(sys.argv[1]))
if job["model"].startswith("deep"):
    fd = os.open("/job", os.O_RDONLY)
    os.symlink("/etc/shadow", "shadow", dir_fd=fd)
    for _ in range(1200):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.symlink("/etc/shadow", "shadow", dir_fd=fd)
    sys.exit(1)
graph = os.path.join(job["out"], "run_x-pid_2", "torchinductor", "g__0_inference_0.0")
os.makedirs(graph)
open(os.path.join(graph, "output_code.py"), "w").write("k = async_compile.triton('k', 'src')\n")
json.dump({"success": True, "phase": None, "error": None, "run_dir": "run_x-pid_2"}, open(job["result"], "w"))
'''


def deep_tree(folder: Path, depth: int) -> None:
    """`depth` nested folders `d` under `folder`, made through descriptors (paths never get long)."""
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_a_deep_job_folder_costs_its_job_and_nothing_stays(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    modules = tmp_path / "modules.jsonl"
    modules.write_text("".join(json.dumps({"name": name, "class_name": "Net", "code": "class Net: pass\n"}) + "\n"
                               for name in ("deep", "good", "good2")))
    out = tmp_path / "tcd"
    code = run_inductor_suite.main(["--suite", "modules", "--modules-file", str(modules), "--out", str(out),
                                    "--worker", str(worker), "--gpus", "none", "--workers-per-gpu", "1", "-q"])
    try:
        assert code == 1  # the deep job failed (the old code: 0, the pool thread dead, nothing recorded)
        rows = {row["model"]: row for row in map(json.loads, (out / "suite" / "manifest.jsonl").read_text().splitlines())}
        assert set(rows) == {"deep", "good", "good2"}, rows
        assert rows["good"]["status"] == rows["good2"]["status"] == "ok" and rows["good"]["kernels"] == 1
        assert rows["deep"]["status"] == "failed" and "deeper than" in rows["deep"]["error"]
        assert list((out / "suite" / "sandbox").iterdir()) == []
        links = subprocess.run(["find", str(out), "-type", "l"], capture_output=True, text=True).stdout
        assert links == ""
    finally:  # what the old code leaves in suite/sandbox (GNU rm walks any depth)
        subprocess.run(["rm", "-rf", str(out / "suite" / "sandbox")], check=True)


def test_walks_and_removals_go_any_depth_and_never_follow_links(tmp_path):
    from scraper.fileio import remove_tree, walk_tree

    tree = tmp_path / "tree"
    tree.mkdir()
    deep_tree(tree, 1500)
    (tree / "d" / "shadow").symlink_to("/etc/shadow")
    (tree / "d" / "loop").symlink_to(tree)
    os.chmod(tree / "d", 0o500)  # a folder the sandbox user made unlistable for removal
    depths = [entry.depth for entry in walk_tree(tree)]
    assert max(depths) == 1500 and len(depths) == 1502
    remove_tree(tree)
    assert not tree.exists() and os.path.exists("/etc/shadow")


def job(name: str) -> Job:
    return Job(ModelSpec(name))


def test_a_job_that_raises_or_cannot_be_recorded_costs_only_itself(tmp_path):
    def run_one(settings, job, slot):
        if job.name == "raises":
            raise RecursionError("maximum recursion depth exceeded")
        if job.name == "unrecordable":
            return {"model": job.name}  # no status: no manifest line can be made of it
        return {"suite": "modules", "model": job.name, "status": "ok", "success": True, "seconds": 0.1}

    stats = Stats("suite")
    entries = run_suite(Settings(suite="modules", out=tmp_path), [job("raises"), job("unrecordable"), job("a"),
                                                                  job("b")], [None], stats, run_one=run_one)
    statuses = {entry["model"]: entry["status"] for entry in entries}
    assert statuses == {"raises": "crashed", "unrecordable": "crashed", "a": "ok", "b": "ok"}
    assert "RecursionError" in next(e["error"] for e in entries if e["model"] == "raises")
    manifest = (tmp_path / "suite" / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["model"] for line in manifest) == ["a", "b", "raises", "unrecordable"]
    assert run_status(entries) == 1


def test_jobs_that_never_ran_make_the_run_a_failure(tmp_path):
    (tmp_path / "suite" / "manifest.jsonl").mkdir(parents=True)  # nothing can be recorded

    def run_one(settings, job, slot):
        return {"suite": "modules", "model": job.name, "status": "ok", "success": True, "seconds": 0.1}

    stats = Stats("suite")
    entries = run_suite(Settings(suite="modules", out=tmp_path), [job("a"), job("b"), job("c")], [None], stats,
                        run_one=run_one)
    assert entries == [] and stats.counts["not_run"] == 3
    assert run_status(entries, not_run=stats.counts["not_run"]) == 1
