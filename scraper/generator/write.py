"""Where each generated module goes and how it is written (atomically, one module per kernel)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_component(text: str) -> str:
    """A path component made of [A-Za-z0-9_.-] only, never `.`/`..`/empty."""
    cleaned = _UNSAFE.sub("_", text).strip(".") or "_"
    return cleaned[:120]


MAX_FOLDERS = 8  # folders kept of a kernel's path in its repository; deeper ones are folded into a hash


def module_relpath(slug: str, path_in_repo: str, qualname: str, lineno: int, duplicate: bool) -> str:
    """`<slug>/<path in repo without .py>/<qualname>.py`: two files (or two same-named defs in one file, by
    line number) never collide. A path more than MAX_FOLDERS deep keeps its first and last folders around a
    hash of the whole path (`deep_<sha>`): a kernel 1,800 folders down is not written 1,800 folders down."""
    stem = path_in_repo[:-3] if path_in_repo.endswith(".py") else path_in_repo
    folders = [safe_component(part) for part in stem.split("/") if part]
    if len(folders) > MAX_FOLDERS:
        digest = hashlib.sha256(path_in_repo.encode("utf-8")).hexdigest()[:12]
        half = (MAX_FOLDERS - 1) // 2
        folders = folders[:half] + [f"deep_{digest}"] + folders[-half:]
    name = safe_component(qualname.replace(".<locals>.", "__").replace(".", "__"))
    if duplicate:
        name = f"{name}_L{lineno}"
    return "/".join([safe_component(slug)] + folders + [f"{name}.py"])


def unique_relpath(relpath: str, path_in_repo: str, taken: set) -> str:
    """`relpath`, or when another kernel of the repository already has it (two files whose names differ only in
    characters `safe_component` folds, such as `x y.py` and `x_y.py`) the same with a short hash of the file's
    own path; the result is added to `taken`."""
    if relpath in taken:
        digest = hashlib.sha256(path_in_repo.encode("utf-8")).hexdigest()[:8]
        relpath = f"{relpath.removesuffix('.py')}_{digest}.py"
        while relpath in taken:  # the same file twice: a same-named kernel already got the hash
            relpath = f"{relpath.removesuffix('.py')}_2.py"
    taken.add(relpath)
    return relpath


def duplicate_qualnames(kernels) -> set:
    """Qualnames defined more than once in one file (each then gets its line number in its file name)."""
    counts = Counter(kernel.qualname for kernel in kernels)
    return {name for name, count in counts.items() if count > 1}


def write_module(out_dir: Path, relpath: str, code: str) -> Path:
    """Write one generated module under `out_dir` (temporary name, then rename: readers never see a part).

    Unlike scraper.records.atomic_write_text this does not fsync: a module is only listed in kernels.jsonl
    after it is written, an archive only counts as done after its records, and a crash redoes the archive;
    an fsync per module (~3 ms) was a fifth of the generator's time."""
    target = Path(out_dir) / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(code, encoding="utf-8")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
