"""Progress that suits where it is shown: a tqdm bar on a terminal, a plain line now and then anywhere else (a log
file, CI, a pipe), and log messages printed above the bar instead of through it.

    for path in progress(paths, desc="graphs", unit="graph"): ...
    with progress(total=n, desc="download", unit="repo") as bar: ...; bar.set_postfix({"ok": 3}); bar.update()
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Iterable, Optional

from tqdm import tqdm

INTERVAL_ENV = "TRITON_DATA_PROGRESS_SECONDS"  # how often a line is written when stderr is not a terminal
DEFAULT_INTERVAL = 30.0
log = logging.getLogger("scraper.progress")


def progress(iterable: Optional[Iterable] = None, *, desc: str, total: Optional[int] = None, unit: str = "it"):
    """A tqdm bar over `iterable` (or a counter with `total`) on a terminal; elsewhere a `Lines` progress that
    logs `desc: n/total` every TRITON_DATA_PROGRESS_SECONDS (30) seconds and once at the end."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not sys.stderr.isatty():
        return Lines(iterable, desc, total, unit)
    # A pseudo-terminal that reports 0 columns (some CI runners, `script`) would get a bar of no width at all.
    width = shutil.get_terminal_size((80, 24)).columns or 80
    return tqdm(iterable, desc=desc, total=total, unit=unit, ncols=width, file=sys.stderr)


class Lines:
    """tqdm's interface (iteration, `update`, context manager, `close`) as occasional log lines."""

    def __init__(self, iterable: Optional[Iterable], desc: str, total: Optional[int], unit: str) -> None:
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n, self.shown, self.started = 0, 0, time.monotonic()
        self.interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
        self.last = self.started
        self.closed = False
        self.postfix = ""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def update(self, amount: int = 1) -> None:
        """Count `amount` more; log a line when the interval has passed."""
        self.n += amount
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line()

    def set_postfix(self, ordered_dict: Optional[dict] = None, refresh: bool = True, **values) -> None:
        """What tqdm shows after the count (`ok=3, failed=1`): added to the next line, in the order given."""
        values = {**(ordered_dict or {}), **dict(sorted(values.items()))}  # tqdm sorts the keyword ones too
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        """Log the final count, unless nothing happened or the last line already said it."""
        if not self.closed and self.n != self.shown:
            self._line()
        self.closed = True

    def _line(self) -> None:
        self.shown = self.n
        of = f"/{self.total}" if self.total is not None else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        seconds = time.monotonic() - self.started
        log.info("%s: %d%s %s%s (%.0f s)", self.desc, self.n, of, self.unit, postfix, seconds)

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TqdmHandler(logging.StreamHandler):
    """A stderr log handler that writes through tqdm, so a message lands above a running bar, not inside it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never break the run
            self.handleError(record)
