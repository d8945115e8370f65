"""`triton-data report CORPUS` (issue #25): one self-contained HTML page and report.json about a corpus, opened
here in a real headless Chromium. Every expected figure is computed by the test from the corpus's files (lines
counted, rows read, reasons tallied), never taken from the report's own output; the corpus is made by the real
stages on the fixtures (tests/corpus_helpers.py, the session's corpus: conftest.fixture_corpus)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from report_helpers import BIDI, HOSTILE, REPO_ROOT, Browser, chromium, read_lines, read_page

DATASET_FILES = {"completion": "triton_functions.json", "pairs": "triton_pairs.json",
                 "problems": "triton_problems.json"}


def report(corpus: Path, *flags: str) -> subprocess.CompletedProcess:
    """The command as a user types it."""
    return subprocess.run([sys.executable, "-m", "scraper.console", "report", str(corpus), *flags], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def corpus(fixture_corpus, tmp_path_factory) -> Path:
    """The session's corpus (conftest.fixture_corpus), copied: the report is written into it."""
    return Path(shutil.copytree(fixture_corpus[1], tmp_path_factory.mktemp("report") / "corpus", symlinks=True))


@pytest.fixture(scope="module")
def browser():
    opened = Browser(chromium())
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def page(corpus, browser) -> dict:
    done = report(corpus)
    assert done.returncode == 0, done.stderr
    return read_page(browser, corpus / "report.html")


def rows_of(corpus: Path, task: str) -> list[dict]:
    return json.loads((corpus / "datasets" / DATASET_FILES[task]).read_text(encoding="utf-8"))


def count(text: str) -> int:
    return int(text.replace(",", ""))


def percent(passed: int, failed: int) -> str:
    return f"{100 * passed / (passed + failed):.1f}%"


def test_report_writes_one_page_and_the_same_figures_as_json(corpus, page):
    html = (corpus / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and page["title"] == f"triton-data report: {corpus}"
    figures = json.loads((corpus / "report.json").read_text(encoding="utf-8"))
    kernels = len(read_lines(corpus / "kernels" / "kernels.jsonl"))
    assert figures["sources"]["inductor"]["kernels"] == kernels == count(page["shown"]["source.inductor.kernels"])
    assert all(found["visible"] for figures_ in page["figures"].values() for found in figures_)


def test_each_stage_is_shown_with_its_state(corpus, page):
    assert not (corpus / "build.json").exists() and not (corpus / "suites/modules/suite/stats.json").exists()
    expected = {"build": "not run", "suite modules": "incomplete"}  # the modules fixture was cut down by hand
    for suite in ("huggingface", "timm"):
        expected[f"suite {suite}"] = "ran"
    expected.update({stage: "ran" for stage in ("inductor", "scrape", "generate", "pair check", "dataset completion",
                                                "dataset pairs", "dataset problems")})
    assert {key: page["shown"][f"stage.{key}.state"] for key in expected} == expected


def test_kernels_per_source_are_the_manifests_and_the_dataset_rows(corpus, page):
    stage1 = Counter(r["source"] for r in read_lines(corpus / "kernels" / "kernels.jsonl"))
    generated = Counter(r["source"] for r in read_lines(corpus / "generated" / "kernels.jsonl"))
    rows = rows_of(corpus, "completion")
    assert stage1 == {"inductor": stage1["inductor"]} and generated == {"github": generated["github"]}
    for source in ("inductor", "github"):
        shown = lambda column: count(page["shown"][f"source.{source}.{column}"])  # noqa: E731
        assert shown("kernels") == stage1[source] and shown("generated") == generated[source]
        assert shown("dataset_in") == stage1[source] + generated[source]  # the dataset took in every kernel
        assert shown("dataset_rows") == sum(r["source"] == source for r in rows)
        for split in ("train", "validation"):
            assert shown(f"dataset_{split}") == sum(r["source"] == source and r["split"] == split for r in rows)


def test_drops_by_reason_are_the_rejects_files(corpus, page):
    rejects = {"inductor": corpus / "kernels" / "pairs_rejects.jsonl",
               "dataset completion": corpus / "datasets" / "rejects.jsonl",
               "dataset pairs": corpus / "datasets" / "triton_pairs.rejects.jsonl",
               "dataset problems": corpus / "datasets" / "triton_problems.rejects.jsonl"}
    for stage, path in rejects.items():
        reasons = Counter(row["reason"] for row in read_lines(path))
        shown = {key.split(".", 2)[2]: count(text) for key, text in page["shown"].items()
                 if key.startswith(f"drop.{stage}.")}
        assert shown == reasons, stage
    assert len(Counter(row["reason"] for row in read_lines(rejects["inductor"]))) >= 5  # a real mix of reasons
    # the one model of the huggingface run that failed to compile (its stats.json's errors)
    groups = json.loads((corpus / "suites/huggingface/suite/stats.json").read_text())["errors"]["compile"]
    assert count(page["shown"]["error.suite huggingface.compile"]) == sum(g["count"] for g in groups) == 1


def test_suite_accuracy_is_the_manifests(corpus, page):
    for suite in ("timm", "huggingface", "modules"):
        entries = [json.loads(line) for path in sorted((corpus / "suites" / suite / "suite").glob("manifest*.jsonl"))
                   for line in path.read_text().splitlines() if line.strip()]
        verdicts = Counter(e.get("accuracy") or "not checked" for e in entries)
        assert count(page["shown"][f"suite.{suite}.models"]) == len(entries)
        for verdict in ("pass", "fail", "skipped", "not checked"):
            assert count(page["shown"][f"suite.{suite}.accuracy.{verdict}"]) == verdicts[verdict]
        judged = verdicts["pass"] + verdicts["fail"]
        rate = percent(verdicts["pass"], verdicts["fail"]) if judged else "\u2014"
        assert page["shown"][f"suite.{suite}.accuracy_rate"] == rate
    failed = [e for e in read_lines(corpus / "suites/modules/suite/manifest-0-of-15.jsonl") if e["status"] != "ok"]
    assert page["shown"]["suite.modules.failed_by_phase"] == ", ".join(f"{e['phase']} 1" for e in failed) != ""


def test_accuracy_counts_each_models_latest_verdict(tmp_path, browser):
    """Every verdict of the accuracy check, and a model run twice (a resumed suite run): its latest line counts."""
    manifest = tmp_path / "corpus" / "suites" / "toy" / "suite" / "manifest.jsonl"
    manifest.parent.mkdir(parents=True)
    lines = [("a", "ok", "fail"), ("a", "ok", "pass"), ("b", "ok", "pass"), ("c", "ok", "fail"),
             ("d", "ok", "skipped"), ("e", "failed", None), ("f", "ok", None)]
    manifest.write_text("".join(json.dumps({"suite": "toy", "model": model, "status": status, "accuracy": verdict,
                                            "phase": "compile" if status == "failed" else None}) + "\n"
                                for model, status, verdict in lines))
    assert report(tmp_path / "corpus").returncode == 0
    shown = read_page(browser, tmp_path / "corpus" / "report.html")["shown"]
    assert count(shown["suite.toy.models"]) == 6
    verdicts = {"pass": 2, "fail": 1, "skipped": 1, "not checked": 2}
    assert {v: count(shown[f"suite.toy.accuracy.{v}"]) for v in verdicts} == verdicts
    assert shown["suite.toy.accuracy_rate"] == percent(2, 1)
    assert shown["suite.toy.status"] == "failed 1, ok 5" and shown["suite.toy.failed_by_phase"] == "compile 1"
    assert shown["stage.suite toy.state"] == "incomplete"  # a manifest, no stats.json


def test_pair_check_pass_rate_is_the_pairs_and_its_summary(corpus, page):
    pairs = read_lines(corpus / "kernels" / "pairs.jsonl")
    passed = sum(p["pair_correct"] is True for p in pairs)
    failed = sum(p["pair_correct"] is False for p in pairs)
    assert passed == 6  # the H200's verdicts
    assert count(page["shown"]["pairs.verdict.passed"]) == passed
    assert count(page["shown"]["pairs.verdict.failed"]) == failed
    assert count(page["shown"]["pairs.verdict.unchecked"]) == len(pairs) - passed - failed
    assert page["shown"]["pairs.pass_rate"] == percent(passed, failed)
    summary = json.loads((corpus / "kernels" / "pairs_check.json").read_text())
    for key in ("pairs", "checked", "passed", "failed", "unchecked"):
        assert count(page["shown"][f"check.{key}"]) == summary[key]
    assert page["shown"]["check.speedup.median"] == f"{summary['speedup']['median']:.4g}"


def test_validation_is_the_records_checked(corpus, page):
    for folder in ("kernels", "generated", "datasets"):
        records = read_lines(corpus / folder / "kernels.jsonl")
        for source in {r["source"] for r in records}:
            mine = [r for r in records if r["source"] == source]
            key = f"validation.{folder}.{source}"
            assert count(page["shown"][f"{key}.records"]) == len(mine)
            for level in ("parses", "imports", "compiles"):
                checked = sum(r[level] is not None for r in mine)
                passed = sum(r[level] is True for r in mine)
                assert (count(page["shown"][f"{key}.{level}.checked"]), count(page["shown"][f"{key}.{level}.passed"])) \
                    == (checked, passed), (key, level)
                rate = f"{100 * passed / checked:.1f}%" if checked else "\u2014"
                assert page["shown"][f"{key}.{level}.rate"] == rate
    assert page["shown"]["validation.generated.github.parses.rate"] == "100.0%"  # the generator ran --validate parses


def test_pairs_by_level_and_rows_by_split(corpus, page):
    levels = Counter(p["pair_level"] for p in read_lines(corpus / "kernels" / "pairs.jsonl"))
    assert set(levels) == {"kernel", "graph", "model"}
    assert {level: count(page["shown"][f"pairs.level.{level}"]) for level in levels} == levels
    problems = Counter(p["level"] for p in read_lines(corpus / "kernels" / "problems" / "problems.jsonl"))
    assert {level: count(page["shown"][f"problems.level.{level}"]) for level in problems} == problems
    for task, column in (("completion", "source"), ("pairs", "pair_level"), ("problems", "level")):
        rows = rows_of(corpus, task)
        for name, expected in Counter(str(r[column]) for r in rows).items():
            assert count(page["shown"][f"dataset.{task}.by.{name}"]) == expected
        for split, expected in Counter(r["split"] for r in rows).items():
            assert count(page["shown"][f"dataset.{task}.split.{split}"]) == expected
        assert count(page["shown"][f"dataset.{task}.split.all"]) == len(rows)


def bars_of(page: dict, name: str) -> list[dict]:
    return [bar for bar in page["bars"] if bar["name"] == name]


def check_histogram(bars: list[dict], values: list[float]) -> None:
    """Each bar holds the values in [lo, hi), with its count as its label and a height in proportion."""
    assert bars and all(bar["visible"] for bar in bars)
    tallest = max(int(bar["count"]) for bar in bars)
    top = max(bar["height"] for bar in bars)
    for bar in bars:
        lo, hi, shown = float(bar["lo"]), float(bar["hi"]), int(bar["count"])
        assert shown == sum(lo <= v < hi for v in values), bar
        assert bar["label"] == (str(shown) if shown else None)
        assert math.isclose(bar["height"], top * shown / tallest, abs_tol=0.05)
    assert sum(int(bar["count"]) for bar in bars) == len(values)
    assert [float(b["hi"]) for b in bars[:-1]] == [float(b["lo"]) for b in bars[1:]]  # no gap, no overlap


def test_token_length_histograms_hold_every_row(corpus, page):
    for task in DATASET_FILES:
        check_histogram(bars_of(page, f"tokens.{task}"), [r["n_tokens"] for r in rows_of(corpus, task)])


def test_speedup_histogram_is_the_passed_pairs(corpus, page):
    pairs = read_lines(corpus / "kernels" / "pairs.jsonl")
    speedups = [p["speedup"] for p in pairs if p["pair_correct"] is True and p["speedup"] is not None]
    assert len(speedups) == 6
    check_histogram(bars_of(page, "speedup"), speedups)


def test_samples_are_rows_of_each_dataset(corpus, page):
    texts = {"completion": ("text",), "pairs": ("python_code", "triton_code"), "problems": ("python_code",)}
    for task, columns in texts.items():
        rows = {r["id"]: r for r in rows_of(corpus, task)}
        shown = [s for s in page["samples"] if s["task"] == task]
        assert shown and all(s["visible"] for s in shown)
        for sample in shown:
            row, part = rows[sample["id"]], sample["texts"]
            assert set(part) == set(columns)
            for column in columns:  # the row's own text, whole or its first thousand characters at least
                assert row[column].startswith(part[column])
                assert part[column] == row[column] or len(part[column]) >= 1000
            left = sorted(len(row[c]) - len(part[c]) for c in columns if part[c] != row[c])
            assert sorted(map(int, sample["more"])) == left  # what is cut is said, with how much
    shown_ids = {s["id"] for s in page["samples"] if s["task"] == "completion"}
    assert {r["source"] for r in rows_of(corpus, "completion") if r["id"] in shown_ids} == {"inductor", "github"}


def test_the_page_fetches_nothing_and_runs_nothing(corpus, page):
    assert page["requests"] == [(corpus / "report.html").resolve().as_uri()]
    assert page["links"] == [] and not any("url(" in s or "@import" in s for s in page["styles"])
    assert not {"script", "img", "iframe", "object", "embed", "link", "image", "use"} & set(page["elements"])


# ------------------------------------------------------------------------------------------------ hostile text


@pytest.fixture(scope="module")
def poisoned(corpus, tmp_path_factory) -> Path:
    """A copy of the corpus whose free text holds markup everywhere a stage writes names: a model, a status and a
    phase of a suite manifest, a drop reason, an error phase, a stage of build.json, a dataset row's columns."""
    copy = Path(shutil.copytree(corpus, tmp_path_factory.mktemp("poisoned") / "corpus"))
    manifest = copy / "suites/modules/suite/manifest-0-of-15.jsonl"
    entries = read_lines(manifest)
    entries[0].update(model=HOSTILE, status=HOSTILE, phase=HOSTILE)
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    stats_path = copy / "kernels" / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats["counts"][f"dropped_{HOSTILE}"] = 7
    stats["errors"][HOSTILE] = [{"error": HOSTILE, "count": 2, "example": HOSTILE}]
    stats_path.write_text(json.dumps(stats))
    (copy / "build.json").write_text(json.dumps({"plan": HOSTILE, "stages": {HOSTILE: {"state": HOSTILE}}}))
    rows = rows_of(copy, "completion")
    rows.insert(0, {**rows[0], "id": HOSTILE, "kernel_name": HOSTILE, "repo": HOSTILE, "text": HOSTILE + BIDI})
    (copy / "datasets" / DATASET_FILES["completion"]).write_text(json.dumps(rows))
    return copy


def test_hostile_text_stays_text(poisoned, browser):
    done = report(poisoned, "--samples", "1000")  # every row: the real hostile kernel of the generator too
    assert done.returncode == 0, done.stderr
    page = read_page(browser, poisoned / "report.html")
    assert page["pwned"] is None and page["title"] == f"triton-data report: {poisoned}"
    assert not {"script", "img"} & set(page["elements"]) and len(page["styles"]) == 1
    assert page["links"] == [] and len(page["requests"]) == 1
    # shown, as text, wherever it was put
    shown = page["shown"]
    assert shown["build.field.plan"] == HOSTILE and shown[f"build.stage.{HOSTILE}"] == HOSTILE
    assert HOSTILE in shown["suite.modules.status"] and HOSTILE in shown["suite.modules.failed_by_phase"]
    assert HOSTILE in [found["text"] for found in page["figures"]["suite.modules.failed.model"]]
    assert shown[f"drop.inductor.{HOSTILE}"] == "7" and shown[f"error.inductor.{HOSTILE}"] == "2"
    (row,) = [s for s in page["samples"] if s["id"] == HOSTILE]
    assert row["texts"]["text"] == HOSTILE + "\\u202e"  # the override escaped: nothing around it is reordered
    assert BIDI not in page["text"]
    evil = [s for s in page["samples"] if "evil_kernel" in s["texts"].get("text", "")]
    assert len(evil) == 1 and HOSTILE in evil[0]["texts"]["text"]  # the generator's own hostile kernel
    assert f"{HOSTILE} \\u202egnp.exe" in evil[0]["texts"]["text"]


# ------------------------------------------------------------------------------------------------ partial corpora


def test_an_empty_corpus_shows_every_stage_not_run(tmp_path, browser):
    (tmp_path / "corpus").mkdir()
    done = report(tmp_path / "corpus")
    assert done.returncode == 0, done.stderr
    page = read_page(browser, tmp_path / "corpus" / "report.html")
    states = {key: text for key, text in page["shown"].items() if key.startswith("stage.")}
    assert set(states.values()) == {"not run"} and len(states) == 8 and "note" not in page["figures"]
    assert page["bars"] == [] and page["samples"] == []


def test_a_corpus_with_only_stage_one(corpus, tmp_path, browser):
    shutil.copytree(corpus / "kernels", tmp_path / "corpus" / "kernels")
    assert report(tmp_path / "corpus").returncode == 0
    page = read_page(browser, tmp_path / "corpus" / "report.html")
    assert page["shown"]["stage.inductor.state"] == "ran" and page["shown"]["stage.dataset pairs.state"] == "not run"
    pairs = read_lines(corpus / "kernels" / "pairs.jsonl")
    assert count(page["shown"]["pairs.level.all"]) == len(pairs)
    assert {bar["name"] for bar in page["bars"]} == {"speedup"} and page["samples"] == []


def test_malformed_files_are_named_and_the_rest_is_shown(corpus, tmp_path, browser):
    copy = Path(shutil.copytree(corpus, tmp_path / "corpus"))
    stats = copy / "kernels" / "stats.json"
    stats.write_text(stats.read_text()[:40])  # torn
    (copy / "datasets" / "triton_pairs.json").write_bytes(b"\xff\xfe not json")
    with open(copy / "kernels" / "pairs.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"python_code": "torn\n[1, 2]\n')
    (copy / "build.json").write_text("[]")
    (copy / "generated" / "stats.json").write_text('{"counts": {"kernels_found": "many", "repositories": 5}}')
    done = report(copy)
    assert done.returncode == 0, done.stderr
    page = read_page(browser, copy / "report.html")
    notes = [found["text"] for found in page["figures"]["note"]]
    for name in ("kernels/stats.json", "datasets/triton_pairs.json", "kernels/pairs.jsonl", "build.json",
                 "generated/stats.json"):
        assert any(note.startswith(f"{name}: ") for note in notes), (name, notes)
    assert any(note.startswith("kernels/pairs.jsonl: 2 line(s) left out") for note in notes)
    assert page["shown"]["stage.inductor.state"] == "unreadable" and page["shown"]["stage.build.state"] == "unreadable"
    assert count(page["shown"]["counter.generate.repositories"]) == 5
    assert "counter.generate.kernels_found" not in page["shown"]
    # the rest, as before
    assert count(page["shown"]["pairs.level.all"]) == len(read_lines(corpus / "kernels" / "pairs.jsonl"))
    assert count(page["shown"]["dataset.completion.split.all"]) == len(rows_of(corpus, "completion"))
    assert "dataset.pairs.split.all" not in page["shown"] and bars_of(page, "tokens.problems")


# ------------------------------------------------------------------------------------------------ the command


def test_a_missing_corpus_is_exit_3(tmp_path):
    done = report(tmp_path / "nowhere")
    assert done.returncode == 3 and "no corpus folder" in done.stderr and not (tmp_path / "nowhere").exists()


def test_someone_elses_report_is_left_alone(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "report.html").write_text("<p>my own notes</p>")
    done = report(corpus)
    assert done.returncode == 2 and "report.html" in done.stderr
    assert (corpus / "report.html").read_text() == "<p>my own notes</p>" and not (corpus / "report.json").exists()
    (corpus / "report.html").unlink()
    (corpus / "report.json").write_text('{"mine": true}')
    assert report(corpus).returncode == 2 and (corpus / "report.json").read_text() == '{"mine": true}'


def test_a_rerun_replaces_its_own_report(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    assert report(corpus).returncode == 0
    (corpus / "build.json").write_text('{"stages": {"inductor": {"state": "done"}}}')
    assert report(corpus).returncode == 0
    assert json.loads((corpus / "report.json").read_text())["build"]["stages"] == {"inductor": "done"}


def test_help_and_version_name_the_command():
    helped = subprocess.run([sys.executable, "-m", "scraper.console", "report", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: triton-data report ")
    versioned = subprocess.run([sys.executable, "-m", "scraper.console", "report", "--version"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=60)
    assert versioned.returncode == 0 and versioned.stdout.startswith("triton-data ")
