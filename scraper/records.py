"""The one record type that flows through every stage, and its JSONL files.

A `KernelRecord` is one Triton kernel: its self-contained source (`code`), its name, an `id` that is a hash of
the normalized source (also the exact-dedup key), where it came from (`source`: "inductor" | "github") and
provenance as plain fields. Every stage reads and writes these as JSON Lines, one record per line.

Writes never leave a half-written file: whole files go to a temporary name in the same folder and are then
renamed over the target (`os.replace` is atomic on POSIX); appends write one complete line at a time, and the
reader skips (and reports) a torn last line left by a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

log = logging.getLogger(__name__)

SOURCES = ("inductor", "github")

# Inductor numbers its kernels per graph (`triton_poi_fused_relu_0`, `_7`, ...); the same kernel recurs across
# graphs and models under another number, so the number is folded away before hashing.
_INDUCTOR_NUMBERED_NAME = re.compile(r"\b(triton_[A-Za-z0-9_]*?)_\d+\b")
_WHITESPACE = re.compile(r"\s+")
_SPACE_BESIDE_PUNCTUATION = re.compile(r" ?([^\w\s]) ?")
# A string literal (kept: a `#` inside it is no comment) or a comment (dropped). Triple quotes first.
_STRING_OR_COMMENT = re.compile(
    r'(?P<string>[rRbBuUfF]{0,2}(?:"""(?:\\.|[^\\])*?"""' r"|'''(?:\\.|[^\\])*?'''"
    r'|"(?:\\.|[^"\\\n])*"' r"|'(?:\\.|[^'\\\n])*'))"
    r"|(?P<comment>#[^\n]*)",
    re.S,
)


@dataclass
class KernelRecord:
    """One Triton kernel with its provenance. Fields that do not apply to a source stay None."""

    name: str
    code: str  # the self-contained module the dataset trains on
    source: str  # "inductor" | "github"
    id: str = ""  # filled from `code` by __post_init__ when empty
    kind: Optional[str] = None  # pointwise, reduction, persistent_reduction, template, user_defined, jit, ...
    original: Optional[str] = None  # Inductor: the kernel text exactly as embedded in output_code.py
    file: Optional[str] = None  # where the stage wrote `code`, relative to its output folder
    # Inductor provenance
    model: Optional[str] = None
    graph: Optional[str] = None
    run_dir: Optional[str] = None
    output_code: Optional[str] = None
    fx_graph: Optional[str] = None
    comment: Optional[str] = None  # the comment block Inductor writes above the kernel
    aten_ops: Optional[list] = None
    source_nodes: Optional[list] = None
    graph_fragment: Optional[str] = None
    signature: Optional[dict] = None  # triton_meta["signature"]
    constants: Optional[dict] = None  # triton_meta["constants"]
    launch: Optional[dict] = None  # the removed heuristics decorator: its name, size_hints, inductor_meta ...
    # GitHub provenance
    repo: Optional[str] = None  # owner/name
    commit: Optional[str] = None
    path: Optional[str] = None  # path of the file inside the repository
    license: Optional[str] = None  # SPDX id, None when unknown
    stars: Optional[int] = None
    lineno: Optional[int] = None
    end_lineno: Optional[int] = None
    decorators: Optional[list] = None
    unresolved: Optional[list] = None
    self_contained: Optional[bool] = None
    # Verification levels (scraper.validate): None = not checked
    parses: Optional[bool] = None
    imports: Optional[bool] = None
    compiles: Optional[bool] = None
    validation: Optional[dict] = None  # error class / first line / triton version / target / chosen config
    # GitHub: how the kernel is used (scraper.generator.launchers)
    dialect: Optional[str] = None  # "triton" | "gluon" (`@gluon.jit`, triton.experimental.gluon)
    role: Optional[str] = None  # "kernel" | "helper" (a jit function only read by other jit functions)
    launcher: Optional[dict] = None  # the host function launching the kernel, with its own closure (see docs)
    extra: dict = field(default_factory=dict)  # anything a stage wants to keep that has no field yet

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not self.id:
            self.id = kernel_id(self.code)

    def to_dict(self) -> dict:
        """The record as a plain JSON-able dict (every field, None included, so columns stay stable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "KernelRecord":
        """Build a record from a dict; keys this version does not know are kept under `extra`."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown:
            kwargs["extra"] = {**kwargs.get("extra", {}), **unknown}
        return cls(**kwargs)


def strip_comments(code: str) -> str:
    """`code` with each comment replaced by a space; a `#` inside a string literal is left alone."""
    return _STRING_OR_COMMENT.sub(lambda match: match.group("string") or " ", code)


def normalize_source(code: str) -> str:
    """The form that identity is computed on: comments dropped, whitespace folded (runs to one space, none beside
    punctuation, so `x=1` equals `x = 1` and re-wrapped lines match), Inductor kernel numbers folded.

    Regexes rather than `tokenize`: about 3x faster on real kernels, with the same equivalence classes on the 312
    fixture kernels and the benchmark corpus, and defined for code that does not tokenize."""
    text = _INDUCTOR_NUMBERED_NAME.sub(r"\1_N", strip_comments(code))
    return _SPACE_BESIDE_PUNCTUATION.sub(r"\1", _WHITESPACE.sub(" ", text)).strip()


def kernel_id(code: str) -> str:
    """Record id: first 16 hex digits of sha256 over `normalize_source(code)`."""
    return hashlib.sha256(normalize_source(code).encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- files


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask).
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Pretty JSON written atomically (stats.json and friends)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _as_dict(item: Any) -> dict:
    return item.to_dict() if isinstance(item, KernelRecord) else item


def _json_line(item: Any) -> str:
    return json.dumps(_as_dict(item), ensure_ascii=False, default=str) + "\n"


def write_jsonl(path: str | os.PathLike, items: Iterable[Any]) -> int:
    """Replace `path` atomically with one JSON line per item (records or dicts). Returns the count."""
    lines = [_json_line(item) for item in items]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def append_jsonl(path: str | os.PathLike, item: Any) -> None:
    """Append one complete line; a crash can lose at most this line (which `read_jsonl` then skips)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(_json_line(item))
        handle.flush()


class JsonlLine(NamedTuple):
    """One non-blank line of a JSONL file: its number, its text, and either the object or why it is not one."""

    number: int
    text: str
    data: Optional[dict]
    error: Optional[str]


def iter_jsonl_lines(path: str | os.PathLike) -> Iterator[JsonlLine]:
    """Every non-blank line of a JSONL file, decoded where it is a JSON object (`error` says why where not)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                data = json.loads(raw.decode("utf-8"))
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            except (ValueError, UnicodeDecodeError) as exc:
                yield JsonlLine(number, text, None, f"{path}:{number}: malformed JSON line ({exc})")
                continue
            yield JsonlLine(number, text, data, None)


def _report(on_error: Optional[Callable[[int, str], None]], number: int, message: str) -> None:
    on_error(number, message) if on_error else log.warning(message)


def iter_jsonl(
    path: str | os.PathLike, on_error: Optional[Callable[[int, str], None]] = None
) -> Iterator[dict]:
    """Yield each line of a JSONL file as a dict. A malformed line (e.g. torn by a crash) is skipped and
    reported to `on_error(line_number, message)`, or logged as a warning when no callback is given."""
    for line in iter_jsonl_lines(path):
        if line.error:
            _report(on_error, line.number, line.error)
        else:
            yield line.data


def record_of_line(line: JsonlLine) -> tuple[Optional[KernelRecord], Optional[str]]:
    """The record a JSONL line holds, or None and why not: the line's own error (malformed JSON, already naming
    file and line) or "not a kernel record (...)"."""
    if line.error:
        return None, line.error
    try:
        return KernelRecord.from_dict(line.data), None
    except (TypeError, ValueError, AttributeError) as exc:
        return None, f"not a kernel record ({type(exc).__name__}: {exc})"


def read_records(
    path: str | os.PathLike, on_error: Optional[Callable[[int, str], None]] = None
) -> list[KernelRecord]:
    """Every well-formed record of a JSONL file; bad lines go to `on_error(line_number, message)` as in
    `iter_jsonl` (numbers are the file's line numbers)."""
    records = []
    for line in iter_jsonl_lines(path):
        record, problem = record_of_line(line)
        if record is None:
            _report(on_error, line.number, problem if line.error else f"{path}:{line.number}: {problem}")
        else:
            records.append(record)
    return records
