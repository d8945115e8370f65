"""The per-model worker: ONE model per process, started by the orchestrator with TORCH_COMPILE_DEBUG=1.

    python -m scraper.worker JOB.json          # a WorkerJob (scraper/worker/job.py), written by the orchestrator

It writes the model's standalone program (scraper.worker.programs), builds the model BY RUNNING that program,
names the graphs after the model (`torch._functorch.aot_autograd.set_model_name`, as PyTorch's
benchmarks/dynamo runner does), compiles and runs it once, checks the compiled outputs against eager
(scraper.accuracy; `accuracy: false` skips it), and writes the job's result (a WorkerResult): success, the phase
that failed (program / import / init / inputs / build / compile), the error, timings, versions, the debug run
folder and its graphs and kernel count, accuracy, and where it wrote the model's KernelBench problem
(scraper.kernelbench) and its pairing record (what each graph's `call(args)` takes and returns,
scraper.worker.recording). Scraped code (--suite modules) and TorchBench's models (--suite torchbench) are executed
here, in this throw-away process (behind the wall for modules), never in the orchestrator. A TorchBench model that
cannot be built because it needs a download, a package that is not installed, or that TorchBench does not
implement is reported as skipped (`skip_reason`), not failed. The exit status is 0 on success, 1 on a recorded
failure or skip.

This folder (scraper/worker/) is what the wall ships: it imports nothing of the host side (scraper.suite,
scraper.modules), only the shared modules (scraper.records, scraper.accuracy, scraper.kernelbench, ...).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

if __package__ in (None, ""):  # run as a file path: make `scraper` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scraper import accuracy, kernelbench  # noqa: E402
from scraper.phases import PhaseError, describe, phase  # noqa: E402
from scraper.records import atomic_write_json, atomic_write_text  # noqa: E402
from scraper.suiterun import run_dir_contents  # noqa: E402
from scraper.suites import get as get_suite, torchbench  # noqa: E402
from scraper.worker import programs, recording  # noqa: E402
from scraper.worker.infer.program import module_program  # noqa: E402
from scraper.worker.job import WorkerJob, WorkerResult, read_job  # noqa: E402

log = logging.getLogger("scraper.worker")


def main(argv: Optional[list[str]] = None, job: Optional[WorkerJob] = None) -> int:
    """Run one model (`job`, else the job file of `argv`); always writes the job's result (unless killed),
    returns 0 on success."""
    args = job if job is not None else read_job(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s worker: %(message)s")
    os.environ.setdefault("TORCH_COMPILE_DEBUG", "1")  # read by torch at import: set before importing it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    result = WorkerResult(suite=args.suite, model=args.model, pid=os.getpid())
    info: dict[str, Any] = {}
    started = time.monotonic()
    try:
        run(args, info)
        result.success = True
    except PhaseError as exc:
        info.update(exc.details)
        result.phase, result.error = exc.phase, describe(exc.error)
        if args.suite == torchbench.SUITE.name and exc.phase == "build" and isinstance(exc.error, BaseException):
            note_skip(info, exc.error, args)
        traceback.print_exception(exc.error if isinstance(exc.error, BaseException) else exc, file=sys.stderr)
    except Exception as exc:  # anything unforeseen is still a recorded failure, not a lost model
        result.phase, result.error = "worker", describe(exc)
        traceback.print_exc()
    finally:
        info.pop("_program", None)
        result.update(info)
        result.seconds = round(time.monotonic() - started, 3)
        result.update(collect_debug_output(args.out))
        result.versions = versions(args.suite)
        atomic_write_json(args.result, result.to_dict())
    return 0 if result.success else 1


def run(args: WorkerJob, info: dict) -> None:
    """Write the program, build the model from it, compile and run once, check accuracy; fills `info` as it goes
    (so a failure still reports what was inferred before it)."""
    import torch

    configure_torch(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    training = args.mode == "training"
    info["device"] = device
    started = time.monotonic()
    text, extra = program_text(args, device, training)
    info.update(extra)
    atomic_write_text(args.program, text)
    os.chmod(args.program, 0o644)  # a script for people to read and run (the atomic write makes it 0600)
    program = phase("build", lambda: load_program(args.program))
    info["_program"] = program  # for note_skip; dropped before the result is written
    model, call_args, call_kwargs = phase("build", lambda: program.build(device))
    info["build_seconds"] = round(time.monotonic() - started, 3)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info.update(built_details(program))
    # Grad mode of the forward: training, or the few models whose forward takes gradients itself (maml).
    grad = training or bool(getattr(program, "INFERENCE_GRAD", False))
    write_problem(args, text)
    compile_and_check(args, info, model, call_args, call_kwargs, grad)


def compile_and_check(args: WorkerJob, info: dict, model, call_args, call_kwargs, grad: bool) -> None:
    """Compile and run once (recording what each graph's call takes), then check accuracy against eager on
    copies made before compiling; fills `info`."""
    copies = accuracy_copies(model) if args.accuracy else None
    recorder = make_recorder(args)
    started = time.monotonic()
    output, result = phase("compile", lambda: compile_and_run(model, call_args, call_kwargs,
                                                              args.mode == "training", args, recorder, grad))
    info["compile_seconds"] = round(time.monotonic() - started, 3)
    if recorder is not None:
        write_pairing(args, recorder.finish(model, call_args, call_kwargs, output))
    if args.accuracy:
        info.update(check_accuracy(copies, result, call_args, call_kwargs, args, grad))


def configure_torch(args: WorkerJob) -> None:
    """Debug root, graph names, and no caches that could hide the debug output."""
    import torch
    import torch._dynamo.config
    import torch._functorch.aot_autograd
    import torch._functorch.config
    import torch._inductor.config

    torch._dynamo.config.debug_dir_root = str(Path(args.out).resolve())
    torch._functorch.aot_autograd.set_model_name(args.graph_name or args.model)
    if not args.cache:
        for module, flag in ((torch._inductor.config, "fx_graph_cache"),
                             (torch._functorch.config, "enable_autograd_cache")):
            if hasattr(module, flag):
                setattr(module, flag, False)
    if args.accuracy:  # as PyTorch's runner with --accuracy: the same random numbers and conv algorithms
        torch.backends.cudnn.deterministic = True
        torch._inductor.config.fallback_random = args.mode == "training"


def program_text(args: WorkerJob, device: str, training: bool) -> tuple[str, dict]:
    """The standalone program of this model, and what was inferred to write it."""
    if args.suite == "timm":  # scraper.suites: one program builder per suite
        return programs.timm_program(args.model, args.batch_size or 8, args.dtype, training), {}
    if args.suite == "huggingface":
        return programs.huggingface_program(args.model, args.batch_size or 8, args.dtype, training,
                                            args.seq_len, args.hf_layers), {}
    if args.suite == "torchbench":
        return torchbench_program(args, training)
    return module_program(args, device, training)


def load_program(path: str):
    """Import the program file as a fresh module (in this worker process only)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"suite_program_{os.getpid()}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: dataclasses and typing look their module up there
    spec.loader.exec_module(module)
    return module


def compile_and_run(model, call_args, call_kwargs, training: bool, args: WorkerJob, recorder,
                    grad: bool = False):
    """torch.compile the model (through `recorder` when there is one) and run it once: forward (inference) or
    forward + backward (training); `grad`: the forward runs with autograd on (default: only when training).
    Returns (the model's output, its named tensors for the accuracy check)."""
    import torch

    mode = "max-autotune-no-cudagraphs" if args.max_autotune else None
    # backend "none": no torch.compile at all, a dry run of the program and its inputs
    if args.backend == "none":
        compiled = model
    elif recorder is not None:
        compiled = torch.compile(model, backend=recorder)  # the recorder applies `mode` itself
    else:
        compiled = torch.compile(model, backend=args.backend, mode=mode)
    output, result = accuracy.seeded(lambda: accuracy.run_once(compiled, call_args, call_kwargs, training,
                                                               loss_of, named_from=model, grad=grad))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return output, result


def make_recorder(args: WorkerJob) -> Optional[recording.GraphRecorder]:
    """The recording backend around --backend (None without compiling)."""
    import torch._dynamo.utils

    if args.backend == "none":
        return None
    mode = "max-autotune-no-cudagraphs" if args.max_autotune else None
    return recording.GraphRecorder(args.backend, mode, debug_dir=lambda: Path(torch._dynamo.utils.get_debug_dir()))


def accuracy_copies(model):
    """Copies of the model for the eager and float64 runs, made before compiling; None when it cannot be copied
    (the check is then skipped with that reason)."""
    try:
        return accuracy.copies_for_accuracy(model)
    except Exception as exc:  # a model holding something deepcopy refuses
        return describe(exc)


def check_accuracy(copies, result: dict, call_args, call_kwargs, args: WorkerJob, grad: bool) -> dict:
    """Eager (and float64) runs of the copies, compared with the compiled run; the manifest's accuracy fields.
    A failure here is the check's, not the model's: it is recorded as skipped with the reason."""
    if not isinstance(copies, tuple):
        return accuracy.skipped(f"model cannot be copied: {copies}")
    training = args.mode == "training"
    try:
        _, eager = accuracy.seeded(lambda: accuracy.run_once(copies[0], call_args, call_kwargs, training,
                                                             loss_of, grad=grad))
        if not eager:
            return accuracy.skipped("no tensor in the model's output to compare")
        fp64 = accuracy.seeded(lambda: accuracy.float64_run(copies[1], call_args, call_kwargs, training,
                                                            loss_of, grad))
        tol = accuracy.tolerance_for(args.mode, args.dtype)
        return accuracy.verdict_fields(accuracy.compare(eager, result, fp64, tol), tol, fp64 is not None)
    except Exception as exc:
        traceback.print_exc()
        return accuracy.skipped(f"eager run failed: {describe(exc)}")


def write_problem(args: WorkerJob, program: str) -> None:
    """The model's KernelBench problem at --problem (the orchestrator names it, beside the program)."""
    text = kernelbench.problem_text(program, args.model)
    if text is None or not args.problem:
        return
    atomic_write_text(args.problem, text)
    os.chmod(args.problem, 0o644)


def write_pairing(args: WorkerJob, pairing: dict) -> None:
    """The pairing record (scraper.worker.recording) with the launch configurations of the Triton kernels, at
    --pairing."""
    if args.pairing:
        pairing["kernels"] = recording.kernel_configs()
        atomic_write_json(args.pairing, pairing)


def loss_of(output):
    """A scalar to call backward() on: the model's own `.loss` when it computed one, else the sum of the
    means of every floating-point tensor in the output (as PyTorch's reduce_to_scalar_loss)."""
    loss = getattr(output, "loss", None)
    if loss is not None:
        return loss
    tensors = list(float_tensors(output))
    if not tensors:
        raise ValueError(f"no floating-point tensor in the output ({type(output).__name__}) to train on")
    return sum(t.float().mean() for t in tensors)


def float_tensors(value):
    """Every floating-point tensor inside nested tuples/lists/dicts/ModelOutputs."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.requires_grad:
            yield value
    elif isinstance(value, dict) or hasattr(value, "to_tuple"):
        for item in (value.values() if isinstance(value, dict) else value.to_tuple()):
            yield from float_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from float_tensors(item)


# ------------------------------------------------------------------------------------------ torchbench suite


def torchbench_program(args: WorkerJob, training: bool) -> tuple[str, dict]:
    """The program that builds TorchBench model --model through the checkout (--torchbench-dir), with
    PyTorch's batch size for it unless one was given."""
    try:
        checkout = torchbench.find_checkout(args.torchbench_dir)
    except ValueError as exc:
        raise PhaseError("program", exc) from exc
    batch_size = torchbench.batch_size_for(args.model, args.mode, args.batch_size)
    text = programs.torchbench_program(args.model, batch_size, args.dtype, training, str(checkout),
                                       random_weights=args.random_weights,
                                       inference_grad=args.model in torchbench.INFERENCE_NEEDS_GRAD)
    return text, {"torchbench_dir": str(checkout), "torchbench_commit": torchbench.checkout_commit(checkout),
                  "random_weights": bool(args.random_weights)}


def note_skip(result: dict, error: BaseException, args: WorkerJob) -> None:
    """Mark a TorchBench model that could not be built as skipped, with the reason (torchbench.skip_reason),
    and list the network accesses its program refused."""
    program = result.get("_program")
    blocked = list(getattr(program, "blocked", None) or [])
    reason = torchbench.skip_reason(error, result.get("torchbench_dir"), blocked)
    if reason is not None:
        result["skip_reason"] = reason
    if blocked:
        result["blocked"] = blocked[:5]


def built_details(program) -> dict:
    """What a TorchBench program's build() leaves behind: the batch size TorchBench used and the checkpoints
    that were replaced by the random initialization; {} for the other suites."""
    benchmark = getattr(program, "benchmark", None)
    details = {}
    if benchmark is not None and getattr(benchmark, "batch_size", None) is not None:
        details["batch_size"] = benchmark.batch_size
    if getattr(program, "random_weights_used", None):
        details["random_weights_used"] = list(program.random_weights_used)
    return details


# ------------------------------------------------------------------------------------------ what was written


def collect_debug_output(out: str) -> dict:
    """This process's debug run folder (relative to --out), its graph folders and Triton kernel count."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"run_dir": None, "graphs": [], "kernels": 0}
    try:
        run_dir = Path(torch._dynamo.utils.get_debug_dir())
    except Exception:  # torch half-imported or too old: nothing to report
        return {"run_dir": None, "graphs": [], "kernels": 0}
    rel = os.path.relpath(run_dir, Path(out).resolve()) if run_dir.exists() else None
    return {"run_dir": rel, **run_dir_contents(run_dir)}


def versions(suite: str) -> dict:
    """torch, triton, CUDA, GPU, Python and the suite library's versions (those already imported)."""
    found: dict[str, Any] = {"python": sys.version.split()[0]}
    torch = sys.modules.get("torch")
    if torch is not None:
        found["torch"] = getattr(torch, "__version__", None)
        found["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
        try:
            found["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:
            found["gpu"] = None
    known = get_suite(suite)
    libraries = known.packages if known is not None else ()
    for name in ("triton", *libraries):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", None)
    if "triton" not in found:
        try:
            import triton

            found["triton"] = triton.__version__
        except Exception:
            found["triton"] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
