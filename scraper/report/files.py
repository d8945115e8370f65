"""Reading what the stages wrote, for the report: a file that is not there means the stage did not run; one that is
there but cannot be read becomes a note (shown on the page) and the rest of the report goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional

from scraper.fileio import iter_jsonl_lines

MISSING, MALFORMED, READ = "missing", "malformed", "read"
# A summary file (stats.json, build.json, pairs_check.json) is a few KB; one far larger is not a summary.
MAX_SUMMARY_BYTES = 64 * 1024 * 1024


class Loaded(NamedTuple):
    """A file's state (MISSING, MALFORMED or READ) and, when READ, its content."""

    state: str
    data: Any = None


class Notes:
    """What could not be read, one line each, naming the file relative to the corpus."""

    def __init__(self, corpus: Path) -> None:
        self.corpus = Path(corpus)
        self.lines: list[str] = []

    def add(self, path: Path, message: str) -> None:
        self.lines.append(f"{self.relative(path)}: {message}")

    def relative(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.corpus).as_posix()
        except ValueError:
            return str(path)


def read_json(path: Path, notes: Notes, kind: type = dict, limit: Optional[int] = MAX_SUMMARY_BYTES) -> Loaded:
    """The JSON value of `path` when it is a `kind` (dict or list); a note when it is there but not one."""
    try:
        if limit is not None and path.stat().st_size > limit:
            notes.add(path, f"not read: over {limit // (1024 * 1024)} MiB")
            return Loaded(MALFORMED)
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return Loaded(MISSING)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        notes.add(path, f"not readable JSON ({type(exc).__name__}: {exc})")
        return Loaded(MALFORMED)
    if not isinstance(data, kind):
        notes.add(path, f"expected a JSON {'object' if kind is dict else 'array'}, found {type(data).__name__}")
        return Loaded(MALFORMED)
    return Loaded(READ, data)


def iter_lines(path: Path, notes: Notes) -> Iterator[dict]:
    """The JSON objects of a JSONL file; its bad lines are counted into one note (the first one quoted)."""
    bad, first = 0, ""
    try:
        for line in iter_jsonl_lines(path):
            if line.error:
                bad, first = bad + 1, first or line.error.rpartition(": ")[2]
                continue
            yield line.data
    except OSError as exc:
        notes.add(path, f"not readable ({type(exc).__name__}: {exc})")
    if bad:
        notes.add(path, f"{bad} malformed line(s) left out (first: {first})")


def read_rows(path: Path, notes: Notes) -> Loaded:
    """A dataset file's rows: a JSON array (create_json.py's .json) or JSON Lines (.jsonl); rows that are not
    objects are left out with a note."""
    if path.suffix == ".jsonl":
        return Loaded(READ, list(iter_lines(path, notes))) if path.is_file() else Loaded(MISSING)
    loaded = read_json(path, notes, kind=list, limit=None)
    if loaded.state != READ:
        return loaded
    rows = [row for row in loaded.data if isinstance(row, dict)]
    if len(rows) < len(loaded.data):
        notes.add(path, f"{len(loaded.data) - len(rows)} row(s) that are not JSON objects left out")
    return Loaded(READ, rows)
