"""Bits every command-line script shares: logging set-up and the default number of jobs."""

from __future__ import annotations

import logging
import os


def add_logging_args(parser) -> None:
    """`-v/--verbose` and `-q/--quiet` on an argparse parser."""
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def setup_logging(args=None) -> None:
    """Messages to stderr; level from -v/-q (or TRITON_DATA_LOG_LEVEL)."""
    level = os.environ.get("TRITON_DATA_LOG_LEVEL", "INFO").upper()
    if args is not None and getattr(args, "verbose", False):
        level = "DEBUG"
    elif args is not None and getattr(args, "quiet", False):
        level = "WARNING"
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def default_jobs() -> int:
    """Worker processes to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
