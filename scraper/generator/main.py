#!/usr/bin/env python
"""Cut every Triton jit kernel out of downloaded repositories, each with its static dependency closure.

    cd scraper/generator && python main.py --generate-all
    python scraper/generator/main.py --generate-one path/to/owner__repo.zip   # or a directory (local clone)

Reads the zip archives (GitHub zipball layout) and directories in --download-dir, writes one self-contained
module per kernel under --output/<owner>__<repo>/<path in repo>/<kernel>.py, and kernels.jsonl (one
KernelRecord per kernel), stats.json, errors.csv, rejects.jsonl and archives.jsonl (finished archives, so a rerun
resumes) beside them. Scraped code is parsed, never imported or executed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
if str(REPO_ROOT) not in sys.path:  # runnable as `cd scraper/generator && python main.py`
    sys.path.insert(0, str(REPO_ROOT))

from scraper.cli import (  # noqa: E402
    EXIT_MISSING_INPUT, EXIT_NOTHING, EXIT_USAGE, add_keep_going, add_logging_args, default_jobs, deprecated_alias,
    exit_status, interruptible, setup_logging)
from scraper.paths import DEFAULT_DOWNLOAD_DIR, DEFAULT_GENERATED_DIR, DEFAULTS_RULE  # noqa: E402
from scraper.generator.repoindex import DEFAULT_ALLOWED_IMPORTS  # noqa: E402
from scraper.generator.provenance import load_manifest  # noqa: E402
from scraper.generator.run import (  # noqa: E402
    STAGE, WORKER_MEMORY_MB, clean_output, load_done, output_folder, run)
from scraper.repos import list_archives  # noqa: E402
from scraper.sandbox import SandboxUnavailable  # noqa: E402
from scraper.stats import STATS, Stats  # noqa: E402
from scraper.validate import VALIDATE_CACHE, add_validate_args, validator_from_args  # noqa: E402

log = logging.getLogger("scraper.generator.main")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line (see --help); `prog`: the command's name in usage lines (default: the script's)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog="Without --generate-all or --generate-one nothing is done. Reruns skip archives already in "
               "archives.jsonl (same size and mtime); --force redoes them, --clean starts from an empty output.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--generate-all", action="store_true", help="process every .zip and directory in --download-dir")
    what.add_argument("--generate-one", metavar="ZIP_OR_DIR", action="append",
                      help="process this archive or directory (repeatable)")
    parser.add_argument("--download-dir", type=Path, default=DEFAULT_DOWNLOAD_DIR,
                        help="archives from scrape_github.py, with manifest.jsonl (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_GENERATED_DIR,
                        help=f"output folder for modules and kernels.jsonl (default: %(default)s; {DEFAULTS_RULE})")
    deprecated_alias(parser, "--tests-dir", "-o/--output", "output", type=Path)
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="worker processes, one repository each (default: cores = %(default)s)")
    parser.add_argument("--worker-memory-mb", type=int, default=WORKER_MEMORY_MB, metavar="MB",
                        help="memory each worker process may map beyond what it starts with (RLIMIT_AS; a "
                             "repository past it is its own counted error; 0: no limit; default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="process at most N archives (after sorting by name)")
    parser.add_argument("--force", action="store_true", help="redo archives already done")
    parser.add_argument("--clean", action="store_true", help="delete earlier output (README.md kept) first")
    parser.add_argument("--allow-import", action="append", default=[], metavar="MODULE",
                        help="another top-level library generated modules may import (besides the standard "
                             "library, torch, triton, numpy); repeatable")
    add_validate_args(parser)
    add_keep_going(parser)
    add_logging_args(parser)
    return parser


@interruptible
def main(argv=None, prog: Optional[str] = None) -> int:
    """Run the generator; returns the exit status (README: 1 when no kernel was found, 2 on bad arguments or an
    output folder of someone else's, 3 when an archive given with --generate-one is missing)."""
    args = build_parser(prog).parse_args(argv)
    setup_logging(args)
    if args.jobs < 1 or (args.limit is not None and args.limit < 0):
        log.error("--jobs must be >= 1 and --limit >= 0")
        return EXIT_USAGE
    if args.generate_all:
        if not args.download_dir.is_dir():
            log.error("download folder %s does not exist (run scrape_github.py first)", args.download_dir)
            return EXIT_MISSING_INPUT
        locations = list_archives(args.download_dir)
        manifest = load_manifest(args.download_dir)
    else:
        locations = [Path(p) for p in args.generate_one]
        manifest = {}
        for parent in {p.parent for p in locations}:
            manifest.update(load_manifest(parent))
    locations = locations[: args.limit] if args.limit is not None else locations
    missing = [location for location in locations if not location.exists()]
    for location in missing:
        log.error("%s does not exist", location)
    locations = [location for location in locations if location.exists()]
    if missing and not locations:  # nothing to read: leave the output folder as it is
        log.error("no archive or folder to read exists (nothing written)")
        return EXIT_MISSING_INPUT
    if not locations:
        log.error("no archive or folder in %s (run scrape_github.py first)", args.download_dir)
        return EXIT_NOTHING
    try:
        if args.clean:
            clean_output(args.output)
        output_folder(args.output)
    except (FileExistsError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    allowed = DEFAULT_ALLOWED_IMPORTS | {m.split(".")[0] for m in args.allow_import}
    log.info("%d repositories to read, %d listed in the manifest", len(locations), len(manifest))
    stats = Stats(STAGE)
    # The chain: read and cut out (workers) -> validate -> append to kernels.jsonl, one repository at a time.
    validator = validator_from_args(args, stats, default_cache=str(args.output / VALIDATE_CACHE))
    try:
        run(locations, args.output, manifest, args.jobs, force=args.force, allowed_imports=allowed,
            steps=[validator.run] if validator else [], stats=stats, validated=args.validate,
            memory_mb=args.worker_memory_mb)
    except SandboxUnavailable as exc:  # the validate workers cannot start: a failure of the run, not of kernels
        log.error("%s", exc)
        return EXIT_USAGE
    finally:
        validator is not None and validator.close()
    if validator is not None:
        stats.extra["validation"] = validator.fractions()
        stats.save(args.output / STATS)  # now with the fraction at each level
    print(stats.summary(), file=sys.stderr)
    log.info("output in %s", args.output)
    produced = produced_kernels(stats, args.output, locations)
    if not produced:
        log.error("no kernel found in %s", ", ".join(map(str, locations)))
    return exit_status(produced, len(missing), args.keep_going)


def produced_kernels(stats: Stats, output: Path, locations: list[Path]) -> bool:
    """Whether the archives of this run have kernels in the output: cut out now, or by an earlier run of an
    archive skipped as done (a repository without a jit kernel is read fine but gives nothing: exit 1)."""
    if stats.counts.get("kernels_extracted"):
        return True
    done = load_done(output)
    return any(done.get(location.name, {}).get("kernels") for location in locations)


if __name__ == "__main__":
    sys.exit(main())
