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
from typing import Optional

from scraper.cli import add_logging_args, deprecated_alias, interruptible, setup_logging
from scraper.records import atomic_write_json
from scraper.sandbox import SandboxUnavailable
from scraper.stats import Stats
from scraper.validate.api import LEVELS, VALIDATE_CACHE, add_validate_args, options_from_args, validate_manifest

log = logging.getLogger("scraper.validate")


def parse_args(argv=None, prog: Optional[str] = None) -> argparse.Namespace:
    """Command-line options: the stages' validate flags (--validate LEVEL, --validate-jobs, ...), the older
    names of this command (--level, --jobs, --timeout, --memory-mb, --cache) kept as deprecated aliases."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m scraper.validate",
        description="Check every kernel of a kernels.jsonl manifest: parses (ast), imports (runs the module in a "
                    "sandboxed process, TRITON_INTERPRET=1, time/memory limits, no network, scratch dir) and "
                    "compiles (triton.compile to PTX for sm_90 on the CPU, for kernels with a known signature). "
                    "Fills parses/imports/compiles/validation and writes the manifest again atomically (lines that are "
                    "not records are kept as they are).")
    parser.add_argument("manifest", type=Path, help="a kernels.jsonl written by one of the stages")
    add_validate_args(parser)
    parser.set_defaults(validate="compiles")
    parser.add_argument("--no-cache", action="store_true", help="check everything again, write no cache")
    for old, new, dest, kind in (("--level", "--validate", "validate", str), ("--jobs", "--validate-jobs",
                                 "validate_jobs", int), ("-j", "--validate-jobs", "validate_jobs", int),
                                 ("--timeout", "--validate-timeout", "validate_timeout", float),
                                 ("--memory-mb", "--validate-memory-mb", "validate_memory_mb", int),
                                 ("--cache", "--validate-cache", "validate_cache", str)):
        deprecated_alias(parser, old, new, dest, type=kind)
    add_logging_args(parser)
    args = parser.parse_args(argv)
    if args.validate not in LEVELS:
        parser.error(f"--validate/--level must be one of {', '.join(LEVELS)}")
    return args


@interruptible
def main(argv=None, prog: Optional[str] = None) -> int:
    """Validate one manifest in place. Exit status 0 when it was processed (failed kernels are results), 2 when
    the manifest cannot be read or the sandbox cannot run (without --unsafe-no-sandbox)."""
    args = parse_args(argv, prog)
    setup_logging(args)
    if not args.manifest.is_file():
        log.error("no such manifest: %s", args.manifest)
        return 2
    folder = args.manifest.parent
    stats = Stats("validate")
    options = options_from_args(args, str(folder / VALIDATE_CACHE))
    if args.no_cache:
        options["cache_path"] = None
    try:
        fractions = validate_manifest(args.manifest, stats, **options)
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
