"""Compile a suite of models with TORCH_COMPILE_DEBUG=1 to produce Inductor debug folders (and their Triton
kernels) for get_kernels_from_debug_info.py. One worker subprocess per model (random weights, nothing
downloaded), one worker per visible GPU, a timeout per model; failures and timeouts are recorded in the manifest
and the suite goes on; a rerun skips the models already in the manifest (see --redo). TorchBench models that
need a download or a package that is not installed are recorded as skipped, with the reason.

examples:
  python run_inductor_suite.py --suite timm             # the list in scraper/suites/models/timm.txt
  python run_inductor_suite.py --suite huggingface --models BertForMaskedLM,GPT2LMHeadModel --mode training
  python run_inductor_suite.py --suite modules          # nn.Modules of scraper/generator/paritybench_download/
  python run_inductor_suite.py --suite torchbench --torchbench-dir ~/benchmark   # scraper/suites/models/torchbench.txt
  python run_inductor_suite.py --suite torchbench --torchbench-dir ~/benchmark --list   # the checkout's models
  python run_inductor_suite.py --suite timm --shard 0/4 -o tcd_0     # job 0 of 4 (a Slurm array: see docs)
  python get_kernels_from_debug_info.py torch_compile_debug     # then extract the kernels

The output folder's suite/ is this command's (recorded in its .triton-data.json): a rerun resumes there, and a
folder whose suite/ another program wrote is refused. Exit status: 0 when every model of this run compiled or
was skipped (or none was left to run); 1 when some model failed, crashed or timed out (0 with --keep-going when
another one compiled); 2 on bad usage, an output folder it may not write or no sandbox for --suite modules; 3
when a models file, modules file, --repos folder or TorchBench checkout named is missing; 2 also, before any
worker starts, when a package every model of the suite imports is not installed (timm, transformers: pip install
-r requirements-gpu.txt); 130 when interrupted.
See docs/suite.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Optional

from scraper.cli import (EXIT_MISSING_INPUT, EXIT_OK, EXIT_USAGE, INTERRUPTED, add_logging_args, deprecated_alias,
                         interruptible, setup_logging)
from scraper.fileio import claim_output, first_object
from scraper.sandbox import SandboxUnavailable, require_wall
from scraper.stats import Stats
from scraper.modules import classes as modules
from scraper.suite import confined, model_lists
from scraper import suites
from scraper.suites import torchbench
from scraper.suiterun import latest_entries
from scraper.zipsafe import printable
from scraper.suite.orchestrate import Job, Settings, jobs_to_run, run_suite, visible_gpus, worker_slots
from scraper.suite.orchestrate import PersistentWorker, PersistentWorkers, record_skipped, run_job
from scraper.suite.walled import WalledWorker

log = logging.getLogger(__name__)

STAGE = "run_inductor_suite"  # its name in an output folder's .triton-data.json
SUITE_DIR = "suite"  # what it writes in the output folder besides the workers' run_* folders
EXIT_SOME_FAILED = 1  # scraper.cli's EXIT_NOTHING: for the suite, a model failed (or every one did)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports a process that SIGINT ended


def build_parser(description: Optional[str] = None, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of run_inductor_suite.py (`description`: the script's docstring; `prog`: the command's
    name in usage lines, default the script's)."""
    parser = argparse.ArgumentParser(prog=prog or "run_inductor_suite.py", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to compile")
    what.add_argument("--suite", required=True, choices=model_lists.SUITES,
                      help="timm (timm.create_model, pretrained=False), huggingface (transformers classes built "
                           "from their configs), modules (nn.Module classes found in scraped repositories), "
                           "torchbench (the models of a TorchBench checkout, built through its own API)")
    what.add_argument("--models", help="comma-separated names (name or name:batch_size) instead of the list file; "
                      "torchbench: 'all' = every model of the checkout")
    what.add_argument("--models-file", type=Path, help="a list file (`name [batch_size]` per line, # comments); "
                      "default: scraper/suites/models/<suite>.txt")
    what.add_argument("--modules-file", type=Path, help="modules: JSONL of modules to compile (class_name and "
                      "source_file or code per line; see docs/suite.md); default: found in --repos")
    what.add_argument("--repos", type=Path, default=modules.DEFAULT_REPOS,
                      help="modules: folder of downloaded repositories (zips or folders) to take nn.Module classes "
                           "from, each with its dependency closure (default: %(default)s)")
    what.add_argument("--per-repo", type=int, help="modules: at most this many classes per repository (library "
                      "code before examples, benchmarks, tests and vendored copies; see docs/suite.md)")
    what.add_argument("--list-jobs", type=int, help="modules: processes that list the repositories' classes "
                      "(default: every core; the listing is cached per archive in <out>/suite/listing/)")
    what.add_argument("--torchbench-dir", type=Path, help="torchbench: a checkout of github.com/pytorch/benchmark "
                      "(its torchbenchmark/ and utils/ folders suffice; default: $TORCHBENCH_DIR)")
    what.add_argument("--limit", type=int, help="only the first N models (after sharding)")
    what.add_argument("--shard", help="i/N: run only shard i (0-based) of N; the N shards split the list "
                      "deterministically (round robin), e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    how = parser.add_argument_group("how to compile")
    how.add_argument("--mode", choices=("inference", "training"), default="inference",
                     help="inference: forward under no_grad; training: forward + backward (default: %(default)s)")
    how.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    how.add_argument("--max-autotune", action="store_true",
                     help="torch.compile(mode='max-autotune-no-cudagraphs'): adds matmul/conv template kernels")
    how.add_argument("--seq-len", type=int, default=512, help="huggingface: tokens per sequence (default: 512, "
                     "capped by the config's max_position_embeddings)")
    how.add_argument("--hf-layers", type=int, default=2, help="huggingface: at most this many layers per stack "
                     "(repeated layers give the same kernels; 0 = the config's own; default: 2)")
    how.add_argument("--random-weights", action="store_true", help="torchbench: where a model would fetch a "
                     "pretrained checkpoint (torchvision weights), keep its random initialization instead of "
                     "skipping it as `needs download` (kernels do not depend on weight values)")
    how.add_argument("--backend", default="inductor", help="torch.compile backend (default: inductor); 'none' "
                     "runs each model eagerly without torch.compile: a dry run of the programs and inputs")
    how.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when the worker sees a GPU")
    how.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                     help="do not check the compiled model against eager (default: checked, as PyTorch's runner "
                          "does with --accuracy; recorded as accuracy pass|fail|skipped and max_error)")
    run = parser.add_argument_group("running")
    run.add_argument("-o", "--output", type=Path, default=Path("torch_compile_debug"),
                     help="debug root: run_*/ folders from torch, suite/ (manifest, programs, logs); a rerun "
                          "resumes there; one whose suite/ another program wrote is refused (default: %(default)s)")
    deprecated_alias(run, "--out", "-o/--output", "output", type=Path)
    run.add_argument("--timeout", type=float, default=900, help="seconds per model before its worker (and "
                     "its compile subprocesses) is killed (default: %(default)s)")
    run.add_argument("--gpus", help="GPU ids to use, e.g. 0,1 (default: CUDA_VISIBLE_DEVICES, else all that "
                     "nvidia-smi lists); 'none' runs without a GPU")
    run.add_argument("--workers-per-gpu", type=int, default=1, help="worker processes per GPU (compiling is "
                     "mostly CPU work: 2-4 keep one GPU busier; default: 1)")
    run.add_argument("--time-budget", type=float, help="start no model after this many seconds (running ones "
                     "finish or time out; a rerun takes up the rest), e.g. to end within a batch job's walltime")
    run.add_argument("--redo", choices=("none", "failed", "all"), default="none",
                     help="models already in the manifest: skip them (none), rerun the failed ones, or rerun all")
    run.add_argument("--list", action="store_true", help="print the models this invocation would run, then exit; "
                     "torchbench: every model of the checkout, those left out followed by `# left out: reason`")
    run.add_argument("--modules-per-process", type=int, default=20, help="modules: models one worker process "
                     "(behind the wall: one sandbox) runs in turn before a fresh one starts (also after any "
                     "failure, timeout or crash); 1 = a process (a sandbox) per model (default: %(default)s)")
    run.add_argument("--keep-going", action="store_true", help="exit 0 when some model of this run compiled even "
                     "if others failed, crashed or timed out (default: exit 1); the manifest keeps every failure")
    run.add_argument("--worker", type=Path, help="a replacement worker script, called as `SCRIPT JOB.json` with the "
                     "job record the real worker gets (scraper/worker/job.py: read it with read_job; custom "
                     "compile steps; the tests use a fake one)")
    run.add_argument("--worker-memory-mb", type=int, default=confined.DEFAULT_MEMORY_MB, metavar="MB",
                     help="modules: memory each process of a sandboxed worker may map (RLIMIT_AS; RLIMIT_DATA with "
                          "a GPU, where CUDA reserves far more address space than it uses; default: %(default)s)")
    run.add_argument("--worker-disk-mb", type=int, default=confined.DEFAULT_DISK_MB, metavar="MB",
                     help="modules: what a sandboxed worker's job folder may hold, and its largest file "
                          "(RLIMIT_FSIZE, its log included); a job over it fails and nothing of it is kept "
                          "(default: %(default)s)")
    run.add_argument("--unsafe-no-sandbox", action="store_true",
                     help="modules: run the workers (which execute scraped code) even where the bubblewrap "
                          "sandbox cannot run; they could then read your files. Without it, such a run is refused")
    add_logging_args(parser)
    return parser


@interruptible
def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    """Run the suite; returns the exit status (the module docstring and docs/suite.md say which)."""
    parser = build_parser(__doc__, prog)
    args = parser.parse_args(argv)
    setup_logging(args)
    missing = missing_input(args)
    if missing:
        log.error("%s", missing)
        return EXIT_MISSING_INPUT
    unmet = unmet_requirement(args)
    if unmet:  # before any worker starts: each would fail its model with ModuleNotFoundError
        log.error("%s", unmet)
        return EXIT_USAGE
    try:
        settings = make_settings(args)
        if lists_repositories(args):  # the listing is cached in suite/listing/: claim the folder before that
            claim_debug_root(settings.out)
        jobs = select(load_jobs(args, settings), settings.shard, args.limit)
        listed = list_lines(args, settings, jobs) if args.list else None
        if listed is None:
            if settings.suite == "modules":
                require_wall(settings.unsafe_no_sandbox)
            claim_debug_root(settings.out)
    except (ValueError, OSError, SandboxUnavailable) as exc:  # OSError: a refused output folder among them
        log.error("%s", exc)
        return EXIT_USAGE
    if listed is not None:
        print("\n".join(printable(line) for line in listed))  # names from scraped repositories
        return EXIT_OK
    return run(settings, jobs, args)


def missing_input(args: argparse.Namespace) -> Optional[str]:
    """Why a file or folder that this invocation reads is not there (exit status 3), or None."""
    if args.suite == "modules":
        named = {"--modules-file": args.modules_file} if args.modules_file else {"--repos": args.repos}
    else:
        named = {"--models-file": args.models_file}
    if args.suite == "torchbench":
        checkout_env = torchbench.CHECKOUT_ENV
        named["--torchbench-dir" if args.torchbench_dir else f"${checkout_env}"] = \
            args.torchbench_dir or os.environ.get(checkout_env)
    for flag, path in named.items():
        if path and not Path(path).expanduser().exists():
            return f"{flag} {path}: no such file or folder"
    return None


def unmet_requirement(args: argparse.Namespace) -> Optional[str]:
    """One line naming the packages the suite's workers import that this Python lacks, with the pip command to
    get them; None when all are there, for --list (no worker starts) and for a replacement --worker (its own
    steps)."""
    if args.list or args.worker is not None:
        return None
    missing = suites.missing_packages(args.suite)
    if not missing:
        return None
    also = " (or pip install -r requirements-gpu.txt, the GPU suites' packages)" if "torch" not in missing else ""
    return (f"--suite {args.suite} needs {', '.join(missing)}, which {sys.executable} cannot import: "
            f"pip install {' '.join(missing)}{also}")


def lists_repositories(args: argparse.Namespace) -> bool:
    """Whether the jobs come from listing the classes of --repos (--suite modules without --modules-file), which
    writes into the output folder even for --list."""
    return args.suite == "modules" and args.modules_file is None


def claim_debug_root(out: Path) -> None:
    """Make the debug root and record its suite/ as this stage's in .triton-data.json, as every stage claims its
    output; FileExistsError when the folder holds a suite/ with something in it that this stage did not write
    (its manifest, programs and logs would be mixed with, and partly replace, someone else's files). The workers'
    run_* folders get new names (a timestamp and the pid) and are claimed by the manifest lines naming them;
    nothing outside suite/ is ever replaced or removed."""
    suite = out / SUITE_DIR
    checked = [SUITE_DIR] if suite.exists() and not empty_folder(suite) else []
    claim_output(out, STAGE, checked, adopt=earlier_suite_output).claim([SUITE_DIR])


def empty_folder(path: Path) -> bool:
    """True for a folder with nothing in it."""
    return path.is_dir() and not any(path.iterdir())


def earlier_suite_output(folder: Path) -> bool:
    """A debug root that an earlier version of this stage wrote (before .triton-data.json): its suite/ holds a
    manifest of model runs, or the stats of a suite run (one interrupted before any model ended)."""
    suite = folder / SUITE_DIR
    for manifest in suite.glob("manifest*.jsonl"):
        first = first_object(manifest)
        if first is not None and "suite" in first and "model" in first:
            return True
    return any(stats_stage(path) == "suite" for path in suite.glob("stats*.json"))


def stats_stage(path: Path) -> Optional[str]:
    """The `stage` a stats.json names, or None (unreadable, not JSON, another shape)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("stage") if isinstance(data, dict) else None


def make_settings(args: argparse.Namespace) -> Settings:
    """Settings from the parsed arguments (validates --shard and the numbers)."""
    if args.timeout <= 0 or args.workers_per_gpu < 1 or (args.limit is not None and args.limit < 1):
        raise ValueError("--timeout must be > 0, --workers-per-gpu and --limit >= 1")
    if args.worker_memory_mb < 256 or args.worker_disk_mb < 1:
        raise ValueError("--worker-memory-mb must be >= 256 and --worker-disk-mb >= 1")
    return Settings(
        suite=args.suite, out=args.output, mode=args.mode, dtype=args.dtype, max_autotune=args.max_autotune,
        timeout=args.timeout, seq_len=args.seq_len, hf_layers=args.hf_layers, backend=args.backend,
        device=args.device, worker=args.worker, shard=model_lists.parse_shard(args.shard) if args.shard else None,
        torchbench_dir=torchbench.find_checkout(args.torchbench_dir) if args.suite == "torchbench" else None,
        random_weights=args.random_weights,
        unsafe_no_sandbox=args.unsafe_no_sandbox,
        accuracy=args.accuracy, worker_memory_mb=args.worker_memory_mb, worker_disk_mb=args.worker_disk_mb,
    )


def module_job(candidate: modules.Candidate) -> Job:
    """The job of one module found by scraper.modules."""
    return Job(model_lists.ModelSpec(candidate.name, candidate.batch_size), source=candidate.source,
               class_name=candidate.class_name, meta=candidate.meta, code=candidate.code, hints=candidate.hints,
               skip_reason=candidate.skip_reason)


def load_jobs(args: argparse.Namespace, settings: Settings) -> list[Job]:
    """The jobs named by --models / --models-file / the default list (timm, huggingface), or the modules."""
    if args.suite == "modules":
        candidates = modules.load_candidates(args.modules_file, args.repos, settings.suite_dir, args.models,
                                             args.per_repo, args.list_jobs)
        return [module_job(candidate) for candidate in candidates]
    if args.suite == "torchbench" and args.models and args.models.strip() == "all":
        specs = [model_lists.ModelSpec(name) for name in torchbench.list_models(settings.torchbench_dir)]
    elif args.models:
        specs = model_lists.parse_models_arg(args.models)
    else:
        specs = model_lists.read_model_list(args.models_file or model_lists.default_list_path(args.suite))
    if not specs:
        raise ValueError("no models to run (empty --models or list file)")
    return [Job(spec) for spec in specs]


def list_lines(args: argparse.Namespace, settings: Settings, jobs: list[Job]) -> list[str]:
    """What --list prints: the jobs' names; for modules with their kind and skip reason (`# library`,
    `# test, skipped: missing extension X`); for torchbench every model of the checkout, with the reason the
    models file gives for those it leaves out."""
    if args.suite == "modules":
        return [module_line(job) for job in jobs]
    if args.suite != "torchbench":
        return [job.name for job in jobs]
    models_file = args.models_file or model_lists.default_list_path("torchbench")
    left_out = torchbench.read_left_out(models_file) if models_file.is_file() else {}
    return torchbench.listing(torchbench.list_models(settings.torchbench_dir), [job.name for job in jobs],
                              left_out)


def module_line(job: Job) -> str:
    """`name  # kind[, skipped: reason]` for --list."""
    notes = [job.meta.get("kind")] + ([f"skipped: {job.skip_reason}"] if job.skip_reason else [])
    notes = [note for note in notes if note]
    return f"{job.name}  # {', '.join(notes)}" if notes else job.name


def select(jobs: list[Job], shard: Optional[tuple[int, int]], limit: Optional[int]) -> list[Job]:
    """This shard's jobs, then the first `limit` of them."""
    if shard:
        jobs = model_lists.shard(jobs, *shard)
    return jobs[:limit] if limit else jobs


def run(settings: Settings, jobs: list[Job], args: argparse.Namespace) -> int:
    """Run the jobs not done yet on the worker pool; save stats; print the summary."""
    stats = Stats("suite")
    stats.inc("models_listed", len(jobs))
    todo = record_skipped(settings, jobs_to_run(settings, jobs, args.redo, stats), stats)
    gpus = visible_gpus(args.gpus)
    if not gpus and settings.device != "cpu":
        log.warning("no GPU visible: workers run without one (Inductor then writes C++ kernels, not Triton)")
    slots = worker_slots(gpus, args.workers_per_gpu)
    log.info("%d models to run (%d listed) on %d worker(s), GPUs: %s", len(todo), len(jobs), min(len(slots),
             max(1, len(todo))), ",".join(gpus) or "none")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None  # kill/Slurm too
    runner = job_runner(settings, args)
    try:
        entries = run_suite(settings, todo, slots, stats, run_one=runner, budget=args.time_budget) if todo else []
    except KeyboardInterrupt:
        save_stats(settings, stats)
        print(f"{stats.summary()}\n{INTERRUPTED}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if isinstance(runner, PersistentWorkers):
            runner.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    save_stats(settings, stats)
    print(stats.summary(), file=sys.stderr)
    print(f"{manifest_totals(settings)}\nmanifest: {settings.manifest_path}", file=sys.stderr)
    if entries and all(entry.get("status") == "crashed" for entry in entries):
        log.error("every worker of this run died without a result, e.g. %s: %s", printable(entries[0]["model"]),
                  printable(entries[0].get("error")))
    return run_status(entries, args.keep_going, stats.counts["not_run"])


def run_status(entries: list[dict], keep_going: bool = False, not_run: int = 0) -> int:
    """0 when every model this run started compiled or was skipped (a TorchBench model needing a download or a
    package: not a failure of the run), else 1; with `keep_going` also 0 when at least one of them compiled.
    `not_run` jobs (neither run nor left for a rerun by the time budget) count as failures."""
    if not not_run and all(entry.get("success") or entry.get("status") == "skipped" for entry in entries):
        return EXIT_OK
    return EXIT_OK if keep_going and any(entry.get("success") for entry in entries) else EXIT_SOME_FAILED


def job_runner(settings: Settings, args: argparse.Namespace):
    """How run_suite runs a job: --suite modules in persistent workers (several models per process, torch imported
    once), behind the wall one sandbox per worker process (scraper.suite.walled), outside it with
    --unsafe-no-sandbox; a replacement --worker or --modules-per-process 1 asks for a process per model (behind
    the wall: a sandbox per model), as every other suite gets."""
    if settings.suite == "modules" and settings.worker is None and args.modules_per_process > 1:
        return PersistentWorkers(settings, args.modules_per_process, WalledWorker if settings.walled else
                                 PersistentWorker)
    return run_job


def manifest_totals(settings: Settings) -> str:
    """One line: models of this suite/mode/dtype per status over every manifest of the output folder (earlier runs
    too)."""
    wanted = (settings.suite, settings.mode, settings.dtype, settings.max_autotune)
    statuses = Counter(entry.status for entry in latest_entries(settings.out).values()
                       if (entry.suite, entry.mode, entry.dtype, entry.max_autotune) == wanted)
    listed = ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())) or "none"
    return f"all runs in {settings.out} ({settings.suite}, {settings.mode}, {settings.dtype}): {listed}"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def save_stats(settings: Settings, stats: Stats) -> None:
    """stats.json and errors.csv beside the manifest (suffixed like it for a shard)."""
    suffix = settings.manifest_path.stem.removeprefix("manifest")
    settings.suite_dir.mkdir(parents=True, exist_ok=True)
    stats.save(settings.suite_dir / f"stats{suffix}.json")
    stats.save_errors_csv(settings.suite_dir / f"errors{suffix}.csv")
