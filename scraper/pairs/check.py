"""The GPU check of pairs: does triton_code compute what python_code computes, and how fast?

    python -m scraper.pairs.check inductor_kernels/pairs.jsonl [--jobs 8] [--timeout 300] [--runs 20]

For each pair a child process (a fresh interpreter: the code is generated, and a kernel can crash the process)
imports python_code and triton_code from files, builds `Model(*get_init_inputs())` and `ModelNew(...)`, gives
ModelNew under the same seed (as KernelBench's evaluator does; a model-level ModelNew builds its weights with the
program's build(), and every weight it holds must equal Model's of that name, else the pair fails), moves both and
`get_inputs()` to the GPU, runs ModelNew once (Triton compiles its kernels), then, holding a lock on the GPU so that no other child's kernels overlap: runs both under
no_grad, compares their outputs (scraper.accuracy.compare: the suite's tolerances, with a float64 run of
Model as the reference where it runs in float64) and times both (CUDA events, median of --runs after --warmup).

The results are written back into pairs.jsonl (rewritten atomically): `pair_correct` (True / False; None when the
pair could not be checked for a reason that is not the pair's: no GPU, a library the problem needs is missing),
`speedup` (eager ms / Triton ms) and `check` (the evidence). Without a GPU nothing is checked and every pair stays
None. A summary (counts, pass rate, speedup quartiles) goes to stderr and to pairs_check.json beside the file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scraper.cli import add_logging_args, interruptible, setup_logging  # noqa: E402
from scraper.fileio import atomic_write_json, write_jsonl  # noqa: E402
from scraper.paths import PACKAGE_PARENT  # noqa: E402
from scraper.pairs.record import PairRecord, read_pairs  # noqa: E402
from scraper.phases import PhaseError, describe  # noqa: E402

log = logging.getLogger("scraper.pairs.check")

CHECK_SUMMARY = "pairs_check.json"
ENVIRONMENT_ERRORS = ("ModuleNotFoundError", "ImportError")  # the problem needs a library that is not here
# A CPU dry run that could not run the kernel (the interpreter has no libdevice) or whose problem needs CUDA (fused
# attention): no verdict on the pair.
NOT_JUDGED = ("interpreter_libdevice", "needs_cuda")
PROBLEM, TRITON, RESULT = "problem.py", "triton_code.py", "result.json"


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "python -m scraper.pairs.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", type=Path, nargs="?", help="a pairs.jsonl (or the folder holding it)")
    parser.add_argument("--jobs", type=int, default=8, help="pairs prepared at once (compiling their kernels is "
                        "CPU work; GPU runs and timing take turns under a lock; default: 8)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pair (default: 300)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each side (default: 20; 0: no timing)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--limit", type=int, help="check only the first N pairs of the file (a "
                        "rerun checks those of them still unchecked)")
    parser.add_argument("--batch", type=int, default=32, help="kernel-level pairs checked by one child process, in "
                        "turn (default: 32; the others get a process each)")
    parser.add_argument("--time-budget", type=float, help="start no pair after this many seconds (the others stay "
                        "unchecked; a rerun checks them)")
    parser.add_argument("--recheck", action="store_true", help="check pairs that already have a result too")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run for tests, "
                        "kernels interpreted (TRITON_INTERPRET=1; libdevice's rsqrt, sqrt, exp, log, erf ... by "
                        "triton.language's, a kernel calling another libdevice function not judged), Inductor's CUDA "
                        "allocations made on the CPU, wall-clock timing; its results are written like a GPU run's "
                        "(default: cuda)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # a child's work folder (internal)
    parser.add_argument("--lock", type=Path, help=argparse.SUPPRESS)
    add_logging_args(parser)
    return parser


@interruptible
def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    """Check the pairs of a pairs.jsonl; 0 when every checked pair passed, 1 when some failed or nothing could
    be checked (no GPU), 2 on bad usage."""
    args = build_parser(prog).parse_args(argv)
    if args.child is not None:
        return child_main(args)
    setup_logging(args)
    path = args.pairs / "pairs.jsonl" if args.pairs and args.pairs.is_dir() else args.pairs
    if path is None or not path.is_file():
        log.error("no pairs file: %s", args.pairs)
        return 2
    pairs = read_pairs(path)
    # the first N pairs of the file, whether checked before or not: a rerun of a killed check takes up the same ones
    todo = [p for p in pairs[: args.limit] if args.recheck or p.pair_correct is None]
    if args.device == "cuda" and not gpu_available():
        print(f"no GPU: {len(todo)} pairs left unchecked (pair_correct stays None)", file=sys.stderr)
        return 1
    started = time.monotonic()
    results = check_all(distinct(todo), args)
    for pair in todo:  # the same program (a kernel many models share) is checked once
        apply_result(pair, results.get(pair.id))
    write_jsonl(path, pairs)
    summary = summarize(todo, time.monotonic() - started)
    atomic_write_json(path.with_name(CHECK_SUMMARY), summary)
    print(summary_text(summary), file=sys.stderr)
    return 0 if summary["failed"] == 0 and summary["checked"] else 1


def gpu_available() -> bool:
    """True when torch sees a CUDA device (asked in a child: this process stays free of CUDA)."""
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", probe], timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def check_all(pairs: list[PairRecord], args: argparse.Namespace) -> dict:
    """pair id -> the child's result, `--jobs` children at a time. Kernel-level pairs go `--batch` to a child (a
    fused kernel compiles in about a second: a process per pair would cost more than the pairs), the others one
    each."""
    deadline = time.monotonic() + args.time_budget if args.time_budget is not None else None
    results: dict = {}
    if args.device == "cpu":  # what has no CPU kernel is left to the GPU check
        for pair in pairs:
            if pair.needs_cuda:
                results[pair.id] = {"ok": False, "phase": "needs_cuda", "error": "an op of the problem has no CPU "
                                    "kernel (ops: see the pair's `ops`)"}
        pairs = [pair for pair in pairs if pair.id not in results]
    batches = make_batches(pairs, max(1, args.batch))
    with tempfile.TemporaryDirectory(prefix="pairs-check-") as scratch:
        lock = Path(scratch) / "gpu.lock"
        lock.touch()

        def one(indexed) -> dict:
            index, batch = indexed
            return run_batch(batch, Path(scratch) / f"batch{index}", lock, args, deadline)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for found in pool.map(one, enumerate(batches)):
                results.update(found)
        return results


LEVEL_ORDER = {"kernel": 0, "graph": 1, "model": 2}  # the quick ones first: a time budget ends with the slow ones


def distinct(pairs: list[PairRecord]) -> list[PairRecord]:
    """One pair per id, kernel level first, then graph, then model level (the order a time budget cuts)."""
    unique = {}
    for pair in pairs:
        unique.setdefault(pair.id, pair)
    return sorted(unique.values(), key=lambda pair: LEVEL_ORDER.get(pair.pair_level, 3))


def make_batches(pairs: list[PairRecord], size: int) -> list[list[PairRecord]]:
    """Kernel-level pairs in groups of `size`, every other pair alone, in their order."""
    batches, current = [], []
    for pair in pairs:
        if pair.pair_level != "kernel":
            batches.append([pair])
            continue
        current.append(pair)
        if len(current) == size:
            batches.append(current)
            current = []
    return batches + ([current] if current else [])


def run_batch(batch: list[PairRecord], folder: Path, lock: Path, args: argparse.Namespace,
              deadline: Optional[float]) -> dict:
    """Check the pairs of one batch in a child, in order; a pair that crashes its child or runs past --timeout is
    recorded so, and a fresh child goes on with the rest. No pair is started after the deadline."""
    folders = [write_pair(pair, folder / f"pair{index}", args) for index, pair in enumerate(batch)]
    results: dict = {}
    todo = list(range(len(batch)))
    while todo:
        if deadline is not None and time.monotonic() > deadline:
            break  # not started: stays unchecked
        done, stopped = run_child(folders, todo, lock, args)
        for index in todo[:len(done)]:
            results[batch[index].id] = done[index]
        todo = todo[len(done):]
        if todo and stopped is not None:  # the pair the child was on when it died or ran out of time
            results[batch[todo[0]].id] = stopped
            todo = todo[1:]
    return results


def write_pair(pair: PairRecord, folder: Path, args: argparse.Namespace) -> Path:
    """The pair's two files and its job in a folder of its own."""
    folder.mkdir(parents=True)
    (folder / PROBLEM).write_text(pair.python_code, encoding="utf-8")
    (folder / TRITON).write_text(pair.triton_code, encoding="utf-8")
    job = {"pair_level": pair.pair_level, "mode": pair.mode, "dtype": pair.dtype, "runs": args.runs,
           "warmup": args.warmup, "device": args.device}
    (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
    return folder


def run_child(folders: list[Path], todo: list[int], lock: Path, args: argparse.Namespace
              ) -> tuple[dict, Optional[dict]]:
    """One child over the pairs `todo` (indices into `folders`), in order. Returns ({index: result} of the pairs it
    finished, the result of the pair it stopped on: a crash or a timeout; None when it finished them all)."""
    listing = folders[todo[0]].parent / f"todo{todo[0]}.json"
    listing.write_text(json.dumps([str(folders[i]) for i in todo]), encoding="utf-8")
    argv = [sys.executable, "-m", "scraper.pairs.check", "--child", str(listing), "--lock", str(lock)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT),
                                                                      os.environ.get("PYTHONPATH")]))}
    if args.device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    log = open(listing.with_suffix(".log"), "w+b")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=listing.parent,
                               start_new_session=True)
    done: dict = {}
    started = time.monotonic()
    try:
        while True:
            index = todo[len(done)] if len(done) < len(todo) else None
            result = read_json(folders[index] / RESULT) if index is not None else None
            if result is not None:
                result["seconds"] = round(time.monotonic() - started, 3)
                done[index], started = result, time.monotonic()
                continue
            if index is None or process.poll() is not None:
                break
            if time.monotonic() - started > args.timeout:
                return done, {"ok": False, "phase": "timeout", "error": f"timed out after {args.timeout:g} s"}
            time.sleep(0.05)
        if len(done) == len(todo):
            return done, None
        log.seek(0)
        tail = log.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no output)"]
        return done, {"ok": False, "phase": "crashed", "error": f"exit status {process.returncode}: {tail[0][:300]}"}
    finally:
        if process.poll() is None:
            kill_group(process)
        log.close()


def kill_group(process: subprocess.Popen) -> None:
    """Kill a child and everything it started (Triton's compile workers)."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    process.wait()


def read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def apply_result(pair: PairRecord, result: Optional[dict]) -> None:
    """pair_correct, speedup and check from a child's result (None: the pair could not be judged)."""
    if result is None:
        return
    environment = result.get("error_class") in ENVIRONMENT_ERRORS and result.get("phase") in ("import", "build")
    pair.pair_correct = None if environment or result.get("phase") in NOT_JUDGED else bool(result.get("ok"))
    pair.speedup = result.get("speedup") if pair.pair_correct else None
    pair.check = result


def summarize(pairs: list[PairRecord], seconds: float) -> dict:
    """Counts, pass rate and speedup quartiles of the pairs just checked."""
    passed = [p for p in pairs if p.pair_correct is True]
    failed = [p for p in pairs if p.pair_correct is False]
    speedups = sorted(p.speedup for p in passed if p.speedup is not None)
    phases: dict = {}
    for pair in failed + [p for p in pairs if p.pair_correct is None]:
        phase = (pair.check or {}).get("phase") or "unchecked"
        phases[phase] = phases.get(phase, 0) + 1
    return {"pairs": len(pairs), "checked": len(passed) + len(failed), "passed": len(passed),
            "failed": len(failed), "unchecked": len(pairs) - len(passed) - len(failed),
            "pass_rate": round(len(passed) / max(1, len(passed) + len(failed)), 4),
            "not_passed_by_phase": phases, "seconds": round(seconds, 1),
            "judged_with_libdevice_stand_ins": sum(bool((p.check or {}).get("libdevice_stand_ins"))
                                                   for p in passed + failed),
            "speedup": quartiles(speedups)}


def quartiles(values: list[float]) -> Optional[dict]:
    """min, q1, median, q3, max of sorted values (None when empty)."""
    if not values:
        return None
    if len(values) == 1:
        return {"min": values[0], "q1": values[0], "median": values[0], "q3": values[0], "max": values[0]}
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {key: round(value, 3) for key, value in
            (("min", values[0]), ("q1", q1), ("median", median), ("q3", q3), ("max", values[-1]))}


def summary_text(summary: dict) -> str:
    """The summary as a few lines."""
    lines = [f"pairs checked {summary['checked']} of {summary['pairs']}: passed {summary['passed']}, failed "
             f"{summary['failed']}, unchecked {summary['unchecked']} (pass rate {summary['pass_rate']:.1%}) "
             f"in {summary['seconds']} s"]
    if summary.get("judged_with_libdevice_stand_ins"):
        lines.append(f"judged on the CPU with triton.language stand-ins for libdevice ({', '.join(LIBDEVICE_IN_TL)}): "
                     f"{summary['judged_with_libdevice_stand_ins']}")
    if summary["not_passed_by_phase"]:
        lines.append("not passed, by phase: " + json.dumps(summary["not_passed_by_phase"], sort_keys=True))
    if summary["speedup"]:
        s = summary["speedup"]
        lines.append(f"speedup over eager: median {s['median']}x, quartiles {s['q1']}x / {s['q3']}x, "
                     f"range {s['min']}x - {s['max']}x")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the child


def child_main(args: argparse.Namespace) -> int:
    """Check the pairs of the folders args.child lists, in order; writes each one's result.json as it is done
    (a pair that kills the process leaves the rest to the next child)."""
    for number, name in enumerate(json.loads(args.child.read_text(encoding="utf-8"))):
        folder = Path(name)
        job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        result: dict = {"ok": False}
        try:
            result.update(check_pair(folder, args.lock, job, number))
        except PhaseError as exc:
            result.update(phase=exc.phase, error_class=type(exc.error).__name__, error=describe(exc.error))
            if job.get("device") == "cpu" and interpreter_cannot_run(folder, exc):
                result["phase"] = "interpreter_libdevice"
        temporary = folder / (RESULT + ".part")
        temporary.write_text(json.dumps(result, default=str), encoding="utf-8")
        os.replace(temporary, folder / RESULT)
    return 0


def interpreter_cannot_run(folder: Path, exc: PhaseError) -> bool:
    """A CPU dry run's failure that is Triton's interpreter's, not the pair's: it has no libdevice (`erf`, `tanh`,
    ... of inductor's triton_helpers), so kernels that call it cannot run there."""
    text = (folder / TRITON).read_text(encoding="utf-8")
    return "libdevice." in text and exc.phase in ("triton_compile", "run") and \
        "InterpreterError" in type(exc.error).__name__ + describe(exc.error)


@contextlib.contextmanager
def phase(name: str):
    """Turn any exception inside into a PhaseError of `name`."""
    try:
        yield
    except PhaseError:
        raise
    except Exception as exc:
        raise PhaseError(name, exc) from exc


def load_module(path: Path, name: str):
    """Import a file as a fresh module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # triton's JIT reads the kernels' source through the module
    spec.loader.exec_module(module)
    return module


def check_pair(folder: Path, lock: Path, job: dict, number: int = 0) -> dict:
    """The child's work (module docstring)."""
    import torch

    from scraper import accuracy

    with phase("import"):
        problem = load_module(folder / PROBLEM, f"pair_problem_{number}")
    with phase("build"):
        torch.manual_seed(0)
        init = problem.get_init_inputs()
        model = problem.Model(*init).eval()
        inputs = problem.get_inputs()
    with phase("import_triton"):
        triton_module = load_module(folder / TRITON, f"pair_triton_{number}")
        torch.manual_seed(0)
        new = triton_module.ModelNew(*init).eval()
    with phase("weights"):
        same_weights(new, model)
    device = torch.device(job.get("device") or "cuda")
    stand_ins = []
    if device.type == "cpu":  # the dry run: Inductor's host code allocates with _empty_strided_cuda
        triton_module.empty_strided_cuda = cpu_empty_strided
        stand_ins = use_libdevice_stand_in(triton_module, (folder / TRITON).read_text(encoding="utf-8"))
    with phase("to_gpu"):
        model, new = model.to(device), new.to(device)
        inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
    if device.type == "cuda":  # the interpreter compiles nothing: a dry run goes straight to the comparison
        with phase("triton_compile"), torch.no_grad():
            new(*clones(inputs))  # the first run JIT-compiles the kernels: CPU work, outside the GPU lock
            synchronize()
    with gpu_lock(lock):
        result = judge_and_time(model, new, inputs, job, accuracy)
    if stand_ins:
        result["libdevice_stand_ins"] = stand_ins
    return result


# libdevice functions triton.language has with the same meaning: the interpreter runs those (it has no libdevice).
LIBDEVICE_IN_TL = ("rsqrt", "sqrt", "exp", "exp2", "log", "log2", "erf", "floor", "ceil", "sin", "cos", "abs")


class InterpreterLibdevice:
    """`libdevice` for a CPU dry run: LIBDEVICE_IN_TL as triton.language's; any other function fails, and the pair
    is counted as interpreter_libdevice, not judged."""

    def __getattr__(self, name: str):
        import triton.language as tl

        if name in LIBDEVICE_IN_TL:
            return getattr(tl, name)
        raise AttributeError(f"libdevice.{name} has no stand-in in Triton's interpreter")


def use_libdevice_stand_in(module, text: str) -> list:
    """Give the kernels of a dry run's module InterpreterLibdevice; the libdevice functions they call that it
    stands in for (recorded with the result: the pair was judged with them)."""
    if not hasattr(module, "libdevice"):
        return []
    module.libdevice = InterpreterLibdevice()
    return sorted(name for name in libdevice_calls(text) if name in LIBDEVICE_IN_TL)


def libdevice_calls(text: str) -> set:
    """The libdevice functions a kernel module calls (`libdevice.rsqrt(` -> "rsqrt")."""
    return set(re.findall(r"\blibdevice\.(\w+)\(", text))


def same_weights(new, model) -> None:
    """Every weight ModelNew holds is Model's of that name (KernelBench's evaluator copies none: ModelNew must build
    them itself)."""
    import torch

    source = {**model.state_dict(), **dict(model.named_buffers())}
    for name, tensor in new.named_buffers():
        if name not in source:
            raise KeyError(f"Model has no weight named {name}")
        if source[name].shape != tensor.shape or not torch.equal(source[name].to(tensor.dtype), tensor):
            raise ValueError(f"ModelNew's {name} is not Model's")


def cpu_empty_strided(size, stride, dtype):
    """`empty_strided_cuda` of a dry run on the CPU."""
    import torch

    return torch.empty_strided(size, stride, dtype=dtype)


def synchronize() -> None:
    """Wait for the GPU (nothing to wait for without one)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clones(inputs: list) -> list:
    return [x.clone() if hasattr(x, "clone") else x for x in inputs]


@contextlib.contextmanager
def gpu_lock(path: Optional[Path]):
    """Exclusive use of the GPU among the check's children (fcntl lock on a shared file)."""
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def judge_and_time(model, new, inputs: list, job: dict, accuracy) -> dict:
    """Compare ModelNew with Model (and a float64 Model where possible), then time both."""
    import copy

    import torch

    with phase("run"), torch.no_grad():
        reference = accuracy.named_outputs(model(*clones(inputs)))
        result = accuracy.named_outputs(new(*clones(inputs)))
        synchronize()
    fp64 = accuracy.float64_run(copy.deepcopy(model), tuple(clones(inputs)), {}, False, None)
    mode = job.get("mode") or "inference"
    dtype = job.get("dtype") or dtype_name(reference)
    tol = accuracy.tolerance_for(mode, dtype)
    with phase("compare"):
        if not reference:
            raise ValueError("Model returns no tensor: nothing to compare")
        verdict = accuracy.compare(reference, result, fp64, tol)
        kernelbench = kernelbench_allclose(reference, result)
    timer = median_ms if job.get("device", "cuda") == "cuda" else median_wall_ms
    eager_ms = triton_ms = None
    if job["runs"] > 0:  # --runs 0: no timing (a dry run's interpreted kernels say nothing about speed)
        with phase("timing"), torch.no_grad():
            eager_ms = timer(lambda: model(*inputs), job["warmup"], job["runs"])
            triton_ms = timer(lambda: new(*inputs), job["warmup"], job["runs"])
    return {"ok": verdict.ok, "max_error": verdict.max_error, "tolerance": tol, "compared": verdict.compared,
            "failures": verdict.failures, "float64_reference": fp64 is not None, "kernelbench_allclose": kernelbench,
            "eager_ms": eager_ms,
            "triton_ms": triton_ms, "speedup": round(eager_ms / triton_ms, 4) if triton_ms else None,
            "phase": None if verdict.ok else "compare",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "triton": triton_version()}


def kernelbench_allclose(reference: dict, result: dict) -> Optional[bool]:
    """KernelBench's own comparison (its eval's run_and_check_correctness): Model returns one tensor, and ModelNew's
    has its shape and is allclose at atol = rtol = 1e-4 (fp32); None when Model returns several."""
    import torch

    if len(reference) != 1 or len(result) != 1:
        return None
    (expected,), (got,) = reference.values(), result.values()
    if tuple(expected.shape) != tuple(got.shape):
        return False
    return bool(torch.allclose(expected.float(), got.float(), atol=1e-4, rtol=1e-4))


def dtype_name(named: dict) -> str:
    """float32 / bfloat16 / float16: the dtype of the first floating-point output."""
    for tensor in named.values():
        if tensor.is_floating_point():
            return str(tensor.dtype).removeprefix("torch.")
    return "float32"


def median_ms(run, warmup: int, runs: int) -> float:
    """Median milliseconds of `runs` calls of `run`, each between two CUDA events, after `warmup` calls."""
    import torch

    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(max(1, runs)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return round(statistics.median(times), 4)


def median_wall_ms(run, warmup: int, runs: int) -> float:
    """Median wall-clock milliseconds of `runs` calls (the CPU dry run)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 4)


def triton_version() -> Optional[str]:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
