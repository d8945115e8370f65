"""Sandboxed verification of kernels: parses -> imports -> compiles (see docs/validate.md).

Public API:
    add_validate_args(parser)
    Validator(levels=..., jobs=..., timeout=..., memory_mb=..., cache_path=..., stats=...)   # a chain step:
        .run(records) -> records (levels filled in place), .fractions(), .close()
    validator_from_args(args, stats, default_cache) -> Validator | None   # from the flags of add_validate_args
    validate_records(records, *, levels, jobs, timeout, memory_mb, cache_path, stats)   # one batch, in place
    validate_manifest(path, stats, **options) -> fractions   # a kernels.jsonl, written once with the levels
    meets(record, level) -> bool
    level_fractions(records) -> dict
Kernel code never runs in the calling process: it runs in forked, confined children of worker processes.
"""

from scraper.validate.api import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    LEVELS,
    VALIDATE_CACHE,
    Validator,
    add_validate_args,
    level_fractions,
    meets,
    validate_from_args,
    validate_manifest,
    validate_records,
    validator_from_args,
)

__all__ = ["DEFAULT_MEMORY_MB", "DEFAULT_TIMEOUT", "LEVELS", "VALIDATE_CACHE", "Validator", "add_validate_args",
           "level_fractions", "meets", "validate_from_args", "validate_manifest", "validate_records",
           "validator_from_args"]
