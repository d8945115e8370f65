"""A run writes only its named output and files of its own: it never replaces a file it did not create."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import create_json
from dataset_helpers import ADD_KERNEL, SOFTMAX_KERNEL, github_record


def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "gen"
    folder.mkdir()
    rows = [github_record("add_kernel", ADD_KERNEL, "a/a"), github_record("softmax_kernel", SOFTMAX_KERNEL, "b/b")]
    (folder / "kernels.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_a_readme_that_is_not_the_card_is_left_alone(tmp_path, monkeypatch):
    """The bug: `create_json.py inductor_kernels -o my.jsonl` from the repository root replaced its README.md."""
    source = inputs(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# my project\n")
    monkeypatch.chdir(project)
    assert create_json.main([str(source), "-o", "my.jsonl", "--format", "jsonl", "-q", "--near-threshold", "0"]) == 0
    assert (project / "README.md").read_text() == "# my project\n"
    assert not (project / "token_lengths.png").exists()
    assert len((project / "my.jsonl").read_text().splitlines()) == 2
    assert (project / "my.train.jsonl").exists() and (project / "stats.json").exists()


def test_a_side_file_of_someone_else_stops_the_run_before_any_work(tmp_path, monkeypatch, capsys):
    source = inputs(tmp_path)
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "stats.json").write_text('{"mine": true}\n')
    assert create_json.main([str(source), "-o", str(folder / "ds.json"), "-q"]) == 2
    assert (folder / "stats.json").read_text() == '{"mine": true}\n' and not (folder / "ds.json").exists()
    assert "did not write" in capsys.readouterr().err


def test_a_trailing_slash_means_a_folder_and_reruns_replace_their_own_files(tmp_path):
    source = inputs(tmp_path)
    target = tmp_path / "newdir"
    for _ in range(2):  # the second run replaces what the first wrote
        assert create_json.main([str(source), "-o", f"{target}/", "-q", "--near-threshold", "0"]) == 0
    assert (target / "triton_functions.json").is_file() and (target / "triton_functions.train.json").is_file()
    assert (target / "README.md").read_text().count("dataset card written by triton-data") == 1
    assert not (tmp_path / "newdir.train").exists()


def test_the_output_folder_of_another_stage_is_refused(tmp_path):
    """`-o inductor_kernels/` would have replaced the Inductor stage's own kernels.jsonl."""
    import get_kernels_from_debug_info

    source = inputs(tmp_path)
    stage1 = tmp_path / "stage1"
    (tmp_path / "empty-debug-folder").mkdir()  # read, nothing found (exit 1): stage 1 still writes its files
    assert get_kernels_from_debug_info.main([str(tmp_path / "empty-debug-folder"), "-o", str(stage1), "-q"]) == 1
    before = (stage1 / "kernels.jsonl").read_bytes()
    assert create_json.main([str(source), "-o", f"{stage1}/", "-q"]) == 2
    assert (stage1 / "kernels.jsonl").read_bytes() == before


def test_generator_keeps_to_its_own_folder_and_clean_removes_only_its_files(tmp_path, capsys):
    from scraper.generator import main as generator_main

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "k.py").write_text("import triton\n\n\n@triton.jit\ndef k(x):\n    pass\n")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "stats.json").write_text("{}\n")
    assert generator_main.main(["--generate-one", str(repo), "-o", str(theirs), "--jobs", "1", "-q"]) == 2
    assert (theirs / "stats.json").read_text() == "{}\n" and not (theirs / "kernels.jsonl").exists()
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")  # a file of the user's in the generator's folder
    # the old flag name still works, with a warning
    assert generator_main.main(["--generate-one", str(repo), "--tests-dir", str(out), "--jobs", "1", "-q"]) == 0
    assert "--tests-dir is deprecated" in capsys.readouterr().err
    assert (out / "kernels.jsonl").is_file() and (out / "repo").is_dir()
    assert generator_main.main(["--generate-one", str(repo), "-o", str(out), "--clean", "--jobs", "1", "-q"]) == 0
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "kernels.jsonl").is_file()
    argv = ["--generate-one", str(tmp_path / "gone"), "--generate-one", str(repo), "-o", str(out), "--jobs", "1"]
    assert generator_main.main(argv + ["-q"]) == 3  # a missing archive: exit 3
    assert generator_main.main(argv + ["-q", "--keep-going"]) == 0


def listing(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_an_output_file_of_the_users_is_refused_and_nothing_is_written_beside_it(tmp_path, capsys):
    """The bug: `-o mine/data.json` replaced the user's data.json and wrote a card, stats, splits beside it."""
    source = inputs(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.json").write_text('{"mine": true}\n')
    (mine / "notes.md").write_text("my notes\n")
    before = listing(mine)
    assert create_json.main([str(source), "-o", str(mine / "data.json"), "-q"]) == 2
    assert listing(mine) == before
    assert "data.json" in capsys.readouterr().err


def test_rerunning_into_its_own_file_replaces_it(tmp_path):
    source = inputs(tmp_path)
    out = tmp_path / "fresh" / "data.json"
    for _ in range(2):
        assert create_json.main([str(source), "-o", str(out), "-q", "--near-threshold", "0"]) == 0
    assert len(json.loads(out.read_text())) == 2


@pytest.mark.parametrize("name, extra", [("notes.txt", []), ("data.json", ["--format", "parquet"]),
                                         ("data.jsonl", ["--format", "json"]), ("data", [])])
def test_a_file_name_that_is_not_the_formats_is_refused_before_anything_is_written(tmp_path, name, extra, capsys):
    source = inputs(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        create_json.main([str(source), "-o", str(out / name), "-q", *extra])
    assert stop.value.code == 2
    assert not out.exists()
    assert f"-o {out / name}" in capsys.readouterr().err


def test_the_file_names_extension_picks_the_format(tmp_path):
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    source = inputs(tmp_path)
    out = tmp_path / "out" / "data.parquet"
    assert create_json.main([str(source), "-o", str(out), "-q", "--near-threshold", "0"]) == 0
    assert out.read_bytes()[:4] == b"PAR1"  # Parquet's magic number, not JSON
    table = pyarrow_parquet.read_table(out)
    assert sorted(table.column("kernel_name").to_pylist()) == ["add_kernel", "softmax_kernel"]
