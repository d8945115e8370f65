"""Write CORPUS/report.html and CORPUS/report.json: what a corpus that `triton-data build` filled holds, stage by
stage, read from the stages' own files (scraper/corpus.py's layout).

The page is one self-contained HTML file (inline CSS and SVG, no script, nothing fetched: open it anywhere): each
stage's state (ran, not run, incomplete, unreadable) and counters, kernels per source, drops by reason, pass rates
(the suite models' accuracy against eager, the pair check, verification), pairs by level, token-length and
speedup histograms, and a few rows of each dataset, escaped (they are scraped or generated code). report.json
holds the same figures. Any part of a corpus works: a stage that did not run is shown as not run, a file that
cannot be read is named in a note and the rest is still shown.

Exit status (README): 0 written; 2 report.html or report.json there is someone else's file (nothing written) or
cannot be written; 3 CORPUS is not a folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

from scraper import corpus as layout
from scraper.cli import EXIT_MISSING_INPUT, EXIT_OK, EXIT_USAGE, add_logging_args, interruptible, setup_logging
from scraper.fileio import atomic_write_json, atomic_write_text
from scraper.report import figures as collected
from scraper.report import page

log = logging.getLogger("scraper.report")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "python -m scraper.report.command", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="the corpus folder (triton-data build -o CORPUS)")
    parser.add_argument("--samples", type=int, default=collected.SAMPLES,
                        help="rows shown of each dataset (default: %(default)s)")
    add_logging_args(parser)
    return parser


@interruptible
def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    """Write the report of a corpus; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    setup_logging(args)
    if not args.corpus.is_dir():
        print(f"error: no corpus folder: {args.corpus}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    html_path, json_path = args.corpus / layout.REPORT_HTML, args.corpus / layout.REPORT_JSON
    foreign = [p.name for p, own in ((html_path, own_html), (json_path, own_json)) if p.exists() and not own(p)]
    if foreign:
        print(f"error: {args.corpus} holds {' and '.join(foreign)} that triton-data report did not write: left "
              "alone, nothing written", file=sys.stderr)
        return EXIT_USAGE
    found = collected.collect(args.corpus, max(0, args.samples))
    try:
        atomic_write_json(json_path, found)
        atomic_write_text(html_path, page.render(found))
    except OSError as exc:
        print(f"error: cannot write the report into {args.corpus}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(summary(found, html_path), file=sys.stderr)
    return EXIT_OK


def own_html(path: Path) -> bool:
    """A report.html this command wrote (its marker near the top)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return page.MARKER in handle.read(4096)
    except OSError:
        return False


def own_json(path: Path) -> bool:
    """A report.json this command wrote (its "report" names this generator)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("report"), dict) \
        and data["report"].get("generator") == collected.GENERATOR


def summary(found: dict, html_path: Path) -> str:
    """One line: where the report is, how many stages ran, how many files could not be read."""
    states = [found["build"]["state"]] + [entry["state"] for entry in found["stages"].values()]
    ran = sum(state == collected.RAN for state in states)
    return (f"wrote {html_path} and {layout.REPORT_JSON}: {ran} of {len(states)} stages ran, "
            f"{len(found['notes'])} file note(s)")


if __name__ == "__main__":
    sys.exit(main())
