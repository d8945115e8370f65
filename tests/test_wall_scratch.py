"""Issue 23, route 12, and the TMPDIR route: what one kernel does to its worker is never recorded against the next
kernel, and a run whose workers cannot start fails as a run. The hostile inputs: a kernel that leaves a folder
its worker's clean-up cannot list (the next kernel saw it), one that also fills the worker's /tmp inside it (the
next good kernel was recorded imports=false), a worker killed in the middle of a job (as the OOM killer would:
the kernel was recorded failed), host paths in the environment (TMPDIR elsewhere: torch's cache folder under it
reached the sandbox, where that path is read-only, and every worker died at start) and an environment in which
no worker can start (every kernel was recorded imports=false and the run exited 0)."""

from __future__ import annotations

import threading
import time


import scraper.validate.__main__ as validate_cli
from scraper.records import KernelRecord, write_jsonl
from scraper.validate import validate_records
from scraper.validate.pool import WorkerPool
from test_sandbox_attacks import KERNEL

# In its scratch folder (its working folder): a folder holding a file, then closed to everyone.
HIDER = '''
import os
os.mkdir("hole")
open("hole/left.txt", "w").write("left behind")
os.chmod("hole", 0)
'''
# The same, the folder filling the worker's /tmp (files of 60 MiB: the check's file-size limit is 64 MiB).
FILLER = '''
import os
os.mkdir("hole")
try:
    for number in range(1000):
        with open(f"hole/{number}", "wb") as handle:
            for _ in range(60):
                handle.write(bytes(1 << 20))
except OSError:
    pass
os.chmod("hole", 0)
'''
# What a kernel finds under /tmp, as its error text.
LOOKER = '''
import os
raise RuntimeError("SEEN " + " ".join(sorted(name for _, dirs, files in os.walk("/tmp") for name in dirs + files)))
'''


def kernel(body: str) -> KernelRecord:
    return KernelRecord(name="kern", code=KERNEL + body, source="github")


def imports(records: list[KernelRecord]) -> None:
    validate_records(records, levels=("imports",), jobs=1, timeout=30, memory_mb=1024)


def test_the_next_kernel_never_sees_what_the_last_one_left():
    looker = kernel(LOOKER)
    imports([kernel(HIDER), looker])
    seen = looker.validation["imports"]["error"]
    assert seen.startswith("RuntimeError: SEEN") and "hole" not in seen and "left.txt" not in seen, seen


def test_a_kernel_that_fills_its_workers_scratch_costs_the_next_one_nothing():
    # Good kernels of a realistic size (64 KB): their module no longer fits in what the filler's clean-up frees.
    good = [kernel(f"X = {number}\n" + "# a long comment, as real kernels have\n" * 1600) for number in range(2)]
    imports([kernel(FILLER), *good])
    assert [record.imports for record in good] == [True, True], [r.validation["imports"] for r in good]


def test_a_worker_killed_during_a_job_is_retried_on_a_fresh_one():
    job = {"level": "imports", "name": "kern", "code": KERNEL + "import time\ntime.sleep(12)\n", "timeout": 60,
           "memory_mb": 1024}
    results = []
    with WorkerPool(1) as pool:
        def kill_once_busy():
            while not pool.workers:
                time.sleep(0.1)
            time.sleep(8)  # the worker has started (a few seconds) and is in the job (12 s)
            pool.workers[0].proc.kill()  # the whole sandbox: as the OOM killer would end it

        killer = threading.Thread(target=kill_once_busy)
        killer.start()
        pool.run([job], lambda job, result: results.append(result))
        killer.join()
    assert results[0]["ok"] is True and results[0].get("retried") is True, results


def test_host_paths_in_the_environment_never_reach_a_kernel(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    for name, value in (("TMPDIR", elsewhere), ("TORCHINDUCTOR_CACHE_DIR", elsewhere / "torchinductor_user"),
                        ("TRITON_CACHE_DIR", elsewhere / "triton"), ("TRITON_HOME", elsewhere / "home")):
        monkeypatch.setenv(name, str(value))
    looker = kernel(f'import os\nraise RuntimeError("HOST " + " ".join(sorted(name for name, value in '
                    f'os.environ.items() if {str(tmp_path)!r} in value)))\n')
    good = kernel("X = 1")
    imports([looker, good])
    assert good.imports is True, good.validation["imports"]
    assert looker.validation["imports"]["error"] == "RuntimeError: HOST", looker.validation["imports"]


def test_a_run_whose_workers_all_die_at_start_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_LOGS", "no_such_log")  # `import torch` fails in every worker
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [kernel("X = 1"), kernel("X = 2")])
    before = manifest.read_text()
    assert validate_cli.main([str(manifest), "--level", "imports", "--jobs", "2"]) == 2
    said = capsys.readouterr().err
    assert "every validate worker died at start" in said and "Invalid log settings" in said, said
    assert manifest.read_text() == before  # no verdict on the kernels
