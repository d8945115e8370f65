"""Where each generated module goes and how it is written (atomically, one module per kernel)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from scraper.records import atomic_write_text

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_component(text: str) -> str:
    """A path component made of [A-Za-z0-9_.-] only, never `.`/`..`/empty."""
    cleaned = _UNSAFE.sub("_", text).strip(".") or "_"
    return cleaned[:120]


def module_relpath(slug: str, path_in_repo: str, qualname: str, lineno: int, duplicate: bool) -> str:
    """`<slug>/<path in repo without .py>/<qualname>.py`: two files (or two same-named defs in one file, by
    line number) never collide."""
    stem = path_in_repo[:-3] if path_in_repo.endswith(".py") else path_in_repo
    folders = [safe_component(part) for part in stem.split("/") if part]
    name = safe_component(qualname.replace(".<locals>.", "__").replace(".", "__"))
    if duplicate:
        name = f"{name}_L{lineno}"
    return "/".join([safe_component(slug)] + folders + [f"{name}.py"])


def duplicate_qualnames(kernels) -> set:
    """Qualnames defined more than once in one file (each then gets its line number in its file name)."""
    counts = Counter(kernel.qualname for kernel in kernels)
    return {name for name, count in counts.items() if count > 1}


def write_module(out_dir: Path, relpath: str, code: str) -> Path:
    """Write one generated module atomically under `out_dir`; returns its path."""
    target = Path(out_dir) / relpath
    atomic_write_text(target, code)
    return target
