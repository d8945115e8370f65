"""What `triton-data build` will run: one Stage per step of the pipeline, each the command a user would type for it
(`python -m scraper.console <command> ...`), its output a folder of the corpus (scraper/corpus.py), its time share.

    github        scrape_github.py: the repositories of --repos (offline, --local) or, with GITHUB_TOKEN, discovery
    generate      the generator: every @triton.jit kernel of those repositories
    suite:<name>  run_inductor_suite.py per suite (timm, huggingface, torchbench, modules), --time-budget from --hours
    inductor      get_kernels_from_debug_info.py over the suites' debug roots and --debug-root folders
    check         triton-data pairs check (the GPU check; --device cpu: the interpreter's dry run)
    dataset:<t>   create_json.py --task completion | pairs | problems
    report        triton-data report

--hours H plans the time: the suites share SUITE_SHARE of it (each gets --time-budget, after which it starts no
model, and half of that as the time a model may take), the check CHECK_SHARE (--time-budget), the rest is left to
the stages whose time follows from their input.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from scraper import corpus as layout

SUITES = ("timm", "huggingface", "torchbench", "modules")
SUITE_SHARE, CHECK_SHARE = 0.6, 0.25
COMPLETION, PAIRS, PROBLEMS = "completion", "pairs", "problems"


@dataclass
class Stage:
    """One step: its name, the argv after `python -m scraper.console`, the stages whose output it reads, its
    planned seconds (None: follows from its input), and the exit statuses that still count as done (a suite
    where some model failed, a check where some pair failed: the failures are data, counted in the report)."""

    name: str
    argv: list[str]
    after: list[str] = field(default_factory=list)
    seconds: Optional[float] = None
    done_with: tuple[int, ...] = (0,)
    always: bool = False  # runs even when a stage before it failed (the report: it shows the failure)
    # argv made just before the stage runs, from what the stages before it made (None: nothing to do)
    later: Optional[Callable[[], Optional[list[str]]]] = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "scraper.console", *self.argv]

    def fingerprint(self, upstream: dict[str, str]) -> str:
        """What the stage's result depends on: its command and the runs of the stages before it."""
        data = json.dumps({"argv": self.argv, "after": {name: upstream.get(name) for name in self.after}})
        return hashlib.sha256(data.encode()).hexdigest()[:16]


@dataclass
class Options:
    """The build's choices (scraper.builder.command turns the command line into these)."""

    corpus: Path
    suites: list[str]
    repos: Optional[Path] = None
    debug_roots: list[Path] = field(default_factory=list)
    hours: Optional[float] = None
    device: Optional[str] = None  # cpu: the suites' workers and the check on the CPU (a dry run)
    backend: Optional[str] = None  # the suites' torch.compile backend (none: eager, for a dry run)
    gpus: Optional[str] = None
    workers_per_gpu: int = 1
    shard: Optional[tuple[int, int]] = None
    check: bool = True
    check_limit: Optional[int] = None
    check_timeout: Optional[float] = None
    timeout: Optional[float] = None  # seconds per suite model (default: the suite's, or half its budget)
    per_repo: Optional[int] = None
    token: bool = False  # GITHUB_TOKEN is set: discover repositories when no --repos is given


def make_plan(options: Options) -> list[Stage]:
    """Every stage of this build, in order."""
    corpus = options.corpus
    total = options.hours * 3600 if options.hours else None
    stages: list[Stage] = []
    downloads = downloads_folder(options)
    if downloads is not None:
        stages += repository_stages(options, downloads)
    for suite in options.suites:
        stages.append(suite_stage(options, suite, downloads, total))
    roots = [str(layout.suite_root(corpus, suite)) for suite in options.suites]
    roots += [str(root) for root in sharded_roots(options.debug_roots, options.shard)]
    if roots:
        stages.append(Stage("inductor", ["inductor", *roots, "-o", str(corpus / layout.KERNELS), "--keep-going",
                                         "-q"], after=[s.name for s in stages if s.name.startswith("suite:")]))
        if options.check:
            stages.append(check_stage(options, total))
    stages += dataset_stages(options, [s.name for s in stages])
    stages.append(Stage("report", ["report", str(corpus), "-q"], after=[s.name for s in stages], always=True))
    return stages


def downloads_folder(options: Options) -> Optional[Path]:
    """Where the repositories' archives and manifest are: --repos itself when it is a download folder (it holds
    a manifest.jsonl), else CORPUS/github (filled from --repos' checkouts, or by discovery with a token)."""
    if options.repos is not None and (options.repos / "manifest.jsonl").is_file():
        return options.repos
    if options.repos is not None or options.token:
        return options.corpus / layout.GITHUB
    return None


def repository_stages(options: Options, downloads: Path) -> list[Stage]:
    """github (unless --repos is a download folder already) and generate."""
    stages = []
    if downloads == options.corpus / layout.GITHUB:
        if options.repos is not None:
            local = [f"{path}={path.parent.name}/{path.name}" for path in checkouts(options.repos)]
            argv = ["scrape", "--local", *local, "-o", str(downloads), "-q"]
        else:
            argv = ["scrape", "-o", str(downloads), "-q"]
            if "modules" in options.suites:
                argv += ["--discover", "pytorch"]
        stages.append(Stage("github", argv))
    base = ["generate", "--download-dir", str(downloads), "-o", str(options.corpus / layout.GENERATED), "-q",
            "--keep-going"]
    if options.shard is None or options.shard[1] <= 1:
        stages.append(Stage("generate", base + ["--generate-all"], after=[s.name for s in stages]))
    else:  # this shard's archives: listed once the github stage has made them
        def shard_argv() -> Optional[list[str]]:
            archives = sharded_archives(downloads, options.shard)
            return base + [item for a in archives for item in ("--generate-one", str(a))] if archives else None

        stages.append(Stage("generate", base, after=[s.name for s in stages], later=shard_argv))
    return stages


def checkouts(repos: Path) -> list[Path]:
    """The repositories of a folder laid out as OWNER/NAME/ (examples/repos), sorted."""
    return sorted(path for owner in repos.iterdir() if owner.is_dir() for path in owner.iterdir() if path.is_dir())


def sharded_archives(downloads: Path, shard: tuple[int, int]) -> list[Path]:
    """The archives (and unpacked folders) of this shard, by a stable hash of the name."""
    if not downloads.is_dir():
        return []
    names = sorted(p for p in downloads.iterdir() if p.suffix == ".zip" or (p.is_dir() and not p.name.startswith(".")))
    return [p for p in names if in_shard(p.name, shard)]


def in_shard(name: str, shard: tuple[int, int]) -> bool:
    return zlib.crc32(name.encode()) % shard[1] == shard[0]


def sharded_roots(roots: list[Path], shard: Optional[tuple[int, int]]) -> list[Path]:
    """The --debug-root folders of this shard: with a shard, their run_* folders split by name (each holds whole
    graphs); a root without run_* folders goes to shard 0."""
    if shard is None or shard[1] <= 1:
        return list(roots)
    chosen = []
    for root in roots:
        runs = sorted(p for p in root.glob("run_*") if p.is_dir())
        if not runs:
            chosen += [root] if shard[0] == 0 else []
        chosen += [run for run in runs if in_shard(f"{root.name}/{run.name}", shard)]
    return chosen


def suite_stage(options: Options, suite: str, downloads: Optional[Path], total: Optional[float]) -> Stage:
    argv = ["suite", "--suite", suite, "-o", str(layout.suite_root(options.corpus, suite)), "-q"]
    seconds = None
    timeout = options.timeout
    if total:
        seconds = total * SUITE_SHARE / max(1, len(options.suites))
        argv += ["--time-budget", f"{seconds:.0f}"]
        # a model started just before the budget ends may run this long: half the budget keeps the plan
        timeout = timeout or max(60.0, seconds / 2)
        seconds += timeout
    argv += ["--timeout", f"{timeout:.0f}"] if timeout else []
    if suite == "modules":
        argv += ["--repos", str(downloads)] if downloads is not None else []
        argv += ["--per-repo", str(options.per_repo)] if options.per_repo else []
    argv += ["--device", options.device] if options.device else []
    argv += ["--backend", options.backend] if options.backend else []
    argv += ["--gpus", options.gpus] if options.gpus else []
    argv += ["--workers-per-gpu", str(options.workers_per_gpu)]
    if options.shard:
        argv += ["--shard", f"{options.shard[0]}/{options.shard[1]}"]
    after = ["generate"] if suite == "modules" and downloads is not None else []
    return Stage(f"suite:{suite}", argv, after=after, seconds=seconds, done_with=(0, 1))


def check_stage(options: Options, total: Optional[float]) -> Stage:
    argv = ["pairs", "check", str(options.corpus / layout.KERNELS / "pairs.jsonl"), "-q"]
    seconds = None
    if total:
        seconds = total * CHECK_SHARE
        argv += ["--time-budget", f"{seconds:.0f}"]
    argv += ["--device", options.device] if options.device else []
    # On the CPU the kernels are interpreted: their timing says nothing (speedups of 0.0x) and 20 runs of each side
    # made a kernel pair take 40-80 s instead of a few; the dry run judges correctness only.
    argv += ["--runs", "0", "--warmup", "0"] if options.device == "cpu" else []
    argv += ["--limit", str(options.check_limit)] if options.check_limit else []
    argv += ["--timeout", f"{options.check_timeout:.0f}"] if options.check_timeout else []
    return Stage("check", argv, after=["inductor"], seconds=seconds, done_with=(0, 1))


def dataset_stages(options: Options, before: list[str]) -> list[Stage]:
    """The three datasets: completion over every kernel, the checked pairs, the problems."""
    folder = options.corpus / layout.DATASETS
    kernels, generated = options.corpus / layout.KERNELS, options.corpus / layout.GENERATED
    completion_inputs = [str(path) for path, stage in ((kernels, "inductor"), (generated, "generate"))
                         if stage in before]
    stages = []
    if completion_inputs:
        stages.append(Stage(f"dataset:{COMPLETION}", ["dataset", *completion_inputs, "-o",
                                                      str(folder / layout.DATASET_FILES[COMPLETION]), "-q"],
                            after=before))
    if "inductor" in before:
        for task in (PAIRS, PROBLEMS):
            stages.append(Stage(f"dataset:{task}", ["dataset", str(kernels), "--task", task, "-o",
                                                    str(folder / layout.DATASET_FILES[task]), "-q"], after=before,
                                done_with=(0, 1)))  # 1: no row (no pair checked yet): an empty dataset
    return stages


def describe(stages: list[Stage], hours: Optional[float]) -> str:
    """What will run and roughly how long each part takes, printed before the build starts."""
    lines = [f"plan: {len(stages)} stages" + (f" within about {hours:g} h ({hours * 3600:.0f} s)" if hours else "")]
    for number, stage in enumerate(stages, 1):
        planned = f"about {stage.seconds:.0f} s" if stage.seconds else "as long as its input takes"
        lines.append(f"  {number:>2}. {stage.name:<20} {planned}")
    return "\n".join(lines)


def environment_token() -> bool:
    return bool(os.environ.get("GITHUB_TOKEN"))
