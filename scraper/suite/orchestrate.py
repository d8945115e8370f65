"""Run a suite: one worker subprocess per model, a pool of workers over the visible GPUs, a manifest of results.

Layout of -o/--output (the debug root, `torch_compile_debug` by default):
    run_<date>-pid_<pid>/torchinductor/<model>__0_inference_0.0/...   what TORCH_COMPILE_DEBUG=1 writes,
                                                                    one run_ folder per worker process
    suite/manifest.jsonl            one line per model attempt (the latest line of a model wins; the fields
                                    are scraper.suiterun.ManifestEntry's)
    suite/stats.json, errors.csv    counts and failures of the last invocation
    suite/programs/<suite>/<mode>-<dtype>/<model>.py   the standalone PyTorch program of each model
                                    (status "skipped": a TorchBench model that needs a download or a package)
    suite/logs/<suite>/<mode>-<dtype>/<model>.log      the worker's stdout + stderr
This process never imports torch nor the scraped code: everything model-related happens in the worker.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from scraper.paths import PACKAGE_PARENT
from scraper.progress import progress
from scraper.records import append_jsonl, atomic_write_json, atomic_write_text
from scraper.stats import Stats
from scraper.zipsafe import printable
from scraper.sandbox import (Walled, clean_result, pipe, private_folder, take_out, trusted_environment,
                             worker_environment)
from scraper.sandbox.folders import measure
from scraper.suite import confined
from scraper.suite.model_lists import ModelSpec, safe_name
from scraper.suites import get as get_suite
from scraper.suiterun import ManifestEntry, find_run_dir, latest_entries, resume_key, run_dir_contents
from scraper.worker.job import WorkerJob

log = logging.getLogger(__name__)



@dataclass
class Settings:
    """How every model of one invocation is compiled (the worker's command-line options)."""

    suite: str
    out: Path
    mode: str = "inference"
    dtype: str = "float32"
    max_autotune: bool = False
    timeout: float = 900.0
    seq_len: int = 512
    hf_layers: int = 2
    backend: str = "inductor"
    device: Optional[str] = None
    worker: Optional[Path] = None  # a replacement worker script (tests, custom compile steps)
    shard: Optional[tuple[int, int]] = None
    torchbench_dir: Optional[Path] = None  # --suite torchbench: the checkout of pytorch/benchmark
    random_weights: bool = False  # --suite torchbench: no pretrained checkpoints, the random initialization
    accuracy: bool = True  # compare compiled outputs with eager (the worker's --no-accuracy turns it off)
    unsafe_no_sandbox: bool = False  # run --suite modules workers without the bubblewrap wall
    worker_memory_mb: int = confined.DEFAULT_MEMORY_MB  # behind the wall: what each worker process may map
    worker_disk_mb: int = confined.DEFAULT_DISK_MB  # behind the wall: its job folder and largest file

    @property
    def scraped(self) -> bool:
        """Whether workers execute scraped code (--suite modules)."""
        suite = get_suite(self.suite)
        return suite is not None and suite.scraped

    @property
    def walled(self) -> bool:
        """Whether workers run behind the wall: those of --suite modules, which execute scraped code."""
        return self.scraped and not self.unsafe_no_sandbox

    @property
    def suite_dir(self) -> Path:
        return self.out / "suite"

    @property
    def manifest_path(self) -> Path:
        """suite/manifest.jsonl, or suite/manifest-<i>-of-<N>.jsonl for a shard (no two jobs append to one file)."""
        if self.shard and self.shard[1] > 1:
            return self.suite_dir / f"manifest-{self.shard[0]}-of-{self.shard[1]}.jsonl"
        return self.suite_dir / "manifest.jsonl"


@dataclass
class Job:
    """One model to compile; `source`/`class_name`/`meta` only for --suite modules."""

    spec: ModelSpec
    source: Optional[Path] = None  # a module's source file, or where `code` is written before the run
    class_name: Optional[str] = None
    meta: dict = field(default_factory=dict)
    code: Optional[str] = None  # a module's source text (its closure), written to `source` by run_job
    hints: Optional[list] = None  # a module's calls in its repository's tests/examples (scraper.modules.usage)
    skip_reason: Optional[str] = None  # a module not run: it imports one that is not installed here

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------------------------------------------- GPUs


def visible_gpus(requested: Optional[str] = None) -> list[str]:
    """GPU ids for the worker pool: `requested` ("0,1", or "none"), else CUDA_VISIBLE_DEVICES, else the GPUs
    `nvidia-smi -L` lists; [] when there is none (the workers then run without a GPU)."""
    if requested is not None:
        return [] if requested.strip().lower() in ("", "none", "cpu") else split_ids(requested)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return split_ids(os.environ["CUDA_VISIBLE_DEVICES"])
    return nvidia_smi_gpus()


def split_ids(text: str) -> list[str]:
    """"0, 1,2" -> ["0", "1", "2"] (ids may also be GPU UUIDs)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def nvidia_smi_gpus() -> list[str]:
    """Indices of the GPUs `nvidia-smi -L` lists; [] without nvidia-smi or a driver."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in listing.stdout.splitlines() if l.startswith("GPU "))]


def worker_slots(gpus: Sequence[str], per_gpu: int) -> list[Optional[str]]:
    """One slot per worker process: each GPU `per_gpu` times, or [None] when there is no GPU."""
    if not gpus:
        return [None] * max(1, per_gpu)
    return [gpu for gpu in gpus for _ in range(max(1, per_gpu))]


# ---------------------------------------------------------------------------------------------------- one job


def job_paths(settings: Settings, job: Job) -> dict[str, Path]:
    """Where the worker of `job` writes its program, log, result, KernelBench problem and pairing record: under
    <suite>/<variant>/, the variant being mode-dtype[-max_autotune], so that compiling a model two ways keeps
    both programs."""
    stem = safe_name(job.name)
    variant = f"{settings.mode}-{settings.dtype}" + ("-max_autotune" if settings.max_autotune else "")
    base = settings.suite_dir
    return {
        "program": base / "programs" / settings.suite / variant / f"{stem}.py",
        "log": base / "logs" / settings.suite / variant / f"{stem}.log",
        "result": base / "results" / settings.suite / variant / f"{stem}.json",
        "problem": base / "problems" / settings.suite / variant / f"{stem}.py",
        "pairing": base / "pairing" / settings.suite / variant / f"{stem}.json",
        "job": base / "results" / settings.suite / variant / f"{stem}.job.json",
    }


def worker_argv(settings: Settings, job_file: Path) -> list[str]:
    """The worker's command line: `python -m scraper.worker JOB.json` (or the --worker script on the job)."""
    if settings.worker is not None:
        return [sys.executable, str(settings.worker), str(job_file)]
    return [sys.executable, "-m", "scraper.worker", str(job_file)]


def worker_job(settings: Settings, job: Job, out: str, paths: dict, source: Optional[str]) -> WorkerJob:
    """The WorkerJob of `job`, with the paths (program, result, problem, pairing) as the worker sees them."""
    return WorkerJob(
        suite=settings.suite, model=job.name, graph_name=safe_name(job.name), out=out, program=paths["program"],
        result=paths["result"], problem=paths["problem"], pairing=paths["pairing"], mode=settings.mode,
        dtype=settings.dtype, batch_size=batch_size(settings, job), seq_len=settings.seq_len,
        hf_layers=settings.hf_layers, max_autotune=settings.max_autotune, backend=settings.backend,
        device=settings.device, accuracy=settings.accuracy,
        torchbench_dir=str(Path(settings.torchbench_dir).resolve()) if settings.torchbench_dir else None,
        random_weights=settings.random_weights, source=source,
        class_name=(job.class_name or job.name) if source is not None else None, hints=list(job.hints or []))


def host_job(settings: Settings, job: Job, paths: dict[str, Path]) -> WorkerJob:
    """The WorkerJob of `job` for a worker that runs on the host (paths as they are here)."""
    source = str(Path(job.source).resolve()) if job.source is not None else None
    return worker_job(settings, job, str(settings.out.resolve()), {k: str(p.resolve()) for k, p in paths.items()},
                      source)


def batch_size(settings: Settings, job: Job) -> Optional[int]:
    """The model's batch size: from its list entry, else the suite's default (None for torchbench: the
    worker then uses PyTorch's batch size for the model, else TorchBench's own default)."""
    suite = get_suite(settings.suite)
    return job.spec.batch_size or (suite.default_batch if suite is not None else 8)


def worker_env(gpu: Optional[str], torchbench_dir: Optional[Path] = None, scraped: bool = True) -> dict[str, str]:
    """The worker's environment: debug on, nothing downloaded, this one GPU, `scraper` importable. A worker that
    runs scraped code (`scraped`: --suite modules) gets only the sandbox's allow-list of this process's variables
    (scraper.sandbox.worker_environment), the others everything but what looks like a secret (GITHUB_TOKEN, ...).
    With `torchbench_dir`, TORCHBENCH_DIR names it (the programs read it before their own default)."""
    env = worker_environment() if scraped else trusted_environment()
    env.update(TORCH_COMPILE_DEBUG="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        libcuda = libcuda_dir()
        if scraped and libcuda:  # Triton asks `/sbin/ldconfig -p` for libcuda, which fails behind the wall
            env.setdefault("TRITON_LIBCUDA_PATH", libcuda)
    if torchbench_dir is not None:
        env["TORCHBENCH_DIR"] = str(Path(torchbench_dir).resolve())
    return env


@functools.lru_cache(maxsize=1)
def libcuda_dir() -> Optional[str]:
    """The folder of this machine's libcuda.so.1, as Triton finds it (TRITON_LIBCUDA_PATH, else `ldconfig -p`),
    found here, outside the wall; None without one."""
    if os.environ.get("TRITON_LIBCUDA_PATH"):
        return os.environ["TRITON_LIBCUDA_PATH"]
    try:
        listing = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = [line.split()[-1] for line in listing.splitlines() if "libcuda.so.1" in line and "=>" in line]
    return os.path.dirname(found[0]) if found else None


def run_job(settings: Settings, job: Job, gpu: Optional[str]) -> dict:
    """Run the worker of one model with a timeout; returns its manifest entry (never raises for the model's
    own failures: a crash, a timeout or a failed compile are all recorded)."""
    paths = prepare_job(settings, job)
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    started = time.monotonic()
    with open(paths["log"], "wb") as log_file:
        if settings.walled:
            returncode, pid, run_dir, refused = run_behind_wall(settings, job, gpu, paths, log_file)
        else:
            job_file = host_job(settings, job, paths).write(paths["job"])
            returncode, pid = run_with_timeout(worker_argv(settings, job_file),
                                               worker_env(gpu, settings.torchbench_dir, settings.scraped), log_file,
                                               settings.timeout)
    if settings.scraped:
        clean_result_file(paths["result"])
    entry = result_fields(paths, returncode, settings.timeout)
    base = base_entry(settings, job, gpu, started_at, time.monotonic() - started, returncode, paths)
    if not settings.walled and entry.get("batch_size") is not None:
        del base["batch_size"]  # a trusted worker reports the batch size it used (torchbench: the model's own)
    # The orchestrator's own fields win over anything a walled worker (which ran scraped code) claims.
    entry.update(base)
    if settings.walled:  # what is on disk, not what the worker said
        entry.update(output_fields(run_dir), sandbox_pid=pid)  # the sandbox's host pid: which one ran it
        if refused:
            entry.update(status="failed", success=False, phase="sandbox", error=refused)
    elif entry.get("run_dir") is None:  # died without reporting: what did it leave behind?
        entry.update(leftover_output(settings.out, pid))
    return entry


def prepare_job(settings: Settings, job: Job) -> dict[str, Path]:
    """The job's paths (job_paths), their folders made, files of an earlier attempt removed, a module's code
    written to its source file."""
    paths = job_paths(settings, job)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    paths["result"].unlink(missing_ok=True)
    for name in ("program", "problem", "pairing"):  # what an earlier attempt left is not this run's
        paths[name].unlink(missing_ok=True)
    if job.code is not None and job.source is not None:
        atomic_write_text(job.source, job.code)
    return paths


def run_behind_wall(settings: Settings, job: Job, gpu: Optional[str], paths: dict[str, Path],
                    log_file) -> tuple[Optional[int], int, Optional[Path], Optional[str]]:
    """Run the worker of `job` in a bubblewrap sandbox (scraper.suite.confined) with a timeout; once nothing of
    the sandbox runs, make its job folder safe and, when it is within its bound, move what it made into place.
    Returns (exit status or None, host pid, run folder, why nothing was kept or None)."""
    with private_folder(settings.suite_dir / "sandbox") as folder:
        inside = confined.INSIDE
        worker_job(settings, job, inside["out"], inside, confined.source_inside(job.source)).write(
            folder / Path(inside["job"]).name)
        command = confined.worker_command(settings.worker) + [inside["job"]]
        wall = confined.suite_wall(settings.worker_memory_mb, settings.worker_disk_mb, gpu)
        process = confined.start(command, worker_env(gpu), folder, job.source, settings.worker, gpu, log_file, wall)
        bounds = confined.job_bounds(settings.worker_disk_mb)
        returncode, pid = wait_with_timeout(process, settings.timeout, lambda: measure(folder, bounds))
        process.kill()  # already over, or the namespace of a stopped run: gone before its files are read
        over = take_out(folder, bounds)
        if over:
            return returncode, pid, None, (f"the job folder is over its bound ({bounds.describe()}): {over}; "
                                           "nothing of it was kept")
        return returncode, pid, confined.move_out(folder, paths, settings.out, pid), None


def leftover_output(debug_root: Path, pid: int) -> dict:
    """run_dir, graphs and kernels of a worker that was killed or crashed (found by its pid), so that the graphs
    it finished still join back to their model."""
    return output_fields(find_run_dir(debug_root, pid))


def output_fields(run_dir: Optional[Path]) -> dict:
    """run_dir (its name), graphs and kernels of a debug run folder; none of them when there is no folder."""
    if run_dir is None:
        return {"run_dir": None, "graphs": [], "kernels": 0}
    return {"run_dir": run_dir.name, **run_dir_contents(run_dir)}


_RUNNING: set = set()  # worker processes alive now, killed by stop_all() on Ctrl-C / SIGTERM
_RUNNING_LOCK = threading.Lock()


def run_with_timeout(argv: list[str], env: dict, log_file, timeout: float) -> tuple[Optional[int], int]:
    """Run `argv` in its own process group, output to `log_file`; on timeout kill the whole group (Inductor's
    compile workers included). Returns (exit status or None after a timeout, pid)."""
    process = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    return wait_with_timeout(process, timeout)


WATCH_SECONDS = 5.0  # how often a sandboxed worker's job folder is measured while it runs


def wait_with_timeout(process, timeout: float, over: Optional[Callable[[], Optional[str]]] = None
                      ) -> tuple[Optional[int], int]:
    """Wait for a worker (a Popen leading its process group, or a Walled sandbox); kill it all at the timeout,
    or as soon as `over()` (asked every WATCH_SECONDS) names a reason. Returns (exit status or None after a
    timeout or a kill, pid)."""
    with _RUNNING_LOCK:
        _RUNNING.add(process)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                return process.wait(timeout=max(0.0, min(left, WATCH_SECONDS if over else left))), process.pid
            except subprocess.TimeoutExpired:
                if left <= WATCH_SECONDS or over is None or over():
                    kill_group(process)
                    return None, process.pid
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(process)


def stop_all() -> int:
    """Kill the process group of every running worker (the orchestrator is being stopped); returns how many."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for process in running:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(running)


def kill_group(process) -> None:
    """SIGKILL the process group that `process` leads (a sandbox: every process in it), then reap it."""
    if isinstance(process, Walled):
        process.kill()
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def base_entry(settings, job, gpu, started_at, seconds, returncode, paths) -> dict:
    """The manifest fields the orchestrator knows without the worker's result."""
    rel = lambda path: os.path.relpath(path, settings.out)  # noqa: E731
    entry = {"suite": settings.suite, "model": job.name, "mode": settings.mode, "dtype": settings.dtype,
             "max_autotune": settings.max_autotune, "batch_size": batch_size(settings, job), "gpu": gpu,
             "started_at": started_at, "seconds": round(seconds, 3), "returncode": returncode,
             "program": rel(paths["program"]) if paths["program"].exists() else None, "log": rel(paths["log"]),
             "problem": rel(paths["problem"]) if paths["problem"].exists() else None,
             "pairing": rel(paths["pairing"]) if paths["pairing"].exists() else None,
             "shard": "/".join(map(str, settings.shard)) if settings.shard else None}
    if job.meta:
        entry["module"] = job.meta
    return entry


def result_fields(paths: dict[str, Path], returncode: Optional[int], timeout: float) -> dict:
    """status/success/error/... from the worker's result JSON, or from how the process ended. A worker that
    reports a `skip_reason` (a TorchBench model needing a download or a missing package) is "skipped"."""
    result = read_result(paths["result"])
    if returncode is None:
        status, error = "timeout", f"timed out after {timeout:g} s"
    elif result is None:
        status, error = "crashed", crash_message(returncode, paths["log"])
    elif result.get("success"):
        status, error = "ok", None
    else:
        status, error = ("skipped" if result.get("skip_reason") else "failed"), result.get("error")
    fields = {key: value for key, value in clean_result(result or {}).items()
              if key not in ("suite", "model", "seconds")}
    error = clean_result(error)
    fields.update(status=status, success=status == "ok", error=None if status == "ok" else error)
    if result is not None:
        fields["worker_seconds"] = result.get("seconds")
    return fields


MAX_RESULT_BYTES = 1024 * 1024  # a worker's result is a few KB; anything larger is not one


def clean_result_file(path: Path) -> None:
    """Replace the result a worker that ran scraped code wrote with its cleaned form (clean_result: valid UTF-8,
    finite numbers, capped, secrets masked), so the file kept beside the manifest is strict JSON too; remove it
    when it is not a result at all."""
    result = read_result(path)
    if result is not None:
        atomic_write_json(path, clean_result(result))
    else:
        path.unlink(missing_ok=True)


def read_result(path: Path) -> Optional[dict]:
    """The worker's result JSON, or None when it wrote none (crash, kill), too much, or garbage."""
    import json

    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep to read
        return None
    return data if isinstance(data, dict) else None


def crash_message(returncode: int, log_path: Path) -> str:
    """Why a worker died without a result: its signal or exit status and the last line of its log."""
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    return f"worker {how} without a result; last output: {clean_result(last_line(log_path))}"


def last_line(path: Path) -> str:
    """The last non-blank line of a text file (bounded read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = [l for l in handle.read().decode("utf-8", "replace").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip()[:300] if lines else "(empty log)"


# ---------------------------------------------------------------------------------------------------- resume


def jobs_to_run(settings: Settings, jobs: Sequence[Job], redo: str, stats: Stats) -> list[Job]:
    """The jobs not done yet. redo: "none" skips every model already in the manifest, "failed" reruns the
    ones that failed or timed out, "all" reruns everything."""
    if redo == "all":
        return list(jobs)
    done = latest_entries(settings.out)
    todo = []
    for job in jobs:
        entry = done.get(resume_key(job_identity(settings, job)))
        if entry is None or (redo == "failed" and not entry.success):
            todo.append(job)
        else:
            stats.inc("skipped_done" if entry.success else "skipped_failed_before")
    return todo


def job_identity(settings: Settings, job: Job) -> dict:
    """The RESUME_KEYS fields of `job` under `settings`."""
    return {"suite": settings.suite, "model": job.name, "mode": settings.mode, "dtype": settings.dtype,
            "max_autotune": settings.max_autotune}


# ---------------------------------------------------------------------------------------------------- pool


def run_suite(settings: Settings, jobs: Sequence[Job], slots: Sequence[Optional[str]], stats: Stats,
              run_one: Callable[[Settings, Job, Optional[str]], dict] = run_job,
              budget: Optional[float] = None) -> list[dict]:
    """Run `jobs` on a pool of one thread per slot (each thread drives one worker subprocess at a time, on its
    GPU), appending each result to the manifest as soon as it is known. No model is started once `budget`
    seconds have passed (those left are counted as `not_started`, and a rerun picks them up). On Ctrl-C or
    SIGTERM the running workers are killed and not recorded (a rerun redoes them). Returns the entries."""
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    entries: list[dict] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + budget if budget is not None else None
    bar = progress(total=len(jobs), desc=f"{settings.suite} models", unit="model")
    statuses: Counter = Counter()

    def record(job: Job, entry: dict) -> None:
        missing = [key for key in ENTRY_KEYS if key not in entry]
        if missing:
            raise ValueError(f"an entry without {', '.join(missing)}")
        append_jsonl(settings.manifest_path, ManifestEntry.from_dict(entry))
        entries.append(entry)
        count_entry(stats, entry)
        statuses[entry["status"]] += 1
        bar.set_postfix(outcomes(statuses))  # before update: a line off a terminal says the new counts
        bar.update(1)
        log.info("%s: %s in %.0f s%s", printable(job.name), entry["status"], entry["seconds"],
                 f" ({printable(entry['error'])})" if entry.get("error") else "")

    def drive(slot: Optional[str]) -> None:
        while not stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            entry = run_guarded(run_one, settings, job, slot)
            if stop.is_set():
                return
            with lock:
                try:
                    record(job, entry)
                except Exception as exc:  # an entry that cannot be written costs its job, not the pool thread
                    try:
                        record(job, run_guarded(failing, settings, job, slot, exc))
                    except Exception as again:  # not even that (the manifest cannot be written): not run
                        log.error("%s: not recorded: %s", printable(job.name), printable(f"{type(again).__name__}: {again}"))
                        stats.inc("not_run")

    threads = [threading.Thread(target=drive, args=(slot,), daemon=True) for slot in slots[: max(1, len(jobs))]]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stop.set()
        log.warning("interrupted: killing %d running worker(s); a rerun redoes them", stop_all())
        for thread in threads:
            thread.join()
        raise
    finally:
        bar.close()
    count_left(stats, todo.qsize(), deadline is not None and time.monotonic() > deadline)
    return entries


ENTRY_KEYS = ("suite", "model", "status", "seconds")  # what recording an entry needs


def run_guarded(run_one: Callable[..., dict], settings: Settings, job: Job, slot: Optional[str], *more) -> dict:
    """`run_one(settings, job, slot, *more)`; when it raises (a bug meeting a hostile job), that job's failed
    entry: one job lost, never the pool thread and the jobs after it."""
    started = time.monotonic()
    try:
        return run_one(settings, job, slot, *more)
    except Exception as exc:
        log.debug("%s: internal error", job.name, exc_info=True)
        return {**job_identity(settings, job), "gpu": slot, "status": "crashed", "success": False,
                "phase": "orchestrator", "error": printable(f"internal error: {type(exc).__name__}: {exc}")[:500],
                "seconds": round(time.monotonic() - started, 3), "run_dir": None, "graphs": [], "kernels": 0,
                **({"module": job.meta} if job.meta else {})}


def failing(settings: Settings, job: Job, slot: Optional[str], exc: Exception) -> dict:
    """A `run_one` for run_guarded that raises `exc`: the entry of a job whose own entry could not be recorded."""
    raise RuntimeError(f"its entry could not be recorded: {type(exc).__name__}: {exc}")


def count_left(stats: Stats, left: int, budget_spent: bool) -> None:
    """Count the jobs no thread took: `not_started` when the time budget was spent (a rerun takes them up, as
    asked), else `not_run` (a failure of the run)."""
    stats.inc("not_started", left if budget_spent else 0)
    if left and not budget_spent:
        stats.inc("not_run", left)


def outcomes(statuses: Counter) -> dict:
    """The progress postfix from the statuses of the models done so far: ok, failed (crashed and timed out
    included), and skipped when there are any."""
    shown = {"ok": statuses["ok"], "failed": statuses["failed"] + statuses["crashed"] + statuses["timeout"]}
    if statuses["skipped"]:
        shown["skipped"] = statuses["skipped"]
    return shown


def count_entry(stats: Stats, entry: dict) -> None:
    """Fold one manifest entry into the counters and error groups."""
    stats.inc("models")
    stats.inc(f"models_{entry['status']}")
    stats.inc("graphs", len(entry.get("graphs") or []))
    stats.inc("kernels", int(entry.get("kernels") or 0))
    if entry["status"] == "skipped":  # not an error: counted by reason ("needs download", ...)
        stats.inc(f"models_skipped_{safe_name(entry.get('skip_reason') or 'unknown')}")
    elif not entry.get("success"):
        phase = entry.get("phase") or entry["status"]
        stats.error(phase, f"{entry['suite']}/{entry['model']}", entry.get("error") or entry["status"])


# ---------------------------------------------------------------------------------------------------- skipped


def record_skipped(settings: Settings, jobs: Sequence[Job], stats: Stats) -> list[Job]:
    """Write the manifest entry of every job that carries a skip_reason (a module importing one that is not
    installed: no worker, no GPU) and count it; returns the other jobs."""
    todo = []
    for job in jobs:
        if not job.skip_reason:
            todo.append(job)
            continue
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        entry = base_entry(settings, job, None, started_at, 0.0, None, job_paths(settings, job))
        entry.update(status="skipped", success=False, phase=None, error=job.skip_reason,
                     skip_reason=job.skip_reason, log=None, run_dir=None, graphs=[], kernels=0)
        append_jsonl(settings.manifest_path, ManifestEntry.from_dict(entry))
        count_entry(stats, entry)
    return todo


# ---------------------------------------------------------------------------------------------------- persistent


class PersistentWorker:
    """One worker process that runs several models in turn (scraper.worker.serve), over JSON lines on its stdin
    and stdout: torch is imported once per process, not once per model. It is replaced by a fresh one after a
    model that did not succeed (a crash, a timeout, or a failure that may have left the process in a bad state)
    and after `reuse` models. This one runs outside the wall (--unsafe-no-sandbox); behind it, scraper.suite.walled
    runs the same worker in a sandbox."""

    def __init__(self, settings: Settings, gpu: Optional[str], reuse: int) -> None:
        self.settings, self.gpu, self.reuse = settings, gpu, max(1, reuse)
        self.process: Optional[subprocess.Popen] = None
        self.served = 0
        self.buffer = b""

    def launch(self, log_file) -> subprocess.Popen:
        """Start the worker process, its startup messages to `log_file` (the first model's log): the one place
        its command line and environment are made (a sandbox wraps this)."""
        argv = [sys.executable, "-m", "scraper.worker.serve"]
        return subprocess.Popen(argv, env=worker_env(self.gpu, self.settings.torchbench_dir, self.settings.scraped),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                start_new_session=True)

    def run_job(self, job: Job) -> dict:
        """Run one model in this worker (starting a process when there is none); its manifest entry, as
        run_job makes it."""
        paths = prepare_job(self.settings, job)
        with open(paths["log"], "wb") as log_file:
            if self.process is None:
                self.process, self.served, self.buffer = self.launch(log_file), 0, b""
                with _RUNNING_LOCK:
                    _RUNNING.add(self.process)
        pid = self.process.pid
        before = set(Path(self.settings.out).glob(f"run_*-pid_{pid}"))
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        started = time.monotonic()
        worker_job = host_job(self.settings, job, paths).replace(log=str(paths["log"].resolve()))
        returncode = self.ask(worker_job.to_dict())
        clean_result_file(paths["result"])  # the persistent workers are those of --suite modules
        entry = result_fields(paths, returncode, self.settings.timeout)
        base = base_entry(self.settings, job, self.gpu, started_at, time.monotonic() - started, returncode, paths)
        if entry.get("batch_size") is not None:
            del base["batch_size"]  # as run_job: a trusted worker reports the batch size it used
        entry.update(base)
        if entry.get("run_dir") is None:  # died without reporting: what did it leave behind?
            entry.update(leftover_output_since(self.settings.out, pid, before))
        self.served += 1
        if not entry["success"] or self.served >= self.reuse:
            self.stop()
        return entry

    def ask(self, job: dict) -> Optional[int]:
        """Send one job, wait for its answer: the worker's exit status for the model, the process's own when it
        died, None after a timeout (the process group is then killed)."""
        try:
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
            line = self.read_line(time.monotonic() + self.settings.timeout)
        except OSError:  # it died: its exit status tells how
            line = b""
        if line is None:
            self.kill()
            return None
        if not line:
            return self.stop()
        try:
            return int(json.loads(line)["returncode"])
        except (ValueError, KeyError, TypeError):
            return self.stop()

    def read_line(self, deadline: float) -> Optional[bytes]:
        """The next answer line; b"" when the process closed its stdout, None at the deadline."""
        line, self.buffer = pipe.read_line(self.process.stdout.fileno(), self.buffer, deadline)
        return line

    def stop(self) -> Optional[int]:
        """End the process (end of input; killed when it does not exit soon); returns its exit status."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        try:
            process.stdin.close()
            status = process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            kill_group(process)
            status = process.returncode
        self.forget(process)
        return status

    def kill(self) -> None:
        """Kill the process group now (a model ran past its timeout)."""
        if self.process is not None:
            process, self.process = self.process, None
            kill_group(process)
            self.forget(process)

    @staticmethod
    def forget(process: subprocess.Popen) -> None:
        """No longer a running worker: out of the set stop_all() kills, its pipes closed."""
        with _RUNNING_LOCK:
            _RUNNING.discard(process)
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def leftover_output_since(debug_root: Path, pid: int, before: set) -> dict:
    """run_dir, graphs and kernels of the run folder process `pid` made for the model it died in (a folder it
    did not have before that model), so that the graphs it finished still join back to it."""
    made = sorted(set(Path(debug_root).glob(f"run_*-pid_{pid}")) - before)
    return output_fields(made[-1] if made else None)


class PersistentWorkers:
    """A `run_one` for run_suite: each pool thread drives its own worker (a PersistentWorker, or the walled kind:
    scraper.suite.walled.WalledWorker). close() ends them all."""

    def __init__(self, settings: Settings, reuse: int, kind: type = PersistentWorker) -> None:
        self.settings, self.reuse, self.kind = settings, reuse, kind
        self.local = threading.local()
        self.workers: list[PersistentWorker] = []
        self.lock = threading.Lock()

    def __call__(self, settings: Settings, job: Job, gpu: Optional[str]) -> dict:
        worker = getattr(self.local, "worker", None)
        if worker is None:
            worker = self.local.worker = self.kind(settings, gpu, self.reuse)
            with self.lock:
                self.workers.append(worker)
        return worker.run_job(job)

    def close(self) -> None:
        """Stop every worker process."""
        with self.lock:
            for worker in self.workers:
                worker.stop()
