"""Does a problem's reference mean something? `Model(*get_init_inputs())(*get_inputs())` run on the CPU, in a child
process, when the problem is written: its output must be finite (a reference that returns NaN or Inf is worthless
to train or reward against).

The problems run here are the ones this package writes itself from parsed FX nodes (kernel-level and graph-level:
scraper.pairs.emit; no scraped code), so a child process with limits is their fence: at most LIMIT_MB of memory,
a time limit per problem, no inherited secrets. One child answers many problems (torch is imported once); a
problem that crashes it or runs out of time costs only that child, and the next starts fresh.

    runner = ReferenceRunner()
    runner.check(python_code)   -> {"finite": True | False | None, "error": ..., "seconds": ...}
    runner.close()

Child protocol (`python -m scraper.pairs.reference`): one JSON line per problem on stdin ({"code": ...}), one JSON
line per answer on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scraper.paths import PACKAGE_PARENT  # noqa: E402
from scraper.sandbox import pipe  # noqa: E402

LIMIT_MB = 8192
TIMEOUT = 60.0
KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OMP_NUM_THREADS")


class ReferenceRunner:
    """The parent side (module docstring)."""

    def __init__(self, timeout: float = TIMEOUT, limit_mb: int = LIMIT_MB) -> None:
        self.timeout, self.limit_mb = timeout, limit_mb
        self.process: Optional[subprocess.Popen] = None
        self.buffer = b""

    def check(self, code: str) -> dict:
        """Run one problem's reference (module docstring)."""
        started = time.monotonic()
        if self.process is None:
            self.start()
        try:
            self.process.stdin.write((json.dumps({"code": code}) + "\n").encode())
            self.process.stdin.flush()
            line, self.buffer = pipe.read_line(self.process.stdout.fileno(), self.buffer, started + self.timeout)
        except OSError:
            line = b""
        if not line:
            self.stop()
            reason = "timed out" if line is None else "the process died"
            return {"finite": None, "error": f"reference {reason}", "seconds": round(time.monotonic() - started, 2)}
        try:
            return json.loads(line)
        except ValueError:
            self.stop()
            return {"finite": None, "error": "an unreadable answer", "seconds": 0.0}

    def start(self) -> None:
        env = {key: os.environ[key] for key in KEPT_ENVIRONMENT if key in os.environ}
        env["PYTHONPATH"] = str(PACKAGE_PARENT)
        env["REFERENCE_LIMIT_MB"] = str(self.limit_mb)
        # the problems' files: made and removed here, as the child is killed, not asked to end (809 such
        # folders were left in /tmp before)
        self.folder = tempfile.mkdtemp(prefix="reference-")
        env["REFERENCE_FOLDER"] = self.folder
        self.process = subprocess.Popen([sys.executable, "-m", "scraper.pairs.reference"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        cwd=tempfile.gettempdir(), start_new_session=True)
        self.buffer = b""

    def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                stream.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    close = stop

    def __enter__(self) -> "ReferenceRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ReferencePool:
    """Several ReferenceRunners, for the problems of one graph at once (their children run in parallel)."""

    def __init__(self, jobs: Optional[int] = None, timeout: float = TIMEOUT, limit_mb: int = LIMIT_MB) -> None:
        self.jobs = max(1, jobs or min(8, os.cpu_count() or 1))
        self.idle = [ReferenceRunner(timeout, limit_mb) for _ in range(self.jobs)]

    def check_many(self, codes: list[str]) -> list[dict]:
        """The verdicts of several problems, in their order."""
        from concurrent.futures import ThreadPoolExecutor
        import queue

        runners: queue.Queue = queue.Queue()
        for runner in self.idle:
            runners.put(runner)

        def one(code: str) -> dict:
            runner = runners.get()
            try:
                return runner.check(code)
            finally:
                runners.put(runner)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            return list(pool.map(one, codes))

    def check(self, code: str) -> dict:
        return self.check_many([code])[0]

    def close(self) -> None:
        for runner in self.idle:
            runner.close()


# ------------------------------------------------------------------------------------------------ the child


def child_main() -> int:
    import resource

    limit = int(os.environ.get("REFERENCE_LIMIT_MB", LIMIT_MB)) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what a problem prints is not an answer
    folder = Path(os.environ["REFERENCE_FOLDER"])  # the parent's, removed by it (the child is killed)
    for number, line in enumerate(sys.stdin):
        answers.write(json.dumps(run_one(json.loads(line)["code"], folder / f"problem_{number}.py")) + "\n")
        answers.flush()
    return 0


def run_one(code: str, path: Path) -> dict:
    """Import the problem from a file, build Model with the seed KernelBench's evaluator uses, run it once."""
    import importlib.util

    import torch

    started = time.monotonic()
    try:
        path.write_text(code, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(42)
        model = module.Model(*module.get_init_inputs())
        torch.manual_seed(42)
        with torch.no_grad():
            output = model(*module.get_inputs())
        finite = all(bool(torch.isfinite(t.float()).all()) for t in tensors(output) if t.numel())
        return {"finite": finite, "error": None, "seconds": round(time.monotonic() - started, 3)}
    except Exception as exc:  # the problem's own failure: recorded, the child goes on
        return {"finite": None, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                "seconds": round(time.monotonic() - started, 3)}


def tensors(value) -> list:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors(item)]
    return []


if __name__ == "__main__":
    sys.exit(child_main())
