"""One rule for every stage's default folders (scraper/paths.py): in the checkout when the package runs from one,
wherever the command is started; else in the working directory. The pipeline then runs with no path given, and
"nothing found" names the folders it looked in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TCD_USERKERNEL = REPO_ROOT / "tests" / "fixtures" / "torch_compile_debug" / "tcd_userkernel.tar.gz"
SOFTMAX = REPO_ROOT / "examples" / "repos" / "kernelsmith" / "softmax-triton"
OUTPUT_FOLDERS = ("generated", "paritybench_download", "__pycache__")  # what runs left in the package


def package_copy(root: Path, checkout: bool) -> Path:
    """The `scraper` package copied under `root`; with `checkout`, beside a pyproject.toml as in a clone."""
    root.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "scraper", root / "scraper", ignore=shutil.ignore_patterns(*OUTPUT_FOLDERS))
    if checkout:
        shutil.copy(REPO_ROOT / "pyproject.toml", root)
    return root


def triton_data(package: Path, cwd: Path, *argv) -> subprocess.CompletedProcess:
    """`triton-data ARGV...` run from `cwd` with the package copy first on the path."""
    env = {**os.environ, "PYTHONPATH": str(package)}
    done = subprocess.run([sys.executable, "-m", "scraper.console", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    return done


def debug_folder(tmp_path: Path) -> Path:
    """A real torch_compile_debug folder (the fixture's user-kernel run)."""
    with tarfile.open(TCD_USERKERNEL) as tar:
        tar.extractall(tmp_path / "tcd", filter="data")
    return tmp_path / "tcd" / "torch_compile_debug"


def run_pipeline_with_defaults(package: Path, cwd: Path, debug: Path) -> None:
    """Stages 1, 2a, 2b and 3, each with no output or input folder given."""
    steps = [["inductor", debug], ["scrape", "--local", f"{SOFTMAX}=kernelsmith/softmax-triton"],
             ["generate", "--generate-all", "--jobs", "1"], ["dataset", "--near-threshold", "0"]]
    for step in steps:
        done = triton_data(package, cwd, *step, "-q")
        assert done.returncode == 0, (step, done.stderr[-3000:])


def sources_of(dataset: Path) -> set[str]:
    return {row["source"] for row in json.loads(dataset.read_text())}


def test_in_a_checkout_every_default_is_in_the_checkout_wherever_the_command_runs(tmp_path):
    checkout = package_copy(tmp_path / "checkout", checkout=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_pipeline_with_defaults(checkout, elsewhere, debug_folder(tmp_path))
    assert (checkout / "inductor_kernels" / "kernels.jsonl").is_file()
    assert (checkout / "scraper" / "generator" / "paritybench_download" / "kernelsmith__softmax-triton.zip").is_file()
    assert (checkout / "scraper" / "generator" / "generated" / "kernels.jsonl").is_file()
    assert sources_of(checkout / "datasets" / "triton_functions.json") == {"inductor", "github"}
    assert list(elsewhere.iterdir()) == []


def test_installed_every_default_is_in_the_working_directory(tmp_path):
    site = package_copy(tmp_path / "site", checkout=False)
    work = tmp_path / "work"
    work.mkdir()
    run_pipeline_with_defaults(site, work, debug_folder(tmp_path))
    assert sorted(path.name for path in work.iterdir()) == ["datasets", "generated", "inductor_kernels",
                                                           "paritybench_download"]
    assert (work / "paritybench_download" / "kernelsmith__softmax-triton.zip").is_file()
    assert sources_of(work / "datasets" / "triton_functions.json") == {"inductor", "github"}
    assert sorted(path.name for path in site.iterdir()) == ["scraper"]  # nothing written beside the package


@pytest.mark.parametrize("command", [["dataset"], ["dataset", "--task", "pairs"]])
def test_nothing_found_names_the_default_folders_it_looked_in(tmp_path, command):
    checkout = package_copy(tmp_path / "checkout", checkout=True)
    done = triton_data(checkout, tmp_path, *command)
    assert done.returncode == 1
    assert str(checkout / "inductor_kernels") in done.stderr
    assert str(checkout / "scraper" / "generator" / "generated") in done.stderr
    assert not (checkout / "datasets").exists() and not (tmp_path / "datasets").exists()


def test_generate_all_with_nothing_downloaded_names_the_download_folder(tmp_path):
    site = package_copy(tmp_path / "site", checkout=False)
    (tmp_path / "paritybench_download").mkdir()
    done = triton_data(site, tmp_path, "generate", "--generate-all")
    assert done.returncode == 1
    assert "paritybench_download" in done.stderr
