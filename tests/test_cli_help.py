"""--help and usage errors name the command the user typed: `triton-data dataset`, or the script run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("suite", "inductor", "scrape", "generate", "dataset", "validate", "pairs", "report", "build")
SCRIPTS = ("create_json.py", "run_inductor_suite.py", "scrape_github.py", "get_kernels_from_debug_info.py")


def run(*argv: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_names_the_subcommand(command):
    done = run("-m", "scraper.console", command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: triton-data {command} "), done.stdout[:200]


@pytest.mark.parametrize("command", ("dataset", "inductor", "generate"))
def test_a_usage_error_names_the_subcommand(command):
    done = run("-m", "scraper.console", command, "--no-such-flag")
    assert done.returncode == 2
    assert f"triton-data {command}: error:" in done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_scripts_keep_their_own_names(script):
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script} ")


def test_the_generator_script_is_named_as_run_from_its_folder():
    done = run("main.py", "--help", cwd=REPO_ROOT / "scraper" / "generator")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: main.py ")
