"""The dataset tasks beside text completion: `pairs` (PyTorch -> Triton, KernelBook's columns) and `problems`
(the KernelBench-form reference problems alone), built from the Inductor stage's pairs.jsonl and problems/.

    pairs:    load -> filter (level, check, license, tokens) -> dedup on the normalized Triton program -> split
    problems: load -> filter (license, tokens) -> dedup on the normalized problem -> split

What a pair row is for is training "this PyTorch -> this Triton", so by default (docs/pairs.md) only pairs the GPU
check passed are exported (`include_unchecked`: those not checked too; a failed check never), of the levels whose
python_code carries the computation (kernel: the FX nodes one kernel fuses; module: a scraped nn.Module's own
source), within DEFAULT_MAX_TOKENS for python_code + triton_code. Library models' model-level pairs (python_code
builds `timm.create_model(...)`) and graph-level pairs are there on request (`pair_levels`); the library models stay
reference problems for RL in the `problems` task.

Splits are by group as for completion (scraper.dataset.split): a scraped module's repository, else the model, so a
repository or a model never straddles train and validation; every suite with three groups or more has one in
validation. Every drop is in <stem>.rejects.jsonl with its
reason and counted in <stem>.stats.json (`dropped_<reason>`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from scraper.dataset import filters, outputs, schema, split, tokens, write
from scraper.fileio import atomic_write_json, atomic_write_text, iter_jsonl
from scraper.pairs.record import PAIRS, PROBLEMS_DIR, PROBLEMS_INDEX, PairRecord, iter_pairs
from scraper.records import kernel_id
from scraper.stats import Rejects, Stats

log = logging.getLogger(__name__)

DEFAULT_STEMS = {"pairs": "triton_pairs", "problems": "triton_problems"}
COLUMNS = {"pairs": schema.PAIR_COLUMNS, "problems": schema.PROBLEM_COLUMNS}  # {column: type}, in order
LIBRARY_SUITES = ("timm", "huggingface", "torchbench")  # their repository is the library: group by model
PAIR_LEVELS = ("kernel", "module", "model", "graph")  # module: model level of a scraped nn.Module; model: any
DEFAULT_PAIR_LEVELS = ("kernel", "module")
DEFAULT_MAX_TOKENS = 8192  # pairs: python_code + triton_code (a context that holds both, and the answer)


@dataclass
class TaskItem:
    """One row in the making: its columns, and what the build learns about it."""

    row: dict
    group_repo: Optional[str] = None  # the repository that must not straddle splits (scraped modules)
    n_tokens: Optional[int] = None
    cluster_size: int = 1
    split: Optional[str] = None
    group: Optional[str] = None
    extra: dict = field(default_factory=dict)


@dataclass
class TaskResult:
    rows: list
    output: Path
    split_files: dict
    stats: Stats


def output_path(task: str, output: Optional[Path], fmt: str) -> Path:
    """The main file of a task (`-o DIR/` or an existing folder gets the default name inside)."""
    return outputs.resolve(output, f"{DEFAULT_STEMS[task]}.{fmt}")


def build_task(task: str, inputs: list, output: Optional[Path], fmt: str = "json", license: str = "any",
               max_tokens: Optional[int] = None, tokenizer: Optional[str] = None,
               val_fraction: float = 0.05, pair_levels: tuple = DEFAULT_PAIR_LEVELS,
               include_unchecked: bool = False) -> TaskResult:
    """Build the `pairs` or `problems` dataset and write it (every row, one file per split, stats, rejects).
    Pairs: only `pair_levels` (PAIR_LEVELS), only checked ones unless `include_unchecked` (module docstring)."""
    path = output_path(task, output, fmt)
    counter = tokens.TokenCounter(tokenizer)
    splits = [write.split_path(path, name).name for name in (split.TRAIN, split.VALIDATION)]
    outputs.claim(path, splits + [f"{path.stem}.rejects.jsonl", f"{path.stem}.stats.json"])
    stats = Stats(f"create_json --task {task}")
    rejects = Rejects(path.with_name(f"{path.stem}.rejects.jsonl"), stats)
    rejects.reset()
    atomic_write_text(rejects.path, "")  # present even when nothing is dropped
    items = load_pairs(inputs, stats) if task == "pairs" else load_problems(inputs, stats)
    texts = [row_text(task, item.row) for item in items]
    for item, count in zip(items, counter.count(texts)):
        item.n_tokens = count
    if task == "pairs":
        items = [item for item in items if keep_pair(item, pair_levels, include_unchecked, rejects)]
    items = [item for item in items if keep(item, license, max_tokens, rejects)]
    items = deduplicate(items, rejects)
    split.assign_splits(items, val_fraction, key=group_of, source=suite_of).record(stats)
    items.sort(key=lambda item: (item.split != split.TRAIN, item.group, item.row["id"]))
    rows = [finish_row(task, item) for item in items]
    split_files = write_split_files(path, rows, fmt, COLUMNS[task])
    stats.inc("out_rows", len(rows))
    for row in rows:
        stats.inc(f"out_{row['split']}")
    data = stats.to_dict()
    data["token_counter"] = counter.name
    atomic_write_json(path.with_name(f"{path.stem}.stats.json"), data)
    return TaskResult(rows, path, split_files, stats)


def task_inputs(inputs: list, name: str, stats: Stats) -> list[Path]:
    """The `name` files (pairs.jsonl, problems/problems.jsonl) of the inputs: folders holding one, or the files."""
    found = []
    for raw in inputs:
        path = Path(raw)
        candidate = path / name if path.is_dir() else path
        if candidate.is_file() and candidate.name == Path(name).name:
            found.append(candidate)
        else:
            stats.inc("inputs_without_" + Path(name).stem)
    return found


def load_pairs(inputs: list, stats: Stats) -> list[TaskItem]:
    """A row for every pair of the inputs' pairs.jsonl."""
    items = []
    for path in task_inputs(inputs, PAIRS, stats):
        for pair in iter_pairs(path, on_error=lambda n, m: stats.error("load", f"{path}:{n}", m)):
            items.append(pair_item(pair))
    stats.inc("in_pairs", len(items))
    return items


def pair_item(pair: PairRecord) -> TaskItem:
    data = pair.to_dict()
    row = {column: data.get(column) for column in schema.PAIR_COLUMNS if column in data}
    row["stars"] = row["stars"] if isinstance(row["stars"], int) else None
    repo = pair.repo_name if pair.suite not in LIBRARY_SUITES else None
    return TaskItem(row, group_repo=repo)


def load_problems(inputs: list, stats: Stats) -> list[TaskItem]:
    """A row for every problem of the inputs' problems/problems.jsonl whose file is there."""
    items = []
    for index in task_inputs(inputs, f"{PROBLEMS_DIR}/{PROBLEMS_INDEX}", stats):
        base = index.parent.parent  # the stage's output folder: entries' files are relative to it
        for entry in iter_jsonl(index, on_error=lambda n, m: stats.error("load", f"{index}:{n}", m)):
            try:
                text = (base / entry["file"]).read_text(encoding="utf-8")
            except (KeyError, TypeError, OSError) as exc:
                stats.error("load", str(index), f"problem file unreadable: {exc}")
                continue
            items.append(problem_item(entry, text))
    stats.inc("in_problems", len(items))
    return items


def problem_item(entry: dict, text: str) -> TaskItem:
    name = entry.get("model") if entry.get("level") == "model" else f"{entry.get('model')}/{entry.get('graph')}" + (
        f"/{entry['kernel']}" if entry.get("level") == "kernel" and entry.get("kernel") else "")
    row = {"python_code": text, "entry_point": "Model", "id": kernel_id(text), "name": name,
           "level": entry.get("level"), "suite": entry.get("suite"), "model": entry.get("model"),
           "mode": entry.get("mode"), "dtype": entry.get("dtype"), "graph": entry.get("graph"),
           "repo_name": entry.get("repo"), "licenses": [entry["license"]] if entry.get("license") else [],
           "stars": entry.get("stars") if isinstance(entry.get("stars"), int) else None,
           "sha": entry.get("commit"), "accuracy": entry.get("accuracy"), "kernel": entry.get("kernel"),
           "needs_cuda": entry.get("needs_cuda") if isinstance(entry.get("needs_cuda"), bool) else None,
           "packages": [p for p in entry.get("packages") or [] if isinstance(p, str)],
           "reference_finite": entry.get("reference_finite") if isinstance(entry.get("reference_finite"), bool)
           else None}
    return TaskItem(row, group_repo=entry.get("repo") if entry.get("suite") not in LIBRARY_SUITES else None)


def row_text(task: str, row: dict) -> str:
    """What a row trains on (for token counts): the problem, and for pairs the Triton program too."""
    return row["python_code"] if task == "problems" else row["python_code"] + "\n" + row["triton_code"]


def level_of(row: dict) -> str:
    """A pair's level as --pair-level names it: kernel, module (a scraped nn.Module's model level), model, graph."""
    if row.get("pair_level") == "model" and row.get("suite") == "modules":
        return "module"
    return row.get("pair_level") or "graph"


def keep_pair(item: TaskItem, levels: tuple, include_unchecked: bool, rejects: Rejects) -> bool:
    """The pair filters: a level asked for (module pairs are model pairs too), and a check that passed (or none,
    with include_unchecked)."""
    row, reason = item.row, None
    level = level_of(row)
    if level not in levels and not (level == "module" and "model" in levels):
        reason = f"pair_level_{level}"
    elif row.get("pair_correct") is None and not include_unchecked:
        reason = "unchecked"
    if reason:
        rejects.add(reason, id=row["id"], model=row.get("model"), graph=row.get("graph"))
    return reason is None


def keep(item: TaskItem, license: str, max_tokens: Optional[int], rejects: Rejects) -> bool:
    """The filters: license allowlist, token limit, pairs whose GPU check or whose model's accuracy failed."""
    row, allowed = item.row, filters.license_allowlist(license)
    reason = None
    if row.get("pair_correct") is False:
        reason = "failed_check"
    elif allowed is not None and not any(str(l).lower() in {a.lower() for a in allowed} for l in row["licenses"]):
        reason = "license"
    elif max_tokens and (item.n_tokens or 0) > max_tokens:
        reason = "too_many_tokens"
    elif row.get("accuracy") == "fail":
        reason = "model_inaccurate"
    if reason:
        rejects.add(reason, id=row["id"], model=row.get("model"), graph=row.get("graph"))
    return reason is None


def rank(item: TaskItem) -> tuple:
    """Which copy of a duplicate to keep: checked and passed, model level, known license, more stars, then a
    deterministic tie-break."""
    row = item.row
    checked = {True: 0, None: 1, False: 2}[row.get("pair_correct")]
    return (checked, row.get("pair_level") == "graph", not row["licenses"], -(row.get("stars") or 0),
            str(row.get("model")), str(row.get("graph")))


def deduplicate(items: list[TaskItem], rejects: Rejects) -> list[TaskItem]:
    """One row per id (the normalized Triton program for pairs, the normalized problem for problems)."""
    clusters: dict[str, list[TaskItem]] = {}
    for item in items:
        clusters.setdefault(item.row["id"], []).append(item)
    kept = []
    for members in clusters.values():
        members.sort(key=rank)
        members[0].cluster_size = len(members)
        kept.append(members[0])
        for duplicate in members[1:]:
            rejects.add("exact_duplicate", id=duplicate.row["id"], model=duplicate.row.get("model"),
                        graph=duplicate.row.get("graph"), duplicate_of=members[0].row["id"])
    return kept


def group_of(item: TaskItem) -> str:
    """The split group: a scraped module's repository, else the model."""
    return f"repo:{item.group_repo}" if item.group_repo else f"model:{item.row.get('model')}"


def suite_of(item: TaskItem) -> str:
    """The source a split represents in validation: the suite (timm, huggingface, modules, torchbench)."""
    return item.row.get("suite") or "unknown"


def finish_row(task: str, item: TaskItem) -> dict:
    """The row with the build's columns filled, in the task's column order."""
    row = {**item.row, "n_tokens": item.n_tokens, "cluster_size": item.cluster_size, "split": item.split}
    return {column: row.get(column) for column in COLUMNS[task]}


def write_split_files(path: Path, rows: list, fmt: str, columns: dict) -> dict:
    """The main file and one per split (typed by `columns`); returns {split: path}."""
    write.write_rows(path, rows, fmt, columns)
    files = {}
    for name in (split.TRAIN, split.VALIDATION):
        files[name] = write.split_path(path, name)
        write.write_rows(files[name], [row for row in rows if row["split"] == name], fmt, columns)
    return files


def left_out_line(counts: dict) -> str:
    """One line: how many pairs were left out, by reason (the level, the check, the filters, duplicates)."""
    reasons = {key[len("dropped_"):]: value for key, value in counts.items() if key.startswith("dropped_") and value}
    total = sum(reasons.values())
    detail = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"pairs left out: {total}" + (f" ({detail})" if detail else "")


def torchtune_pairs_snippet(train_file: Path, fmt: str) -> str:
    """torchtune's instruct dataset over the pairs: python_code in, triton_code out."""
    return "\n".join([
        "dataset:",
        "  _component_: torchtune.datasets.instruct_dataset",
        f"  source: {'parquet' if fmt == 'parquet' else 'json'}",
        f"  data_files: {train_file}",
        "  column_map:",
        "    input: python_code",
        "    output: triton_code",
        "  new_system_prompt: Rewrite the PyTorch Model as ModelNew, using Triton kernels.",
        "  train_on_input: False",
        "  split: train",
    ])
