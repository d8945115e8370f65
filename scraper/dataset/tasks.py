"""The dataset tasks beside text completion: `pairs` (PyTorch -> Triton, KernelBook's columns) and `problems`
(the KernelBench-form reference problems alone), built from the Inductor stage's pairs.jsonl and problems/.

    pairs:    load -> tokens -> filter (level, check) -> filter (check, license, tokens) -> dedup on the
              normalized Triton program -> split
    problems: load -> tokens -> filter (license, tokens) -> dedup on the normalized problem -> split

Both are step lists over the build's one item type, run by scraper.dataset.pipeline.build as the completion task
is; `TASKS` names all three.

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
from pathlib import Path
from typing import Optional

from scraper.dataset import filters, schema, split
from scraper.dataset.item import Item
from scraper.dataset.pipeline import COMPLETION, DEFAULT_PAIR_LEVELS, Options, Task, sort_step, split_step, \
    token_step
from scraper.fileio import iter_jsonl
from scraper.pairs.record import PAIRS, PROBLEMS_DIR, PROBLEMS_INDEX, PairRecord, iter_pairs
from scraper.pipeline import Filter, Run
from scraper.records import kernel_id
from scraper.stats import Rejects, Stats

log = logging.getLogger(__name__)

DEFAULT_STEMS = {"pairs": "triton_pairs", "problems": "triton_problems"}
COLUMNS = {"pairs": schema.PAIR_COLUMNS, "problems": schema.PROBLEM_COLUMNS}  # {column: type}, in order
LIBRARY_SUITES = ("timm", "huggingface", "torchbench")  # their repository is the library: group by model
PAIR_LEVELS = ("kernel", "module", "model", "graph")  # module: model level of a scraped nn.Module; model: any
assert set(DEFAULT_PAIR_LEVELS) <= set(PAIR_LEVELS)
DEFAULT_MAX_TOKENS = 8192  # pairs: python_code + triton_code (a context that holds both, and the answer)


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


def load_pairs(inputs: list, stats: Stats) -> list[Item]:
    """An item for every pair of the inputs' pairs.jsonl."""
    items = []
    for path in task_inputs(inputs, PAIRS, stats):
        for pair in iter_pairs(path, on_error=lambda n, m: stats.error("load", f"{path}:{n}", m)):
            items.append(pair_item(pair))
    stats.inc("in_pairs", len(items))
    return items


def pair_item(pair: PairRecord) -> Item:
    data = pair.to_dict()
    row = {column: data.get(column) for column in schema.PAIR_COLUMNS if column in data}
    row["stars"] = row["stars"] if isinstance(row["stars"], int) else None
    repo = pair.repo_name if pair.suite not in LIBRARY_SUITES else None
    return Item(row=row, group_repo=repo)


def load_problems(inputs: list, stats: Stats) -> list[Item]:
    """An item for every problem of the inputs' problems/problems.jsonl whose file is there."""
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


def problem_item(entry: dict, text: str) -> Item:
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
    return Item(row=row, group_repo=entry.get("repo") if entry.get("suite") not in LIBRARY_SUITES else None)


def row_text(task: str, row: dict) -> str:
    """What a row trains on (for token counts): the problem, and for pairs the Triton program too."""
    return row["python_code"] if task == "problems" else row["python_code"] + "\n" + row["triton_code"]


def level_of(row: dict) -> str:
    """A pair's level as --pair-level names it: kernel, module (a scraped nn.Module's model level), model, graph."""
    if row.get("pair_level") == "model" and row.get("suite") == "modules":
        return "module"
    return row.get("pair_level") or "graph"


# ------------------------------------------------------------------------------------------------- the checks

def level_check(levels: tuple):
    """A level asked for (module pairs are model pairs too)."""

    def check(item: Item) -> Optional[str]:
        level = level_of(item.row)
        return None if level in levels or (level == "module" and "model" in levels) else f"pair_level_{level}"

    return check


def checked_check(include_unchecked: bool):
    """A check that passed, or none with include_unchecked (a failed one is dropped by `row_checks`)."""
    return lambda item: "unchecked" if item.row.get("pair_correct") is None and not include_unchecked else None


def row_checks(license: str, max_tokens: Optional[int]) -> list:
    """The filters of both tasks, in order: pairs whose GPU check failed, the license allowlist, the token limit,
    rows whose model's accuracy failed."""
    allowed = filters.license_allowlist(license)
    lowered = {a.lower() for a in allowed} if allowed is not None else None
    return [
        lambda item: "failed_check" if item.row.get("pair_correct") is False else None,
        lambda item: "license" if lowered is not None and not any(str(lic).lower() in lowered
                                                                  for lic in item.row["licenses"]) else None,
        lambda item: "too_many_tokens" if max_tokens and (item.n_tokens or 0) > max_tokens else None,
        lambda item: "model_inaccurate" if item.row.get("accuracy") == "fail" else None,
    ]


def row_details(item: Item) -> dict:
    """What the rejects keep of a dropped row."""
    return {"id": item.row["id"], "model": item.row.get("model"), "graph": item.row.get("graph")}


# ------------------------------------------------------------------------------------------------ dedup, split

def rank(item: Item) -> tuple:
    """Which copy of a duplicate to keep: checked and passed, model level, known license, more stars, then a
    deterministic tie-break."""
    row = item.row
    checked = {True: 0, None: 1, False: 2}[row.get("pair_correct")]
    return (checked, row.get("pair_level") == "graph", not row["licenses"], -(row.get("stars") or 0),
            str(row.get("model")), str(row.get("graph")))


def deduplicate(items: list[Item], rejects: Rejects) -> list[Item]:
    """One row per id (the normalized Triton program for pairs, the normalized problem for problems)."""
    clusters: dict[str, list[Item]] = {}
    for item in items:
        clusters.setdefault(item.id, []).append(item)
    kept = []
    for members in clusters.values():
        members.sort(key=rank)
        members[0].cluster_size = len(members)
        kept.append(members[0])
        for duplicate in members[1:]:
            rejects.add("exact_duplicate", **row_details(duplicate), duplicate_of=members[0].id)
    return kept


def dedup_step(items: list, run: Run) -> list:
    return deduplicate(items, run.rejects)


def group_of(item: Item) -> str:
    """The split group: a scraped module's repository, else the model."""
    return f"repo:{item.group_repo}" if item.group_repo else f"model:{item.row.get('model')}"


def suite_of(item: Item) -> str:
    """The source a split represents in validation: the suite (timm, huggingface, modules, torchbench)."""
    return item.row.get("suite") or "unknown"


def row_order(item: Item) -> tuple:
    return (item.split != split.TRAIN, item.group, item.row["id"])


# ------------------------------------------------------------------------------------------------- the tasks

def pair_steps(options: Options, counter) -> list:
    return [token_step(counter, lambda item: row_text("pairs", item.row)),
            Filter([level_check(tuple(options.pair_levels)), checked_check(options.include_unchecked)], row_details),
            Filter(row_checks(options.license, options.max_tokens), row_details),
            dedup_step, split_step(options.val_fraction, group_of, suite_of), sort_step(row_order)]


def problem_steps(options: Options, counter) -> list:
    return [token_step(counter, lambda item: row_text("problems", item.row)),
            Filter(row_checks(options.license, options.max_tokens), row_details),
            dedup_step, split_step(options.val_fraction, group_of, suite_of), sort_step(row_order)]


def finish_row(task: str, item: Item) -> dict:
    """The row with the build's columns filled, in the task's column order."""
    row = {**item.row, "n_tokens": item.n_tokens, "cluster_size": item.cluster_size, "split": item.split}
    return {column: row.get(column) for column in COLUMNS[task]}


def own_side_files(output: Path) -> tuple:
    """<stem>.rejects.jsonl and <stem>.stats.json beside the main file."""
    return output.with_name(f"{output.stem}.rejects.jsonl"), output.with_name(f"{output.stem}.stats.json")


def row_task(name: str, load, steps) -> Task:
    return Task(name=name, stem=DEFAULT_STEMS[name], stage=f"create_json --task {name}",
                load=lambda options, run: load(options.inputs, run.stats), steps=steps,
                row=lambda item, options: finish_row(name, item), columns=lambda options: COLUMNS[name],
                side_files=own_side_files, claims=lambda output: [path.name for path in own_side_files(output)])


PAIRS_TASK = row_task("pairs", load_pairs, pair_steps)
PROBLEMS_TASK = row_task("problems", load_problems, problem_steps)
TASKS = {"completion": COMPLETION, "pairs": PAIRS_TASK, "problems": PROBLEMS_TASK}


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
