"""The report's figures, every one read from the files the stages wrote into a corpus (scraper/corpus.py's layout):
nothing is estimated or filled in. A stage whose files are not there is "not run"; a file that cannot be read is
a note and its figures are left out; the rest is still collected.

    collect(corpus) -> {"report", "build", "stages", "sources", "suites", "kernels", "pairs", "datasets", "notes"}
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

from scraper import corpus as layout
from scraper.cli import version
from scraper.pairs.check import CHECK_SUMMARY
from scraper.pairs.record import PROBLEMS_DIR, PROBLEMS_INDEX, iter_pairs
from scraper.records import KERNELS, PAIRS, SOURCES, iter_records
from scraper.report.bins import histogram
from scraper.report.files import MALFORMED, MISSING, READ, Notes, iter_lines, read_json, read_rows
from scraper.stats import STATS
from scraper.suiterun import SUITE_DIR, entry_of, manifest_files
from scraper.validate.api import LEVELS

GENERATOR = "triton-data report"  # report.json's mark: a report.json without it is someone else's file
SAMPLES = 3  # rows shown of each dataset
SAMPLE_CHARS = 2000  # of each text column of a sample row
FAILURES = 50  # failed models listed per suite (a whole suite run can fail hundreds: the counts say how many)
# per dataset task: the column its samples are spread over, their text columns, the fields shown beside them
SAMPLE_SPREAD = {"completion": "source", "pairs": "pair_level", "problems": "level"}
SAMPLE_TEXTS = {"completion": ("text",), "pairs": ("python_code", "triton_code"), "problems": ("python_code",)}
SAMPLE_FIELDS = {
    "completion": ("id", "source", "kind", "kernel_name", "repo", "license", "model", "n_tokens", "split"),
    "pairs": ("id", "pair_level", "suite", "model", "kernel", "pair_correct", "speedup", "n_tokens", "split"),
    "problems": ("id", "level", "suite", "model", "kernel", "n_tokens", "split"),
}
RAN, UNREADABLE, INCOMPLETE, NOT_RUN = "ran", "unreadable", "incomplete", "not run"


def collect(corpus: Path, samples: int = SAMPLES) -> dict:
    """Every figure of the report of `corpus`, as one JSON-able dict (report.json)."""
    corpus = Path(corpus)
    notes = Notes(corpus)
    figures = {
        "report": {"generator": GENERATOR, "version": version(), "corpus": str(corpus)},
        "build": build_plan(corpus, notes),
        "stages": stages(corpus, notes),
        "suites": suites(corpus, notes),
        "kernels": kernel_manifests(corpus, notes),
        "pairs": pairs(corpus, notes),
        "datasets": datasets(corpus, notes, samples),
    }
    figures["sources"] = sources(figures)
    figures["notes"] = notes.lines
    return figures


# ------------------------------------------------------------------------------------------------ stages


def stage_files(corpus: Path) -> list[tuple[str, str, Optional[Path], Path]]:
    """(key, what it is, its own folder (None: a folder it shares), its stats file) of every stage, in the
    pipeline's order."""
    kernels, datasets_dir = corpus / layout.KERNELS, corpus / layout.DATASETS
    found = [(f"suite {s.name}", "0: compile models (run_inductor_suite.py)", s, s / SUITE_DIR / STATS)
             for s in suite_folders(corpus)]
    found += [("inductor", "1: Inductor kernels, pairs, problems", kernels, kernels / STATS),
              ("scrape", "2a: GitHub repositories", corpus / layout.GITHUB, corpus / layout.GITHUB / STATS),
              ("generate", "2b: kernels cut out of repositories", corpus / layout.GENERATED,
               corpus / layout.GENERATED / STATS),
              # the pair check and the three dataset tasks share a folder: theirs is never "incomplete"
              ("pair check", "1 -> 3: pairs run against their PyTorch", None, kernels / CHECK_SUMMARY)]
    for task, name in layout.DATASET_FILES.items():
        stats = STATS if task == "completion" else f"{Path(name).stem}.stats.json"  # create_json.py's names
        found.append((f"dataset {task}", f"3: create_json.py --task {task}", None, datasets_dir / stats))
    return found


def suite_folders(corpus: Path) -> list[Path]:
    folder = corpus / layout.SUITES
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def stages(corpus: Path, notes: Notes) -> dict:
    """Per stage: its state (ran, not run, incomplete: its folder without its stats file, unreadable), its counters,
    what it dropped by reason (its `dropped_<reason>` counters) and its errors by phase."""
    return {key: stage(what, folder, stats, notes) for key, what, folder, stats in stage_files(corpus)}


def stage(what: str, folder: Optional[Path], stats: Path, notes: Notes) -> dict:
    loaded = read_json(stats, notes)
    entry = {"what": what, "file": notes.relative(stats), "state": stage_state(loaded.state, folder)}
    if loaded.state != READ:
        return entry
    if stats.name == CHECK_SUMMARY:  # the pair check's summary is not a Stats file; pairs() reads it
        return entry
    counts = numbers(loaded.data.get("counts"), stats, notes)
    entry["counts"] = counts
    entry["drops"] = {key.removeprefix("dropped_"): n for key, n in counts.items() if key.startswith("dropped_")}
    entry["errors"] = error_counts(loaded.data.get("errors"))
    return entry


def stage_state(state: str, folder: Optional[Path]) -> str:
    """RAN, UNREADABLE, INCOMPLETE (the stage's own folder holds files but not its stats file: a run that stopped
    or a folder cut down by hand) or NOT_RUN."""
    if state == READ:
        return RAN
    if state == MALFORMED:
        return UNREADABLE
    return INCOMPLETE if folder is not None and folder.is_dir() and any(folder.iterdir()) else NOT_RUN


def numbers(counts: Any, path: Path, notes: Notes) -> dict:
    """The numeric counters of a stats file's "counts" (anything else there is left out, with a note)."""
    if not isinstance(counts, dict):
        notes.add(path, "no \"counts\" object")
        return {}
    kept = {str(k): v for k, v in counts.items() if is_number(v)}
    if len(kept) < len(counts):
        notes.add(path, f"{len(counts) - len(kept)} counter(s) that are not numbers left out")
    return kept


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def error_counts(errors: Any) -> dict:
    """{phase: errors} of a stats file's "errors" ({phase: [{"error", "count", "example"}]})."""
    if not isinstance(errors, dict):
        return {}
    return {str(phase): sum(g.get("count", 0) for g in groups if isinstance(g, dict) and is_number(g.get("count")))
            for phase, groups in errors.items() if isinstance(groups, list)}


def build_plan(corpus: Path, notes: Notes) -> dict:
    """build.json (triton-data build's plan and stage states): its state, its top-level plain values, and the
    state of each stage it lists, as far as they are plain values."""
    path = corpus / layout.BUILD
    loaded = read_json(path, notes)
    entry = {"file": layout.BUILD, "state": {READ: RAN, MALFORMED: UNREADABLE, MISSING: NOT_RUN}[loaded.state]}
    if loaded.state == READ:
        entry["fields"] = {str(k): v for k, v in loaded.data.items() if is_plain(v)}
        entry["stages"] = build_stages(loaded.data.get("stages"))
    return entry


def build_stages(listed: Any) -> dict:
    """{stage: state} of build.json's "stages", a mapping or a list of objects with a name (its exact form is
    triton-data build's; whatever is not plain is shown as JSON text)."""
    if isinstance(listed, list):
        listed = {str(s.get("name", s.get("stage", i))): s for i, s in enumerate(listed) if isinstance(s, dict)}
    if not isinstance(listed, dict):
        return {}
    return {str(name): state_of(value) for name, value in listed.items()}


def state_of(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("state", "status"):
            if is_plain(value.get(key)):
                return str(value[key])
    return str(value) if is_plain(value) else json.dumps(value, sort_keys=True, default=str)[:200]


def is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# ------------------------------------------------------------------------------------------------ suites


def suites(corpus: Path, notes: Notes) -> dict:
    """Per suite debug root: its models (the latest manifest entry of each), their status, the phase each failure
    stopped at, and the accuracy check against eager (pass, fail, skipped, not checked)."""
    return {folder.name: suite(folder, notes) for folder in suite_folders(corpus)}


def suite(folder: Path, notes: Notes) -> dict:
    latest: dict = {}
    for path in manifest_files(folder):
        for data in iter_lines(path, notes):
            entry = entry_of(data)
            if entry is not None:
                latest[entry.key] = entry
    entries = list(latest.values())
    accuracy = Counter(e.accuracy if e.accuracy in ("pass", "fail", "skipped") else "not checked" for e in entries)
    failed = [e for e in entries if e.status not in ("ok", "skipped")]
    return {"models": len(entries), "status": dict(Counter(str(e.status) for e in entries)),
            "failed_by_phase": dict(Counter(str(e.phase) for e in failed)),
            "kernels": sum(e.kernels for e in entries if is_number(e.kernels)),
            "accuracy": {key: accuracy.get(key, 0) for key in ("pass", "fail", "skipped", "not checked")},
            "accuracy_rate": rate(accuracy["pass"], accuracy["fail"]),
            "failures": [failure(e) for e in failed[:FAILURES]], "failures_left_out": max(0, len(failed) - FAILURES)}


def failure(entry) -> dict:
    """A model that did not compile: its name, status, phase and the first line of its error."""
    error = str(entry.error).strip().splitlines()[0][:300] if entry.error and str(entry.error).strip() else None
    return {"model": entry.model, "status": entry.status, "phase": entry.phase, "error": error}


def rate(passed: int, failed: int) -> Optional[float]:
    """passed / (passed + failed), None when nothing was judged."""
    return round(passed / (passed + failed), 4) if passed + failed else None


# ------------------------------------------------------------------------------------------------ kernels


def kernel_manifests(corpus: Path, notes: Notes) -> dict:
    """Per kernels.jsonl (stage 1's, the generator's, the dataset's kept records): records by source and, per
    source and verification level, how many were checked and how many passed."""
    found = {}
    for folder in (layout.KERNELS, layout.GENERATED, layout.DATASETS):
        path = corpus / folder / KERNELS
        if path.is_file():
            found[folder] = tally_file(path, notes, iter_records, tally_records)
    return found


def tally_file(path: Path, notes: Notes, reader, tally):
    """`tally(reader(path, on_error))`; the lines the reader could not make a record of become one note."""
    bad: list = []
    result = tally(reader(path, on_error=lambda number, message: bad.append(message.removeprefix(f"{path}:"))))
    if bad:
        notes.add(path, f"{len(bad)} line(s) left out (first: line {bad[0]})")
    return result


def tally_records(records: Iterable) -> dict:
    by_source: dict = {}
    for record in records:
        tally = by_source.setdefault(record.source, {"records": 0, **{level: {"checked": 0, "passed": 0}
                                                                        for level in LEVELS}})
        tally["records"] += 1
        for level in LEVELS:
            value = getattr(record, level)
            tally[level]["checked"] += value is not None
            tally[level]["passed"] += value is True
    return by_source


# ------------------------------------------------------------------------------------------------ pairs


def pairs(corpus: Path, notes: Notes) -> dict:
    """Stage 1's pairs (pairs.jsonl) by level and by the pair check's verdict, the speedups of the pairs that
    passed, the problems by level, and the pair check's own summary (pairs_check.json, its last run)."""
    folder = corpus / layout.KERNELS
    found: dict = {"check": read_json(folder / CHECK_SUMMARY, notes).data}
    if (folder / PAIRS).is_file():
        found.update(tally_file(folder / PAIRS, notes, iter_pairs, tally_pairs))
    index = folder / PROBLEMS_DIR / PROBLEMS_INDEX
    if index.is_file():
        found["problems_by_level"] = dict(Counter(str(p.get("level")) for p in iter_lines(index, notes)))
    return found


def tally_pairs(records: Iterable) -> dict:
    levels: Counter = Counter()
    verdicts: Counter = Counter()
    speedups = []
    for pair in records:
        levels[pair.pair_level] += 1
        verdicts[{True: "passed", False: "failed"}.get(pair.pair_correct, "unchecked")] += 1
        if pair.pair_correct is True and is_number(pair.speedup):
            speedups.append(pair.speedup)
    return {"by_level": dict(levels),
            "verdicts": {key: verdicts.get(key, 0) for key in ("passed", "failed", "unchecked")},
            "pass_rate": rate(verdicts["passed"], verdicts["failed"]), "speedup": histogram(speedups)}


# ------------------------------------------------------------------------------------------------ datasets


def datasets(corpus: Path, notes: Notes, samples: int) -> dict:
    """Per create_json.py task: its rows by split and by source or level, their token lengths, a few of them."""
    found = {}
    for task, name in layout.DATASET_FILES.items():
        path = corpus / layout.DATASETS / name
        if not path.exists() and path.with_suffix(".jsonl").is_file():  # --format jsonl
            path = path.with_suffix(".jsonl")
        loaded = read_rows(path, notes)
        if loaded.state == READ:
            found[task] = dataset(task, notes.relative(path), loaded.data, samples)
    return found


def dataset(task: str, file: str, rows: list, samples: int) -> dict:
    spread = SAMPLE_SPREAD[task]
    return {"file": file, "rows": len(rows), "by_split": dict(Counter(str(r.get("split")) for r in rows)),
            "by": spread, "by_value": dict(Counter(str(r.get(spread)) for r in rows)),
            "tokens": histogram([r.get("n_tokens") for r in rows], floor=0),
            "samples": [sample(task, row) for row in pick(rows, spread, samples)]}


def pick(rows: list, spread: str, count: int) -> list:
    """`count` rows: the first of each value of `spread` (a GitHub and an Inductor kernel, a pair of each level),
    then the next rows in file order."""
    firsts = {}
    for row in rows:
        firsts.setdefault(str(row.get(spread)), row)
    chosen = list(firsts.values())[:count]
    rest = [row for row in rows if all(row is not c for c in chosen)]
    return chosen + rest[: count - len(chosen)]


def sample(task: str, row: dict) -> dict:
    """A row as shown: its plain fields, and its text columns cut at SAMPLE_CHARS (with their full length)."""
    fields = {key: row.get(key) if is_plain(row.get(key)) else json.dumps(row.get(key), default=str)[:200]
              for key in SAMPLE_FIELDS[task] if key in row}
    texts = {}
    for column in SAMPLE_TEXTS[task]:
        text = row.get(column) if isinstance(row.get(column), str) else ""
        texts[column] = {"shown": text[:SAMPLE_CHARS], "chars": len(text)}
    return {"fields": fields, "texts": texts}


# ------------------------------------------------------------------------------------------------ sources


def sources(figures: dict) -> dict:
    """Per source (inductor, github): the kernels stage 1 and the generator extracted, what the dataset stage took
    in and kept per split (its counters), and the rows of its file; each figure only where its file was read."""
    extracted = {folder: figures["kernels"][folder] for folder in (layout.KERNELS, layout.GENERATED)
                 if folder in figures["kernels"]}
    counts = figures["stages"]["dataset completion"].get("counts")
    rows = figures["datasets"].get("completion")
    table = {}
    for source in SOURCES:
        entry = {folder: found.get(source, {}).get("records", 0) for folder, found in extracted.items()}
        if counts is not None:
            entry["dataset_in"] = counts.get(f"in_{source}", 0)
            for split in ("train", "validation"):
                entry[f"dataset_{split}"] = counts.get(f"out_{split}_{source}", 0)
        if rows is not None:
            entry["dataset_rows"] = rows["by_value"].get(source, 0)
        table[source] = entry
    return table
