"""Typed columns: split files where a column is null in every row still load together, in every format."""

from __future__ import annotations

import pytest
from datasets import load_dataset

from scraper.dataset import card, schema, write

COLUMNS = schema.completion_columns("text")


def row(split: str, **values) -> dict:
    base = {name: None for name in COLUMNS}
    return {**base, "text": f"kernel of {split}", "source": "inductor", "cluster_size": 1, "split": split, **values}


# validation: only Inductor rows (repo, license, stars, aten_ops null everywhere); train: a GitHub row has them
ROWS = [row("train", source="github", repo="o/r", license="MIT", stars=5, aten_ops=["aten.add"]),
        row("train", model="m1"), row("validation", model="m2")]


def write_split_files(folder, fmt):
    files = {}
    for split in ("train", "validation"):
        files[split] = folder / f"triton_functions.{split}.{fmt}"
        write.write_rows(files[split], [r for r in ROWS if r["split"] == split], fmt, COLUMNS)
    return files


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet"])
def test_the_folder_loads_with_the_cards_features(tmp_path, fmt):
    files = write_split_files(tmp_path, fmt)
    card.write_card(tmp_path, ROWS, {s: p.name for s, p in files.items()}, {"counts": {}}, "estimate", COLUMNS)
    ds = load_dataset(str(tmp_path))
    assert ds["validation"].features["repo"].dtype == "string"
    assert ds["validation"].features["stars"].dtype == "int64"
    assert ds["validation"]["repo"] == [None] and ds["train"]["stars"] == [5, None]


def test_parquet_split_files_load_together_without_help(tmp_path):
    files = write_split_files(tmp_path, "parquet")
    ds = load_dataset("parquet", data_files=[str(files["validation"]), str(files["train"])], split="train")
    assert ds.num_rows == 3 and ds.features["repo"].dtype == "string"


def test_json_split_files_load_together_with_the_schemas_features(tmp_path):
    files = write_split_files(tmp_path, "json")
    ds = load_dataset("json", data_files=[str(files["validation"]), str(files["train"])], split="train",
                      features=schema.features(COLUMNS))
    assert ds.num_rows == 3 and ds["aten_ops"] == [None, ["aten.add"], None]


def test_the_readmes_load_dataset_snippet_gets_the_declared_types(tmp_path, monkeypatch):
    """The README's Hugging Face snippet, run as it is on an output folder whose rows have no GitHub kernel: no
    column comes out typed null (a plain JSON load infers `repo`, `stars` ... as null)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Hugging Face `datasets`:"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    folder = tmp_path / "datasets"
    folder.mkdir()
    inductor_only = [row("train", model="m1"), row("train", model="m2"), row("validation", model="m3")]
    files = {}
    for split in ("train", "validation"):
        files[split] = folder / f"triton_functions.{split}.json"
        write.write_rows(files[split], [r for r in inductor_only if r["split"] == split], "json", COLUMNS)
    card.write_card(folder, inductor_only, {s: p.name for s, p in files.items()}, {"counts": {}}, "estimate",
                    COLUMNS)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet.replace("print(", "(lambda *a: None)("), scope)
    ds = scope["ds"]
    assert ds.num_rows == 2
    assert not [name for name, feature in ds.features.items() if str(getattr(feature, "dtype", "")) == "null"]
