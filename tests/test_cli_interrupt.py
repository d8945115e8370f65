"""Ctrl-C: every command prints one line saying it was interrupted and how to go on, exits 130, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
INTERRUPTED = "interrupted; finished work is kept, rerun to resume"

# Runs a command as its script or `python -m` would, with a real SIGINT sent to the process right after the command
# has parsed its arguments (every stage calls scraper.cli.setup_logging then): what Ctrl-C does at that moment.
INTERRUPT_AFTER_PARSING = r"""
import os, runpy, signal, sys
import scraper.cli

real = scraper.cli.setup_logging

def setup_then_interrupt(args=None):
    real(args)
    os.kill(os.getpid(), signal.SIGINT)

scraper.cli.setup_logging = setup_then_interrupt
kind, target, *argv = sys.argv[1:]
sys.argv = [target, *argv]
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


# Each entry point, with arguments it accepts: (module | script, target, argv...); IN, OUT, MANIFEST filled in.
ENTRIES = {
    "triton-data dataset": ["module", "scraper.console", "dataset", "IN", "-o", "OUT/"],
    "triton-data inductor": ["module", "scraper.console", "inductor", "IN", "-o", "OUT"],
    "triton-data scrape": ["module", "scraper.console", "scrape", "--local", "IN", "-o", "OUT"],
    "triton-data generate": ["module", "scraper.console", "generate", "--generate-one", "IN", "-o", "OUT"],
    "triton-data validate": ["module", "scraper.console", "validate", "MANIFEST"],
    "triton-data suite": ["module", "scraper.console", "suite", "--suite", "timm", "-o", "OUT"],
    "create_json.py": ["script", "create_json.py", "IN", "-o", "OUT/"],
    "get_kernels_from_debug_info.py": ["script", "get_kernels_from_debug_info.py", "IN", "-o", "OUT"],
    "scrape_github.py": ["script", "scrape_github.py", "--local", "IN", "-o", "OUT"],
    "run_inductor_suite.py": ["script", "run_inductor_suite.py", "--suite", "timm", "-o", "OUT"],
    "scraper/generator/main.py": ["script", "scraper/generator/main.py", "--generate-one", "IN", "-o", "OUT"],
    "python -m scraper.validate": ["module", "scraper.validate", "MANIFEST"],
    "python -m scraper.pairs.check": ["module", "scraper.pairs.check", "IN"],
}


@pytest.mark.parametrize("name", list(ENTRIES))
def test_ctrl_c_prints_one_line_and_exits_130(name, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "kernels.jsonl").write_text("")
    places = {"IN": str(tmp_path / "in"), "MANIFEST": str(tmp_path / "in" / "kernels.jsonl"),
              "OUT": str(tmp_path / "out"), "OUT/": f"{tmp_path / 'out'}/"}
    argv = [places.get(arg, arg) for arg in ENTRIES[name]]
    done = subprocess.run([sys.executable, "-c", INTERRUPT_AFTER_PARSING, *argv], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.count(INTERRUPTED) == 1


def many_kernels(folder: Path, files: int = 10, per_file: int = 100) -> Path:
    """A repository that keeps a generator worker busy for a while: `files` modules of `per_file` jit kernels."""
    folder.mkdir(parents=True)
    for number in range(files):
        lines = ["import triton", "import triton.language as tl", ""]
        for kernel in range(per_file):
            lines += ["@triton.jit", f"def k{kernel}(x_ptr, n, BLOCK: tl.constexpr):",
                      "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
                      f"    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * {kernel}, mask=offs < n)", ""]
        (folder / f"m{number}.py").write_text("\n".join(lines))
    return folder


def start_generator(tmp_path: Path, files: int = 10) -> tuple[subprocess.Popen, list[int]]:
    """The generator over two such repositories with two workers, in a process group of its own (as a terminal
    runs a command); returns once both workers run, with their pids."""
    argv = [sys.executable, "-m", "scraper.console", "generate", "-o", str(tmp_path / "out"), "--jobs", "2", "-q"]
    for number in range(2):
        argv += ["--generate-one", str(many_kernels(tmp_path / f"repo{number}", files))]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(children(process.pid)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be interrupted"
    return process, children(process.pid)


def children(pid: int) -> list[int]:
    """The pids of a process's children (Linux /proc)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def finish(process: subprocess.Popen) -> str:
    """Wait for the run (killed, and the test failed, when it hangs); its stderr."""
    try:
        return process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the run hung: {process.communicate()[1][-3000:]}")


def test_ctrl_c_in_a_terminal_reaches_the_workers_too_and_none_prints_a_traceback(tmp_path):
    """A terminal sends SIGINT to every process of the foreground group: the generator's pool workers too."""
    process, _ = start_generator(tmp_path, files=40)
    time.sleep(0.5)  # the parent is waiting for results by now
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    stderr = finish(process)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.count(INTERRUPTED) == 1


def test_workers_leave_ctrl_c_to_the_parent(tmp_path):
    """A worker that took SIGINT itself died with a traceback, and the pool then waited forever for its
    repository; a worker leaves it to the parent, which stops the pool."""
    process, workers = start_generator(tmp_path)
    for worker in workers:
        os.kill(worker, signal.SIGINT)
    stderr = finish(process)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    records = (tmp_path / "out" / "kernels.jsonl").read_text().splitlines()
    assert len(records) == 2 * 10 * 100  # every kernel of both repositories
