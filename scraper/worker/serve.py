"""A worker process that runs several models in turn, so that torch (and Inductor's compile workers) start once
per process instead of once per model. The orchestrator (scraper.suite.orchestrate.PersistentWorker) writes one
JSON line per model on stdin, the same WorkerJob record a one-model worker gets (scraper/worker/job.py; its
`log` names the model's log file), and reads one answer line per model:

    {"suite": ..., "model": ..., "result": ..., "log": "<the model's log file>", ...}  ->  {"returncode": 0}

Each model runs exactly as `python -m scraper.worker JOB.json` would (scraper.worker.run.main), its stdout and stderr (file
descriptors 1 and 2, so compile subprocesses and crashes land there too) in its own log file. Between models
the process is reset: torch._dynamo.reset(), a fresh TORCH_COMPILE_DEBUG run folder for the next model, the
scraped module's namespace dropped, torch's global defaults restored, CUDA memory released. It exits at the
end of its input; the orchestrator starts a fresh one after a failure or after a number of models.

Behind the wall (`python -m scraper.worker.serve --walled`, started by scraper.suite.walled): the job's paths are
in the sandbox's job folder (/job, bound to a host folder), emptied before each model; the module's source comes in
the job (`source_text`, written to `source` on the sandbox's own /tmp); output goes to file descriptor 2 (a host
file the orchestrator slices into each model's log); and the answer is followed by what the model wrote, sent over
the answer channel, so that the host never reads the bound folder while the sandbox lives:

    {"returncode": 0, "doubt": null | "why the process is no longer clean", "files": N}
    then N times: {"path": "debug/run_.../output_code.py", "size": BYTES} and that many bytes

The host checks every name and bound of that stream (it is as untrusted as the module); `doubt` (a thread the
module started still runs, a trace hook is set) makes it end the sandbox after this model.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import itertools
import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a file path: make `scraper` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scraper.worker import run as worker  # noqa: E402
from scraper.worker.job import WorkerJob  # noqa: E402
from scraper.worker.infer.program import MODULE_NAME  # noqa: E402

# What a model leaves in sys.modules: the closure (infer.program) and the program (worker.load_program).
SCRAPED_MODULES = (MODULE_NAME, "suite_program_")


def main(argv: Optional[list[str]] = None) -> int:
    """Answer every job line of stdin; the answers go to the original stdout, everything else to the logs."""
    walled = "--walled" in (sys.argv[1:] if argv is None else argv)
    answers = os.fdopen(os.dup(1), "wb")
    faulthandler.enable()  # a crash (SIGSEGV in a kernel) leaves its traceback on fd 2: the module's log
    # between models (and, behind the wall, during them): the host's log file there, nowhere outside it
    between = os.dup(2) if walled else os.open(os.devnull, os.O_WRONLY)
    os.dup2(between, 1)  # nothing but answers on the answer channel, whatever a model prints
    for line in sys.stdin:
        job = WorkerJob.from_dict(json.loads(line))
        if walled:
            fresh_job_folder(job)
        threads = set(threading.enumerate())
        with output_to(job.log, between):
            returncode = worker.main(job=job)
        reset()
        answer = {"returncode": returncode}
        if walled:
            send_outputs(answers, answer, job, doubt(threads))
        else:
            answers.write((json.dumps(answer) + "\n").encode())
        answers.flush()
    return 0


def fresh_job_folder(job: WorkerJob) -> None:
    """Behind the wall: the job folder (the folder of job.result, bound to the host) emptied of what the last
    model left, the module's source written where the job says."""
    folder = Path(job.result).parent
    for entry in list(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if job.source is not None and job.source_text is not None:
        Path(job.source).parent.mkdir(parents=True, exist_ok=True)
        Path(job.source).write_text(job.source_text, encoding="utf-8")


def send_outputs(answers, answer: dict, job: WorkerJob, why: Optional[str]) -> None:
    """The answer line, then every regular file of the job folder with its size (the source is on /tmp)."""
    folder = Path(job.result).parent
    files = job_files(folder)
    answers.write((json.dumps({**answer, "doubt": why, "files": len(files)}) + "\n").encode())
    for name, data in files:
        answers.write((json.dumps({"path": name, "size": len(data)}) + "\n").encode())
        answers.write(data)


def job_files(folder: Path) -> list[tuple[str, bytes]]:
    """(path relative to `folder`, contents) of its regular files, links not followed."""
    found = []
    for root, dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                found.append((os.path.relpath(path, folder), handle.read()))
    return sorted(found)


def doubt(before: set) -> Optional[str]:
    """Why this process may no longer be clean for the next model: a thread the model's own code started is
    still alive, or a trace or profile hook is set. (Torch's own pools are expected to stay: a thread counts
    only when its code is the scraped module's or the program's.)"""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return "a trace or profile hook is set"
    for thread in threading.enumerate():
        if thread not in before and thread.is_alive() and started_by_scraped_code(thread):
            return f"a thread the module started still runs ({thread.name})"
    return None


def started_by_scraped_code(thread: threading.Thread) -> bool:
    """Whether the thread's target, or its class's run(), is code of the scraped module or the program."""
    target = getattr(thread, "_target", None) or type(thread).run
    module = getattr(target, "__module__", "") or ""
    return module.startswith(SCRAPED_MODULES)


@contextlib.contextmanager
def output_to(path: Optional[str], between: int):
    """File descriptors 1 and 2 (and sys.stdout/sys.stderr) to the file at `path` for the block, then to
    `between`; with no `path` (behind the wall), to `between` all along."""
    if path is None:
        os.dup2(between, 1)
        yield
        sys.stdout.flush()
        sys.stderr.flush()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(between, 1)
        os.dup2(between, 2)


def reset() -> None:
    """Leave nothing of one model to the next: compiled graphs, the debug run folder, the scraped module, global
    defaults a module may have changed, CUDA memory."""
    for name in [name for name in sys.modules if name.startswith(SCRAPED_MODULES)]:
        del sys.modules[name]
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch._dynamo.reset()
    fresh_debug_dir = getattr(torch._dynamo.utils._get_debug_dir, "cache_clear", None)
    if fresh_debug_dir is not None:  # torch caches the run_<time>-pid_<pid> folder per process
        fresh_debug_dir()
    restart_graph_numbers(torch)
    leave_process_group(torch)
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def leave_process_group(torch) -> None:
    """Destroy the one-rank process group a module's set-up made (scraper.worker.infer.setup): the next module
    starts without one, as in a fresh process (a module may check dist.is_initialized())."""
    distributed = getattr(torch, "distributed", None)
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def restart_graph_numbers(torch) -> None:
    """Number the next model's graphs from 0, as in a fresh process (`<model>__0_inference_0.0`): AOT
    autograd's graph counters and Inductor's debug folder counter are per process."""
    aot = sys.modules.get("torch._functorch.aot_autograd")
    if aot is not None and hasattr(aot, "AOT_COUNTER"):
        aot.AOT_COUNTER = itertools.count()
    naming = sys.modules.get("torch._functorch._aot_autograd.logging_utils")
    if naming is not None and hasattr(naming, "nth_graph"):
        naming.nth_graph = 0
    debug = sys.modules.get("torch._inductor.debug")
    if debug is not None and hasattr(getattr(debug, "DebugContext", None), "_counter"):
        debug.DebugContext._counter = itertools.count()


if __name__ == "__main__":
    sys.exit(main())
