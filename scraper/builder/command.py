"""`triton-data build -o CORPUS`: every stage of the pipeline in order, each resumable, then the report.

    triton-data build -o corpus/ --hours 8                          # one GPU box for a working day
    triton-data build -o corpus/ --repos examples/repos --suites modules --debug-root tcd/ --device cpu --backend none
    triton-data build -o corpus_3/ --shard 3/8 ...                  # one node of a Slurm array (docs/build.md)
    triton-data build --merge corpus_* -o all/                      # the shards as one corpus

Stages (scraper/builder/plan.py): the repositories (--repos: a download folder, or checkouts laid out OWNER/NAME/;
without it, discovery on GitHub when GITHUB_TOKEN is set), the generator, each suite (--suites), extraction with
pairs and problems (with --debug-root folders of earlier runs), the pair check, the three datasets (completion,
checked pairs, problems) and the report (CORPUS/report.html). Each is the command a user would run by hand, its
output in its own folder of CORPUS (scraper/corpus.py), its log in CORPUS/logs/. The plan, with roughly how long each
part takes, is printed before anything runs (--plan: print it and stop). A killed or timed-out build, run again
with the same options, skips the stages it finished and resumes the one it was in (CORPUS/build.json).

Exit status: 0 every stage done; 1 a stage failed (the others that do not need it ran; a rerun retries it);
2 usage, or CORPUS holds files that are not a corpus (nothing is touched); 3 an input does not exist; 130
interrupted (a rerun resumes).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from scraper import corpus as layout
from scraper.builder import merge as merging
from scraper.builder import plan as planning
from scraper.builder import run as running
from scraper.cli import (EXIT_INTERRUPTED, EXIT_MISSING_INPUT, EXIT_NOTHING, EXIT_OK, EXIT_USAGE, add_logging_args,
                         setup_logging)

log = logging.getLogger("scraper.builder")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "triton-data build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="the corpus folder (made when missing; "
                        "an existing one must be a corpus: it holds build.json, or nothing)")
    what = parser.add_argument_group("inputs")
    what.add_argument("--suites", default="timm,huggingface", help="comma-separated suites to run: timm, "
                      "huggingface, torchbench, modules; 'none' for none (default: %(default)s)")
    what.add_argument("--repos", type=Path, help="repositories: a scrape_github.py download folder (with "
                      "manifest.jsonl), or a folder of checkouts laid out OWNER/NAME/ (ingested offline); without "
                      "it and with GITHUB_TOKEN set, repositories are discovered on GitHub")
    what.add_argument("--debug-root", type=Path, action="append", default=[], metavar="DIR",
                      help="a TORCH_COMPILE_DEBUG folder of an earlier run to extract too (repeatable)")
    what.add_argument("--per-repo", type=int, help="modules: at most this many classes per repository")
    how = parser.add_argument_group("how")
    how.add_argument("--hours", type=float, help="plan the time: the suites share 60%% of it (each starts no "
                     "model after its part), the pair check 25%%; the plan says what runs and for how long")
    how.add_argument("--device", choices=("cuda", "cpu"), help="the suites' workers and the pair check (cpu: a "
                     "dry run, kernels interpreted; default: cuda when there is a GPU)")
    how.add_argument("--backend", help="the suites' torch.compile backend (default: inductor; 'none': eager)")
    how.add_argument("--gpus", help="GPU ids for the suites (default: all visible; 'none' on a CPU machine)")
    how.add_argument("--workers-per-gpu", type=int, default=1, help="suite workers per GPU (default: %(default)s; "
                     "compiling is CPU work: 4-6 on a 16-core one-GPU machine)")
    how.add_argument("--shard", help="i/N: this machine's part of N (suites' models, repositories, --debug-root run "
                     "folders; 0-based), for a Slurm array: merge the shards with --merge")
    how.add_argument("--no-check", dest="check", action="store_false", help="no pair check (the pairs dataset "
                     "then holds no row: only checked pairs are exported)")
    how.add_argument("--check-limit", type=int, help="check at most the first N pairs")
    how.add_argument("--check-timeout", type=float, help="seconds per pair in the check (default: the check's)")
    how.add_argument("--timeout", type=float, help="seconds per suite model (default: the suite's; with --hours, "
                     "half a suite's part)")
    how.add_argument("--plan", action="store_true", help="print the plan and stop")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="CORPUS", help="union these shard corpora into "
                        "-o, then make its datasets and report")
    add_logging_args(parser)
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    setup_logging(args)
    corpus = args.output.resolve()
    refused = not_a_corpus(corpus)
    if refused:
        log.error("%s", refused)
        return EXIT_USAGE
    try:
        options = make_options(args, corpus)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    missing = [str(p) for p in [*(args.merge or []), options.repos, *options.debug_roots] if p and not p.exists()]
    if missing:
        log.error("not found: %s", ", ".join(missing))
        return EXIT_MISSING_INPUT
    stages = merged_stages(args, corpus) if args.merge else planning.make_plan(options)
    print(planning.describe(stages, options.hours), file=sys.stderr)
    if args.plan:
        return EXIT_OK
    corpus.mkdir(parents=True, exist_ok=True)
    state = running.read_state(corpus)
    running.save_state(corpus, state)  # the folder is a corpus from now on (a rerun may use it)
    try:
        if args.merge:
            counts = merging.merge([p.resolve() for p in args.merge], corpus)
            print(f"merged {len(args.merge)} shards: {counts}", file=sys.stderr)
        state = running.run_stages(corpus, stages, state, quiet=args.quiet)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(running.summary(corpus, state), file=sys.stderr)
    return EXIT_OK if state["finished"] else EXIT_NOTHING


def make_options(args: argparse.Namespace, corpus: Path) -> planning.Options:
    suites = [] if args.suites.strip() in ("", "none") else [s.strip() for s in args.suites.split(",")]
    unknown = [s for s in suites if s not in planning.SUITES]
    if unknown:
        raise ValueError(f"--suites: unknown {', '.join(unknown)} (known: {', '.join(planning.SUITES)})")
    return planning.Options(
        corpus=corpus, suites=suites, repos=args.repos.resolve() if args.repos else None,
        debug_roots=[p.resolve() for p in args.debug_root], hours=args.hours, device=args.device,
        backend=args.backend, gpus=args.gpus, workers_per_gpu=args.workers_per_gpu, shard=parse_shard(args.shard),
        check=args.check, check_limit=args.check_limit, check_timeout=args.check_timeout, timeout=args.timeout,
        per_repo=args.per_repo, token=planning.environment_token())


def parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    if not text:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: i must be in 0..N-1")
    return index, count


def merged_stages(args: argparse.Namespace, corpus: Path) -> list[planning.Stage]:
    """After a merge: the datasets over what the shards made, and the report."""
    made = {name for name, folder in (("inductor", layout.KERNELS), ("generate", layout.GENERATED))
            if any((shard / folder).is_dir() for shard in args.merge)}
    options = planning.Options(corpus=corpus, suites=[])
    stages = planning.dataset_stages(options, sorted(made))
    stages.append(planning.Stage("report", ["report", str(corpus), "-q"], after=[s.name for s in stages],
                                 always=True))
    return stages


def not_a_corpus(corpus: Path) -> Optional[str]:
    """Why -o must not be used: it is a file, or a folder of other files (files are never clobbered)."""
    if corpus.exists() and not corpus.is_dir():
        return f"-o {corpus}: not a folder"
    if corpus.is_dir() and any(corpus.iterdir()) and not (corpus / layout.BUILD).exists():
        return f"-o {corpus}: a folder that holds files but no {layout.BUILD}: not a corpus, nothing was touched"
    return None


if __name__ == "__main__":
    sys.exit(main())
