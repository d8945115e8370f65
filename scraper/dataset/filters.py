"""Filters: license, token length, line count, and verification requirements (`--require`).

Each filter is a check `(item) -> reason or None`; a scraper.pipeline.Filter made of them (the completion task's
steps, scraper.dataset.pipeline) drops an item at the first reason, writes it to rejects.jsonl and counts
`dropped_<reason>`. `--require imports|compiles` adds a `requirement_check` through `extra_checks`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from scraper.dataset.item import Item
from scraper.records import KernelRecord

Check = Callable[[Item], Optional[str]]

# SPDX ids of permissive licenses (OSI-approved, no copyleft). Anything else, and an unknown license, is not.
PERMISSIVE = frozenset({
    "MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear", "BSD-4-Clause", "0BSD",
    "ISC", "Unlicense", "Zlib", "BSL-1.0", "CC0-1.0", "PSF-2.0", "Python-2.0", "UPL-1.0", "NCSA", "X11",
    "MIT-CMU", "PostgreSQL", "Artistic-2.0", "WTFPL",
})


def license_allowlist(spec: str) -> Optional[frozenset]:
    """`--license` value to an SPDX allowlist: "any" -> None (no filter), "permissive", or "MIT,Apache-2.0"."""
    if spec in ("", "any"):
        return None
    if spec == "permissive":
        return PERMISSIVE
    return frozenset(part.strip() for part in spec.split(",") if part.strip())


def license_check(allowed: frozenset) -> Check:
    """Drop records whose license is unknown or not in `allowed` (SPDX ids, compared case-insensitively)."""
    lowered = {spdx.lower() for spdx in allowed}

    def check(item: Item) -> Optional[str]:
        license = item.record.license
        return None if license and str(license).lower() in lowered else "license"

    return check


def max_tokens_check(limit: int) -> Check:
    """Drop items with more than `limit` tokens."""
    return lambda item: "too_many_tokens" if (item.n_tokens or 0) > limit else None


def min_lines_check(limit: int) -> Check:
    """Drop records whose code has fewer than `limit` non-blank lines."""
    return lambda item: "too_few_lines" if count_lines(item.record.code) < limit else None


def requirement_check(level: str, is_met: Callable[[KernelRecord, str], bool]) -> Check:
    """The check of `--require LEVEL`: `is_met(record, level)` is scraper.validate.meets."""
    return lambda item: None if is_met(item.record, level) else f"not_{level}"


def count_lines(code: str) -> int:
    """Non-blank lines of `code`."""
    return sum(1 for line in code.splitlines() if line.strip())


def dialect_check(dialect: str) -> Check:
    """Drop items of another Triton dialect (`triton` or `gluon`; a record without one is plain triton)."""
    return lambda item: None if (item.record.dialect or "triton") == dialect else "dialect"


def helper_check(item: Item) -> Optional[str]:
    """Drop jit helpers: functions only other jit functions call (their code is in their callers' modules)."""
    return "helper" if item.record.role == "helper" else None


def build_checks(license: str = "any", max_tokens: Optional[int] = None, min_lines: Optional[int] = None,
                 dialect: str = "any", drop_helpers: bool = False, extra_checks: Iterable[Check] = ()) -> list:
    """The checks the options ask for, cheapest first."""
    checks = [dialect_check(dialect)] if dialect != "any" else []
    if drop_helpers:
        checks.append(helper_check)
    allowed = license_allowlist(license)
    if allowed is not None:
        checks.append(license_check(allowed))
    if min_lines:
        checks.append(min_lines_check(min_lines))
    if max_tokens:
        checks.append(max_tokens_check(max_tokens))
    return checks + list(extra_checks)


def reject_details(record: KernelRecord) -> dict:
    """What rejects.jsonl keeps about a dropped record: enough to find it again."""
    details = {"id": record.id, "name": record.name, "source": record.source}
    for key in ("repo", "path", "license", "stars", "model", "graph", "file"):
        value = getattr(record, key)
        if value is not None:
            details[key] = value
    return details
