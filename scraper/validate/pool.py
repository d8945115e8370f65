"""Parent side: a pool of long-lived worker processes (scraper.validate.worker), one thread feeding each.

The pipeline process never executes kernel code: it sends jobs as JSON lines to workers and reads results back.
A worker that dies or stops answering is killed (by its pid) and replaced; its job is reported as failed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterable

from scraper.paths import PACKAGE_PARENT

log = logging.getLogger(__name__)

STARTUP_ALLOWANCE = 180.0  # seconds a fresh worker may take to import torch/triton (and warm the compiler)
REPLY_ALLOWANCE = 30.0  # beyond the job's own timeout, before a worker counts as hung


# Variables kernel modules must not see: they could copy them into their error text, which lands in kernels.jsonl.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE|AUTH", re.IGNORECASE)


def worker_environment() -> dict:
    """This process's environment without variables whose names look like secrets (GITHUB_TOKEN, HF_TOKEN, ...)."""
    return {name: value for name, value in os.environ.items() if not _SECRET_NAME.search(name)}


class Worker:
    """One `python -m scraper.validate.worker` process."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.base: str | None = None
        self.buffer = b""
        self.fresh = True
        self.compiled = False

    def start(self) -> None:
        """Start the process (it imports torch/triton while the caller goes on)."""
        env = worker_environment()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
        env.pop("TRITON_INTERPRET", None)
        # The scratch root is made (and removed) here, so that a worker killed with SIGKILL leaves nothing behind.
        self.base = tempfile.mkdtemp(prefix="triton-validate-")
        env["TRITON_VALIDATE_SCRATCH"] = self.base
        self.proc = subprocess.Popen([sys.executable, "-m", "scraper.validate.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=str(PACKAGE_PARENT))
        self.buffer, self.fresh, self.compiled = b"", True, False

    def stop(self) -> None:
        """Close stdin (the worker exits when it sees EOF); kill it if it does not."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def run(self, job: dict) -> dict:
        """Send one job, wait for its answer; a dead or hung worker is replaced and the job reported failed."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self.start()
        allowance = REPLY_ALLOWANCE + float(job["timeout"])
        if self.fresh or (job["level"] == "compiles" and not self.compiled):
            allowance += STARTUP_ALLOWANCE
        try:
            self.proc.stdin.write((json.dumps(job, default=str) + "\n").encode())
            self.proc.stdin.flush()
            line = self._read_line(time.monotonic() + allowance)
        except (OSError, ValueError) as exc:
            line, reason = None, f"{type(exc).__name__}: {exc}"
        else:
            reason = "worker did not answer in time" if line is None else ""
        if line is None:
            self.kill()
            return {"ok": False, "error_class": "SandboxError", "error": f"SandboxError: {reason}",
                    "infrastructure": True}
        self.fresh = False
        self.compiled = self.compiled or job["level"] == "compiles"
        try:
            return json.loads(line)
        except ValueError:
            self.kill()
            return {"ok": False, "error_class": "SandboxError", "infrastructure": True,
                    "error": f"SandboxError: unreadable worker answer {line[:80]!r}"}

    def _read_line(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise OSError("worker exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def kill(self) -> None:
        """Kill the process now (SIGKILL by its pid) and remove its scratch root."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._remove_scratch()


class WorkerPool:
    """`jobs` workers, started on first use; use as a context manager so they are always stopped."""

    def __init__(self, jobs: int) -> None:
        self.size = max(1, jobs)
        self.idle: queue.Queue[Worker] = queue.Queue()
        self.workers: list[Worker] = []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers now (they import torch/triton while the caller does other work)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        while len(self.workers) < self.size:
            worker = Worker()
            worker.start()
            self.workers.append(worker)
            self.idle.put(worker)

    def _run_one(self, job: dict) -> dict:
        worker = self.idle.get()
        try:
            return worker.run(job)
        finally:
            self.idle.put(worker)

    def run(self, jobs: Iterable[dict], on_result: Callable[[dict, dict], None]) -> None:
        """Run every job; call on_result(job, result) in this thread as each finishes (in completion order)."""
        jobs = list(jobs)
        if not jobs:
            return
        self._ensure_started()
        with ThreadPoolExecutor(max_workers=self.size) as executor:
            futures = {executor.submit(self._run_one, job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    on_result(futures[future], future.result())
            except BaseException:  # Ctrl-C or a failing callback: stop at once, do not drain the queue
                executor.shutdown(wait=False, cancel_futures=True)
                for worker in self.workers:
                    worker.kill()
                raise

    def close(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
