"""Issue 12's attacks on validate's imports level, each a hostile module of the kind a scraped repository could
hold: forge other kernels' results, turn the in-process audit hook off and then spawn, chmod, connect, signal and
linger, or read the user's secrets and raise them as error text. Every one got through before the bubblewrap wall
(scraper.sandbox); each test's oracle is outside the code under test: files, xattrs, a socket server, a signal
handler, a victim process, /proc, and the text of kernels.jsonl, the cache and the stats. Only the public API is
used, so the file also runs against the code before the wall. Nothing real is touched: the secrets, the HOME with
its SSH key and the project with its .env are made in tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import scraper.validate.__main__ as validate_cli
from scraper.records import KernelRecord, write_jsonl
from scraper.validate import validate_records

REPO_ROOT = Path(__file__).resolve().parent.parent
SHADOW_LINE = re.compile(r"\broot:[^:\s]*:\d*:")  # /etc/shadow's first line, whatever the hash
KERNEL = '''
import triton
import triton.language as tl


@triton.jit
def kern(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n), mask=offsets < n)
'''
HOOK_OFF = "import scraper.validate.confine as S\nS.REFUSED_EVENTS = frozenset()\nS.PATH_EVENTS = {}\n"

# Walk up the frames to the worker's answer channel (any open text file in their locals) and write answers for
# the next jobs; knowing the answer format, also the sequence numbers they will carry.
FORGER = '''
import json, sys
frame, seqs = sys._getframe(), [0]
while frame is not None:
    for value in list(frame.f_locals.values()):
        if isinstance(value, dict) and isinstance(value.get("seq"), int):
            seqs.append(value["seq"])
    frame = frame.f_back
frame = sys._getframe()
while frame is not None:
    for value in list(frame.f_locals.values()):
        if hasattr(value, "write") and getattr(value, "mode", "") == "w" and value not in (sys.stdout, sys.stderr):
            try:
                for step in range(1, 9):
                    value.write(json.dumps({"ok": True, "object": "forged", "seq": max(seqs) + step}) + "\\n")
                value.flush()
            except Exception:
                pass
    frame = frame.f_back
'''

# A child that outlives its check and SIGKILLs the worker's next children (their kernels then "fail").
KILLER = HOOK_OFF + '''
import os, signal, time
worker, mine = os.getppid(), os.getpid()
if os.fork() == 0:
    os.setsid()
    me, deadline = os.getpid(), time.monotonic() + 60
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in (me, mine):
                try:
                    if int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == worker:
                        signal.pidfd_send_signal(os.pidfd_open(int(entry)), 9)  # no audit event
                except (OSError, ValueError, IndexError):
                    pass
        time.sleep(0.005)
    os._exit(0)
'''

LINGER = '''
import ctypes, os, time
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(15, {marker!r}.encode(), 0, 0, 0)  # PR_SET_NAME: how the test finds it
    time.sleep(120)
    os._exit(0)
'''

FORK_EXEC = '''
import _posixsubprocess, os
r, w = os.pipe()
argv = [b"/bin/sh", b"-c", b"chmod 0644 {flag}"]
_posixsubprocess.fork_exec(argv, [argv[0]], True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, True, False,
                           -1, None, None, None, -1, None, False)
os.read(r, 1)
'''

# Read what the issue lists: /etc/shadow, the checkout, and (as the issue did) the .env in the working folder and
# the SSH key in the HOME of every parent process, found through /proc; then raise it all as the error text.
READER = '''
import os
found = {{}}
def grab(label, path):
    try:
        with open(path, errors="replace") as handle:
            found[label] = handle.read(300).replace("\\n", " ")
    except Exception as exc:
        found[label] = "<" + type(exc).__name__ + ">"
grab("shadow", "/etc/" + "shadow")
grab("env", {env!r})
grab("key", {key!r})
grab("checkout", {readme!r})
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
raise RuntimeError(" | ".join(f"{{k}}={{v}}" for k, v in found.items()))
'''


def kernel(body: str = "", name: str = "kern") -> KernelRecord:
    """A github-like record: the good kernel, then `body` at top level."""
    return KernelRecord(name=name, code=KERNEL + "\n" + body + "\n", source="github")


def imports(records: list[KernelRecord], jobs: int) -> None:
    validate_records(records, levels=("imports",), jobs=jobs, timeout=20, memory_mb=1024)


class UnixServer:
    """An AF_UNIX stream server counting the connections it accepts."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.accepted, self.running = 0, True
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
        time.sleep(0.3)  # a connection that slipped through is counted
        self.running = False
        self.thread.join()
        self.sock.close()


def processes_named(marker: str) -> list[int]:
    """Pids of live processes whose name (/proc/<pid>/comm) is `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/comm").read().strip() == marker:
                found.append(int(entry))
        except OSError:
            pass
    return found


def test_a_module_cannot_forge_the_results_of_the_next_kernels():
    """One worker, in order: the forger, then three kernels whose import fails."""
    bad = [kernel(f"import no_such_module_{n}") for n in range(3)]
    imports([kernel(FORGER), *bad], jobs=1)
    assert [r.imports for r in bad] == [False] * 3, [r.validation["imports"] for r in bad]
    assert all("No module named" in r.validation["imports"]["error"] for r in bad)


def test_a_lingering_child_cannot_kill_the_checks_of_the_next_kernels():
    """One worker, in order: the killer, then three good kernels."""
    good = [kernel(f"X = {n}") for n in range(3)]
    imports([kernel(KILLER), *good], jobs=1)
    assert [r.imports for r in good] == [True] * 3, [r.validation["imports"] for r in good]


@pytest.fixture(scope="module")
def hook_off(tmp_path_factory):
    """Run the hook-off attacks once (two workers); yields the records and the oracles' findings."""
    tmp_path = tmp_path_factory.mktemp("hook_off")
    out = tmp_path / "outside"
    out.mkdir()
    keep = out / "keep.txt"
    keep.write_text("keep me")
    os.utime(keep, (1_000_000_000, 1_000_000_000))
    before = os.stat(keep)
    flags = {name: out / f"{name}.flag" for name in ("subprocess", "fork_exec", "ctypes_system")}
    for flag in flags.values():  # a spawned process chmods its flag: Landlock, which confines writes, allows that
        flag.touch(mode=0o600)
    server = UnixServer(tmp_path / "s.sock")
    signals = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: signals.append(1))
    victim = subprocess.Popen(["sleep", "300"])
    marker = "linger" + secrets.token_hex(4)
    attacks = {
        "subprocess": f"import subprocess\nsubprocess.run(['chmod', '0644', {str(flags['subprocess'])!r}])",
        "fork_exec": FORK_EXEC.format(flag=flags["fork_exec"]),
        "ctypes_system": f"import ctypes\nctypes.CDLL(None).system(b'chmod 0644 {flags['ctypes_system']}')",
        "chmod": f"import os\nos.chmod({str(keep)!r}, 0o777)",
        "utime": f"import os\nos.utime({str(keep)!r}, (0, 0))",
        "setxattr": f"import os\nos.setxattr({str(keep)!r}, 'user.pwned', b'1')",
        "unix_connect": f"import socket\nsocket.socket(socket.AF_UNIX).connect({str(tmp_path / 's.sock')!r})",
        "signal_pipeline": f"import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({os.getpid()}), "
                           "signal.SIGUSR1)",
        "signal_other": f"import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({victim.pid}), signal.SIGKILL)",
        "fork_setsid": LINGER.format(marker=marker),
    }
    records = {label: kernel(HOOK_OFF + body) for label, body in attacks.items()}
    try:
        imports(list(records.values()), jobs=2)
        time.sleep(0.5)  # a signal or a connection in flight lands
        server.close()
        after = os.stat(keep)
        yield {"records": records, "spawned": [n for n, f in flags.items() if f.stat().st_mode & 0o777 != 0o600],
               "mode": after.st_mode == before.st_mode, "mtime": after.st_mtime == before.st_mtime,
               "xattrs": os.listxattr(keep), "accepted": server.accepted, "signals": signals,
               "victim_alive": victim.poll() is None, "lingering": processes_named(marker)}
    finally:
        signal.signal(signal.SIGUSR1, previous)
        victim.kill()
        victim.wait()
        for pid in processes_named(marker):  # the old code leaves them running: clean up what we made
            os.kill(pid, signal.SIGKILL)


# Each attack with the oracle that says it was held.
HELD = {
    "subprocess": lambda seen: "subprocess" not in seen["spawned"],
    "fork_exec": lambda seen: "fork_exec" not in seen["spawned"],
    "ctypes_system": lambda seen: "ctypes_system" not in seen["spawned"],
    "chmod": lambda seen: seen["mode"],
    "utime": lambda seen: seen["mtime"],
    "setxattr": lambda seen: seen["xattrs"] == [],
    "unix_connect": lambda seen: seen["accepted"] == 0,
    "signal_pipeline": lambda seen: seen["signals"] == [],
    "signal_other": lambda seen: seen["victim_alive"],
    "fork_setsid": lambda seen: seen["lingering"] == [],  # died with its sandbox, or was never born
}


@pytest.mark.parametrize("attack", sorted(HELD))
def test_with_the_hook_off_nothing_reaches_outside_the_wall(hook_off, attack):
    assert HELD[attack](hook_off), {k: v for k, v in hook_off.items() if k != "records"}
    assert hook_off["records"][attack].validation["imports"].get("error_class") != "Timeout"


@pytest.fixture
def leak_run(tmp_path, monkeypatch):
    """A project folder with a .env, a HOME with an SSH key (both fake, made here), and a manifest holding the
    reader; `python -m scraper.validate` runs from that folder with that HOME."""
    project, home = tmp_path / "project", tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    project.mkdir()
    token = "tdtest" + secrets.token_hex(12)
    key_text = "KEYMATERIAL" + secrets.token_hex(12)
    (project / ".env").write_text(f"SOME_SETTING={token}\n")
    (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{key_text}\n"
                                         "-----END OPENSSH PRIVATE KEY-----\n")
    reader = READER.format(env=str(project / ".env"), key=str(home / ".ssh" / "id_rsa"),
                           readme=str(REPO_ROOT / "README.md"))
    write_jsonl(project / "kernels.jsonl", [kernel(reader)])
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))
    assert validate_cli.main([str(project / "kernels.jsonl"), "--level", "imports", "--jobs", "1", "-q"]) == 0
    written = {name: (project / name).read_text() for name in ("kernels.jsonl", "validate_cache.jsonl",
                                                               "validate_stats.json")}
    error = json.loads(written["kernels.jsonl"])["validation"]["imports"]["error"]
    return {"written": written, "error": error, "secrets": [token, key_text]}


def test_secrets_are_out_of_reach_and_never_written(leak_run):
    # What the module saw: every read failed (the wall), and nothing of it reached the outputs (wall or scrub).
    readme = (REPO_ROOT / "README.md").read_text().splitlines()[0]
    reads = dict(part.split("=", 1) for part in leak_run["error"].removeprefix("RuntimeError: ").split(" | "))
    assert {"shadow", "env", "key", "checkout"} <= set(reads)
    assert all(value.startswith("<") for value in reads.values()), reads
    for name, text in leak_run["written"].items():
        for secret in [*leak_run["secrets"], readme]:
            assert secret not in text, (name, secret)
        assert not SHADOW_LINE.search(text), name
