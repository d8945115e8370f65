"""Merge kernel manifests into a deduplicated torchtune text-completion dataset (stage 3).

    python create_json.py inductor_kernels scraper/generator/generated   # -> datasets/triton_functions.json
    python create_json.py inductor_kernels --task pairs      # PyTorch -> Triton pairs -> datasets/triton_pairs.json
    python create_json.py inductor_kernels --task problems   # KernelBench problems -> datasets/triton_problems.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import dataclasses

from scraper.cli import (EXIT_MISSING_INPUT, EXIT_NOTHING, EXIT_USAGE, add_keep_going, add_logging_args, exit_status,
                         interruptible, setup_logging)
from scraper.dataset import decontam, dedup, filters, outputs, tasks, tokens, write
from scraper.dataset.pipeline import BuildResult, Options, build, torchtune_snippet
from scraper.paths import DEFAULT_GENERATED_DIR, DEFAULT_INDUCTOR_DIR, DEFAULTS_RULE
from scraper.validate import add_validate_args, level_fractions, meets, validate_from_args


DEFAULT_INPUTS = [str(DEFAULT_INDUCTOR_DIR), str(DEFAULT_GENERATED_DIR)]  # stage 1's and stage 2b's defaults


def parse_args(argv=None, prog: Optional[str] = None) -> argparse.Namespace:
    """The command line (see --help); `prog`: the command's name in usage lines (default: the script's)."""
    parser = argparse.ArgumentParser(
        prog=prog or "create_json.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes beside the output: <name>.train.<ext> and <name>.validation.<ext> (one file per split),\n"
               "kernels.jsonl (kept records with full provenance), stats.json, rejects.jsonl (every dropped kernel\n"
               "with its reason; duplicates with the id they duplicate), README.md (dataset card), token_lengths.png.\n"
               "A run replaces only files create_json.py wrote; a README.md of anyone else's is left alone.\n"
               "Counts go to stderr; the torchtune config for the training split to stdout. Exit status: 0; 1 when\n"
               "no kernel is left (an empty dataset); 2 on an unusable --tokenizer or output (a file of someone\n"
               "else's, a name whose extension is not the format's); 3 when an input is missing (unless\n"
               "--keep-going; when every input is missing nothing is written); 130 when interrupted.\n"
               f"{DEFAULTS_RULE.capitalize()}. See docs/dataset.md.")
    parser.add_argument("inputs", nargs="*",
                        help="folders with a kernels.jsonl (or kernels.jsonl files); a folder without one is "
                             "scanned for @triton.jit kernels in its .py files "
                             f"(default: {' '.join(DEFAULT_INPUTS)})")
    parser.add_argument("-o", "--output", type=str,
                        help="the output file (its extension the format's: .json, .jsonl, .parquet), or a folder "
                             "(a trailing '/', or one that exists) to write triton_functions.<format> into "
                             f"(default: {outputs.DEFAULT_FOLDER}/triton_functions.<format>); it is created, and a "
                             "run replaces only files create_json.py wrote there: a file of anyone else's is refused "
                             "(exit 2)")
    parser.add_argument("--format", dest="fmt", choices=write.FORMATS, default=None,
                        help="json: one JSON array (torchtune's local-file example); jsonl: one row per line (for "
                             "large sets: the JSON loader reads a whole array into memory); parquet. Default: the "
                             "extension of the -o file, else json")
    parser.add_argument("--task", choices=("completion", "pairs", "problems"), default="completion",
                        help="completion: kernel text rows (default); pairs: python_code -> triton_code rows from "
                             "the inputs' pairs.jsonl (KernelBook's columns, for torchtune's instruct dataset); "
                             "problems: the KernelBench-form problems of the inputs' problems/ (docs/pairs.md)")
    parser.add_argument("--with-reference", action="store_true",
                        help="completion: put the PyTorch a kernel implements (ATen ops, graph fragment) above it "
                             "as comments")
    parser.add_argument("--with-launcher", action="store_true",
                        help="completion: the whole operator where the generator found one: the host code that "
                             "launches the kernel (grid, strides, block sizes, output allocation) with the kernel")
    parser.add_argument("--drop-helpers", action="store_true",
                        help="completion: no rows for jit helpers only other jit functions call (their code is "
                             "already inside the modules of the kernels that call them)")
    parser.add_argument("--dialect", choices=("any", "triton", "gluon"), default="any",
                        help="completion: only kernels of this Triton dialect (gluon: triton.experimental.gluon; "
                             "default: any)")
    parser.add_argument("--column", default="text", help="name of the text column (e.g. 'input'; default: text)")
    parser.add_argument("--no-fence", dest="fenced", action="store_false",
                        help="write the bare code instead of wrapping it in ```python ... ```")
    parser.add_argument("--near-threshold", type=float, default=dedup.DEFAULT_THRESHOLD,
                        help="Jaccard similarity (5-token shingles, MinHash LSH) at which two kernels are near "
                             f"duplicates; 0 turns near dedup off (default: {dedup.DEFAULT_THRESHOLD})")
    parser.add_argument("--license", default="any",
                        help="'any' (default), 'permissive' (an SPDX allowlist; unknown license is not "
                             "permissive) or a comma-separated list of SPDX ids")
    parser.add_argument("--max-tokens", type=int,
                        help="drop rows whose text has more tokens than this (default: no limit; --task pairs: "
                             f"{tasks.DEFAULT_MAX_TOKENS} for python_code + triton_code)")
    parser.add_argument("--pair-level", default=",".join(tasks.DEFAULT_PAIR_LEVELS), metavar="LEVELS",
                        help="--task pairs: the levels to export, comma-separated: kernel (one fused Triton kernel "
                             "and the FX nodes it fuses), module (a scraped nn.Module and the Triton of its graph), "
                             "model (any suite model: library ones build timm/transformers models, so their "
                             "python_code holds no computation; module included), graph (the ATen graph); "
                             f"default: {','.join(tasks.DEFAULT_PAIR_LEVELS)}")
    parser.add_argument("--include-unchecked", action="store_true",
                        help="--task pairs: export pairs the GPU check has not passed yet too (pair_correct null; "
                             "default: only pair_correct true; a failed check is never exported)")
    parser.add_argument("--min-lines", type=int, help="drop kernels with fewer non-blank lines than this")
    parser.add_argument("--tokenizer", help="tokenizer.json (Hugging Face tokenizers) for token counts; "
                                            "default: an estimate of one token per 4 characters")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of groups (repositories / models) in the validation split (default: 0.05)")
    parser.add_argument("--decontaminate", action="extend", nargs=1, default=[], metavar="PATH",
                        help="an evaluation-set file or folder (.py, kernels.jsonl): drop kernels matching it; "
                             "repeat the flag for several")
    parser.add_argument("--decontaminate-threshold", type=float, default=decontam.DEFAULT_THRESHOLD,
                        help=f"Jaccard similarity for a near match (default: {decontam.DEFAULT_THRESHOLD})")
    parser.add_argument("--no-card", dest="card", action="store_false",
                        help="do not write README.md and token_lengths.png")
    parser.add_argument("--require", choices=("parses", "imports", "compiles"),
                        help="keep only kernels that pass this verification level (and those below it); kernels "
                             "the earlier stages did not check at that level are checked now, in the sandbox. "
                             "compiles keeps only kernels with a known signature (Inductor's)")
    add_validate_args(parser)
    add_keep_going(parser)
    add_logging_args(parser)
    args = parser.parse_args(argv)
    args.fmt = args.fmt or outputs.format_of(args.output, write.FORMATS) or "json"
    mismatch = outputs.format_mismatch(args.output, args.fmt)
    if mismatch:
        parser.error(mismatch)
    # argparse gives [] (not the default) for an absent nargs="*" positional: no input named means the defaults,
    # which may not all exist (that is no missing input)
    args.defaulted = not args.inputs
    args.inputs = DEFAULT_INPUTS if args.defaulted else args.inputs
    if args.require and not args.validate:
        args.validate = args.require
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max-tokens must be at least 1")
    if args.min_lines is not None and args.min_lines < 0:
        parser.error("--min-lines must not be negative")
    levels = tuple(level.strip() for level in args.pair_level.split(",") if level.strip())
    unknown = sorted(set(levels) - set(tasks.PAIR_LEVELS))
    if unknown or not levels:
        parser.error(f"--pair-level: {', '.join(unknown) or 'none given'}; choose from {', '.join(tasks.PAIR_LEVELS)}")
    args.pair_levels = levels
    if args.max_tokens is None and args.task == "pairs":
        args.max_tokens = tasks.DEFAULT_MAX_TOKENS
    if args.column in write.METADATA:  # the metadata column would overwrite the text
        parser.error(f"--column {args.column!r} is a metadata column; choose another name (e.g. text, input)")
    if not 0 <= args.val_fraction <= 1:
        parser.error("--val-fraction must be between 0 and 1")
    if not 0 <= args.near_threshold <= 1 or not 0 < args.decontaminate_threshold <= 1:
        parser.error("thresholds must be between 0 and 1")
    return args


def headline(counts: dict, out: dict) -> str:
    """One line: in, duplicates, filtered, out per split and source (`out`: {split: {source: rows}})."""
    duplicates = counts.get("dropped_exact_duplicate", 0) + counts.get("dropped_near_duplicate", 0)
    filtered = sum(v for k, v in counts.items() if k.startswith("dropped_")) - duplicates
    per_split = []
    for split in ("train", "validation"):
        sources = ", ".join(f"{source} {rows}" for source, rows in sorted(out.get(split, {}).items()))
        per_split.append(f"{split} {counts.get(f'out_{split}', 0)}" + (f" ({sources})" if sources else ""))
    return (f"in {counts.get('in_records', 0)}, duplicates {duplicates} (exact "
            f"{counts.get('dropped_exact_duplicate', 0)}, near {counts.get('dropped_near_duplicate', 0)}), "
            f"filtered {filtered}, out {counts.get('out_rows', 0)}: " + "; ".join(per_split))


def validate_unchecked(records: list, args: argparse.Namespace, stats, folder: Path) -> None:
    """Check, up to --validate's level, the records an earlier stage has not checked that far (cache in
    `folder`); then keep the fraction at each level by source for stats.json."""
    unchecked = [r for r in records if getattr(r, args.validate) is None]
    validate_from_args(unchecked, args, stats=stats, default_cache=str(folder / "validate_cache.jsonl"))
    stats.extra["validation"] = level_fractions(records)


def options_from(args: argparse.Namespace) -> Options:
    """The build's options from the command line (--validate and --require as the completion task's steps)."""
    known = {f.name for f in dataclasses.fields(Options)}
    options = Options(**{k: v for k, v in vars(args).items() if k in known})
    if args.task == "completion" and args.validate:
        folder = options.output_path().parent
        options.validate = lambda records, stats: validate_unchecked(records, args, stats, folder)
    if args.task == "completion" and args.require:
        options.require_checks = [filters.requirement_check(args.require, meets)]
    return options


@interruptible
def main(argv=None, prog: Optional[str] = None) -> int:
    """Build the dataset of --task; returns the exit status."""
    args = parse_args(argv, prog)
    setup_logging(args)
    refused = no_input_status(args)
    if refused is not None:
        return refused
    try:
        result = build(tasks.TASKS[args.task], options_from(args))
    # A --tokenizer path that is missing or unreadable, an output folder that cannot be made or written.
    except (OSError, tokens.TokenizerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(result.stats.summary(), file=sys.stderr)
    if args.task == "completion":
        return said_completion(args, result)
    return said_task(args, result)


def said_completion(args: argparse.Namespace, result: BuildResult) -> int:
    """The completion build's counts, and the torchtune snippet; the exit status."""
    print(headline(result.stats.counts, result.stats.extra.get("out", {})), file=sys.stderr)
    print(f"wrote {len(result.rows)} rows to {result.output}", file=sys.stderr)
    if not result.rows:  # an empty file loads in neither torchtune nor `datasets`: say so rather than a snippet
        print(f"error: no kernel is left of {looked_in(args)}: nothing to train on (see stats.json and "
              "rejects.jsonl beside the output)", file=sys.stderr)
        return exit_status(False, missing_inputs(args), args.keep_going)
    print("\n# torchtune config for the training split:", file=sys.stderr)
    print(torchtune_snippet(result.split_files["train"], args.fmt, args.column))
    return exit_status(True, missing_inputs(args), args.keep_going)


def said_task(args: argparse.Namespace, result: BuildResult) -> int:
    """--task pairs / problems: the counts and (pairs) the torchtune snippet; the exit status."""
    print(f"wrote {len(result.rows)} rows to {result.output}", file=sys.stderr)
    if args.task == "pairs":
        print(tasks.left_out_line(result.stats.counts), file=sys.stderr)
    if not result.rows:
        print(f"error: no {args.task} row is left of {looked_in(args)} (see the stats and rejects beside the "
              "output)", file=sys.stderr)
        if args.task == "pairs" and result.stats.counts.get("dropped_unchecked"):
            print("  (pairs are exported once the GPU check passed them: python -m scraper.pairs.check "
                  "<pairs.jsonl> on a GPU machine; --include-unchecked exports them unchecked)", file=sys.stderr)
        return exit_status(False, missing_inputs(args), args.keep_going)
    train = result.split_files["train"]
    print(f'# datasets: load_dataset("json", data_files="{train}", split="train")', file=sys.stderr)
    if args.task == "pairs":
        print("\n# torchtune config for the training split:", file=sys.stderr)
        print(tasks.torchtune_pairs_snippet(train, args.fmt))
    return exit_status(True, missing_inputs(args), args.keep_going)


def looked_in(args: argparse.Namespace) -> str:
    """The inputs read, for a "nothing found" message: `the default inputs A, B` or `A, B`."""
    return ("the default inputs " if args.defaulted else "") + ", ".join(map(str, args.inputs))


def no_input_status(args: argparse.Namespace) -> Optional[int]:
    """The exit status when no input exists, before anything is written (an empty dataset and its card over an
    earlier one would only hide the mistake); None when there is something to read. Given inputs: 3; the
    defaults: 1 (nothing was produced upstream yet)."""
    if any(Path(path).exists() for path in args.inputs):
        return None
    if args.defaulted:
        print(f"error: no input given, and none of the default inputs exists: {', '.join(args.inputs)} (run "
              "stages 1 and 2 first, or name folders holding a kernels.jsonl)", file=sys.stderr)
        return EXIT_NOTHING
    print(f"error: no input exists: {', '.join(map(str, args.inputs))} (nothing written)", file=sys.stderr)
    return EXIT_MISSING_INPUT


def missing_inputs(args: argparse.Namespace) -> int:
    """How many of the inputs given do not exist (reported as `load` errors; they make the exit status 3)."""
    return 0 if args.defaulted else sum(not Path(path).exists() for path in args.inputs)
