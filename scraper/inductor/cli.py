"""Extract every Triton kernel from PyTorch Inductor debug folders (TORCH_COMPILE_DEBUG=1).

Reads the kernel text embedded in each output_code.py (the Inductor cache files named in '# kernel path:'
comments are only a fallback) and writes <output>/<model>/<graph>/ with output_code.py, fx_graph_readable.py
and kernels/<name>.py (clean: no @triton_heuristics decorator, no GPU-only statements, so it imports on a
CPU-only machine), plus kernels.jsonl (one record per kernel), stats.json and rejects.jsonl.

Nothing is executed and no network is used (with --validate, each kernel module is checked in sandboxed worker
processes: see docs/validate.md). Token counts are not computed here (create_json.py counts them).
Debug folders made by run_inductor_suite.py (with a suite/ manifest) also give each kernel its PyTorch side:
the model, its program file and accuracy check under extra["pytorch"] (docs/suite.md).
Each graph also becomes a PyTorch -> Triton pair in pairs.jsonl (KernelBook's columns: python_code, a
KernelBench-form problem; triton_code, the kernels, call(args) and class ModelNew), and every suite model a
reference problem in problems/ (docs/pairs.md).
Rerunning on the same input gives the same output; a graph whose name another run already holds goes to
<graph>-<hash>. Exit status (README): 0; 1 when no output_code.py was found; 2 when the output cannot be
written; 3 when an input does not exist (unless --keep-going; when none exists nothing is written); 130 when
interrupted. See docs/inductor.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from scraper.cli import (EXIT_MISSING_INPUT, EXIT_USAGE, add_keep_going, add_logging_args, exit_status, interruptible,
                         setup_logging)
from scraper.fileio import claim_output, first_object
from scraper.inductor.attach import AttachStep
from scraper.inductor.layout import OUTPUT_CODE
from scraper.inductor.stage import GRAPHS_DONE
from scraper.inductor.unit import records_step
from scraper.pairs.build import PairStep
from scraper.paths import DEFAULT_INDUCTOR_DIR, DEFAULTS_RULE
from scraper.pairs.record import PROBLEMS_DIR
from scraper.records import KERNELS, PAIRS, PAIRS_REJECTS
from scraper.stats import REJECTS, STATS
from scraper.validate import VALIDATE_CACHE, add_validate_args, validator_from_args

# What this stage writes directly in its output folder (graph folders are claimed by their provenance.json).
OUTPUT_FILES = (KERNELS, STATS, REJECTS, PAIRS, PAIRS_REJECTS, PROBLEMS_DIR, VALIDATE_CACHE, GRAPHS_DONE)


def earlier_inductor_output(folder: Path) -> bool:
    """A folder an earlier version of this stage wrote (before .triton-data.json): its kernels.jsonl holds
    Inductor records."""
    first = first_object(folder / KERNELS)
    return first is not None and first.get("source") == "inductor"


def parse_args(argv=None, prog: Optional[str] = None) -> argparse.Namespace:
    """The command line (see --help); `prog`: the command's name in usage lines (default: the script's)."""
    parser = argparse.ArgumentParser(prog=prog or "get_kernels_from_debug_info.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="torch_compile_debug",
                        help="debug folder(s) or output_code.py file(s); every output_code.py below is read")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_INDUCTOR_DIR,
                        help=f"output folder (default: %(default)s; {DEFAULTS_RULE})")
    add_validate_args(parser)
    add_keep_going(parser)
    add_logging_args(parser)
    return parser.parse_args(argv)


@interruptible
def main(argv=None, prog: Optional[str] = None) -> int:
    """Run the Inductor stage; returns the exit status."""
    args = parse_args(argv, prog)
    setup_logging(args)
    from scraper.inductor import extract_kernels
    from scraper.stats import Stats

    stats = Stats("inductor")
    missing = missing_inputs(args.inputs)
    if len(missing) == len(args.inputs):  # nothing to read: leave the output folder as it is
        print(f"error: no input exists: {', '.join(map(str, missing))} (nothing written)", file=sys.stderr)
        return EXIT_MISSING_INPUT
    try:
        claim_output(args.output, "inductor", OUTPUT_FILES, adopt=earlier_inductor_output)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The chain over graphs: extract -> attach the PyTorch side -> pair -> validate -> write (kernels.jsonl and
    # pairs.jsonl as they stream); the pair step writes problems/ when the chain is done.
    pairs = PairStep(args.inputs, args.output, stats)
    steps = [AttachStep(args.inputs, stats), pairs]
    validator = validator_from_args(args, stats, default_cache=str(args.output / VALIDATE_CACHE))
    try:
        if validator is not None:
            steps.append(records_step(validator.run))
        # a graph finished earlier is kept only when it was checked to the same level
        extract_kernels(args.inputs, args.output, stats, steps, options=f"validate={args.validate}")
        pairs.close()
    except OSError as exc:  # the output folder cannot be made or written
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        validator is not None and validator.close()
    if validator is not None:
        stats.extra["validation"] = validator.fractions()
    stats.save(args.output / STATS)
    print(stats.summary(), file=sys.stderr)
    graphs = stats.output_counts()["graphs"]  # done now or kept as an earlier run finished them
    if not graphs:
        print(f"error: no {OUTPUT_CODE} found below {', '.join(map(str, args.inputs))}", file=sys.stderr)
    return exit_status(bool(graphs), len(missing), args.keep_going)


def missing_inputs(inputs: list[Path]) -> list[Path]:
    """The inputs that cannot be read as debug folders: they do not exist, or are files other than an
    output_code.py (exit status 3; an existing folder without output_code.py is "nothing found", 1)."""
    return [path for path in inputs if not path.exists() or (path.is_file() and path.name != OUTPUT_CODE)]
