"""A long-lived validation worker: `python -m scraper.validate.worker` (started by scraper.validate.pool, inside
the bubblewrap sandbox of scraper.sandbox unless --unsafe-no-sandbox).

It imports torch, triton and Inductor's runtime helpers once and says `{"ready": true}`, then reads one JSON job
per line on stdin ({"seq", "level": "imports"|"compiles", "name", "code", "signature", "constants", "launch",
"timeout", "memory_mb"}), runs each in a forked, confined child (scraper.validate.confine) in a scratch folder of
its own and answers one JSON result per line, carrying the job's "seq", on its original stdout. Its own stdout is
moved to stderr first, so nothing a library prints can corrupt the answers; the children close both channels and
cannot reach them through /proc (this process is not dumpable).

After each job its scratch folder is removed (at any depth, whatever modes the kernel left) and the answer says
whether the scratch is clean (`scratch_clean`: nothing left, most of it free); a worker whose scratch is not is
replaced by the pool. `infrastructure: true` marks a failure of the worker itself (its scratch could not be made),
never the kernel's.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile

from scraper.fileio import remove_tree
from scraper.sandbox.inside import WALL_ENV, forbid_dumping
from scraper.validate.confine import run_confined

CHECKS = ("imports", "compiles")
WORKER_KEYS = ("infrastructure", "scratch_clean")  # what only the worker says, never a kernel's child
MIN_FREE = 0.75  # the share of the scratch that must be free after a job


def preload() -> None:
    """Import what every kernel module imports, so each forked child starts with it in memory."""
    os.environ.pop("TRITON_INTERPRET", None)
    import torch  # noqa: F401
    import triton  # noqa: F401
    import triton.language  # noqa: F401
    from torch._inductor.runtime import hints, triton_helpers, triton_heuristics  # noqa: F401
    from triton.runtime import autotuner, interpreter  # noqa: F401

    from scraper.validate.compiles import install_compile_hooks

    install_compile_hooks()
    # Move everything imported so far out of the collector's sight: a child's garbage collections then do not
    # touch (and copy-on-write) the pages shared with this worker; forks get measurably cheaper.
    gc.collect()
    gc.freeze()


def warm_compiler(base: str) -> None:
    """Compile one trusted kernel here, before any fork: it loads LLVM and fills the lru caches (ptxas version)
    that would otherwise need a subprocess, which the sandbox refuses, in every child."""
    from scraper.validate.compiles import check_compiles
    from scraper.validate.imports import write_module

    scratch = tempfile.mkdtemp(dir=base)
    os.environ["TRITON_CACHE_DIR"] = os.path.join(scratch, "triton_cache")
    write_module(scratch, WARMUP_KERNEL)
    result = check_compiles({"name": "warmup", "signature": {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
                             "constants": {"BLOCK": 64}}, scratch)
    if not result.get("ok"):
        print(f"validate worker: compiler warm-up failed: {result.get('error')}", file=sys.stderr)
    sys.modules.pop("kernel_module", None)
    remove_tree(scratch, ignore_errors=True)


WARMUP_KERNEL = """
import triton
import triton.language as tl

@triton.jit
def warmup(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * 2, mask=mask)
"""


def run_job(job: dict, base: str, channels: tuple[int, ...] = ()) -> dict:
    """One job in a fresh scratch folder under `base`, removed afterwards; `channels`: descriptors the child
    closes. A scratch folder that cannot be made is an infrastructure failure, not the kernel's."""
    from scraper.validate.compiles import check_compiles
    from scraper.validate.imports import check_imports, write_module

    level = job.get("level")
    if level not in CHECKS:
        return {"ok": False, "error_class": "ValueError", "error": f"ValueError: unknown level {level!r}"}
    check = check_imports if level == "imports" else check_compiles
    try:
        scratch = tempfile.mkdtemp(prefix="k", dir=base)
        write_module(scratch, job["code"])
    except OSError as exc:
        return {"ok": False, "error_class": "SandboxError", "infrastructure": True,
                "error": f"SandboxError: no scratch for the check: {type(exc).__name__}: {exc}"}
    try:
        result = run_confined(lambda where: check(job, where), scratch, timeout=float(job["timeout"]),
                              memory_mb=int(job["memory_mb"]), channels=channels)
    finally:
        remove_tree(scratch, ignore_errors=True)
    for key in WORKER_KEYS:  # the child's result is the kernel's: it cannot speak for the worker
        result.pop(key, None)
    return result


def scratch_clean(base: str) -> bool:
    """Whether the jobs' scratch folder is as a fresh worker's: nothing left in it and, behind the wall (where
    it is the sandbox's own tmpfs), most of its space free."""
    try:
        if os.listdir(base):
            return False
        space = os.statvfs(base)
        return os.environ.get(WALL_ENV) != "bwrap" or space.f_bavail >= MIN_FREE * space.f_blocks
    except OSError:
        return False


def main() -> int:
    """Say ready, then serve jobs from stdin until it closes."""
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    forbid_dumping()
    preload()
    root = os.environ.get("TRITON_VALIDATE_SCRATCH") or tempfile.mkdtemp(prefix="triton-validate-")
    base = os.path.join(root, "jobs")  # the jobs' folders, and nothing else
    os.makedirs(base, exist_ok=True)
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    warmed = False
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            job = json.loads(line)
            if job.get("level") == "compiles" and not warmed:
                warm_compiler(base)
                gc.freeze()
                warmed = True
            result = run_job(job, base, channels=(answers.fileno(),))
            result["scratch_clean"] = scratch_clean(base)
            answers.write(json.dumps({**result, "seq": job.get("seq")}, default=str) + "\n")
            answers.flush()
    finally:
        if not os.environ.get("TRITON_VALIDATE_SCRATCH"):
            remove_tree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # Skip interpreter teardown: with triton loaded it only prints nanobind "leaked instance" noise to stderr.
    os._exit(status)
