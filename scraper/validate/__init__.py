"""Sandboxed verification of kernels: parses -> imports -> compiles (see docs/validate.md).

Public API (wired into the stage CLIs by the lead):
    add_validate_args(parser)
    validate_records(records, *, levels, jobs, timeout, memory_mb, cache_path, stats)   # in place
    validate_from_args(records, args, *, stats=None, default_cache=None)
    validate_manifest_from_args(manifest, args, stats) -> fractions | None   # a stage's kernels.jsonl
    meets(record, level) -> bool
    level_fractions(records) -> dict
Kernel code never runs in the calling process: it runs in forked, confined children of worker processes.
"""

from scraper.validate.api import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    LEVELS,
    add_validate_args,
    level_fractions,
    meets,
    validate_from_args,
    validate_manifest_from_args,
    validate_records,
)

__all__ = ["DEFAULT_MEMORY_MB", "DEFAULT_TIMEOUT", "LEVELS", "add_validate_args", "level_fractions", "meets",
           "validate_from_args", "validate_manifest_from_args", "validate_records"]
