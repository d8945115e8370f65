"""The wall itself (scraper.sandbox): what a sandboxed process sees and may do, how it ends, the refusal without
bwrap and the --unsafe-no-sandbox opt-in, GPU device arguments, and what may cross: the environment in, the
answers out (capped, secrets redacted), the files a sandbox leaves (made safe)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from suite_helpers import run_modules
import scraper.validate.__main__ as validate_cli
from scraper.records import KernelRecord, write_jsonl
from scraper.sandbox import SandboxUnavailable, clean_result, launch, take_out, worker_environment
from scraper.sandbox.inside import SANDBOX_ID, forbid_new_processes
from scraper.sandbox.wall import BWRAP_ENV, check_wall, OUTSIDE_ID, PROBE_WALL, Wall, bind_args, gpu_devices, python_paths
from scraper.validate import validate_records
from test_sandbox_attacks import KERNEL, processes_named

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Wall("test", ("scraper/sandbox/inside.py",), max_processes=12, scratch_mb=16)


def run_script(tmp_path: Path, code: str, wall: Wall = SCRIPTS) -> subprocess.CompletedProcess:
    """Run `code` as a script in a sandbox; its stdout and stderr."""
    script = tmp_path / "script.py"
    script.write_text(code)
    walled = launch(wall, ["/opt/script.py"], env={"PATH": "/usr/bin:/bin"}, files={"/opt/script.py": str(script)},
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = walled.proc.communicate(timeout=120)
    walled.kill()
    return subprocess.CompletedProcess(walled.proc.args, walled.proc.returncode, out, err)


def test_inside_the_wall(tmp_path):
    seen = run_script(tmp_path, f'''
import json, os, socket
print(json.dumps({{"uid": os.getuid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                  "checkout": os.path.exists({str(REPO_ROOT / "README.md")!r}), "host_tmp": os.listdir("/tmp"),
                  "root": sorted(os.listdir("/")), "interfaces": [n for _, n in socket.if_nameindex()],
                  "home": os.environ["HOME"], "tmp_writable": os.access("/tmp", os.W_OK),
                  "root_writable": os.access("/", os.W_OK), "usr_writable": os.access("/usr", os.W_OK)}}))
''')
    inside = json.loads(seen.stdout)
    assert inside["uid"] == SANDBOX_ID and inside["interfaces"] == ["lo"]
    assert inside["pids"] == [1, 2]  # bwrap's init and this process: nothing of the host
    assert set(inside["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "root",
                                   "sbin", "tmp", "usr", "home"} and "work" not in inside["root"]
    assert inside["home"] == "/tmp" and inside["host_tmp"] == [] and inside["checkout"] is False
    assert (inside["tmp_writable"], inside["root_writable"], inside["usr_writable"]) == (True, False, False)


def test_never_the_hosts_root_and_a_process_limit(tmp_path):
    seen = run_script(tmp_path, '''
import os, time
children = []
try:
    for _ in range(40):
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        children.append(pid)
except OSError as exc:
    print("stopped", len(children), exc.errno)
status = open("/proc/self/status").read()
print("caps", [l.split()[1] for l in status.splitlines() if l.startswith(("CapEff", "CapPrm"))])
''')
    stopped = seen.stdout.split("\n")[0].split()
    assert stopped[0] == "stopped" and int(stopped[1]) < SCRIPTS.max_processes and stopped[2] == "11"  # EAGAIN
    assert "caps ['0000000000000000', '0000000000000000']" in seen.stdout


def test_the_host_sees_an_unprivileged_uid_and_kill_ends_every_process(tmp_path):
    marker = "wall" + os.urandom(4).hex()
    script = tmp_path / "script.py"
    script.write_text(f'''
import ctypes, os, time
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(15, {marker!r}.encode(), 0, 0, 0)
    print("named", flush=True)
    time.sleep(300)
time.sleep(300)
''')
    walled = launch(SCRIPTS, ["/opt/s.py"], env={"PATH": "/usr/bin"}, files={"/opt/s.py": str(script)},
                    stdout=subprocess.PIPE)
    try:
        assert walled.stdout.readline() == b"named\n"
        [pid] = processes_named(marker)
        uid = next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("Uid:"))
        assert int(uid) == (OUTSIDE_ID if os.geteuid() == 0 else os.getuid()) != 0
    finally:
        walled.kill()
    assert processes_named(marker) == []  # the setsid grandchild went with its sandbox
    assert walled.poll() is not None


@pytest.fixture
def no_bwrap(tmp_path, monkeypatch):
    """bwrap made unavailable: TRITON_DATA_BWRAP names a file that does not exist."""
    monkeypatch.setenv(BWRAP_ENV, str(tmp_path / "missing" / "bwrap"))


def test_imports_are_refused_without_bwrap(no_bwrap, tmp_path, capfd):
    with pytest.raises(SandboxUnavailable, match="--unsafe-no-sandbox"):
        validate_records([KernelRecord(name="kern", code=KERNEL, source="github")], levels=("imports",), jobs=1)
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [KernelRecord(name="kern", code=KERNEL, source="github")])
    before = manifest.read_text()
    assert validate_cli.main([str(manifest), "--level", "imports", "-q"]) == 2
    assert manifest.read_text() == before
    message = capfd.readouterr().err
    assert BWRAP_ENV in message and "is not an executable file" in message and "--unsafe-no-sandbox" in message


def test_bwrap_missing_from_path_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(BWRAP_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="not installed.*apt-get install bubblewrap"):
        validate_records([KernelRecord(name="kern", code=KERNEL, source="github")], levels=("compiles",), jobs=1)


def test_a_bwrap_that_cannot_make_namespaces_is_refused_with_its_reason(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv(BWRAP_ENV, str(fake))
    with pytest.raises(SandboxUnavailable, match="No permissions to create a new namespace"):
        validate_records([KernelRecord(name="kern", code=KERNEL, source="github")], levels=("imports",), jobs=1)


def test_parses_needs_no_sandbox(no_bwrap):
    record = KernelRecord(name="kern", code=KERNEL, source="github")
    validate_records([record], levels=("parses",))
    assert record.parses is True and record.imports is None


def test_unsafe_no_sandbox_is_an_explicit_opt_in(no_bwrap, tmp_path, capfd):
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [KernelRecord(name="kern", code=KERNEL, source="github")])
    assert validate_cli.main([str(manifest), "--level", "imports", "--unsafe-no-sandbox", "--jobs", "1"]) == 0
    imports = json.loads(manifest.read_text())["validation"]["imports"]
    assert imports["ok"] is True and imports["sandbox"]["wall"] == "none (--unsafe-no-sandbox)"
    assert "WITHOUT the bubblewrap sandbox" in capfd.readouterr().err


def test_the_modules_suite_is_refused_without_bwrap_unless_opted_out(no_bwrap, tmp_path):
    code = "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"
    assert run_modules(tmp_path, {"net": code}, name="out").code == 2
    assert not (tmp_path / "out" / "suite" / "manifest.jsonl").exists()
    assert run_modules(tmp_path, {"net": code}, "--unsafe-no-sandbox", name="out").code == 0


def test_a_missing_module_source_is_that_models_failure(tmp_path):
    done = run_modules(tmp_path, [{"name": "gone", "class_name": "Net", "source_file": str(tmp_path / "no.py")}],
                       name="out")
    assert done.code == 1
    row = done.rows["gone"]
    assert row["status"] == "failed" and "FileNotFoundError" in row["error"] and "/src/no.py" in row["error"]


def test_gpu_devices_are_the_ones_cuda_opens(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "null",
                 "nvidia-caps/nvidia-cap1", "nvidia-caps/nvidia-cap2"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).touch()
    found = gpu_devices(str(tmp_path))
    assert [Path(p).relative_to(tmp_path).as_posix() for p in found] == [
        "nvidia-uvm", "nvidia0", "nvidia1", "nvidiactl", "nvidia-caps/nvidia-cap1", "nvidia-caps/nvidia-cap2"]
    assert bind_args({}, found[:2]) == ["--dev-bind", found[0], found[0], "--dev-bind", found[1], found[1]]
    assert gpu_devices(str(tmp_path / "nvidia-caps")) == []


def assert_installation_only(paths: list[str], repo: str) -> None:
    """Nothing bound twice, nothing inside /usr (bound whole), never the repository or a folder above it, and
    under the repository only a virtual environment's own folders (a venv may live in the checkout)."""
    assert not any(a != b and b.startswith(a + "/") for a in paths for b in paths)
    assert all(not p.startswith("/usr/") for p in paths)
    assert not any(p == repo or repo.startswith(p + "/") for p in paths), paths
    for path in (p for p in paths if p.startswith(repo + "/")):
        assert any((parent / "pyvenv.cfg").is_file() for parent in [Path(path), *Path(path).parents]), path


def test_python_paths_are_the_installation_only():
    assert_installation_only(python_paths(), str(REPO_ROOT.resolve()))


@pytest.mark.parametrize("venv", [".venv", "."])
def test_python_paths_of_a_venv_inside_the_checkout(tmp_path, venv):
    """The README's `python3 -m venv .venv` in the checkout (and a venv made at its root): the sandbox gets the
    venv, not the repository beside it."""
    checkout = tmp_path / "triton-data"
    shutil.copytree(REPO_ROOT / "scraper", checkout / "scraper", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO_ROOT / "pyproject.toml", checkout / "pyproject.toml")
    prefix = checkout / venv
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    code = "import json; from scraper.sandbox.wall import python_paths; print(json.dumps(python_paths()))"
    seen = subprocess.run([str(prefix / "bin" / "python"), "-c", code], cwd=checkout, capture_output=True,
                          text=True, check=True)
    paths = json.loads(seen.stdout)
    assert_installation_only(paths, str(checkout.resolve()))
    assert str((prefix / "lib").resolve()) in paths or str(prefix.resolve()) in paths  # the venv's packages
    try:
        check_wall()
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here: {exc}")
    script = tmp_path / "list.py"
    script.write_text("import json, os, sys\n"
                      "print(json.dumps({'checkout': sorted(os.listdir(sys.argv[1])), 'prefix': sys.prefix}))\n")
    inside = subprocess.run([str(prefix / "bin" / "python"), "-c", LIST_CHECKOUT, str(checkout), str(script)],
                            cwd=checkout, capture_output=True, text=True, check=True)
    venv_files = ["bin", "include", "lib", "pyvenv.cfg"]  # what `python -m venv` makes (lib64 is a link to lib)
    assert json.loads(inside.stdout) == {"checkout": venv_files if venv == "." else [venv],
                                         "prefix": str(prefix.resolve())}


# Run by a venv's python: a sandbox started from it lists the checkout (argv[1]) with a script (argv[2]).
LIST_CHECKOUT = """
import subprocess, sys
from scraper.sandbox.wall import PROBE_WALL, launch
walled = launch(PROBE_WALL, ["/opt/list.py", sys.argv[1]], env={"PATH": "/usr/bin:/bin"},
                files={"/opt/list.py": sys.argv[2]}, stdout=subprocess.PIPE)
print(walled.proc.communicate(timeout=60)[0].decode())
walled.kill()
"""


def test_a_check_may_start_threads_but_no_process():
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the filter is for good: only in a child of this test
        report = {"installed": forbid_new_processes()}
        thread = threading.Thread(target=lambda: report.update(thread=True))
        thread.start()
        thread.join()
        for name, start in (("fork", os.fork), ("spawn", lambda: subprocess.run(["true"]))):
            try:
                report[name] = start()
            except OSError as exc:
                report[name] = exc.errno
        os.write(write_fd, json.dumps(report).encode())
        os._exit(0)
    os.close(write_fd)
    report = json.loads(os.read(read_fd, 4096))
    os.waitpid(pid, 0)
    assert report == {"installed": True, "thread": True, "fork": 1, "spawn": 1}  # EPERM


def test_answers_are_capped_and_scrubbed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DB_URL='postgres://u:hunter2hunter2@db'\n# comment\n")
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "correct-horse-battery")
    leaks = ["ghp_" + "a" * 36, "github_pat_" + "B" * 40, "hf_" + "c" * 34, "AKIA" + "D" * 16,
             "-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY-----",
             "root:$6$saltsalt$" + "h" * 40 + ":19000:0:99999:7:::", "postgres://u:hunter2hunter2@db",
             "correct-horse-battery"]
    result = {"ok": False, "error": "RuntimeError: " + " ".join(leaks), "output_tail": "x" * 5000,
              "nested": {"list": ["ghp_" + "e" * 36], "n": 3}}
    cleaned = clean_result(result)
    assert len(cleaned["error"]) <= 500 and len(cleaned["output_tail"]) == 400
    text = json.dumps(cleaned)
    for leak in leaks:
        assert leak not in text
    assert "hunter2" not in text and "MIIabc" not in text and "hhhhhhhh" not in text
    assert cleaned["nested"] == {"list": ["[redacted]"], "n": 3} and cleaned["ok"] is False


def test_worker_environment_drops_secret_names_and_token_values(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "x" * 10)
    monkeypatch.setenv("INNOCENT_LOOKING", "hf_" + "z" * 30)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env = worker_environment()
    assert "GITHUB_TOKEN" not in env and "INNOCENT_LOOKING" not in env and env["OMP_NUM_THREADS"] == "2"


def test_what_a_sandbox_leaves_is_made_safe(tmp_path):
    folder = tmp_path / "job"
    (folder / "debug" / "run_x").mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    os.chmod(folder / "result.json", 0o4777)
    (folder / "debug" / "run_x" / "output_code.py").symlink_to("/etc/hostname")
    (folder / "debug" / "linked_dir").symlink_to("/etc")
    os.mkfifo(folder / "debug" / "fifo")
    take_out(folder)
    left = {p.relative_to(folder).as_posix(): oct(p.lstat().st_mode & 0o7777) for p in folder.rglob("*")}
    assert left == {"debug": "0o755", "debug/run_x": "0o755", "result.json": "0o644"}


def test_the_probe_wall_is_small():
    assert PROBE_WALL.max_processes <= 16 and PROBE_WALL.modules == ("scraper/sandbox/inside.py",)


def test_workers_started_from_several_threads_never_parse_at_once(monkeypatch):
    # The suite starts walled workers from one thread per GPU slot; CPython 3.11's parser breaks when two threads
    # parse at once ("AST constructor recursion depth mismatch", seen in CI), so the code list is read by one
    # thread at a time, and once.
    import time
    import scraper.sandbox.wall as wall

    inside, most, calls = [0], [0], []
    real = wall._scraper_imports

    def slow_reader(path):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        calls.append(path)
        time.sleep(0.005)  # widens the window two unguarded threads would share
        inside[0] -= 1
        return real(path)

    monkeypatch.setattr(wall, "_scraper_imports", slow_reader)
    wall._closure.cache_clear()
    results = []
    threads = [threading.Thread(target=lambda: results.append(wall.imported_closure(["scraper/worker/"])))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall._closure.cache_clear()
    assert most[0] == 1
    assert len(results) == 6 and all(result == results[0] for result in results)
    assert "scraper/worker/run.py" in results[0] and "scraper/records.py" in results[0]
    assert len(calls) == len(results[0])  # each file read once, by the first thread
