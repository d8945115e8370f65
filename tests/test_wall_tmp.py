"""Issue 23, the /tmp route: the sandbox works wherever the interpreter lives, a venv under /tmp included (the
scratch tmpfs was mounted over it after it was bound: no sandbox could start, and the message said to install
bubblewrap, which was installed); and where no sandbox can be made, the message names the real cause."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scraper.sandbox import SandboxUnavailable, require_wall
from scraper.sandbox.wall import BWRAP_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECK = '''
import json, os, sys
print(json.dumps({"prefix": sys.prefix, "tmp": sorted(os.listdir("/tmp")), "tmp_writable": os.access("/tmp", os.W_OK),
                  "prefix_writable": os.access(sys.prefix, os.W_OK)}))
'''
# Run with the venv's interpreter: the probe, then a script in a sandbox of its own.
DRIVER = '''
import json, subprocess, sys
sys.path.insert(0, {repo!r})
from scraper.sandbox import launch, require_wall
from scraper.sandbox.wall import Wall
require_wall(False)
walled = launch(Wall("check", ("scraper/sandbox/inside.py",), max_processes=12, scratch_mb=16), ["/opt/check.py"],
                env={{"PATH": "/usr/bin:/bin"}}, files={{"/opt/check.py": {check!r}}}, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
out, err = walled.proc.communicate(timeout=120)
walled.kill()
print(out or err)
'''


def test_a_venv_under_tmp_runs_behind_the_wall(tmp_path):
    assert str(tmp_path).startswith("/tmp/")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    check = tmp_path / "check.py"
    check.write_text(CHECK)
    driver = DRIVER.format(repo=str(REPO_ROOT), check=str(check))
    done = subprocess.run([str(venv / "bin" / "python"), "-c", driver], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    inside = json.loads(done.stdout)
    assert inside["prefix"] == str(venv) and inside["tmp_writable"] and not inside["prefix_writable"]


def test_where_no_sandbox_can_be_made_the_cause_is_named(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv(BWRAP_ENV, str(fake))
    monkeypatch.setattr("scraper.sandbox.wall._PROBED", {})  # a probe per bwrap: this one is new
    with pytest.raises(SandboxUnavailable) as refused:
        require_wall(False)
    message = str(refused.value)
    assert "setting up uid map: Permission denied" in message and "apt-get install" not in message, message
