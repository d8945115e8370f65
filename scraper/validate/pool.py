"""Parent side: a pool of long-lived worker processes (scraper.validate.worker), one thread feeding each.

The pipeline process never executes kernel code: it sends jobs as JSON lines to workers and reads results back.
Each worker runs behind the wall (a bubblewrap sandbox, scraper.sandbox) unless the user passed
--unsafe-no-sandbox. A worker that dies, stops answering or answers out of turn is killed (the whole sandbox) and
replaced, and so is one whose scratch is not clean after a job. A failure of the worker rather than the kernel
(`infrastructure`) is retried once on a fresh worker before it is recorded against the kernel; when workers die
at start and none ever started, the run fails (WorkersFailed, with the worker's last words), instead of
recording every kernel as failed. Answers are cleaned (valid UTF-8, finite numbers, strings capped, secrets
redacted) before use.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterable

from scraper.fileio import remove_tree
from scraper.paths import PACKAGE_PARENT
from scraper.sandbox import SandboxUnavailable, Wall, clean_result, launch, pipe, worker_environment
from scraper.zipsafe import printable

log = logging.getLogger(__name__)

STARTUP_ALLOWANCE = 180.0  # seconds a fresh worker may take to import torch/triton (and warm the compiler)
REPLY_ALLOWANCE = 30.0  # beyond the job's own timeout, before a worker counts as hung
VALIDATE_WALL = Wall("validate", ("scraper/sandbox/inside.py", "scraper/validate/worker.py",
                                  "scraper/validate/confine.py", "scraper/validate/imports.py",
                                  "scraper/validate/sandbox.py",  # confine's old name, for code that imports it
                                  "scraper/validate/compiles.py"),
                     max_processes=256, scratch_mb=4096)


STDERR_TAIL = 8000  # bytes of a worker's stderr read to say why it died at start
_RAISED = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Exit):")  # a traceback's last line


class WorkersFailed(SandboxUnavailable):
    """Every validate worker died before it could take a job: the run cannot check anything (not a verdict on
    the kernels)."""


class Worker:
    """One `python -m scraper.validate.worker` process."""

    def __init__(self, unsafe_no_sandbox: bool = False, stopping: threading.Event | None = None) -> None:
        self.unsafe = unsafe_no_sandbox
        self.stopping = stopping or threading.Event()  # the pool's: once set, no job starts a process
        self.proc = None  # a scraper.sandbox.Walled, or a plain Popen without the wall
        self.base: str | None = None
        self.buffer = b""
        self.fresh = True
        self.ready = False  # the process said it is ready (its imports worked)
        self.compiled = False
        self.seq = 0
        self.stderr = None  # a temporary file with what the process writes to stderr

    def start(self) -> None:
        """Start the process (it imports torch/triton while the caller goes on)."""
        env = worker_environment()
        env.pop("TRITON_INTERPRET", None)
        self._close_stderr()
        self.stderr = tempfile.TemporaryFile()
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": self.stderr}
        if self.unsafe:
            self.proc = self._start_unwalled(env, pipes)
        else:  # its scratch is the sandbox's own tmpfs, gone with it
            env["TRITON_VALIDATE_SCRATCH"] = "/tmp"
            self.proc = launch(VALIDATE_WALL, ["-m", "scraper.validate.worker"], env=env, **pipes)
        self.buffer, self.fresh, self.ready, self.compiled = b"", True, False, False

    def last_words(self) -> str:
        """The exception the process died of (the last `SomeError: ...` line of its stderr), else its last line
        (escaped), or what says there was none."""
        if self.stderr is None:
            return "(no output)"
        try:
            self.stderr.seek(max(0, self.stderr.seek(0, os.SEEK_END) - STDERR_TAIL))
            lines = [line.strip() for line in self.stderr.read().decode("utf-8", "replace").splitlines()]
        except (OSError, ValueError):
            return "(no output)"
        lines = [line for line in lines if line] or ["(no output)"]
        raised = [number for number, line in enumerate(lines) if _RAISED.match(line)]
        if not raised:
            return printable(lines[-1])[:300]
        # `ValueError: ` with its message on the lines below: the first of them too
        return printable(" ".join(lines[raised[-1]:raised[-1] + 2] if lines[raised[-1]].endswith(":")
                                  else lines[raised[-1]:raised[-1] + 1]))[:300]

    def _close_stderr(self) -> None:
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

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
            remove_tree(self.base, ignore_errors=True)
            self.base = None

    def run(self, job: dict) -> dict:
        """Send one job, wait for its answer; a dead or hung worker is replaced and the job reported failed
        (`infrastructure`; `startup` too when the worker died before it was ready)."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self.start()
        if self.stopping.is_set():  # checked after the start: a kill of the whole pool may have missed it
            self.kill()
            return infrastructure_failure("the run was stopped")
        if not self.ready:
            failed = self._wait_ready()
            if failed:
                return failed
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
            return infrastructure_failure(reason)
        self.fresh = False
        self.compiled = self.compiled or job["level"] == "compiles"
        return self._answer(line)

    def _wait_ready(self) -> dict | None:
        """Wait for a fresh process's ready line; None once it came, else the job's failure (the process is
        killed): it died, or did not get through its imports in STARTUP_ALLOWANCE seconds."""
        try:
            line = self._read_line(time.monotonic() + STARTUP_ALLOWANCE)
        except OSError:  # it exited
            line = b""
        try:
            if line is not None and json.loads(line) == {"ready": True}:
                self.ready = True
                return None
        except (ValueError, RecursionError):
            pass
        if line is None:
            reason = f"the worker did not start in {STARTUP_ALLOWANCE:g} s"
        else:
            self._kill_process()  # gone (or made to go): what it wrote to stderr is complete
            reason = f"the worker died at start: {self.last_words()}"
        self.kill()
        return {**infrastructure_failure(reason), "startup": True}

    def _answer(self, line: bytes) -> dict:
        """The cleaned result of one answer line; a line that is not the answer to the job just sent (no JSON
        object, or another "seq") kills the worker and fails the job, and so does an answer saying its scratch
        is not clean (after the job is recorded: the next job gets a fresh worker)."""
        try:
            answer = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to read
            answer = None
        if not isinstance(answer, dict) or answer.pop("seq", None) != self.seq:
            self.kill()
            return infrastructure_failure("the worker's answer is not the one to this job")
        if answer.pop("scratch_clean", False) is not True:
            log.info("a validate worker's scratch is not clean after a job: it is replaced")
            self.kill()
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
        self.ready = False
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
        self.lock = threading.Lock()
        self.any_ready = False  # some worker of this pool got through its start
        self.stopping = threading.Event()  # set when a run is given up (Ctrl-C): no retry starts a worker

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers now (they import torch/triton while the caller does other work)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        while len(self.workers) < self.size:
            worker = Worker(self.unsafe, self.stopping)
            worker.start()
            self.workers.append(worker)
            self.idle.put(worker)

    def _run_one(self, job: dict) -> dict:
        """One job on an idle worker; a failure of the worker itself is tried once more on a fresh one. When
        that also dies at start and no worker of this pool ever started, WorkersFailed."""
        worker = self.idle.get()
        try:
            result = worker.run(job)
            if result.get("infrastructure") and not self.stopping.is_set():
                worker.kill()  # the retry gets a fresh process
                result = {**worker.run(job), "retried": True}
            self._note_start(worker, result)
            return result
        finally:
            self.idle.put(worker)

    def _note_start(self, worker: Worker, result: dict) -> None:
        """Remember that some worker started; raise WorkersFailed when this one did not, and none ever did."""
        with self.lock:
            self.any_ready = self.any_ready or worker.ready or not result.get("startup")
            if result.get("startup") and not self.any_ready:
                raise WorkersFailed(f"every validate worker died at start, before any kernel was checked: "
                                    f"{result.get('error')}")

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
                self.stopping.set()
                executor.shutdown(wait=False, cancel_futures=True)
                for worker in self.workers:
                    worker.kill()
                raise

    def close(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            worker.stop()
            worker._close_stderr()
        self.workers.clear()


def infrastructure_failure(reason: str) -> dict:
    """The result of a job that failed because of its worker, not its kernel."""
    return {"ok": False, "error_class": "SandboxError", "error": f"SandboxError: {reason}", "infrastructure": True}
