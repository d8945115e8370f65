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
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import itertools
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file path: make `scraper` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scraper.worker import run as worker  # noqa: E402
from scraper.worker.job import WorkerJob  # noqa: E402
from scraper.worker.infer.program import MODULE_NAME  # noqa: E402

# What a model leaves in sys.modules: the closure (infer.program) and the program (worker.load_program).
SCRAPED_MODULES = (MODULE_NAME, "suite_program_")


def main() -> int:
    """Answer every job line of stdin; the answers go to the original stdout, everything else to the logs."""
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    faulthandler.enable()  # a crash (SIGSEGV in a kernel) leaves its traceback on fd 2: the module's log
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # nothing but answers on the answer channel, whatever a model prints between jobs
    for line in sys.stdin:
        job = WorkerJob.from_dict(json.loads(line))
        with output_to(job.log, quiet):
            returncode = worker.main(job=job)
        reset()
        answers.write(json.dumps({"returncode": returncode}) + "\n")
        answers.flush()
    return 0


@contextlib.contextmanager
def output_to(path: str, between: int):
    """File descriptors 1 and 2 (and sys.stdout/sys.stderr) to the file at `path` for the block, then to
    `between`."""
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
