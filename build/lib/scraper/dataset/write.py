"""Dataset rows and their files: a JSON array (torchtune's local-file example), JSON Lines, or Parquet.

Every file is written whole to a temporary name and renamed over the target (scraper.records.atomic_write_*),
so a crash leaves the previous dataset, never half of a new one.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scraper.dataset import schema
from scraper.dataset.item import Item
from scraper.fileio import atomic_write_bytes, atomic_write_text
from scraper.records import KernelRecord

FORMATS = ("json", "jsonl", "parquet")
# Metadata columns after the text column, in this order; every row has all of them (None where they do not
# apply); their types are in scraper.dataset.schema.
METADATA = tuple(schema.COMPLETION_METADATA)


def fence(code: str) -> str:
    """`code` as a Markdown python block, the format of the seed's changelog."""
    return f"```python\n{code.strip(chr(10))}\n```"


@dataclass(frozen=True)
class TextStyle:
    """How a completion row's text is made: fenced in ```python, with the PyTorch it implements as a comment
    header (`reference`), and as the whole operator (`launcher`: the host code that launches the kernel, with
    the kernel, where the generator found one)."""

    fenced: bool = True
    reference: bool = False
    launcher: bool = False


def row_text(record: KernelRecord, style: TextStyle = TextStyle()) -> str:
    """The training text of a record: its self-contained code (or its launcher's module, which holds the kernel
    too, with `style.launcher`), after the reference header with `style.reference`, fenced with `style.fenced`."""
    code = launcher_code(record) if style.launcher else None
    code = code or record.code
    code = reference_header(record) + code if style.reference else code
    return fence(code) if style.fenced else code


def launcher_code(record: KernelRecord) -> Optional[str]:
    """The module of the host code that launches the kernel (the kernel is in it), or None when the generator
    found no launcher."""
    launcher = record.launcher if isinstance(record.launcher, dict) else {}
    code = launcher.get("code")
    return code if isinstance(code, str) and code.strip() else None


def reference_header(record: KernelRecord) -> str:
    """Comment lines naming the PyTorch an Inductor kernel implements: its ATen ops and graph fragment (from the
    comment Inductor wrote above it); "" for kernels without them (GitHub kernels)."""
    lines = []
    if record.aten_ops:
        lines.append("# PyTorch (ATen) this kernel implements: " + ", ".join(aten_ops_column(record.aten_ops)))
    if record.graph_fragment:
        lines.append("# Graph fragment:")
        lines += [f"#   {line}" for line in str(record.graph_fragment).splitlines()]
    return "".join(line + "\n" for line in lines) + ("\n" if lines else "")


def to_row(item: Item, column: str = "text", style: TextStyle = TextStyle()) -> dict:
    """One dataset row: the text column, then the METADATA columns."""
    record = item.record
    row = {column: row_text(record, style)}
    row.update({
        "id": record.id, "source": record.source, "kernel_name": record.name, "kind": record.kind,
        "repo": record.repo, "commit": record.commit, "path": record.path, "license": record.license,
        "stars": record.stars if isinstance(record.stars, int) else None,  # one column type for the loaders
        "model": record.model, "graph": record.graph,
        "aten_ops": aten_ops_column(record.aten_ops),
        "n_tokens": item.n_tokens, "cluster_size": item.cluster_size, "split": item.split,
        "pytorch_program": (record.extra.get("pytorch") or {}).get("program_file"),  # the suite's program, if any
        "dialect": record.dialect or "triton", "role": record.role,
        "with_launcher": bool(style.launcher and launcher_code(record)),
    })
    return row


def aten_ops_column(aten_ops) -> list | None:
    """The ATen ops as a list of strings (one string given by a hand-made manifest is one op, not its letters)."""
    if aten_ops is None:
        return None
    if isinstance(aten_ops, str):
        return [aten_ops]
    return [str(op) for op in aten_ops] if isinstance(aten_ops, (list, tuple)) else [str(aten_ops)]


def write_rows(path: str | Path, rows: list, fmt: str, columns: dict) -> None:
    """Write `rows` (dicts with the keys of `columns`, {name: type}) to `path` in `fmt` ("json" array, "jsonl",
    "parquet"), atomically."""
    if fmt == "json":
        atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    elif fmt == "jsonl":
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    elif fmt == "parquet":
        atomic_write_bytes(path, parquet_bytes(rows, columns))
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def parquet_bytes(rows: list, columns: dict) -> bytes:
    """`rows` as a Parquet file in memory, typed by `columns` (a column null in every row keeps its type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(columns))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def split_path(path: Path, split: str) -> Path:
    """`datasets/triton_functions.json` -> `datasets/triton_functions.train.json` for split "train"."""
    return path.with_name(f"{path.stem}.{split}{path.suffix}")
