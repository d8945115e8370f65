"""`python -m scraper.validate path/to/kernels.jsonl`: validate a manifest and write it again, once, atomically.

Lines of the manifest that are not records stay in it as they were. Beside the manifest it writes
validate_stats.json (counters, grouped errors, fractions per source), validate_rejects.jsonl (the lines that are
not records, with their numbers) and, by
default, validate_cache.jsonl (results by record id, so a rerun only checks what changed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from scraper.cli import add_logging_args, setup_logging
from scraper.records import atomic_write_json
from scraper.sandbox import SandboxUnavailable
from scraper.stats import Stats
from scraper.validate.api import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, LEVELS, VALIDATE_CACHE, validate_manifest

log = logging.getLogger("scraper.validate")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m scraper.validate",
        description="Check every kernel of a kernels.jsonl manifest: parses (ast), imports (runs the module in a "
                    "sandboxed process, TRITON_INTERPRET=1, time/memory limits, no network, scratch dir) and "
                    "compiles (triton.compile to PTX for sm_90 on the CPU, for kernels with a known signature). "
                    "Fills parses/imports/compiles/validation and writes the manifest again atomically (lines that are "
                    "not records are kept as they are).")
    parser.add_argument("manifest", type=Path, help="a kernels.jsonl written by one of the stages")
    parser.add_argument("--level", choices=LEVELS, default="compiles",
                        help="highest level to check (default: compiles)")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="sandbox workers (default: cores)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per check before it is killed (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                        help=f"memory a module may allocate, RLIMIT_AS on top of the worker (default "
                             f"{DEFAULT_MEMORY_MB})")
    parser.add_argument("--cache", type=Path, default=None,
                        help="result cache (default: validate_cache.jsonl beside the manifest)")
    parser.add_argument("--no-cache", action="store_true", help="check everything again, write no cache")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run imports/compiles even where the bubblewrap sandbox cannot run (scraped code "
                             "could then read your files); without it they are refused there")
    add_logging_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Validate one manifest in place. Exit status 0 when it was processed (failed kernels are results), 2 when
    the manifest cannot be read or the sandbox cannot run (without --unsafe-no-sandbox)."""
    args = parse_args(argv)
    setup_logging(args)
    if not args.manifest.is_file():
        log.error("no such manifest: %s", args.manifest)
        return 2
    folder = args.manifest.parent
    stats = Stats("validate")
    cache = None if args.no_cache else (args.cache or folder / VALIDATE_CACHE)
    try:
        fractions = validate_manifest(args.manifest, stats, levels=(args.level,), jobs=args.jobs,
                                      timeout=args.timeout, memory_mb=args.memory_mb, cache_path=cache,
                                      unsafe_no_sandbox=args.unsafe_no_sandbox)
    except SandboxUnavailable as exc:
        log.error("%s", exc)
        return 2
    stats.extra.pop("validation")  # this command reports them as "fractions", below
    stats.inc("records", sum(source["records"] for source in fractions.values()))
    summary = stats.to_dict()
    summary["fractions"] = fractions
    atomic_write_json(folder / "validate_stats.json", summary)
    print(stats.summary(), file=sys.stderr)
    print("fractions by source: " + json.dumps(fractions), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
