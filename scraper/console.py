"""`triton-data`: one command line for every stage of the pipeline.

    triton-data suite      ...   stage 0, run_inductor_suite.py            (GPU machine)
    triton-data inductor   ...   stage 1, get_kernels_from_debug_info.py
    triton-data scrape     ...   stage 2a, scrape_github.py
    triton-data generate   ...   stage 2b, scraper/generator/main.py
    triton-data dataset    ...   stage 3, create_json.py
    triton-data validate   ...   python -m scraper.validate
    triton-data pairs check ...  python -m scraper.pairs.check             (GPU machine; --device cpu: dry run)
    triton-data report CORPUS    python -m scraper.report.command          (CORPUS/report.html, report.json)
    triton-data build -o CORPUS  every stage above in order, resumable       (scraper/builder/)
Each subcommand takes exactly the options of the script it names (`triton-data <command> --help`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

from scraper.cli import EXIT_USAGE, version

COMMANDS = {  # subcommand -> (module holding its main(argv), what it does)
    "suite": ("scraper.suite.command", "compile model suites into Inductor debug folders (GPU)"),
    "inductor": ("scraper.inductor.cli", "every Triton kernel of Inductor debug folders -> inductor_kernels/"),
    "scrape": ("scraper.github.cli", "download GitHub repositories with Triton kernels, pinned to a commit"),
    "generate": ("scraper.generator.main", "cut every jit kernel out of downloaded repositories"),
    "dataset": ("scraper.dataset.cli", "merge, deduplicate and split into a torchtune dataset"),
    "validate": ("scraper.validate.__main__", "check the kernels of a kernels.jsonl in the sandbox"),
    "pairs": ("scraper.pairs.command", "pairs check: each pair's Triton against its PyTorch (GPU), pair_correct"),
    "build": ("scraper.builder.command", "every stage in order into one corpus, resumable; --shard i/N, --merge"),
    "report": ("scraper.report.command", "one HTML page (and report.json) of a corpus's figures, stage by stage"),
}


def usage() -> str:
    """The list of subcommands."""
    width = max(map(len, COMMANDS))
    lines = ["usage: triton-data <command> [options]   (triton-data <command> --help)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines + ["", "  --version  the installed version"])


def main(argv: Optional[list[str]] = None) -> int:
    """Dispatch to the stage named by the first argument; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
        print(f"triton-data {version()}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"triton-data: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(COMMANDS[argv[0]][0])
    # prog: --help and usage errors name the command typed (`triton-data dataset`), not the script's file name
    return module.main(argv[1:], prog=f"triton-data {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
