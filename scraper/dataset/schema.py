"""The dataset's columns and their types, in one place: the card's `dataset_info.features`, the Parquet schema and
`datasets.Features` all come from here, so a column that is null in every row of one split file still has its
type and any combination of the split files loads together."""

from __future__ import annotations

STRING, INT, STRINGS = "string", "int64", "list<string>"
FLOAT, BOOL = "float64", "bool"

# The completion task's metadata columns, after the text column, in this order.
COMPLETION_METADATA = {
    "id": STRING, "source": STRING, "kernel_name": STRING, "kind": STRING, "repo": STRING, "commit": STRING,
    "path": STRING, "license": STRING, "stars": INT, "model": STRING, "graph": STRING, "aten_ops": STRINGS,
    "n_tokens": INT, "cluster_size": INT, "split": STRING, "pytorch_program": STRING,
    "dialect": STRING, "role": STRING, "with_launcher": BOOL,
}


# --task pairs: KernelBook's columns first, then provenance and checks (docs/pairs.md).
PAIR_COLUMNS = {
    "python_code": STRING, "triton_code": STRING, "entry_point": STRING, "repo_name": STRING, "licenses": STRINGS,
    "stars": INT, "sha": STRING, "id": STRING, "suite": STRING, "model": STRING, "mode": STRING, "dtype": STRING,
    "graph": STRING, "pair_level": STRING, "kernels": STRINGS, "accuracy": STRING, "max_error": FLOAT,
    "pair_correct": BOOL, "speedup": FLOAT, "n_tokens": INT, "cluster_size": INT, "split": STRING,
    # KernelBook's other columns, then the problem's
    "original_triton_code": STRING, "module_name": STRING, "uuid": STRING, "repo_link": STRING,
    "kernel": STRING, "ops": STRINGS, "needs_cuda": BOOL, "packages": STRINGS, "reference_finite": BOOL,
}
# --task problems: the KernelBench problem and where it comes from.
PROBLEM_COLUMNS = {
    "python_code": STRING, "entry_point": STRING, "id": STRING, "name": STRING, "level": STRING, "suite": STRING,
    "model": STRING, "mode": STRING, "dtype": STRING, "graph": STRING, "repo_name": STRING, "licenses": STRINGS,
    "stars": INT, "sha": STRING, "accuracy": STRING, "n_tokens": INT, "cluster_size": INT, "split": STRING,
    "kernel": STRING, "needs_cuda": BOOL, "packages": STRINGS, "reference_finite": BOOL,
}


def completion_columns(text_column: str = "text") -> dict:
    """{column: type} of a completion row: the text column, then the metadata."""
    return {text_column: STRING, **COMPLETION_METADATA}


def card_features(columns: dict) -> list[str]:
    """The YAML lines of a dataset card's `dataset_info.features` for `columns`."""
    lines = ["dataset_info:", "  features:"]
    for name, kind in columns.items():
        lines.append(f"  - name: {name}")
        lines.append("    sequence: string" if kind == STRINGS else f"    dtype: {kind}")
    return lines


def arrow_schema(columns: dict):
    """The pyarrow schema of `columns` (for Parquet files)."""
    import pyarrow as pa

    types = {STRING: pa.string(), INT: pa.int64(), STRINGS: pa.list_(pa.string()), FLOAT: pa.float64(),
             BOOL: pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in columns.items()])


def features(columns: dict):
    """`datasets.Features` of `columns`: `load_dataset("json", data_files=[...], features=features(...))` loads
    any combination of the split files."""
    from datasets import Features, Sequence, Value

    return Features({name: Sequence(Value(STRING)) if kind == STRINGS else Value(kind)
                     for name, kind in columns.items()})
