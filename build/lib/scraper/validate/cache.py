"""Validation results cached by record id + level + Triton version, in an append-only JSONL file.

Each line: {"key": ..., "id", "level", "triton", "inputs", "timeout", "result"}. The key also holds a digest of
everything the check reads (exact code, name, signature, constants, launch), because the record id is computed on
normalized source (comments and whitespace folded) and two texts with one id may still differ in what runs.
The latest line for a key wins; a torn last line (crash) is skipped by scraper.records.iter_jsonl.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

from scraper.records import KernelRecord, append_jsonl, iter_jsonl

log = logging.getLogger(__name__)


def inputs_digest(record: KernelRecord) -> str:
    """Digest of what a check of `record` depends on."""
    data = [record.name, record.code, record.signature, record.constants, record.launch]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_key(record: KernelRecord, level: str, triton_version: str) -> str:
    """`<id>:<level>:<triton version>:<inputs digest>`."""
    return f"{record.id}:{level}:{triton_version}:{inputs_digest(record)}"


class ResultCache:
    """In-memory view of the cache file; `put` appends at once so a crash keeps what was done."""

    def __init__(self, path: Optional[str | Path]) -> None:
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            for entry in iter_jsonl(self.path, on_error=lambda n, m: log.warning("cache: %s", m)):
                if "key" in entry and isinstance(entry.get("result"), dict):
                    self.entries[entry["key"]] = entry

    def get(self, key: str, timeout: float) -> Optional[dict]:
        """The cached result, unless it timed out under a shorter limit than `timeout`."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry["result"].get("error_class") == "Timeout" and float(entry.get("timeout") or 0) < timeout:
            return None
        return entry["result"]

    def put(self, key: str, result: dict, timeout: float) -> None:
        """Remember a result (infrastructure failures, e.g. a dead worker, are not cached)."""
        if result.get("infrastructure"):
            return
        entry = {"key": key, "timeout": timeout, "result": result}
        self.entries[key] = entry
        if self.path is not None:
            append_jsonl(self.path, entry)
