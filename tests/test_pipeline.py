"""scraper.pipeline: the shape the stages share (steps, filters into rejects, the resume ledger), and that the
stages use it rather than their own copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scraper.pipeline import Done, Filter, Run, chain, run_batch
from scraper.stats import Rejects, Stats

ROOT = Path(__file__).resolve().parent.parent


def new_run(tmp_path: Path) -> Run:
    stats = Stats("test")
    return Run(stats, Rejects(tmp_path / "rejects.jsonl", stats))


def test_a_filter_drops_at_the_first_reason_into_the_rejects_with_its_details(tmp_path):
    run = new_run(tmp_path)
    odd = lambda n: "odd" if n % 2 else None  # noqa: E731
    big = lambda n: "big" if n > 4 else None  # noqa: E731
    kept = Filter([odd, big], lambda n: {"n": n})(list(range(8)), run)
    assert kept == [0, 2, 4]
    assert [(row["reason"], row["n"]) for row in run.rejects.added] == [
        ("odd", 1), ("odd", 3), ("odd", 5), ("big", 6), ("odd", 7)]
    assert run.stats.counts["dropped_odd"] == 4 and run.stats.counts["dropped_big"] == 1


def test_steps_run_in_order(tmp_path):
    assert chain(2, [lambda n: n + 1, lambda n: n * 10]) == 30
    run = new_run(tmp_path)
    seen = []

    def remember(units, run):
        seen.append(list(units))
        return units[1:]

    assert run_batch([1, 2, 3], [remember, remember], run) == [3]
    assert seen == [[1, 2, 3], [2, 3]]


def test_the_ledger_keeps_the_latest_line_of_a_key_and_passes_over_what_is_not_an_entry(tmp_path):
    path = tmp_path / "done.jsonl"
    path.write_text("\n".join([
        json.dumps({"folder": "a", "n": 1}),
        "{torn",
        json.dumps(["not", "an", "object"]),
        json.dumps({"n": 9}),  # no key
        json.dumps({"folder": 7}),  # a key that is not a name
        json.dumps({"folder": "b", "n": 2}),
        json.dumps({"folder": "a", "n": 3}),
    ]) + "\n", encoding="utf-8")
    done = Done(path, "folder")
    assert done.entries == {"a": {"folder": "a", "n": 3}, "b": {"folder": "b", "n": 2}}
    done.mark({"folder": "c", "n": 4})
    assert "c" in done and Done(path, "folder").get("c") == {"folder": "c", "n": 4}
    assert Done(tmp_path / "missing.jsonl", "folder").entries == {}


def test_a_ledger_of_several_files_with_a_key_of_its_own_keeps_the_units_it_parses(tmp_path):
    """The suite's manifests (one per shard) are keyed by several fields, and a line is a typed entry."""
    first, second = tmp_path / "manifest-0.jsonl", tmp_path / "manifest-1.jsonl"
    first.write_text(json.dumps({"model": "a", "mode": "inference", "n": 1}) + "\n"
                     + json.dumps({"mode": "inference"}) + "\n")
    second.write_text(json.dumps({"model": "a", "mode": "training", "n": 2}) + "\n"
                      + json.dumps({"model": "a", "mode": "inference", "n": 3}) + "\n")
    parse = lambda data: data if "model" in data else None  # noqa: E731
    done = Done([first, second], key=lambda unit: (unit["model"], unit["mode"]), parse=parse)
    assert {key: unit["n"] for key, unit in done.entries.items()} == {("a", "inference"): 3, ("a", "training"): 2}
    done.mark({"model": "b", "mode": "inference", "n": 4})  # kept as a line read back would be
    assert Done([first, second], key=lambda unit: (unit["model"], unit["mode"]), parse=parse).entries == done.entries
    with pytest.raises(ValueError):
        done.mark({"mode": "inference"})  # parse says it is no unit: nothing is written
    assert len(first.read_text().splitlines()) == 3


def test_the_stages_take_the_shared_shape_instead_of_their_own():
    """One Step, one filter loop, one resume reader: none of the stages defines its own again."""
    own = {
        "scraper/inductor/unit.py": "Step = Callable[",
        "scraper/generator/run.py": "Step = Callable[",
        "scraper/dataset/filters.py": "def apply_filters(",
        "scraper/dataset/tasks.py": "class TaskItem",
        "scraper/inductor/stage.py": 'entry["folder"]: entry for entry in',
        "scraper/suiterun.py": "latest[entry.key] = entry",
    }
    for name, text in own.items():
        assert text not in (ROOT / name).read_text(encoding="utf-8"), name
    from scraper.dataset import tasks
    from scraper.dataset.pipeline import COMPLETION, Task
    assert set(tasks.TASKS) == {"completion", "pairs", "problems"}
    assert tasks.TASKS["completion"] is COMPLETION and all(isinstance(t, Task) for t in tasks.TASKS.values())
