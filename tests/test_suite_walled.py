"""--suite modules behind the wall in persistent sandboxed workers (scraper.suite.walled, the default): several
modules per sandbox, a fresh sandbox after a failure, a crash, a timeout, a thread a module leaves running or an
answer it forges; the same results as one sandbox per module; what a module made taken out through the answer
channel (its graphs after a real compile on the CPU). The REAL worker behind the REAL wall (bubblewrap); the oracles
are the sandboxes' host pids (`sandbox_pid`), the one-sandbox-per-module run of the same modules, and the files on
disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from suite_helpers import run_modules
from tests.test_suite_persistent import COMPARED, HEADER, MODULES

REPO = str(Path(__file__).resolve().parents[1])

HOSTILE = [
    ("inside", "class Inside(nn.Module):\n    def forward(self, x):\n"
               "        assert os.environ.get('TRITON_DATA_WALL') == 'bwrap', 'not behind the wall'\n"
               f"        assert not os.path.exists({REPO!r}), 'the checkout is visible'\n"
               "        return x + 1\n"),
    ("inside_too", "class InsideToo(nn.Module):\n    def forward(self, x):\n        return x - 1\n"),
    # a thread of its own still runs after it: the sandbox is in doubt and ends with it
    ("thread_left", "import threading, time\n"
                    "class Lingers(nn.Module):\n    def forward(self, x):\n"
                    "        threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n"
                    "        threading.Thread(target=lambda: time.sleep(1000), daemon=True).start()\n"
                    "        return x * 3\n"),
    ("after_thread", "class AfterThread(nn.Module):\n    def forward(self, x):\n        return x * 4\n"),
    # writes a forged answer (a file meant to land outside the corpus) on every pipe it can write
    ("forges", "class Forges(nn.Module):\n    def forward(self, x):\n"
               "        forged = b'{\"returncode\": 0, \"doubt\": null, \"files\": 1}\\n'"
               " + b'{\"path\": \"../../forged.txt\", \"size\": 3}\\nabc'\n"
               "        for fd in range(3, 64):\n"
               "            try:\n"
               "                if os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'):\n"
               "                    os.write(fd, forged)\n"
               "            except OSError:\n"
               "                pass\n"
               "        return x\n"),
    ("after_forgery", "class AfterForgery(nn.Module):\n    def forward(self, x):\n        return x * 5\n"),
    ("sleeps", "import time\nclass Sleeps(nn.Module):\n    def forward(self, x):\n        time.sleep(1000)\n"),
    ("after_timeout", "class AfterTimeout(nn.Module):\n    def forward(self, x):\n        return x * 6\n"),
]


def need_wall():
    from scraper.sandbox.wall import SandboxUnavailable, check_wall

    try:
        check_wall()
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here: {exc}")


def run(tmp_path: Path, name: str, modules, *extra: str) -> dict[str, dict]:
    """The modules through the suite behind the wall (one worker slot), its manifest by model name."""
    return run_modules(tmp_path, modules, *extra, name=name, header=HEADER, backend=None,
                       listing=f"{name}.jsonl").rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    need_wall()
    base = tmp_path_factory.mktemp("walled")
    dry = ("--backend", "none", "--timeout", "300")
    return {"persistent": run(base, "persistent", MODULES, *dry),
            "single": run(base, "single", MODULES, *dry, "--modules-per-process", "1"),
            "hostile": run(base, "hostile", HOSTILE, "--backend", "none", "--timeout", "60"),
            "compiled": run(base, "compiled", MODULES[:2], "--timeout", "400")}


def test_several_modules_share_one_sandbox(runs):
    rows = runs["persistent"]
    assert [rows[n]["status"] for n in ("first", "second", "float64", "third")] == ["ok"] * 4
    assert len({rows[n]["sandbox_pid"] for n in ("first", "second", "float64", "third")}) == 1
    assert {rows[n]["pid"] for n in ("first", "second")} == {2}  # inside its sandbox the worker is pid 2


def test_results_equal_one_sandbox_per_module(runs):
    persistent, single = runs["persistent"], runs["single"]
    assert set(persistent) == set(single) == {name for name, _ in MODULES}
    for name in persistent:
        assert {k: persistent[name].get(k) for k in COMPARED} == {k: single[name].get(k) for k in COMPARED}, name
    assert len({row["sandbox_pid"] for row in single.values()}) == len(MODULES)
    assert len({row["sandbox_pid"] for row in persistent.values()}) < len(MODULES) - 3


def test_a_failure_or_a_crash_ends_the_sandbox(runs):
    rows = runs["persistent"]
    assert rows["fails"]["status"] == "failed" and rows["fails"]["phase"] == "inputs"
    assert rows["fails"]["sandbox_pid"] == rows["third"]["sandbox_pid"]
    assert rows["after_failure"]["status"] == "ok"
    assert rows["after_failure"]["sandbox_pid"] != rows["fails"]["sandbox_pid"]
    assert rows["crashes"]["status"] == "crashed"
    assert rows["after_crash"]["status"] == "ok"
    assert rows["after_crash"]["sandbox_pid"] != rows["crashes"]["sandbox_pid"]


def test_every_module_ran_behind_the_wall(runs):
    rows = runs["hostile"]
    assert rows["inside"]["status"] == "ok", rows["inside"].get("error")
    assert rows["inside_too"]["sandbox_pid"] == rows["inside"]["sandbox_pid"]


def test_a_thread_left_running_ends_the_sandbox(runs):
    rows = runs["hostile"]
    assert rows["thread_left"]["status"] == "ok"
    assert rows["after_thread"]["status"] == "ok"
    assert rows["after_thread"]["sandbox_pid"] != rows["thread_left"]["sandbox_pid"]


def test_a_forged_answer_is_refused_and_lands_nowhere(runs, tmp_path_factory):
    rows = runs["hostile"]
    forged = rows["forges"]
    assert forged["status"] == "failed" and forged["phase"] == "sandbox", forged.get("error")
    assert "not well formed" in forged["error"]
    assert rows["after_forgery"]["status"] == "ok"
    assert rows["after_forgery"]["sandbox_pid"] != forged["sandbox_pid"]
    root = forged["_root"]
    assert not list(root.parent.rglob("forged.txt")) and not list(root.rglob("forged.txt"))


def test_a_timeout_ends_the_sandbox_and_the_next_module_runs(runs):
    rows = runs["hostile"]
    assert rows["sleeps"]["status"] == "timeout"
    assert rows["after_timeout"]["status"] == "ok"
    assert rows["after_timeout"]["sandbox_pid"] != rows["sleeps"]["sandbox_pid"]


def test_each_module_has_its_own_log(runs):
    rows = runs["persistent"]
    log = (rows["fails"]["_root"] / rows["fails"]["log"]).read_text()
    assert "never works" in log
    assert "never works" not in (rows["third"]["_root"] / rows["third"]["log"]).read_text()
    assert "never works" not in (rows["after_failure"]["_root"] / rows["after_failure"]["log"]).read_text()


def test_a_compiled_modules_graphs_come_out_as_plain_files(runs):
    rows = runs["compiled"]
    first, second = rows["first"], rows["second"]
    assert first["status"] == second["status"] == "ok"
    assert first["sandbox_pid"] == second["sandbox_pid"]
    assert first["run_dir"] != second["run_dir"]  # one run folder per module, both kept
    for row in (first, second):
        run_dir = row["_root"] / row["run_dir"]
        codes = list(run_dir.rglob("output_code.py"))
        assert len(codes) == len(row["graphs"]) == 1 and "def call(" in codes[0].read_text()
        for path in run_dir.rglob("*"):
            mode = path.lstat().st_mode
            assert stat.S_ISDIR(mode) or stat.S_ISREG(mode), path
            assert path.lstat().st_uid == os.getuid()
    assert not any((first["_root"] / "suite" / "sandbox").iterdir())  # no job folder or log left behind
