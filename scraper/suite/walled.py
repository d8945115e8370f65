"""Persistent workers behind the wall, the default for --suite modules: one bubblewrap sandbox per worker process,
which runs many modules in turn (torch imported once per sandbox, not once per module).

    host (WalledWorker)                                   sandbox (scraper.worker.serve --walled)
      job line: WorkerJob, paths under /job,   ───────▶    empties /job, writes the source to /tmp/src,
        the module's source in source_text                 runs the model (output: fd 2 = a host file)
      reads the answer and the files, writes   ◀───────    {"returncode", "doubt", "files": N} + N files
        them into a folder of its own, moves them                (scraper.sandbox.stream)
        into place (confined.move_out)

The host never reads the bound job folder while the sandbox lives: what a model made comes over the answer
channel and is written by the host itself, every name and bound checked (scraper.sandbox.stream). A model that
fails, times out, crashes, sends a malformed answer or leaves the process in doubt (a thread of its own still
running) ends the sandbox: once nothing runs in it, its job folder is made safe and taken out as a one-shot
walled worker's is (take_out + move_out: the graphs a timed-out model finished are kept), and the next model
starts a fresh sandbox. So does every `reuse`-th model. Each model's log is the slice of the sandbox's output
file written while it ran.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from scraper.sandbox import private_folder, take_out
from scraper.sandbox.folders import measure
from scraper.sandbox.stream import (Reader, StreamEnded, StreamError, StreamOverBound, StreamStalled,
                                    receive_files)
from scraper.suite import confined
from scraper.suite.orchestrate import (_RUNNING, _RUNNING_LOCK, WATCH_SECONDS, Job, PersistentWorker, Settings,
                                       base_entry, clean_result_file, output_fields, prepare_job, result_fields,
                                       worker_env, worker_job)
from scraper.worker.job import WorkerJob

MAX_ANSWER = 4096  # an answer line is a few numbers and one reason
STREAM_SECONDS = 120.0  # how long the files of one model may take to arrive once its answer came


class WalledWorker(PersistentWorker):
    """One sandboxed worker process that runs several models in turn (module docstring)."""

    def __init__(self, settings: Settings, gpu: Optional[str], reuse: int) -> None:
        super().__init__(settings, gpu, reuse)
        self.folder: Optional[Path] = None  # the host folder bound at /job
        self.output = None  # the host file the sandbox prints to (each model's log is a slice of it)
        self.held = contextlib.ExitStack()

    # ------------------------------------------------------------------------------------------ the sandbox

    def start(self) -> None:
        """A fresh sandbox: its job folder, its output file, the worker process."""
        self.held = contextlib.ExitStack()
        self.folder = self.held.enter_context(private_folder(self.settings.suite_dir / "sandbox"))
        output = self.folder.with_name(self.folder.name + ".log")  # beside the job folder, outside the sandbox
        self.output = self.held.enter_context(open(output, "ab+"))  # append: a slice is taken, then truncated
        self.held.callback(output.unlink, missing_ok=True)
        wall = confined.suite_wall(self.settings.worker_memory_mb, self.settings.worker_disk_mb, self.gpu)
        self.process = confined.start_server(worker_env(self.gpu), self.folder, self.gpu, self.output, wall)
        self.served, self.buffer = 0, b""
        with _RUNNING_LOCK:
            _RUNNING.add(self.process)

    def end(self, wait: float = 5.0) -> Optional[int]:
        """Nothing of the sandbox runs any more (its input closed, `wait` seconds given to exit, then killed);
        its exit status. The job folder stays until release()."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        with contextlib.suppress(OSError):
            process.stdin.close()  # the worker exits at the end of its input
        with contextlib.suppress(Exception):
            process.wait(timeout=wait)
        process.kill()  # whatever still runs inside (a model's own processes) dies with its init
        self.forget(process)
        return process.poll()

    def release(self) -> None:
        """The job folder and the output file removed."""
        self.held.close()
        self.folder = self.output = None

    def stop(self) -> Optional[int]:
        status = self.end()
        self.release()
        return status

    def kill(self) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ one model

    def run_job(self, job: Job) -> dict:
        """Run one model in this sandbox (starting one when there is none); its manifest entry, as run_job makes
        a walled worker's."""
        paths = prepare_job(self.settings, job)
        if self.process is None:
            self.start()
        pid = self.process.pid
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        started = time.monotonic()
        returncode, run_dir, refused, doubt = self.exchange(served_job(self.settings, job), paths, pid)
        self.copy_log(paths["log"])
        clean_result_file(paths["result"])
        entry = result_fields(paths, returncode, self.settings.timeout)
        # The orchestrator's own fields win over anything the worker (which ran scraped code) claims.
        entry.update(base_entry(self.settings, job, self.gpu, started_at, time.monotonic() - started, returncode,
                                paths))
        entry.update(output_fields(run_dir), sandbox_pid=pid)  # what is on disk, not what the worker said
        if refused:
            entry.update(status="failed", success=False, phase="sandbox", error=refused)
        self.served += 1
        if self.process is not None and (not entry["success"] or doubt or self.served >= self.reuse):
            self.stop()
        elif self.process is None:
            self.release()
        return entry

    def exchange(self, job: WorkerJob, paths: dict, pid: int) -> tuple[Optional[int], Optional[Path],
                                                                         Optional[str], Optional[str]]:
        """Send the job, take what the model made; (exit status or None, run folder, why nothing was kept,
        why the sandbox is in doubt)."""
        try:
            self.process.stdin.write((json.dumps(job.to_dict()) + "\n").encode())
            self.process.stdin.flush()
            answer = self.answer()
        except (OSError, StreamEnded):  # it died: what it left in its folder is taken out once nothing runs
            return self.take_out_after(paths, pid, timed_out=False)
        except StreamStalled:  # timed out, or its folder went over its bound
            return self.take_out_after(paths, pid, timed_out=True)
        except StreamError as exc:  # not an answer
            return self.take_out_after(paths, pid, timed_out=False, malformed=str(exc))
        with tempfile.TemporaryDirectory(dir=self.settings.suite_dir / "sandbox", prefix=".received-") as name:
            reader = Reader(self.process.stdout.fileno(), self.buffer, time.monotonic() + STREAM_SECONDS)
            bounds = confined.job_bounds(self.settings.worker_disk_mb)
            try:
                receive_files(reader, answer["files"], Path(name), bounds)
            except StreamOverBound as exc:  # the same words as a job folder found over its bound on disk
                self.end()
                return None, None, (f"the job folder is over its bound ({bounds.describe()}): {exc.reason}; nothing "
                                    "of it was kept"), None
            except StreamError as exc:
                self.end()
                return None, None, f"the worker's files were not well formed ({exc}); nothing of them was kept", None
            self.buffer = reader.buffer
            return answer["returncode"], confined.move_out(Path(name), paths, self.settings.out, pid), None, \
                answer["doubt"]

    def answer(self) -> dict:
        """The model's answer line, read while the job folder is watched against its bound; StreamStalled at the
        timeout or when the folder goes over its bound, StreamError when the line is not an answer."""
        deadline = time.monotonic() + self.settings.timeout
        bounds = confined.job_bounds(self.settings.worker_disk_mb)
        reader = Reader(self.process.stdout.fileno(), self.buffer, 0.0)
        while True:
            reader.deadline = min(deadline, time.monotonic() + WATCH_SECONDS)
            try:
                line = reader.line(MAX_ANSWER)
                break
            except StreamStalled:
                if time.monotonic() >= deadline or measure(self.folder, bounds):
                    raise
        self.buffer = reader.buffer
        return parse_answer(line)

    def take_out_after(self, paths: dict, pid: int, timed_out: bool, malformed: Optional[str] = None):
        """End the sandbox, then take its job folder out as a one-shot walled worker's is; the exit status is
        None after a timeout, as run_job's."""
        returncode = self.end(wait=0.0 if timed_out else 5.0)
        returncode = None if timed_out else returncode
        bounds = confined.job_bounds(self.settings.worker_disk_mb)
        over = take_out(self.folder, bounds)
        if over:
            return returncode, None, (f"the job folder is over its bound ({bounds.describe()}): {over}; nothing "
                                      "of it was kept"), None
        run_dir = confined.move_out(self.folder, paths, self.settings.out, pid)
        if malformed:
            return returncode, run_dir, f"the worker's answer was not well formed ({malformed})", None
        return returncode, run_dir, None, None

    def copy_log(self, log: Path) -> None:
        """The sandbox's output since the last model into this model's log; the output file emptied."""
        if self.output is None:
            return
        self.output.flush()
        self.output.seek(0)
        with open(log, "wb") as handle:
            shutil.copyfileobj(self.output, handle)
        os.truncate(self.output.fileno(), 0)


def served_job(settings: Settings, job: Job) -> WorkerJob:
    """The WorkerJob a persistent walled worker gets: paths in its job folder, the module's source with it (a file
    this process wrote: prepare_job, or the modules discovery)."""
    inside = confined.INSIDE
    source = Path(job.source) if job.source is not None else None
    text = source.read_text(encoding="utf-8") if source is not None and source.is_file() else None
    return worker_job(settings, job, inside["out"], inside, confined.served_source(source)).replace(source_text=text)


def parse_answer(line: bytes) -> dict:
    """{"returncode": int, "doubt": str | None, "files": int} from an answer line; StreamError when it is not."""
    try:
        data = json.loads(line)
        answer = {"returncode": data["returncode"], "doubt": data.get("doubt"), "files": data["files"]}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise StreamError(f"an answer that is not one: {line[:80]!r}") from None
    if not isinstance(answer["returncode"], int) or isinstance(answer["returncode"], bool):
        raise StreamError(f"a return code of {answer['returncode']!r}")
    if answer["doubt"] is not None:
        answer["doubt"] = str(answer["doubt"])[:200]
    return answer
