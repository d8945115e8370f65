"""The package installs: a wheel built from the checkout holds the `scraper` package (with its model lists), not
the output folders, and declares the `triton-data` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    source = tmp_path_factory.mktemp("source") / "triton-data"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".gpu", ".whl", "build", "*.egg-info", "__pycache__", ".cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, timeout=300)
    return zipfile.ZipFile(next(out.glob("triton_data-*.whl")))


def test_the_wheel_holds_the_package_and_not_the_output_folders(wheel):
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"scraper"}  # no datasets/, inductor_kernels/, tests/ as packages (datasets would shadow HF's)
    assert "scraper/suites/models/timm.txt" in names and "scraper/console.py" in names
    sources = {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "scraper").rglob("*.py")}
    assert sources <= set(names)


def test_the_wheel_declares_the_command(wheel):
    entry_points = next(name for name in wheel.namelist() if name.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]" in text and "triton-data = scraper.console:main" in text


def test_the_command_dispatches_to_every_stage(capsys):
    from scraper import console

    for name in console.COMMANDS:
        with pytest.raises(SystemExit) as stop:
            console.main([name, "--version"])
        assert stop.value.code == 0
    assert capsys.readouterr().out.count("triton-data ") == len(console.COMMANDS)
    assert console.main(["nope"]) == 2
