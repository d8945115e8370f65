"""An exception from a trial, reduced to what the repair rules read: its type and message, and the source lines of
the scraped module's own frames (innermost first), which tell which parameter the failing statement used."""

from __future__ import annotations

import linecache
import re
import traceback
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from scraper.phases import describe

IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
MISSING_FILE = r"^(FileNotFoundError|OSError): \[Errno 2\]"
COMPOUND = re.compile(r"(async\s+)?(for|while|with)\b")


@dataclass
class Failure:
    """One failed trial."""

    kind: str  # exception type name
    message: str  # str(exception), bounded
    lines: list = field(default_factory=list)  # source lines of the module's frames, innermost first
    text: str = ""  # `Kind: first line` (scraper.phases.describe)
    functions: list = field(default_factory=list)  # names of the module's functions in the traceback

    @property
    def line(self) -> str:
        """The innermost line of the module's own code ("" when the failure is not in it)."""
        return self.lines[0] if self.lines else ""

    def names_in_line(self) -> list[str]:
        """Identifiers of the innermost module line, attribute names included, in order."""
        return list(dict.fromkeys(IDENTIFIER.findall(self.line)))

    def names_around(self) -> list[str]:
        """Identifiers of the module's outer frames' lines (the calls that led to the innermost one), in order."""
        return list(dict.fromkeys(IDENTIFIER.findall(" ".join(self.lines[1:]))))

    def search(self, pattern: str):
        """re.search of `pattern` in `Kind: message`."""
        return re.search(pattern, f"{self.kind}: {self.message}", flags=re.S)


def failure_of(exc: BaseException, filename: str) -> Failure:
    """The Failure of `exc`, with the lines of the frames whose file is the module's `filename` (its closure)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [frame for frame in reversed(frames) if frame.filename == filename]
    own = [text for text in map(frame_text, mine) if text]
    if isinstance(exc, AssertionError) and not own and frames:  # an assert of a helper: its line still helps
        own = [frames[-1].line or ""]
    return Failure(kind=type(exc).__name__, message=str(exc)[:2000], lines=own, text=describe(exc),
                   functions=[frame.name for frame in mine])


def frame_text(frame: traceback.FrameSummary) -> str:
    """The source of the expression that failed in `frame`, all its lines (`table[\n    0, where\n]`: the
    index is on another line than the one the frame names), joined by spaces."""
    last = frame.end_lineno or frame.lineno
    if frame.lineno is None or last - frame.lineno > 20:
        return frame.line or ""
    lines = [linecache.getline(frame.filename, number).strip() for number in range(frame.lineno, last + 1)]
    lines = [line for line in lines if line]
    if lines and COMPOUND.match(lines[0]):  # a loop's iterable failed: its frame spans the body too
        lines = lines[:next((i + 1 for i, line in enumerate(lines) if line.endswith(":")), len(lines))]
    return " ".join(lines) or frame.line or ""


class Repair(NamedTuple):
    """One row of a repair table (scraper.worker.infer.repairs): the failure it recognises, a regex searched in
    `Kind: message`, and the change it makes, `change(search, attempt, failure, match) -> candidates`."""

    recognises: str
    change: Callable


def first_new_repair(rows: list, search, attempt, failure: Failure):
    """The first candidate some row of the repair table makes of `attempt` (a constructor call or an input
    trial), among the rows that recognise `failure`, that `search` has not tried yet; or None (also when a change
    met a scraped value it cannot read: that is recorded in `search.errors`, not a worker failure). A file that is
    not there is beyond repair: no argument or input brings it (the module is skipped, program.data_file_skip)."""
    if failure.search(MISSING_FILE):
        return None
    try:
        for row in rows:
            match = failure.search(row.recognises)
            if match is None:
                continue
            for candidate in row.change(search, attempt, failure, match) or []:
                if candidate is not None and candidate.key() not in search.tried:
                    return candidate
    except Exception as exc:
        search.errors.append(f"repair: {type(exc).__name__}: {exc}")
    return None
