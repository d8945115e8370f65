"""What every command line of the pipeline shares: logging, exit statuses, flag aliases, the version, jobs.

Exit statuses (the same for every stage; README "Exit statuses"):
    0  the stage produced what it was asked for
    1  it ran, but produced nothing (no kernel found, every download failed, no row left)
    2  it could not run: bad arguments, an output it may not write, no sandbox for scraped code
    3  an input it was given is missing or unreadable (the others were processed); --keep-going makes that 0
       when something was produced
  130  interrupted (Ctrl-C): one line says so, no traceback; finished work is kept and a rerun resumes
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from importlib import metadata

from scraper.progress import TqdmHandler
from scraper.zipsafe import printable

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_MISSING_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
INTERRUPTED = "interrupted; finished work is kept, rerun to resume"
log = logging.getLogger("scraper.cli")


def version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    try:
        return metadata.version("triton-data")
    except metadata.PackageNotFoundError:
        return "0.2.0+source"


def add_logging_args(parser) -> None:
    """`-v/--verbose`, `-q/--quiet` and `--version` on an argparse parser."""
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--version", action="version", version=f"triton-data {version()}")


def add_keep_going(parser) -> None:
    """`--keep-going`: a missing input is reported but does not change the exit status."""
    parser.add_argument("--keep-going", action="store_true",
                        help="exit 0 when something was produced even if some input is missing (default: exit 3)")


def setup_logging(args=None) -> None:
    """Messages to stderr, printed above any progress bar; level from -v/-q (or TRITON_DATA_LOG_LEVEL)."""
    level = os.environ.get("TRITON_DATA_LOG_LEVEL", "INFO").upper()
    if args is not None and getattr(args, "verbose", False):
        level = "DEBUG"
    elif args is not None and getattr(args, "quiet", False):
        level = "WARNING"
    handler = TqdmHandler()
    handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class EscapingFormatter(logging.Formatter):
    """Log lines with every control, direction-changing or invisible character escaped (scraper.zipsafe's
    `printable`, line by line): a kernel's error text, an archive member's name or a server's message can then
    neither move the cursor, erase lines nor print a fake "all passed"."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_lines(super().format(record))


def escape_lines(text: str) -> str:
    """`text` with each of its lines passed through `printable` (the line breaks kept): the one formatter for
    what the stages print from scraped or server text (log lines, summaries, listings)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def exit_status(produced: bool, missing_inputs: int, keep_going: bool = False) -> int:
    """The exit status of a run that produced something or nothing, with `missing_inputs` inputs it could not
    read (see the table above). A missing input outranks "nothing produced": it is the likelier reason, and
    --keep-going forgives it only when something was produced."""
    if missing_inputs and not (keep_going and produced):
        return EXIT_MISSING_INPUT
    return EXIT_OK if produced else EXIT_NOTHING


def interruptible(main):
    """Wrap a command's `main(argv)`: Ctrl-C prints one line (INTERRUPTED) to stderr instead of a traceback and
    gives EXIT_INTERRUPTED. Each stage writes atomically and appends whole lines, so what finished is kept."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print(f"\n{INTERRUPTED}", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper


@contextlib.contextmanager
def workers_leave_interrupts_to_us():
    """Around starting worker processes: they are born ignoring Ctrl-C, which stays the parent's to handle (it
    stops them). A terminal sends SIGINT to every process of the group: a worker that took it would print its own
    traceback, and a pool would wait forever for the task it dropped. Ignored in the parent meanwhile, so a forked
    child never runs a moment with Python's handler (a pool initializer runs too late for that)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Deprecated(argparse.Action):
    """An old flag name: stores into the new one's destination and says which name to use."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def deprecated_alias(parser, old: str, new: str, dest: str, flag: bool = False, **kwargs) -> None:
    """Keep `old` working as `new` (same destination, hidden from --help, a warning when used); `flag` for an
    option that takes no value."""
    if flag:
        kwargs["nargs"] = 0
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def default_jobs() -> int:
    """Worker processes to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
