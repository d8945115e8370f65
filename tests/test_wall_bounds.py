"""Issue 23, route 6: the suite's sandbox bounds memory and disk. The hostile inputs: a module that maps 6 GiB, a
module that leaves 24 MiB of debug files in its job folder (the review's left 1 GiB, kept in the output), and a
module that reports the limits it runs under (address space, file size, the size of /tmp and /dev/shm)."""

from __future__ import annotations

import json
from pathlib import Path

import suite_helpers

NET = "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
GREEDY = "block = bytearray(6 << 30)  # mapped, never touched: costs no memory where it is allowed\n" + NET
FILLER = '''
import os
folder = "/job/debug/run_filler-pid_2/torchinductor/g__0_inference_0.0"
os.makedirs(folder, exist_ok=True)
for number in range(24):
    with open(os.path.join(folder, f"part{number}.bin"), "wb") as handle:
        handle.write(b"x" * (1 << 20))
''' + NET
# Writes on and on (each file under the file-size bound): stopped while it runs, not after its timeout.
FLOOD = '''
import os, time
os.makedirs("/job/debug/run_flood-pid_2", exist_ok=True)
for number in range(600):
    with open(f"/job/debug/run_flood-pid_2/part{number}.bin", "wb") as handle:
        handle.write(b"x" * (1 << 20))
    time.sleep(0.1)
''' + NET
REPORTER = '''
import json, os, resource
def megabytes(path):
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize >> 20
raise RuntimeError("LIMITS " + json.dumps({
    "as": resource.getrlimit(resource.RLIMIT_AS)[0], "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
    "tmp_mb": megabytes("/tmp"), "shm_mb": megabytes("/dev/shm")}))
''' + NET


def run_modules(tmp_path: Path, modules: dict[str, str], *flags: str) -> tuple[int, dict, Path]:
    """--suite modules on `modules` ({name: code}), CPU only, nothing compiled; (exit status, rows, --out)."""
    done = suite_helpers.run_modules(tmp_path, [{"name": name, "class_name": "Net", "code": code}
                                                for name, code in modules.items()], *flags)
    return done.code, done.rows, done.out


def test_a_module_cannot_map_more_than_its_memory_bound(tmp_path):
    code, rows, _ = run_modules(tmp_path, {"greedy": GREEDY, "good": NET}, "--worker-memory-mb", "3072")
    assert rows["good"]["status"] == "ok"
    assert rows["greedy"]["status"] == "failed" and "MemoryError" in rows["greedy"]["error"], rows["greedy"]


def test_a_job_folder_over_its_bound_fails_and_nothing_of_it_is_kept(tmp_path):
    code, rows, out = run_modules(tmp_path, {"filler": FILLER, "good": NET}, "--worker-disk-mb", "16")
    assert rows["good"]["status"] == "ok" and code == 1
    filler = rows["filler"]
    assert filler["status"] == "failed" and "over its bound" in filler["error"] and filler["run_dir"] is None
    assert [p for p in out.rglob("part*.bin")] == []
    assert list((out / "suite" / "sandbox").iterdir()) == []


def test_a_job_folder_that_keeps_growing_is_stopped_while_it_runs(tmp_path):
    _, rows, out = run_modules(tmp_path, {"flood": FLOOD}, "--worker-disk-mb", "16", "--timeout", "120")
    assert rows["flood"]["status"] == "failed" and "over its bound" in rows["flood"]["error"]
    assert rows["flood"]["seconds"] < 40  # the folder is measured every few seconds
    assert [p for p in out.rglob("part*.bin")] == []


def test_the_limits_a_module_runs_under(tmp_path):
    _, rows, _ = run_modules(tmp_path, {"reporter": REPORTER}, "--worker-memory-mb", "4096",
                             "--worker-disk-mb", "512")
    seen = json.loads(rows["reporter"]["error"].split("LIMITS ", 1)[1])
    assert seen["as"] == 4096 << 20 and seen["fsize"] == 512 << 20
    assert seen["tmp_mb"] <= 4096 and seen["shm_mb"] <= 1024
