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


def commands(tmp_path: Path) -> dict[str, list[str]]:
    """Each entry point, with arguments it accepts: (module | script, target, argv...)."""
    some = tmp_path / "in"
    some.mkdir(exist_ok=True)
    manifest = some / "kernels.jsonl"
    manifest.write_text("")
    out = str(tmp_path / "out")
    return {
        "triton-data dataset": ["module", "scraper.console", "dataset", str(some), "-o", f"{out}/"],
        "triton-data inductor": ["module", "scraper.console", "inductor", str(some), "-o", out],
        "triton-data scrape": ["module", "scraper.console", "scrape", "--local", str(some), "-o", out],
        "triton-data generate": ["module", "scraper.console", "generate", "--generate-one", str(some), "-o", out],
        "triton-data validate": ["module", "scraper.console", "validate", str(manifest)],
        "triton-data suite": ["module", "scraper.console", "suite", "--suite", "timm", "-o", out],
        "create_json.py": ["script", "create_json.py", str(some), "-o", f"{out}/"],
        "get_kernels_from_debug_info.py": ["script", "get_kernels_from_debug_info.py", str(some), "-o", out],
        "scrape_github.py": ["script", "scrape_github.py", "--local", str(some), "-o", out],
        "run_inductor_suite.py": ["script", "run_inductor_suite.py", "--suite", "timm", "-o", out],
        "scraper/generator/main.py": ["script", "scraper/generator/main.py", "--generate-one", str(some), "-o", out],
        "python -m scraper.validate": ["module", "scraper.validate", str(manifest)],
        "python -m scraper.pairs.check": ["module", "scraper.pairs.check", str(some)],
    }


@pytest.mark.parametrize("name", list(commands(Path("/nonexistent"))))
def test_ctrl_c_prints_one_line_and_exits_130(name, tmp_path):
    argv = commands(tmp_path)[name]
    done = subprocess.run([sys.executable, "-c", INTERRUPT_AFTER_PARSING, *argv], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.count(INTERRUPTED) == 1


def many_kernels(folder: Path, files: int = 20, per_file: int = 200) -> Path:
    """A repository that takes the generator seconds to read: `files` modules of `per_file` jit kernels."""
    folder.mkdir(parents=True)
    for number in range(files):
        lines = ["import triton", "import triton.language as tl", ""]
        for kernel in range(per_file):
            lines += ["@triton.jit", f"def k{kernel}(x_ptr, n, BLOCK: tl.constexpr):",
                      "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
                      f"    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * {kernel}, mask=offs < n)", ""]
        (folder / f"m{number}.py").write_text("\n".join(lines))
    return folder


def test_ctrl_c_in_a_terminal_reaches_the_workers_too_and_none_prints_a_traceback(tmp_path):
    """A terminal sends SIGINT to every process of the foreground group: the generator's pool workers too."""
    repos = [many_kernels(tmp_path / f"repo{number}") for number in range(2)]
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "scraper.console", "generate", "-o", str(out), "--jobs", "2", "-q"]
    for repo in repos:
        argv += ["--generate-one", str(repo)]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / ".triton-data.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the output folder is claimed just before the workers start
    time.sleep(1.0)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.count(INTERRUPTED) == 1
