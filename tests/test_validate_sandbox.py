"""Bad input for scraper.validate: modules that loop, allocate, exit, write, delete, spawn, kill or connect.

All the hostile modules go through ONE validate_records call (two workers), beside good kernels, so the tests
also show that the run goes on and that one bad module does not spoil the next one in the same worker.
"""

from __future__ import annotations

import builtins
import os
import socket
import threading
import time

import pytest

from scraper.records import KernelRecord
from scraper.stats import Stats
from scraper.validate import validate_records
from scraper.validate.confine import landlock_abi

GOOD_KERNEL = '''
import triton
import triton.language as tl


@triton.jit
def kern(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n), mask=offsets < n)
'''

AUTOTUNED = GOOD_KERNEL.replace("@triton.jit", "@triton.autotune(configs=[triton.Config({'BLOCK': 64})], "
                                                "key=['n'])\n@triton.jit")


def record(body: str, name: str = "kern") -> KernelRecord:
    """A github-like record whose module is the good kernel plus `body` at top level."""
    return KernelRecord(name=name, code=GOOD_KERNEL + "\n" + body + "\n", source="github")


class CountingServer:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def snapshot(folder) -> dict:
    """Every file under `folder` with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Run every hostile module once; returns (records by label, outside folder, snapshots, server, stats)."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "keep.txt").write_text("keep me")
    before = snapshot(outside)
    server = CountingServer()
    modules = {
        "good": record(""),
        "autotuned": KernelRecord(name="kern", code=AUTOTUNED, source="github"),
        "loops": record("while True:\n    pass"),
        "allocates": record("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))"),
        "exits": record("import sys\nsys.exit(3)"),
        "hard_exit": record("import os\nos._exit(7)"),
        "writes_outside": record(f"open({str(outside / 'written.txt')!r}, 'w').write('x')"),
        "writes_inside": record("open('local.txt', 'w').write('scratch is fine')"),
        "writes_devnull": record("import os, tempfile\nopen(os.devnull, 'w').write('x')\n"
                                 "tempfile.NamedTemporaryFile().write(b'x')"),
        "deletes_outside": record(f"import os\nos.remove({str(outside / 'keep.txt')!r})"),
        "torch_saves": record(f"import torch\ntorch.save(torch.zeros(2), {str(outside / 'saved.pt')!r})"),  # C++ writer
        # Inside the wall the folder above does not exist; /tmp does (the worker's tmpfs) but is not this check's.
        "torch_saves_tmp": record("import torch\ntorch.save(torch.zeros(2), '/tmp/escaped.pt')"),
        "sqlite_outside": record(f"import sqlite3\nsqlite3.connect({str(outside / 'db.sqlite')!r}).execute('create "
                                 "table t(x)')"),
        "sqlite_attach": record("import sqlite3\nsqlite3.connect(':memory:').execute("
                                f"\"ATTACH {str(outside / 'attached.db')!r} AS a\").execute('create table a.t(x)')"),
        "sets_xattr": record(f"import os\nos.setxattr({str(outside / 'keep.txt')!r}, 'user.tag', b'x')"),
        "spawns": record(f"import subprocess\nsubprocess.run(['touch', {str(outside / 'spawned')!r}])"),
        "forks": record("import os\nos.fork()"),
        "kills_parent": record("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"),
        "connects": record(f"import socket\nsocket.create_connection(('127.0.0.1', {server.port}), timeout=2)"),
        "pollutes": record("import builtins\nbuiltins.VALIDATE_SANDBOX_LEAK = True"),
        "not_a_kernel": record("kern = 42"),
        "missing_name": record("", name="no_such_kernel"),
        "missing_module": record("import no_such_module_for_validate"),
        "syntax_error": KernelRecord(name="kern", code="def kern(:\n", source="github"),
        "good_after": KernelRecord(name="kern", code=GOOD_KERNEL + "\n# another\nX = 1\n", source="github"),
    }
    stats = Stats("validate")
    started = time.monotonic()
    validate_records(list(modules.values()), levels=("imports",), jobs=2, timeout=4, memory_mb=512, stats=stats)
    elapsed = time.monotonic() - started
    time.sleep(0.3)  # let the server thread see a connection that might have slipped through
    server.close()
    yield {"records": modules, "outside": outside, "before": before, "after": snapshot(outside),
           "server": server, "stats": stats, "elapsed": elapsed}


def result(hostile, label: str) -> dict:
    return hostile["records"][label].validation["imports"]


def test_good_kernels_pass_beside_hostile_ones(hostile):
    for label in ("good", "good_after", "writes_inside", "writes_devnull", "pollutes"):
        assert hostile["records"][label].imports is True, (label, result(hostile, label))
    assert result(hostile, "good")["object"] == "InterpretedFunction"  # TRITON_INTERPRET=1 in the sandbox
    assert result(hostile, "autotuned")["object"] == "Autotuner -> InterpretedFunction"


def test_infinite_loop_is_killed_at_the_time_limit(hostile):
    loop = result(hostile, "loops")
    assert hostile["records"]["loops"].imports is False
    assert loop["error_class"] == "Timeout"
    assert 4 <= loop["seconds"] < 10


def test_unbounded_allocation_hits_the_memory_limit(hostile):
    alloc = result(hostile, "allocates")
    assert hostile["records"]["allocates"].imports is False
    assert alloc["error_class"] == "MemoryError", alloc
    assert alloc["where"] == f"line {GOOD_KERNEL.count(chr(10)) + 4}"  # the append line of the module


def test_exit_calls_are_failures_with_reason(hostile):
    assert result(hostile, "exits")["error"] == "SystemExit: 3"
    assert result(hostile, "hard_exit")["error"].startswith("SandboxExit: exited with status 7")


def test_nothing_outside_the_scratch_dir_changes(hostile):
    for label in ("writes_outside", "deletes_outside", "spawns", "forks", "kills_parent", "sets_xattr"):
        res = result(hostile, label)
        assert hostile["records"][label].imports is False
        assert res["error_class"] == "SandboxRefused", (label, res)
    assert "refused writing" in result(hostile, "writes_outside")["error"]
    for label in ("torch_saves", "sqlite_outside", "sqlite_attach"):  # not in the wall, or refused by Landlock
        assert hostile["records"][label].imports is False
        assert any(reason in result(hostile, label)["error"] for reason in (
            "ermission denied", "unable to open", "does not exist")), (label, result(hostile, label))
    if landlock_abi() >= 1:  # writes the audit hook cannot see (C++ torch.save): Landlock refuses them
        assert "ermission denied" in result(hostile, "torch_saves_tmp")["error"], result(hostile, "torch_saves_tmp")
        assert result(hostile, "good")["sandbox"]["files"] == "landlock"
    assert hostile["after"] == hostile["before"] == {"keep.txt": b"keep me"}
    assert os.listxattr(hostile["outside"] / "keep.txt") == []


def test_network_is_refused_and_nothing_connects(hostile):
    res = result(hostile, "connects")
    assert hostile["records"]["connects"].imports is False
    assert res["error_class"] == "SandboxRefused" and "socket" in res["error"]
    assert hostile["server"].accepted == 0


def test_kernel_code_never_runs_in_the_pipeline_process(hostile):
    assert not hasattr(builtins, "VALIDATE_SANDBOX_LEAK")
    assert hostile["records"]["pollutes"].imports is True  # it did run, elsewhere


def test_wrong_kernel_objects_and_import_errors(hostile):
    assert result(hostile, "not_a_kernel")["error"] == "TypeError: 'kern' is a int, not a triton JITFunction"
    assert result(hostile, "missing_name")["error_class"] == "LookupError"
    assert result(hostile, "missing_module")["error"] == \
        "ModuleNotFoundError: No module named 'no_such_module_for_validate'"


def test_syntax_error_fails_parses_and_imports_is_not_run(hostile):
    rec = hostile["records"]["syntax_error"]
    assert rec.parses is False and rec.imports is False
    assert rec.validation["parses"]["error_class"] == "SyntaxError"
    assert rec.validation["imports"]["error_class"] == "NotRun"


def test_stats_count_every_outcome(hostile):
    counts = hostile["stats"].counts
    records = hostile["records"].values()
    assert counts["validate_parses_ok"] + counts["validate_parses_failed"] == len(records)
    # ok: good, autotuned, writes_inside, writes_devnull, pollutes, good_after
    assert counts["validate_imports_ok"] == sum(r.imports is True for r in records) == 6
    assert counts["validate_imports_failed"] == len(records) - 6
    assert counts["validate_jobs_run"] == len(records) - 1  # the syntax error never reaches a worker
    # every failed import is an error, except the NotRun one, plus the parse failure of the same record
    assert sum(hostile["stats"].errors["validate"].values()) == (len(records) - 6 - 1) + 1


def test_secrets_in_the_environment_do_not_reach_kernel_modules(monkeypatch):
    """Scraped code must not read the user's token into its error text (which lands in kernels.jsonl)."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret_for_validate_test")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_validate_test")
    monkeypatch.setenv("MY_API_KEY", "key_secret_for_validate_test")
    leak = record("import os\nraise RuntimeError(' '.join(os.environ.get(k, 'absent') for k in "
                  "('GITHUB_TOKEN', 'HF_TOKEN', 'MY_API_KEY', 'PATH'))[:80])")
    validate_records([leak], levels=("imports",), jobs=1, timeout=20)
    error = leak.validation["imports"]["error"]
    assert error.startswith("RuntimeError: absent absent absent /"), error  # PATH is kept


def test_a_folder_above_the_python_installation_is_not_masked_in_error_text(monkeypatch):
    """CI's pyenv sets PYENV_ROOT=/root/.pyenv, the folder above the interpreter: its name is in every path the
    worker prints (PATH, tracebacks), so masking it as a secret mangled them to '[redacted]/versions/...'."""
    import sys

    from scraper.sandbox.secrets import known_secrets, scrub
    above = os.path.dirname(os.path.realpath(sys.base_prefix))
    monkeypatch.setenv("TOOL_ROOT", above)
    monkeypatch.setenv("SOME_OTHER_FOLDER", "/srv/not-shown/folder")  # a host folder the wall hides is masked
    text = f"File \"{os.path.realpath(sys.base_prefix)}/lib/x.py\", /srv/not-shown/folder"
    assert above not in known_secrets()
    assert scrub(text, 500) == text.replace("/srv/not-shown/folder", "[redacted]")
