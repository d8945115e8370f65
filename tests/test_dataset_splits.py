"""Train/validation splits on the real inputs: the demo's (the torch_compile_debug fixtures and the four bundled
repositories) and the H200 pairs fixture. Every source with three groups or more has validation rows, no group
straddles the splits, and a split or source left empty is said on stderr, in stats.json and on the card.

Oracles come from the inputs: the bundled repositories are the folders of examples/repos, the suites and models of
the H200 fixture its pairing records' folders."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO_ROOT
from dataset_helpers import EXAMPLES, build_stage_outputs
from pairs_helpers import extract

BUNDLED = sorted(path.relative_to(EXAMPLES).as_posix() for path in EXAMPLES.glob("*/*") if path.is_dir())


@pytest.fixture(scope="module")
def stages(tcd_roots, tmp_path_factory):
    """(inductor output folder, generator output folder) of the demo's inputs."""
    return build_stage_outputs(tcd_roots, tmp_path_factory.mktemp("stages"))


@pytest.fixture(scope="module")
def h200(tmp_path_factory) -> Path:
    """Stage 1's output for the H200 fixture's two debug roots (timm, Hugging Face)."""
    root = tmp_path_factory.mktemp("h200")
    with tarfile.open(FIXTURES / "suite_run" / "pairs_h200.tar.gz") as archive:
        archive.extractall(root, filter="data")
    return extract([root / "tcd_timm", root / "tcd_hf"], root / "kernels")


def create_json(folder: Path, *args, stem: str = "triton_functions") -> tuple[list, str]:
    """Run create_json.py into a new `folder`; (rows of its main file `stem`.json, stderr)."""
    done = subprocess.run([sys.executable, "create_json.py", *map(str, args), "-o", f"{folder}/"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / f"{stem}.json").read_text()), done.stderr


def only_repos(generated: Path, repos: list, dest: Path) -> Path:
    """A copy of the generator's kernels.jsonl holding only the kernels of `repos`."""
    dest.mkdir(parents=True)
    lines = (generated / "kernels.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("repo") in repos]
    (dest / "kernels.jsonl").write_text("".join(line + "\n" for line in kept))
    return dest


def by_split(rows: list, column: str) -> dict:
    """{split: set of `column` values}."""
    found: dict = {}
    for row in rows:
        found.setdefault(row["split"], set()).add(row[column])
    return found


def test_every_source_of_the_demo_inputs_has_validation_rows(stages, tmp_path):
    inductor, generated = stages
    rows, stderr = create_json(tmp_path / "ds", inductor, generated)
    assert by_split(rows, "source")["validation"] == {"inductor", "github"}
    repos, models = by_split([r for r in rows if r["repo"]], "repo"), by_split([r for r in rows if r["model"]], "model")
    assert len(repos["validation"]) == 1 and repos["validation"] | repos["train"] == set(BUNDLED)
    assert not repos["validation"] & repos["train"] and not models["validation"] & models["train"]
    validation = sum(row["split"] == "validation" for row in rows)
    assert 0 < validation < len(rows) / 4
    assert "validation has no" not in stderr and "no validation split" not in stderr


def test_a_source_with_too_few_groups_is_named(stages, tmp_path):
    inductor, generated = stages
    two = only_repos(generated, BUNDLED[:2], tmp_path / "two")
    rows, stderr = create_json(tmp_path / "ds", inductor, two)
    assert by_split(rows, "source")["validation"] == {"inductor"}
    note = next(line for line in stderr.splitlines() if "validation has no github rows" in line)
    assert "2 group(s)" in note and all(f"repo:{repo}" in note for repo in BUNDLED[:2])
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "Note: validation has no github rows: 2 group(s)" in card
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert any("validation has no github rows" in note for note in stats["split_notes"])


def test_no_validation_split_is_said_with_the_reason(stages, tmp_path):
    _, generated = stages
    one = only_repos(generated, BUNDLED[:1], tmp_path / "one")
    rows, stderr = create_json(tmp_path / "ds", one)
    assert {row["split"] for row in rows} == {"train"}
    assert f"no validation split: all {len(rows)} rows are one group (repo:{BUNDLED[0]})" in stderr
    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"Note: no validation split: all {len(rows)} rows are one group" in card
    assert "split: validation" not in card  # the card lists only splits with rows (load_dataset needs that)
    rows, stderr = create_json(tmp_path / "ds0", generated, "--val-fraction", "0")
    assert {row["split"] for row in rows} == {"train"} and "no validation split: --val-fraction 0" in stderr


def fixture_suites(h200_kernels: Path) -> dict:
    """{suite: models} of the H200 fixture, from its pairing records' folders (suite/pairing/<suite>/...)."""
    found: dict = {}
    for record in h200_kernels.parent.glob("tcd_*/suite/pairing/*/*/*.json"):
        found.setdefault(record.parts[-3], set()).add(record.stem)
    return found


@pytest.mark.parametrize("task", ["pairs", "problems"])
def test_every_suite_of_the_h200_fixture_has_validation_rows(h200, tmp_path, task):
    suites = fixture_suites(h200)
    assert {suite: len(models) for suite, models in suites.items()} == {"timm": 3, "huggingface": 3}
    extra = ["--include-unchecked", "--pair-level", "kernel,model"] if task == "pairs" else []
    rows, stderr = create_json(tmp_path / "ds", h200, "--task", task, *extra, stem=f"triton_{task}")
    assert by_split(rows, "suite")["validation"] == set(suites)
    models = by_split(rows, "model")
    assert models["validation"] | models["train"] == set().union(*suites.values())
    assert not models["validation"] & models["train"]
    assert len(models["validation"]) == 2  # one model of each suite: three groups lend one
    assert "no validation split" not in stderr
