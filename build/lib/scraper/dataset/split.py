"""Deterministic train/validation split by group: a repository or a model never straddles the two splits.

A group goes to validation when the hash of its key, read as a number in [0, 1), is below `val_fraction`. The
decision depends only on the key, so a rerun with more data keeps every old group where it was. One exception:
when hashing leaves validation empty although there are two or more groups and `val_fraction > 0`, the groups with
the smallest hashes that fit within `val_fraction` of the rows go to validation (see `fill_validation`), so a small
dataset still gets a held-out split of about the asked size when some group is small enough.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from typing import Callable

from scraper.dataset.item import Item

log = logging.getLogger(__name__)

TRAIN, VALIDATION = "train", "validation"


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


def group_position(key: str) -> float:
    """A stable number in [0, 1) for `key` (first 8 bytes of its sha256)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def assign_splits(items: list, val_fraction: float, key: Callable = group_key) -> dict:
    """Set the split and group of every item (`key(item)` names its group); returns {split: number of groups}."""
    groups: dict[str, list] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    chosen = {key for key in groups if group_position(key) < val_fraction}
    if not chosen and len(groups) >= 2 and val_fraction > 0:
        chosen = fill_validation(groups, val_fraction)
    if not chosen and val_fraction > 0 and items:
        log.warning("no validation split: no group (repository / model) is small enough for --val-fraction %s",
                    val_fraction)
    for key, members in groups.items():
        for item in members:
            item.split = VALIDATION if key in chosen else TRAIN
            item.group = key
    return {TRAIN: len(groups) - len(chosen), VALIDATION: len(chosen)}


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
