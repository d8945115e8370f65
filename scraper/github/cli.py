"""Find GitHub repositories with Triton kernels (or, --discover pytorch, Python repositories using PyTorch) and
download them, pinned to a commit, with a manifest.

Examples:
  GITHUB_TOKEN=... python scrape_github.py                     # search (repositories + code) and download
  python scrape_github.py --discover pytorch --min-stars 100   # PyTorch repositories with an nn.Module subclass
  python scrape_github.py --repos repos.txt                    # these owner/name repositories only
  python scrape_github.py --local ~/src/flash-attention ~/x.zip=owner/name   # offline: clones / zips
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from dotenv import find_dotenv, load_dotenv

from scraper.cli import (EXIT_MISSING_INPUT, EXIT_USAGE, add_keep_going, add_logging_args, deprecated_alias,
                         interruptible, setup_logging)
from scraper.fileio import claim_output
from scraper.github import DEFAULT_API_URL, GitHubClient, Options, run
from scraper.github.client import STALL_BYTES
from scraper.github.discovery import DISCOVERIES, PYTORCH, TRITON
from scraper.github.local import parse_local_arg
from scraper.github.manifest import DOWNLOAD_MANIFEST, NO_NN_MODULE, NO_TRITON
from scraper.paths import DEFAULT_DOWNLOAD_DIR as DEFAULT_DIR, DEFAULTS_RULE
from scraper.stats import ERRORS, REJECTS, STATS

OUTPUT_FILES = (DOWNLOAD_MANIFEST, NO_TRITON, NO_NN_MODULE, "candidates.txt", STATS, REJECTS, ERRORS)
# The deadlines follow --timeout: the default 60 s gives 120 s for an API answer's headers and body and 1800 s for
# one archive (every attempt), the values these had as constants.
ANSWER_TIMEOUTS = 2
DOWNLOAD_TIMEOUTS = 30


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line (see docs/github.md); `prog`: the command's name in usage lines (default: the script's)."""
    defaults = Options(download_dir=DEFAULT_DIR)
    parser = argparse.ArgumentParser(
        prog=prog or "scrape_github.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Environment: GITHUB_TOKEN (or a .env file) for auth; GITHUB_API_URL for GitHub Enterprise or a "
               f"test server (default {DEFAULT_API_URL}). Outputs in the download folder: <owner>__<name>.zip, "
               "manifest.jsonl, candidates.txt, stats.json, rejects.jsonl, errors.csv, no_triton.jsonl, "
               "no_nn_module.jsonl.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--repos", type=Path, metavar="FILE", help="download the owner/name repositories listed in "
                        "FILE (one per line, # comments) instead of searching")
    source.add_argument("--local", nargs="+", metavar="PATH[=OWNER/NAME]", default=[],
                        help="offline: ingest git clones, folders or zip archives into the download folder")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_DIR, help="the download folder: where archives "
                        f"and manifest.jsonl go (default: %(default)s; {DEFAULTS_RULE})")
    deprecated_alias(parser, "--download-dir", "-o/--output", "output", type=Path)
    parser.add_argument("--discover", choices=tuple(DISCOVERIES), default=defaults.discovery,
                        help="what to find: triton (repositories with Triton kernels, confirmed by a .py file "
                        "mentioning triton and jit) or pytorch (Python repositories using PyTorch, confirmed by "
                        "a torch.nn.Module subclass; repository search only) (default: %(default)s)")
    parser.add_argument("--search", choices=("repo", "code", "both"),
                        help="repository search, code search (needs a token), or both (default: both, repo for "
                        "pytorch, which has no code query)")
    parser.add_argument("--query", help=f"repository search query, without stars: (default: triton: "
                        f"{TRITON.query!r}; pytorch: {PYTORCH.query!r})")
    parser.add_argument("--code-query", help=f"code search query, without size: (default: triton: "
                        f"{TRITON.code_query!r}; pytorch: none)")
    parser.add_argument("--min-stars", type=int, default=defaults.min_stars, help="the fewest stars a repository "
                        "may have, for either discovery (paritybench's crawler took over 100) (default: %(default)s)")
    parser.add_argument("--max-size-mb", type=float, default=defaults.max_size_mb,
                        help="skip repositories (GitHub size) and archives above this; 0 = no cap "
                        "(default: %(default)s)")
    parser.add_argument("--max-repos", type=int, help="fetch at most this many of the candidates")
    parser.add_argument("--jobs", "-j", type=int, default=defaults.jobs, help="parallel downloads "
                        "(default: %(default)s)")
    parser.add_argument("--refresh", action="store_true", help="re-check finished repositories and download again "
                        "those whose default branch moved")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false",
                        help="keep archives that fail the discovery's test (triton: no .py file mentioning "
                        "triton and jit; pytorch: no torch.nn.Module subclass)")
    parser.add_argument("--discover-only", action="store_true", help="search, write candidates.txt, download nothing")
    parser.add_argument("--max-wait", type=float, default=3700.0, help="longest rate-limit wait in seconds; a longer "
                        "one stops the run (rerun to resume) (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=5, help="retries on 5xx and dropped connections "
                        "(default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP read; also a body must bring "
                        f"{STALL_BYTES // 1024} KiB every TIMEOUT s, an API answer come within {ANSWER_TIMEOUTS} x "
                        f"TIMEOUT and an archive within {DOWNLOAD_TIMEOUTS} x TIMEOUT (default: %(default)s)")
    add_keep_going(parser)
    add_logging_args(parser)
    return parser


@interruptible
def main(argv=None, prog: Optional[str] = None) -> int:
    """Parse arguments, build the client from the environment, run the stage."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.repos and not args.repos.is_file():
        parser.error(f"--repos {args.repos}: no such file")
    setup_logging(args)
    if not args.verbose:  # urllib3 logs each retry; the summary counts them (http_retries)
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    load_dotenv(find_dotenv(usecwd=True), override=False)  # the environment wins over .env
    client = GitHubClient(os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL, os.environ.get("GITHUB_TOKEN"),
                          timeout=args.timeout, deadline=ANSWER_TIMEOUTS * args.timeout, retries=args.retries,
                          max_wait=args.max_wait)
    searching = not (args.repos or args.local)
    code_query = args.code_query or DISCOVERIES[args.discover].code_query
    if searching and args.search in ("code", "both") and not code_query:
        print(f"error: the {args.discover} discovery has no code search: give --code-query or use --search repo",
              file=sys.stderr)
        return EXIT_USAGE
    if searching and args.search == "code" and not client.has_token:
        print("error: code search needs a token: set GITHUB_TOKEN (environment or .env)", file=sys.stderr)
        return EXIT_USAGE
    missing = [arg for arg in args.local if not parse_local_arg(arg)[0].exists()]
    if args.local and len(missing) == len(args.local):  # nothing to ingest: leave the download folder as it is
        print(f"error: no --local path exists: {', '.join(missing)} (nothing written)", file=sys.stderr)
        return EXIT_MISSING_INPUT
    try:
        claim_output(args.output, "scrape_github", OUTPUT_FILES,
                     adopt=lambda folder: (folder / DOWNLOAD_MANIFEST).is_file())
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = Options(download_dir=args.output, discovery=args.discover, query=args.query, code_query=args.code_query,
                      min_stars=args.min_stars, search=args.search, repos_file=args.repos, local=args.local,
                      max_size_mb=args.max_size_mb or None, max_repos=args.max_repos, jobs=args.jobs,
                      refresh=args.refresh, confirm=args.confirm, discover_only=args.discover_only,
                      download_deadline=DOWNLOAD_TIMEOUTS * args.timeout, keep_going=args.keep_going)
    return run(options, client)
