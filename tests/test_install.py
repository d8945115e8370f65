"""The package installs: a wheel built from the checkout holds the `scraper` package (with its model lists), not
the output folders, and declares the `triton-data` command; `make`'s torch comes from PyTorch's CPU index where
that answers, else from the package registry."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


_NOT_SOURCES = shutil.ignore_patterns(".git", ".gpu", ".whl", "build", "*.egg-info", "__pycache__", ".cache")


def without_outputs(folder: str, names: list) -> set:
    """What the copy leaves out: git, build and cache folders, and any virtual environment (a folder with a
    pyvenv.cfg, such as the README's .venv: GBs)."""
    return set(_NOT_SOURCES(folder, names)) | {name for name in names if Path(folder, name, "pyvenv.cfg").is_file()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    source = tmp_path_factory.mktemp("source") / "triton-data"
    shutil.copytree(REPO_ROOT, source, ignore=without_outputs)
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


# ---------------------------------------------------------------- make's torch: PyTorch's CPU index, else the registry

FAKE_PIP = """
import json, os, sys
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(1 if os.environ.get("FAKE_PIP_FAIL_INDEX") and "--index-url" in sys.argv else 0)
"""


class _Index(http.server.BaseHTTPRequestHandler):
    """Answers every GET as a package index page would (200)."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html><body><a href='torch/'>torch</a></body></html>")

    def log_message(self, *args):
        pass


@pytest.fixture
def index_url():
    """A local HTTP server standing in for PyTorch's CPU index."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    """An index URL nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


def make_torch(tmp_path, index: str, fail_index: bool = False) -> tuple[list, str]:
    """`make torch` with a fake pip; (the argument lists pip got, make's stderr)."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    fake, log = tmp_path / "fake_pip.py", tmp_path / "pip.log"
    fake.write_text(FAKE_PIP)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # 127.0.0.1 directly
    env.update(FAKE_PIP_LOG=str(log), FAKE_PIP_FAIL_INDEX="1" if fail_index else "")
    done = subprocess.run(["make", "--no-print-directory", "-C", str(REPO_ROOT), "torch", f"PYTHON={sys.executable}",
                           f"PIP={sys.executable} {fake}", f"TORCH_INDEX={index}"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return calls, done.stderr


def test_make_takes_torch_from_the_cpu_index_when_it_answers(tmp_path, index_url):
    calls, stderr = make_torch(tmp_path, index_url)
    assert calls == [["install", "-q", "torch==2.13.0", "--index-url", index_url]]
    assert f"torch==2.13.0 from {index_url}" in stderr


def test_make_falls_back_to_the_registry_pin_where_only_the_registry_is(tmp_path):
    unreachable = closed_port_url()
    calls, stderr = make_torch(tmp_path, unreachable)
    assert calls == [["install", "-q", "torch==2.13.0"]]
    assert f"{unreachable} is not reachable" in stderr and "CUDA build" in stderr
    (tmp_path / "empty").mkdir()
    calls, stderr = make_torch(tmp_path / "empty", "")
    assert calls == [["install", "-q", "torch==2.13.0"]] and "TORCH_INDEX is empty" in stderr


def test_make_tries_the_registry_when_the_cpu_index_install_fails(tmp_path, index_url):
    calls, stderr = make_torch(tmp_path, index_url, fail_index=True)
    assert calls == [["install", "-q", "torch==2.13.0", "--index-url", index_url], ["install", "-q", "torch==2.13.0"]]
    assert "trying the package registry" in stderr


def test_readme_and_makefile_name_the_same_pin_and_cpu_index():
    readme, makefile = (REPO_ROOT / "README.md").read_text(), (REPO_ROOT / "Makefile").read_text()
    pin = re.search(r"^TORCH_PIN \?= (\S+)$", makefile, re.MULTILINE).group(1)
    index = re.search(r"^TORCH_INDEX \?= (\S+)$", makefile, re.MULTILINE).group(1)
    assert index == "https://download.pytorch.org/whl/cpu"  # PyTorch's own CPU wheels (torch==X+cpu)
    assert f"pip install {pin} --index-url {index}" in readme


# A stand-in for apt-get or a browser on a PATH of fakes only: it logs its name and arguments.
FAKE_TOOL = '#!/bin/sh\necho "${0##*/} $*" >> "$FAKE_LOG"\n'


def make_chromium(tmp_path, uid: int, tools: tuple = (), **env) -> tuple[list, str]:
    """`make chromium` where PATH holds only fakes: `id -u` answers `uid`, apt-get and `tools` log their calls;
    (the calls, make's stderr)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs make")
    fakes, log = tmp_path / "bin", tmp_path / "calls.log"
    fakes.mkdir()
    (fakes / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for name in ("apt-get", *tools):
        (fakes / name).write_text(FAKE_TOOL)
    for fake in fakes.iterdir():
        fake.chmod(0o755)
    done = subprocess.run([make, "--no-print-directory", "-C", str(REPO_ROOT), "chromium"],
                          env={"PATH": str(fakes), "FAKE_LOG": str(log), **env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return (log.read_text().splitlines() if log.exists() else []), done.stderr


def test_make_installs_debians_chromium_as_root_where_none_is(tmp_path):
    calls, _ = make_chromium(tmp_path, 0)
    assert calls == ["apt-get update -qq", "apt-get install -y -qq chromium"]


@pytest.mark.parametrize("name", ["chromium", "chromium-browser", "google-chrome"])
def test_make_keeps_the_chromium_there_is(tmp_path, name):
    calls, stderr = make_chromium(tmp_path, 0, tools=(name,))
    assert calls == [] and stderr == ""


def test_make_takes_triton_data_chromium_as_installed(tmp_path):
    binary = tmp_path / "my-chromium"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    calls, stderr = make_chromium(tmp_path, 0, TRITON_DATA_CHROMIUM=str(binary))
    assert calls == [] and stderr == ""


def test_make_says_what_to_do_where_it_may_not_install_chromium(tmp_path):
    calls, stderr = make_chromium(tmp_path, 1000)
    assert calls == []
    assert "tests/test_report.py" in stderr and "skipped" in stderr and "apt-get install chromium" in stderr
    assert "TRITON_DATA_CHROMIUM" in stderr


def test_make_test_installs_chromium_on_its_way():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^install-dev: .*\bchromium\b", makefile, re.MULTILINE)
    assert re.search(r"^test: install-dev\b", makefile, re.MULTILINE)
    from report_helpers import CHROMIUMS  # the names the test looks for are the ones make looks for

    assert re.search(r"^CHROMIUMS = (.+)$", makefile, re.MULTILINE).group(1).split() == list(CHROMIUMS)
