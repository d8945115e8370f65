"""create_json.py options: filters, tokenizer, text column, formats, decontamination, split determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import create_json
from dataset_helpers import ADD_KERNEL, ADD_KERNEL_NEAR, SOFTMAX_KERNEL, github_record
from scraper.dataset import split as split_module

MUL_KERNEL = ADD_KERNEL.replace("add_kernel", "mul_kernel").replace("x + y", "x * y").replace(
    "offsets < n_elements", "offsets < n_elements  # bound")


def kernels_folder(tmp_path: Path) -> Path:
    """Three distinct kernels from three repositories with different licenses."""
    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    items = [github_record("add_kernel", ADD_KERNEL, "a/add", license="MIT", stars=10),
             github_record("softmax_kernel", SOFTMAX_KERNEL, "b/softmax", license="GPL-3.0-only", stars=900),
             github_record("mul_kernel", MUL_KERNEL, "c/mul", license=None)]
    (folder / "kernels.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return folder


def build(tmp_path: Path, *args, name="ds.json") -> tuple[list, Path]:
    out = tmp_path / "out" / name
    assert create_json.main([str(a) for a in args] + ["-o", str(out), "-q", "--no-card"]) == 0
    return (json.loads(out.read_text()) if out.suffix == ".json" else None), out


def rejects_of(out: Path) -> list:
    return [json.loads(line) for line in (out.parent / "rejects.jsonl").read_text().splitlines()]


def test_license_permissive_drops_copyleft_and_unknown(tmp_path):
    rows, out = build(tmp_path, kernels_folder(tmp_path), "--license", "permissive")
    assert [row["kernel_name"] for row in rows] == ["add_kernel"]
    assert sorted(r["name"] for r in rejects_of(out) if r["reason"] == "license") == ["mul_kernel", "softmax_kernel"]
    rows, _ = build(tmp_path, kernels_folder(tmp_path / "2"), "--license", "GPL-3.0-only,MIT")
    assert sorted(row["kernel_name"] for row in rows) == ["add_kernel", "softmax_kernel"]


def test_permissive_copy_is_kept_over_a_starred_copyleft_one(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    items = [github_record("add_kernel", ADD_KERNEL, "big/gpl", license="GPL-3.0-only", stars=5000),
             github_record("add_kernel", ADD_KERNEL, "small/mit", license="MIT", stars=3)]
    (folder / "kernels.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    rows, _ = build(tmp_path, folder, "--license", "permissive")
    assert [row["repo"] for row in rows] == ["small/mit"]
    rows, _ = build(tmp_path / "2", folder)  # without the filter the better-known copy wins
    assert [row["repo"] for row in rows] == ["big/gpl"]


def test_min_lines_and_max_tokens(tmp_path):
    folder = kernels_folder(tmp_path)
    lines = {"add_kernel": ADD_KERNEL, "softmax_kernel": SOFTMAX_KERNEL}
    counts = {name: sum(1 for line in code.splitlines() if line.strip()) for name, code in lines.items()}
    assert counts["softmax_kernel"] < counts["add_kernel"]
    rows, out = build(tmp_path, folder, "--min-lines", counts["add_kernel"])
    assert "softmax_kernel" not in {row["kernel_name"] for row in rows}
    assert "add_kernel" in {row["kernel_name"] for row in rows}
    rows, out = build(tmp_path, folder)
    tokens = {row["kernel_name"]: row["n_tokens"] for row in rows}
    for row in rows:  # the default estimate: ceil(chars / 4) of the row text
        assert row["n_tokens"] == -(-len(row["text"]) // 4)
    limit = min(tokens.values())
    rows, out = build(tmp_path, folder, "--max-tokens", limit)
    assert [row["n_tokens"] for row in rows] == [limit]
    assert {r["reason"] for r in rejects_of(out)} == {"too_many_tokens"}


def test_tokenizer_file_gives_exact_counts(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = tokenizers.Tokenizer(WordLevel({"[UNK]": 0, "tl": 1, "x": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()  # splits on \w+|[^\w\s]+
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    rows, out = build(tmp_path, kernels_folder(tmp_path), "--tokenizer", path)
    for row in rows:
        assert row["n_tokens"] == len(re.findall(r"\w+|[^\w\s]+", row["text"]))
    assert json.loads((out.parent / "stats.json").read_text())["token_counter"] == "tokenizer:tokenizer.json"


def test_missing_tokenizer_is_a_clear_error(tmp_path, capsys):
    code = create_json.main([str(kernels_folder(tmp_path)), "-o", str(tmp_path / "o.json"), "--tokenizer",
                             str(tmp_path / "nope.json"), "-q"])
    assert code == 2
    assert "tokenizer file not found" in capsys.readouterr().err


def test_corrupt_tokenizer_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"not": "a tokenizer"}')
    code = create_json.main([str(kernels_folder(tmp_path)), "-o", str(tmp_path / "o.json"), "--tokenizer",
                             str(path), "-q"])
    assert code == 2
    assert f"cannot read tokenizer {path}" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--max-tokens", "0"], ["--max-tokens", "-5"], ["--min-lines", "-1"]])
def test_limits_below_their_range_are_refused(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        create_json.main([str(kernels_folder(tmp_path)), "-o", str(tmp_path / "o.json"), "-q", *option])
    assert exit_info.value.code == 2 and option[0] in capsys.readouterr().err


def test_column_and_no_fence(tmp_path):
    rows, _ = build(tmp_path, kernels_folder(tmp_path), "--column", "input", "--no-fence")
    by_name = {row["kernel_name"]: row for row in rows}
    assert "text" not in by_name["add_kernel"]
    assert by_name["add_kernel"]["input"] == ADD_KERNEL


def test_column_that_is_a_metadata_column_is_refused(tmp_path, capsys):
    # `--column id` would put the text under "id", then the id column would overwrite it: the text is lost.
    for column in ("id", "split", "source"):
        with pytest.raises(SystemExit) as exit_info:
            create_json.main([str(kernels_folder(tmp_path / column)), "-o", str(tmp_path / "o.json"),
                              "--column", column, "-q"])
        assert exit_info.value.code == 2
        assert "metadata column" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_aten_ops_given_as_one_string_stay_one_op():
    from scraper.dataset.item import Item
    from scraper.dataset.write import to_row
    from scraper.records import KernelRecord

    record = KernelRecord(name="k", code="x = 1\n", source="github", aten_ops="aten.add")
    assert to_row(Item(record))["aten_ops"] == ["aten.add"]
    record.aten_ops = ["aten.mul", "aten.relu"]
    assert to_row(Item(record))["aten_ops"] == ["aten.mul", "aten.relu"]


def test_card_names_only_splits_that_have_rows_and_the_folder_loads(tmp_path):
    # An empty split listed in the card's `configs` makes datasets.load_dataset(<folder>) fail on that split.
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out" / "ds.json"
    assert create_json.main([str(kernels_folder(tmp_path)), "-o", str(out), "-q", "--val-fraction", "0"]) == 0
    assert json.loads(out.with_name("ds.validation.json").read_text()) == []
    header = (out.parent / "README.md").read_text().split("---\n")[1]
    assert "path: ds.train.json" in header and "validation" not in header
    loaded = datasets.load_dataset(str(out.parent), cache_dir=str(tmp_path / "hf"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 3


def test_parquet_output(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    _, out = build(tmp_path, kernels_folder(tmp_path), "--format", "parquet", name="ds.parquet")
    table = pq.read_table(out)
    assert sorted(table.column("kernel_name").to_pylist()) == ["add_kernel", "mul_kernel", "softmax_kernel"]
    assert all(text.startswith("```python\n") for text in table.column("text").to_pylist())
    assert out.with_name("ds.train.parquet").is_file()


def test_decontaminate_drops_exact_and_near_matches(tmp_path):
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    # KernelBench-like: the add kernel (another docstring) inside a file with a test harness
    (evaluation / "level1_add.py").write_text(ADD_KERNEL_NEAR + "\n\ndef test():\n    pass\n")
    (evaluation / "softmax.py").write_text(SOFTMAX_KERNEL)  # an exact copy
    rows, out = build(tmp_path, kernels_folder(tmp_path), "--decontaminate", evaluation)
    assert [row["kernel_name"] for row in rows] == ["mul_kernel"]
    dropped = {r["name"]: r for r in rejects_of(out) if r["reason"] == "contaminated"}
    assert dropped["softmax_kernel"]["match"] == "exact"
    assert dropped["add_kernel"]["match"] == "near" and dropped["add_kernel"]["matches"].startswith("level1_add.py")
    stats = json.loads((out.parent / "stats.json").read_text())
    assert stats["counts"]["dropped_contaminated"] == 2


def test_split_is_deterministic_and_by_group(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    items = []
    for repo in range(40):  # 40 repositories of 3 distinct kernels each
        for k in range(3):
            code = SOFTMAX_KERNEL.replace("softmax_kernel", f"k_{repo}_{k}").replace(
                "row * in_stride", f"row * in_stride * {repo * 3 + k + 2}")
            items.append(github_record(f"k_{repo}_{k}", code, f"owner/repo{repo}"))
    (folder / "kernels.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    first, _ = build(tmp_path, folder, "--val-fraction", "0.25", "--near-threshold", "0")
    second, _ = build(tmp_path / "again", folder, "--val-fraction", "0.25", "--near-threshold", "0")
    assert [(r["id"], r["split"]) for r in first] == [(r["id"], r["split"]) for r in second]
    val_repos = {r["repo"] for r in first if r["split"] == "validation"}
    assert val_repos and not val_repos & {r["repo"] for r in first if r["split"] == "train"}
    # the decision depends only on the repository name
    for repo in {r["repo"] for r in first}:
        expected = split_module.group_position(f"repo:{repo}") < 0.25
        assert (repo in val_repos) == expected
    assert 3 <= len(val_repos) <= 18  # 40 groups at 25%: far from none or all


def test_require_hook_runs_after_dedup_and_drops_failures(tmp_path):
    # The place the lead wires --require: a validate step on the deduplicated records, then requirement checks.
    from scraper.dataset import filters
    from scraper.dataset.pipeline import Options, build_dataset

    folder = kernels_folder(tmp_path)
    with open(folder / "kernels.jsonl", "a") as handle:  # an exact copy: validation must not see it
        handle.write(json.dumps(github_record("add_kernel", ADD_KERNEL, "z/copy")) + "\n")
    seen = []

    def validate(records, stats):
        seen.extend(r.name for r in records)
        for record in records:
            record.compiles = record.name != "softmax_kernel"

    options = Options(inputs=[folder], output=tmp_path / "o" / "d.json", card=False, validate=validate,
                      require_checks=[filters.requirement_check("compiles", lambda r, level: r.compiles)])
    result = build_dataset(options)
    assert sorted(seen) == ["add_kernel", "mul_kernel", "softmax_kernel"]
    assert sorted(row["kernel_name"] for row in result.rows) == ["add_kernel", "mul_kernel"]
    assert result.stats.counts["dropped_not_compiles"] == 1


def test_few_groups_get_a_validation_split_within_the_fraction():
    from scraper.dataset.item import Item
    from scraper.records import KernelRecord

    sizes = {"big/a": 100, "small/b": 4, "mid/c": 50, "tiny/d": 3}  # no key hashes below 0.05
    assert all(split_module.group_position(f"repo:{repo}") >= 0.05 for repo in sizes)
    items = [Item(KernelRecord(name=f"{repo}{i}", code=f"x = {i}", source="github", repo=repo))
             for repo, size in sizes.items() for i in range(size)]
    split_module.assign_splits(items, 0.05)
    validation = {i.record.repo for i in items if i.split == "validation"}
    rows = sum(i.split == "validation" for i in items)
    assert validation and rows <= 0.05 * len(items)  # 157 rows: at most 7, so only the small groups
    assert validation <= {"small/b", "tiny/d"}
    large = [i for i in items if i.record.repo in ("big/a", "mid/c")]  # both too large: no validation
    split_module.assign_splits(large, 0.05)
    assert {i.split for i in large} == {"train"}


def launch_repo_manifest(folder):
    """A generator-style manifest: a kernel with a launcher, a helper, a gluon kernel (fields as the generator
    writes them: dialect, role, launcher with the host module's code)."""
    from scraper.records import KernelRecord, write_jsonl

    kernel = "import triton\n\n@triton.jit\ndef add_kernel(x):\n    pass\n"
    host = kernel + "\n\ndef add(x):\n    add_kernel[(1,)](x)\n    return x\n"
    records = [
        KernelRecord(name="add_kernel", code=kernel, source="github", repo="a/ops", role="kernel", dialect="triton",
                     launcher={"qualname": "add", "code": host, "how": "grid", "self_contained": True}),
        KernelRecord(name="_twice", code="import triton\n\n@triton.jit\ndef _twice(x):\n    return x * 2\n",
                     source="github", repo="a/ops", role="helper", dialect="triton"),
        KernelRecord(name="g_kernel", code="from triton.experimental import gluon\n\n@gluon.jit\ndef g_kernel(x):\n"
                     "    pass\n", source="github", repo="a/ops", role="kernel", dialect="gluon"),
    ]
    folder.mkdir(parents=True)
    write_jsonl(folder / "kernels.jsonl", records)
    return folder, host


def test_launchers_helpers_and_dialects(tmp_path):
    inputs, host = launch_repo_manifest(tmp_path / "gen")
    out = tmp_path / "out" / "ds.jsonl"
    args = [str(inputs), "-o", str(out), "--format", "jsonl", "--near-threshold", "0", "-q"]
    assert create_json.main(args + ["--with-launcher", "--drop-helpers"]) == 0
    rows = {row["kernel_name"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"add_kernel", "g_kernel"}  # the helper is gone
    assert rows["add_kernel"]["text"] == f"```python\n{host.strip()}\n```" and rows["add_kernel"]["with_launcher"]
    assert not rows["g_kernel"]["with_launcher"] and rows["g_kernel"]["dialect"] == "gluon"
    counts = json.loads((out.parent / "stats.json").read_text())["counts"]
    assert counts["dropped_helper"] == 1
    assert create_json.main(args + ["--dialect", "gluon"]) == 0
    assert [json.loads(line)["kernel_name"] for line in out.read_text().splitlines()] == ["g_kernel"]
