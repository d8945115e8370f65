"""Parent side: a pool of long-lived worker processes (scraper.validate.worker), one thread feeding each.

The pipeline process never executes kernel code: it sends jobs as JSON lines to workers and reads results back.
Each worker runs behind the wall (a bubblewrap sandbox, scraper.sandbox) unless the user passed
--unsafe-no-sandbox. A worker that dies, stops answering or answers out of turn is killed (the whole sandbox) and
replaced; its job is reported as failed. Answers are cleaned (strings capped, secrets redacted) before use.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterable

from scraper.paths import PACKAGE_PARENT
from scraper.sandbox import Wall, clean_result, launch, pipe, worker_environment

log = logging.getLogger(__name__)

STARTUP_ALLOWANCE = 180.0  # seconds a fresh worker may take to import torch/triton (and warm the compiler)
REPLY_ALLOWANCE = 30.0  # beyond the job's own timeout, before a worker counts as hung
VALIDATE_WALL = Wall("validate", ("scraper/sandbox/inside.py", "scraper/validate/worker.py",
                                  "scraper/validate/sandbox.py", "scraper/validate/imports.py",
                                  "scraper/validate/compiles.py"),
                     max_processes=256, scratch_mb=4096)


class Worker:
    """One `python -m scraper.validate.worker` process."""

    def __init__(self, unsafe_no_sandbox: bool = False) -> None:
        self.unsafe = unsafe_no_sandbox
        self.proc = None  # a scraper.sandbox.Walled, or a plain Popen without the wall
        self.base: str | None = None
        self.buffer = b""
        self.fresh = True
        self.compiled = False
        self.seq = 0

    def start(self) -> None:
        """Start the process (it imports torch/triton while the caller goes on)."""
        env = worker_environment()
        env.pop("TRITON_INTERPRET", None)
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        if self.unsafe:
            self.proc = self._start_unwalled(env, pipes)
        else:  # its scratch is the sandbox's own tmpfs, gone with it
            env["TRITON_VALIDATE_SCRATCH"] = "/tmp"
            self.proc = launch(VALIDATE_WALL, ["-m", "scraper.validate.worker"], env=env, **pipes)
        self.buffer, self.fresh, self.compiled = b"", True, False

    def _start_unwalled(self, env: dict, pipes: dict) -> subprocess.Popen:
        """--unsafe-no-sandbox: a plain subprocess, with a scratch root made (and removed) here, so that a
        worker killed with SIGKILL leaves nothing behind."""
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
        self.base = tempfile.mkdtemp(prefix="triton-validate-")
        env["TRITON_VALIDATE_SCRATCH"] = self.base
        return subprocess.Popen([sys.executable, "-m", "scraper.validate.worker"], env=env, cwd=str(PACKAGE_PARENT),
                                **pipes)

    def stop(self) -> None:
        """Close stdin (the worker exits when it sees EOF); kill it if it does not."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill_process()  # after a clean exit too: a sandbox is over only once its init is
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
        self.seq += 1
        try:
            self.proc.stdin.write((json.dumps({**job, "seq": self.seq}, default=str) + "\n").encode())
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
        return self._answer(line)

    def _answer(self, line: bytes) -> dict:
        """The cleaned result of one answer line; a line that is not the answer to the job just sent (no JSON
        object, or another "seq") kills the worker and fails the job."""
        try:
            answer = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to read
            answer = None
        if not isinstance(answer, dict) or answer.pop("seq", None) != self.seq:
            self.kill()
            return {"ok": False, "error_class": "SandboxError", "infrastructure": True,
                    "error": "SandboxError: the worker's answer is not the one to this job"}
        return clean_result(answer)

    def _read_line(self, deadline: float) -> bytes | None:
        line, self.buffer = pipe.read_line(self.proc.stdout.fileno(), self.buffer, deadline)
        if line == b"":
            raise OSError("worker exited")
        return line

    def kill(self) -> None:
        """Kill the worker now (its whole sandbox, or the process by its pid) and remove its scratch root. Safe
        to call from another thread while the worker's own thread is using it (Ctrl-C)."""
        self._kill_process()
        self.proc = None
        self._remove_scratch()

    def _kill_process(self) -> None:
        proc = self.proc  # another thread may set it to None meanwhile
        if proc is not None:
            proc.kill()  # Walled.kill ends every process of the sandbox and waits for it
            proc.wait()


class WorkerPool:
    """`jobs` workers, started on first use; use as a context manager so they are always stopped."""

    def __init__(self, jobs: int, unsafe_no_sandbox: bool = False) -> None:
        self.size = max(1, jobs)
        self.unsafe = unsafe_no_sandbox
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
            worker = Worker(self.unsafe)
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
