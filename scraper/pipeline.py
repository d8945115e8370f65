"""The shape every stage shares (datatrove's): units pass through steps, filters drop a unit with a reason into
the stage's rejects, a rerun resumes by unit key, and the counts end in the stage's Stats.

    stage 1   unit: a graph (scraper.inductor.unit.GraphUnit)      steps: attach, pair, validate   one at a time
    stage 2   unit: a repository's kernel records                  steps: validate                 one at a time
    stage 3   unit: a dataset row in the making (dataset.item.Item) steps: tokens, filters, dedup, split: the
              whole list at once (dedup and splits need every unit)

A `Step` takes one unit and returns it (or what it became); a `BatchStep` takes every unit and the `Run` (the
stage's stats, its rejects and what the steps learn on the way) and returns the units that go on. A `Filter` is a
batch step made of checks, each `check(unit) -> reason | None`: a unit is dropped at the first reason, written to
the rejects with `details(unit)` and counted as `dropped_<reason>` (scraper.stats.Rejects). `Done` is the ledger a
stage resumes by (scraper.fileio.Done): one JSON line per finished unit, keyed by one of its fields or a function
of it, the latest line winning.

The stage itself claims its output files before it writes any (scraper.fileio.claim_output,
scraper.dataset.outputs.claim) and turns what it produced into the exit status (scraper.cli.exit_status).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar

# The ledger lives with the JSONL files (low modules such as scraper.repos read theirs through it); it is part
# of this shape.
from scraper.fileio import Done  # noqa: F401
from scraper.stats import Rejects, Stats

log = logging.getLogger(__name__)

U = TypeVar("U")
Step = Callable[[U], U]
Check = Callable[[Any], Optional[str]]


@dataclass
class Run:
    """One run of a stage: its counters and errors, its rejects, and facts the steps leave for the stage's
    summary (e.g. dedup's cluster sizes)."""

    stats: Stats
    rejects: Rejects
    facts: dict = field(default_factory=dict)


BatchStep = Callable[[list, Run], list]


def chain(unit: U, steps: Sequence[Step]) -> U:
    """`unit` through every step, in order."""
    for step in steps:
        unit = step(unit)
    return unit


def run_batch(units: list, steps: Iterable[BatchStep], run: Run) -> list:
    """Every unit through every batch step, in order; what is left."""
    for step in steps:
        units = step(units, run)
    return units


@dataclass
class Filter:
    """A batch step that drops each unit some check gives a reason for (the first such reason) into the rejects,
    with `details(unit)`."""

    checks: Sequence[Check]
    details: Callable[[Any], dict]

    def __call__(self, units: list, run: Run) -> list:
        kept = []
        for unit in units:
            reason = next((r for r in (check(unit) for check in self.checks) if r), None)
            if reason is None:
                kept.append(unit)
            else:
                run.rejects.add(reason, **self.details(unit))
        return kept
