"""Deterministic train/validation split by group: a repository or a model never straddles the two splits.

A group goes to validation when the hash of its key, read as a number in [0, 1), is below `val_fraction`. The
decision depends only on the key, so a rerun with more data keeps every old group where it was. Two exceptions,
for the sets that hashing alone leaves thin:

* a source (Inductor / GitHub kernels; a suite for pairs and problems) with MIN_GROUPS groups or more that hashing
  left without validation rows gets one group in validation: the one with the smallest hash among its groups no
  larger than its median group (a single big model does not swallow the split);
* when that still leaves validation empty although there are two or more groups, the groups with the smallest
  hashes that fit within `val_fraction` of the rows go to validation (`fill_validation`).

What is left empty (a split, a source without validation rows) is said in `SplitSummary.notes`, one line each,
logged as a warning; the dataset card and stats.json repeat them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from scraper.dataset.item import Item

log = logging.getLogger(__name__)

TRAIN, VALIDATION = "train", "validation"
# A source lends a group to validation only when at least this many remain: one held out, two or more to train on.
MIN_GROUPS = 3


@dataclass
class SplitSummary:
    """What assign_splits did: {split: number of groups}, and a line for each split or source left empty."""

    groups: dict
    notes: list = field(default_factory=list)

    def record(self, stats) -> None:
        """Into a stage's Stats: counters `groups_<split>`, and the notes as `split_notes` (stats.json, card)."""
        stats.counts.update({f"groups_{name}": count for name, count in self.groups.items()})
        if self.notes:
            stats.extra["split_notes"] = list(self.notes)


def group_key(item: Item) -> str:
    """The unit that must not straddle splits: the repository, else the model, else the scanned folder/input."""
    record = item.record
    if record.repo:
        return f"repo:{record.repo}"
    if record.model:
        return f"model:{record.model}"
    scanned = record.extra.get("scanned_from") or item.input
    if scanned:
        return f"folder:{scanned}"
    return f"kernel:{record.id}"


def item_source(item: Item) -> str:
    """The source a completion row comes from: `inductor` or `github`."""
    return item.record.source or "unknown"


def group_position(key: str) -> float:
    """A stable number in [0, 1) for `key` (first 8 bytes of its sha256)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def assign_splits(items: list, val_fraction: float, key: Callable = group_key,
                  source: Callable = item_source) -> SplitSummary:
    """Set the split and group of every item (`key(item)` names its group, `source(item)` its source); returns
    the groups per split and the notes on what is empty."""
    groups: dict[str, list] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    by_source = groups_by_source(groups, source)
    chosen = {key for key in groups if group_position(key) < val_fraction}
    if val_fraction > 0:
        for keys in by_source.values():
            chosen |= represent_source(keys, groups, chosen)
    if not chosen and len(groups) >= 2 and val_fraction > 0:
        chosen = fill_validation(groups, val_fraction)
    for key, members in groups.items():
        for item in members:
            item.split = VALIDATION if key in chosen else TRAIN
            item.group = key
    summary = SplitSummary({TRAIN: len(groups) - len(chosen), VALIDATION: len(chosen)},
                           split_notes(groups, by_source, chosen, val_fraction))
    for note in summary.notes:
        log.warning("%s", note)
    return summary


def groups_by_source(groups: dict, source: Callable) -> dict:
    """{source: [group key, ...]}; a group's source is its first item's."""
    found: dict[str, list] = defaultdict(list)
    for key, members in groups.items():
        found[source(members[0])].append(key)
    return dict(found)


def represent_source(keys: list, groups: dict, chosen: set) -> set:
    """The group of one source to add to validation when none of its groups is there: none when the source has
    fewer than MIN_GROUPS groups, else the one first in hash order among the groups no larger than its median."""
    if len(keys) < MIN_GROUPS or any(key in chosen for key in keys):
        return set()
    sizes = sorted(len(groups[key]) for key in keys)
    median = sizes[(len(sizes) - 1) // 2]
    return {min((key for key in keys if len(groups[key]) <= median), key=group_position)}


def fill_validation(groups: dict, val_fraction: float) -> set:
    """Fallback for sets with few groups: take groups in hash order while the validation rows stay within
    `val_fraction` of all rows (a group too large is passed over); empty when every group is too large."""
    budget = val_fraction * sum(len(members) for members in groups.values())
    chosen, taken = set(), 0
    for key in sorted(groups, key=group_position):
        if taken + len(groups[key]) <= budget:
            chosen.add(key)
            taken += len(groups[key])
    return chosen


def split_notes(groups: dict, by_source: dict, chosen: set, val_fraction: float) -> list[str]:
    """A line for an empty split and for each source without validation rows, saying why."""
    if not groups:
        return []
    if not chosen:
        return [f"no validation split: {why_no_validation(groups, val_fraction)}"]
    notes = []
    if len(chosen) == len(groups):
        notes.append(f"no train split: every group hashed below --val-fraction {val_fraction}")
    for name, keys in sorted(by_source.items()):
        if len(by_source) > 1 and not any(key in chosen for key in keys):
            notes.append(f"validation has no {name} rows: {len(keys)} group(s) ({', '.join(sorted(keys)[:3])}"
                         f"{', ...' if len(keys) > 3 else ''}); a source needs {MIN_GROUPS} to lend one")
    return notes


def why_no_validation(groups: dict, val_fraction: float) -> str:
    """Why no group went to validation."""
    if val_fraction <= 0:
        return f"--val-fraction {val_fraction}"
    if len(groups) == 1:
        return (f"all {len(next(iter(groups.values())))} rows are one group ({next(iter(groups))}), and a group "
                "never straddles the splits")
    return (f"{len(groups)} groups, no source with {MIN_GROUPS} or more and none small enough for --val-fraction "
            f"{val_fraction} of the rows")
