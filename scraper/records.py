"""The one record type that flows through every stage, and its JSONL files.

A `KernelRecord` is one Triton kernel: its self-contained source (`code`), its name, an `id` that is a hash of
the normalized source (also the exact-dedup key), where it came from (`source`: "inductor" | "github") and
provenance as plain fields. Every stage reads and writes these as JSON Lines, one record per line.

Only this module turns manifest lines into records and records into lines (`iter_records`, `append_records`,
`ManifestWriter`); the file mechanics (atomic writes, torn lines) are in `scraper.fileio`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

# The file helpers are used with records everywhere; they live in fileio (stats and others import them there).
from scraper.fileio import (  # noqa: F401  (re-exported)
    JsonlAppender,
    JsonlLine,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    iter_jsonl,
    iter_jsonl_lines,
    json_line,
    remove_stale_temporaries,
    report,
    temporary_path,
    write_jsonl,
)

log = logging.getLogger(__name__)

SOURCES = ("inductor", "github")

# Inductor numbers its kernels per graph (`triton_poi_fused_relu_0`, `_7`, ...); the same kernel recurs across
# graphs and models under another number, so the number is folded away before hashing.
_INDUCTOR_NUMBERED_NAME = re.compile(r"\b(triton_[A-Za-z0-9_]*?)_\d+\b")
_WHITESPACE = re.compile(r"\s+")
# A space next to punctuation (whitespace is already folded to single spaces); removed without a replacement
# template, which costs a template expansion per match.
_SPACE_BESIDE_PUNCTUATION = re.compile(r" (?=[^\w\s])|(?<=[^\w\s]) ")
# A string literal (kept: a `#` inside it is no comment) or a comment (dropped). Triple quotes first.
_STRING_OR_COMMENT = re.compile(
    r'(?P<string>[rRbBuUfF]{0,2}(?:"""(?:\\.|[^\\])*?"""' r"|'''(?:\\.|[^\\])*?'''"
    r'|"(?:\\.|[^"\\\n])*"' r"|'(?:\\.|[^'\\\n])*'))"
    r"|(?P<comment>#[^\n]*)",
    re.S,
)


class RecordFields:
    """What the kernel and the pair record share: their dict forms, and reading one back from a dict (keys this
    version does not know are kept under `extra`, so files written by a newer version still load)."""

    def json_fields(self) -> dict:
        """The fields for serializing, nested values shared rather than deep-copied as `to_dict` does (a tenth
        of the generator's time on large repositories went to those copies)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict:
        """The record as a plain JSON-able dict (every field, None included, so columns stay stable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown:
            kwargs["extra"] = {**kwargs.get("extra", {}), **unknown}
        return cls(**kwargs)


@dataclass
class KernelRecord(RecordFields):
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
    correct: Optional[bool] = None  # the suite model of its graph passed (True) / failed (False) the accuracy check
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



def strip_comments(code: str) -> str:
    """`code` with each comment replaced by a space; a `#` inside a string literal is left alone."""
    return _STRING_OR_COMMENT.sub(lambda match: match.group("string") or " ", code)


def normalize_source(code: str) -> str:
    """The form that identity is computed on: comments dropped, whitespace folded (runs to one space, none beside
    punctuation, so `x=1` equals `x = 1` and re-wrapped lines match), Inductor kernel numbers folded.

    Regexes rather than `tokenize`: about 3x faster on real kernels, with the same equivalence classes on the 312
    fixture kernels and the benchmark corpus, and defined for code that does not tokenize."""
    text = _INDUCTOR_NUMBERED_NAME.sub(r"\1_N", strip_comments(code))
    return _SPACE_BESIDE_PUNCTUATION.sub("", _WHITESPACE.sub(" ", text)).strip()


def kernel_id(code: str) -> str:
    """Record id: first 16 hex digits of sha256 over `normalize_source(code)`."""
    return hashlib.sha256(normalize_source(code).encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- manifests

KERNELS = "kernels.jsonl"  # every stage's manifest of records, in its output folder
PAIRS = "pairs.jsonl"  # the Inductor stage's pairs (scraper.pairs), one line each, beside kernels.jsonl
PAIRS_REJECTS = "pairs_rejects.jsonl"  # ... the graphs and kernels that gave no pair, with the reason


def record_of_line(line: JsonlLine) -> tuple[Optional[KernelRecord], Optional[str]]:
    """The record a JSONL line holds, or None and why not: the line's own error (malformed JSON, already naming
    file and line) or "not a kernel record (...)"."""
    if line.error:
        return None, line.error
    try:
        return KernelRecord.from_dict(line.data), None
    except (TypeError, ValueError, AttributeError) as exc:
        return None, f"not a kernel record ({type(exc).__name__}: {exc})"


def iter_records(
    path: str | os.PathLike, on_error: Optional[Callable[[int, str], None]] = None
) -> Iterator[KernelRecord]:
    """Every well-formed record of a JSONL file, as it is read; bad lines go to `on_error(line_number, message)`
    (numbers are the file's line numbers), or to a warning."""
    for line in iter_jsonl_lines(path):
        record, problem = record_of_line(line)
        if record is None:
            report(on_error, line.number, problem if line.error else f"{path}:{line.number}: {problem}")
        else:
            yield record


def read_records(
    path: str | os.PathLike, on_error: Optional[Callable[[int, str], None]] = None
) -> list[KernelRecord]:
    """`iter_records` as a list."""
    return list(iter_records(path, on_error))


def append_records(path: str | os.PathLike, records: Iterable[KernelRecord]) -> int:
    """Append records to a manifest, one complete line each (a torn last line is cut first). Returns the count."""
    appender = JsonlAppender(path)
    count = 0
    for record in records:
        appender.append(record)
        count += 1
    return count


class ManifestWriter:
    """The one writer of a manifest that a run produces whole: records (and, to keep them, lines that are not
    records) are appended to a temporary file as they stream, and `close` renames it over the manifest. A run
    that fails leaves the previous manifest as it was; its temporary file is removed by the next run.

        with ManifestWriter(out / KERNELS) as writer:
            for record in records:
                writer.write(record)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path.parent, self.path.name)
        self.temporary = temporary_path(self.path)
        self._handle = open(self.temporary, "w", encoding="utf-8")
        self.count = 0

    def write(self, record: KernelRecord) -> None:
        """Append one record."""
        self._handle.write(json_line(record))
        self.count += 1

    def write_line(self, text: str) -> None:
        """Append a line kept as it was read (a line of an input that is not a record, so nothing is lost)."""
        self._handle.write(text.rstrip("\r\n") + "\n")

    def close(self, keep: bool = True) -> None:
        """Finish: rename the temporary file over the manifest (`keep`), or throw it away."""
        self._handle.close()
        if keep:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(keep=kind is None)
