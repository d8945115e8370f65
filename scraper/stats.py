"""Counts of what a stage did, errors grouped by phase, and the rejects file.

Every stage keeps one `Stats`: named counters (`parsed`, `kernels`, `dropped_duplicate`, ...), errors grouped by
phase and message (as paritybench's ErrorAggregatorDict: the top groups are shown at the end, never a traceback
per file), and a `rejects.jsonl` of what was dropped with its reason, so nothing disappears silently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

from scraper.fileio import JsonlAppender, atomic_write_json, atomic_write_text, iter_jsonl, write_jsonl
from scraper.zipsafe import printable

STATS = "stats.json"
REJECTS = "rejects.jsonl"
ERRORS = "errors.csv"
ERRORS_HEADER = ["phase", "where", "message"]

log = logging.getLogger(__name__)

# Paths, numbers and quoted names vary per file; folding them groups "the same error" together.
_VOLATILE = re.compile(r"(/[^\s:'\"]+)|('[^']*')|(\"[^\"]*\")|(\b\d+\b)")


def error_group_key(message: str) -> str:
    """The message with paths, quoted strings and numbers folded, so equal errors count as one group."""
    first_line = message.strip().splitlines()[0] if message.strip() else "(empty)"
    return _VOLATILE.sub("…", first_line)[:200]


class Stats:
    """Counters plus phase-grouped errors for one stage run."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.counts: Counter = Counter()
        self.errors: dict[str, Counter] = defaultdict(Counter)  # phase -> group key -> count
        self.examples: dict[tuple[str, str], str] = {}  # (phase, group) -> first "where: message"
        self.error_rows: list[tuple[str, str, str]] = []  # (phase, where, message) for errors.csv
        self.extra: dict[str, Any] = {}  # structured results saved beside the counters (e.g. "validation")
        # counts of what earlier runs left in the output and this run kept (a resumed run): stats.json then
        # describes the whole output, with this run's own part under "this_run"
        self.earlier: Counter = Counter()
        self.earlier_units = 0

    def carry_earlier(self, counts: dict, units: int = 1) -> None:
        """Add the counts of output an earlier run made and this run keeps (e.g. one archive skipped as done)."""
        self.earlier.update(counts)
        self.earlier_units += units

    def output_counts(self) -> Counter:
        """The counters of the whole output: what earlier runs left and this run kept, plus this run."""
        whole = Counter(self.counts)  # not `earlier + counts`: Counter's + drops the zero counters a stage set
        whole.update(self.earlier)
        return whole

    def counts_since(self, before: Counter) -> Counter:
        """What the counters gained since `before` (a copy of them), zero counters set meanwhile kept (Counter's `-`
        would drop them, and a resumed run's stats.json would then lack what a fresh run's has)."""
        return Counter({key: value - before.get(key, 0) for key, value in self.counts.items()
                        if value != before.get(key, 0) or (value == 0 and key not in before)})

    def inc(self, key: str, amount: int = 1) -> None:
        """Add `amount` to the counter `key`."""
        self.counts[key] += amount

    def error(self, phase: str, where: str, message: Any) -> None:
        """Record one error of `phase` (parse, extract, deps, validate, download, ...) at `where`."""
        text = f"{type(message).__name__}: {message}" if isinstance(message, BaseException) else str(message)
        group = error_group_key(text)
        self.errors[phase][group] += 1
        self.examples.setdefault((phase, group), f"{where}: {text.strip()[:300]}")
        self.error_rows.append((phase, where, text.strip().splitlines()[0][:500] if text.strip() else ""))
        self.counts[f"errors_{phase}"] += 1
        log.debug("%s error at %s: %s", phase, where, text)

    def merge(self, other: "Stats") -> None:
        """Fold another Stats (e.g. from a worker process) into this one."""
        self.counts.update(other.counts)
        for phase, groups in other.errors.items():
            self.errors[phase].update(groups)
        for key, example in other.examples.items():
            self.examples.setdefault(key, example)
        self.error_rows.extend(other.error_rows)
        self.extra.update(other.extra)

    def to_dict(self) -> dict:
        """JSON-able summary: counters and, per phase, every error group with its count and an example."""
        errors = {
            phase: [
                {"error": group, "count": count, "example": self.examples.get((phase, group))}
                for group, count in groups.most_common()
            ]
            for phase, groups in sorted(self.errors.items())
        }
        summary = {"stage": self.stage, "counts": dict(sorted(self.output_counts().items())), "errors": errors}
        if self.earlier_units:
            summary["this_run"] = {"counts": dict(sorted(self.counts.items())), "earlier_units_kept": self.earlier_units}
        return {**summary, **self.extra}

    def save(self, path: str | Path) -> None:
        """Write stats.json atomically."""
        atomic_write_json(path, self.to_dict())

    def save_errors_csv(self, path: str | Path, keep_earlier: Optional[Callable[[list], bool]] = None) -> None:
        """Write every error as a row `phase,where,message` (atomic). With `keep_earlier`, the rows of the file
        already there for which it is true come first (a rerun that redoes part of the work keeps the rest)."""
        earlier = [row for row in read_errors_csv(path) if keep_earlier(row)] if keep_earlier else []
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(ERRORS_HEADER)
        writer.writerows(earlier + [list(row) for row in self.error_rows])
        atomic_write_text(path, buffer.getvalue())

    def summary(self, top_errors: int = 5) -> str:
        """Human-readable end-of-run summary: every counter, then the top error groups of each phase; every
        control character escaped (scraper.zipsafe.printable)."""
        lines = [f"== {self.stage} summary =="]
        whole = self.output_counts()
        if self.earlier_units:
            lines.append(f"  (the whole output, {self.earlier_units} units kept from earlier runs; this run's own "
                         "count in brackets where it differs)")
        width = max((len(k) for k in whole), default=0)
        lines += [f"  {key:<{width}}  {value}" + (f"  ({self.counts[key]})" if self.counts[key] != value else "")
                  for key, value in sorted(whole.items())]
        for phase, groups in sorted(self.errors.items()):
            lines.append(f"  errors in {phase}: {sum(groups.values())} ({len(groups)} kinds)")
            for group, count in groups.most_common(top_errors):
                lines.append(f"    {count:>5} × {self.examples.get((phase, group), group)}")
        for key, value in sorted(self.extra.items()):
            lines.append(f"  {key}: {print_json(value)}")
        return "\n".join(printable(line) for line in lines)  # examples and groups hold scraped text


def read_errors_csv(path: str | Path) -> list[list]:
    """The rows of an errors.csv (without its header); [] when there is none or it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return rows[1:] if rows and rows[0] == ERRORS_HEADER else rows


class Rejects:
    """Appends one JSON line per dropped item to `rejects.jsonl`, with the reason it was dropped."""

    def __init__(self, path: str | Path, stats: Optional[Stats] = None) -> None:
        self.path = Path(path)
        self.stats = stats
        self._appender = JsonlAppender(self.path)
        self.added: list[dict] = []  # this run's rows, in order (a stage keeps each unit's rows for a rerun)

    def reset(self, keep: Optional[Callable[[dict], bool]] = None) -> None:
        """Start a fresh rejects file; with `keep`, the earlier rows for which it is true stay (a rerun that
        redoes part of the work replaces only the rows of what it redoes)."""
        if keep is None or not self.path.is_file():
            self.path.unlink(missing_ok=True)
            return
        write_jsonl(self.path, [row for row in iter_jsonl(self.path) if keep(row)])

    def add(self, reason: str, **details: Any) -> None:
        """Record one rejected item; also counts `dropped_<reason>` on the attached Stats."""
        row = {"reason": reason, **details}
        self._appender.append(row)
        self.added.append(row)
        if self.stats is not None:
            self.stats.inc(f"dropped_{reason}")


    def keep(self, row: dict) -> None:
        """Write again a row an earlier run added for work this run keeps (counted by that run: not again)."""
        self._appender.append(row)


def print_json(data: Any) -> str:
    """Compact one-line JSON for log lines."""
    return json.dumps(data, default=str, sort_keys=True)
