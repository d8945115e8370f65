"""The dataset build: one runner for the three tasks, each a list of steps over one item type
(scraper.dataset.item.Item), in the shape every stage shares (scraper.pipeline: batch steps, filters that drop
with a reason into the rejects, the run's stats).

    completion  load kernels -> tokens -> filters -> decontaminate -> dedup (exact, near) -> --require -> split
    pairs       load pairs   -> tokens -> level and check -> filters -> dedup (exact)                -> split
    problems    load problems-> tokens -> filters                    -> dedup (exact)                -> split

`build(task, options)` claims the task's output files, runs its steps, writes every row, one file per split,
the stats and the rejects (and, for completion, kernels.jsonl and the dataset card). The completion task is here;
pairs and problems are in scraper.dataset.tasks, and `scraper.dataset.tasks.TASKS` names all three.

For completion, filters that are properties of one copy (license, length) run before dedup, so that dedup picks
the best copy among those that can stay; the expensive `--require` checks (filters.requirement_check) run after
it, on fewer items.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


from scraper.progress import progress
from scraper.dataset import card, decontam, dedup, filters, load, outputs, schema, split, tokens, write
from scraper.dataset.item import Item
from scraper.fileio import atomic_write_json, atomic_write_text
from scraper.pipeline import BatchStep, Filter, Run, run_batch
from scraper.records import KERNELS, ManifestWriter
from scraper.stats import REJECTS, STATS, Rejects, Stats

log = logging.getLogger(__name__)

DEFAULT_STEM = "triton_functions"
DEFAULT_PAIR_LEVELS = ("kernel", "module")  # scraper.dataset.tasks.PAIR_LEVELS names them all


@dataclass
class Options:
    """Everything `create_json.py` can ask for (see its --help); each task reads the options that concern it."""

    inputs: list
    output: Optional[Path] = None  # default datasets/<the task's stem>.<format> (the task: build's argument)
    fmt: str = "json"
    column: str = "text"
    fenced: bool = True
    with_reference: bool = False  # prefix each kernel with the PyTorch (ATen ops, graph fragment) it implements
    with_launcher: bool = False  # the whole operator: the launcher's module (host code + kernel) where there is one
    drop_helpers: bool = False  # no rows for jit helpers (their code is inside the modules of the kernels using them)
    dialect: str = "any"  # triton | gluon | any
    near_threshold: float = dedup.DEFAULT_THRESHOLD  # 0 turns near dedup off
    license: str = "any"
    max_tokens: Optional[int] = None
    min_lines: Optional[int] = None
    tokenizer: Optional[str] = None
    val_fraction: float = 0.05
    decontaminate: list = field(default_factory=list)
    decontaminate_threshold: float = decontam.DEFAULT_THRESHOLD
    card: bool = True
    pair_levels: tuple = DEFAULT_PAIR_LEVELS  # pairs: the levels exported
    include_unchecked: bool = False  # pairs: those the GPU check has not seen too (a failed check never)
    # --require: `validate(records, stats)` fills parses/imports/compiles on the deduplicated records, then
    # `require_checks` (e.g. filters.requirement_check("compiles", scraper.validate.meets)) drop.
    validate: Optional[Callable[[list, Stats], None]] = None
    require_checks: list = field(default_factory=list)

    def text_style(self) -> write.TextStyle:
        """How each completion row's text is made."""
        return write.TextStyle(self.fenced, self.with_reference, self.with_launcher)

    def output_path(self, stem: str = DEFAULT_STEM) -> Path:
        """The main output file (`-o DIR/` or an existing folder gets the default file name inside)."""
        return outputs.resolve(self.output, f"{stem}.{self.fmt}")


@dataclass(frozen=True)
class Task:
    """One dataset: where its items come from, the steps they go through, and the files its rows go to."""

    name: str
    stem: str  # the default file name's stem
    stage: str  # the name its stats.json gives
    load: Callable[[Options, Run], list]  # -> [Item]
    steps: Callable[[Options, tokens.TokenCounter], list]  # -> [BatchStep]
    row: Callable[[Item, Options], dict]  # the finished row, in `columns` order
    columns: Callable[[Options], dict]  # {column: type}
    side_files: Callable[[Path], tuple]  # main file -> (rejects path, stats path)
    claims: Callable[[Path], list]  # main file -> the other files it owns beside the split files
    extra_output: Optional[Callable[[Path, list], None]] = None  # (main file, items): more files (kernels.jsonl)
    card: bool = False  # whether it writes a dataset card (README.md, histogram)
    by_source: bool = False  # count rows per split and source (`out_<split>_<source>`, stats.extra["out"])


@dataclass
class BuildResult:
    """What a build wrote: the rows, the files per split and the stats."""

    rows: list
    output: Path
    split_files: dict
    stats: Stats
    cluster_sizes: dict


def build(task: Task, options: Options) -> BuildResult:
    """Run the task's steps and write its dataset, one file per split, its stats and rejects (and what else the
    task writes) beside the output."""
    output = options.output_path(task.stem)
    counter = tokens.TokenCounter(options.tokenizer)  # first: a bad tokenizer path fails before any work
    rejects_path, stats_path = task.side_files(output)
    splits = [write.split_path(output, name).name for name in (split.TRAIN, split.VALIDATION)]
    card_ok = outputs.claim(output, splits + task.claims(output), card=options.card and task.card)
    stats = Stats(task.stage)
    run = Run(stats, Rejects(rejects_path, stats))
    run.rejects.reset()
    atomic_write_text(run.rejects.path, "")  # present even when nothing is dropped

    items = run_batch(task.load(options, run), task.steps(options, counter), run)
    rows = [task.row(item, options) for item in items]
    columns = task.columns(options)
    split_files = write_split_files(output, rows, options.fmt, columns)
    if task.extra_output is not None:
        task.extra_output(output, items)
    count_outputs(rows, stats, task.by_source)
    save_stats(stats_path, stats, run.facts, counter.name)
    if card_ok:
        card.write_card(output.parent, rows, {s: p.name for s, p in split_files.items()}, stats.to_dict(),
                        counter.name, columns)
    return BuildResult(rows, output, split_files, stats, run.facts.get("clusters", {}))


# ------------------------------------------------------------------------------------- steps every task uses

def token_step(counter: tokens.TokenCounter, text: Callable[[Item], str]) -> BatchStep:
    """Store each item's token count of `text(item)`, the text it will train on."""

    def count(items: list, run: Run) -> list:
        for item, n in zip(items, counter.count([text(item) for item in items])):
            item.n_tokens = n
        return items

    return count


def split_step(val_fraction: float, key: Callable = split.group_key, source: Callable = split.item_source
               ) -> BatchStep:
    """Assign train/validation by group (scraper.dataset.split), recorded in the stats."""

    def assign(items: list, run: Run) -> list:
        split.assign_splits(items, val_fraction, key=key, source=source).record(run.stats)
        return items

    return assign


def sort_step(order: Callable[[Item], tuple]) -> BatchStep:
    """The rows' order in the files."""
    return lambda items, run: sorted(items, key=order)


def write_split_files(path: Path, rows: list, fmt: str, columns: dict) -> dict:
    """The main file (every row) and one file per split (typed by `columns`); returns {split: path}."""
    write.write_rows(path, rows, fmt, columns)
    files = {}
    for name in (split.TRAIN, split.VALIDATION):
        files[name] = write.split_path(path, name)
        write.write_rows(files[name], [row for row in rows if row["split"] == name], fmt, columns)
    return files


def count_outputs(rows: list, stats: Stats, by_source: bool = True) -> None:
    """Counters `out_rows`, `out_<split>`, and with `by_source` `out_<split>_<source>` and the rows by split and
    source as `stats.extra["out"]` ({split: {source: rows}}) for summaries."""
    stats.inc("out_rows", len(rows))
    by_split: dict = {}
    for row in rows:
        stats.inc(f"out_{row['split']}")
        if by_source:
            stats.inc(f"out_{row['split']}_{row['source']}")
            sources = by_split.setdefault(row["split"], {})
            sources[row["source"]] = sources.get(row["source"], 0) + 1
    if by_source:
        stats.extra["out"] = by_split


def save_stats(path: Path, stats: Stats, facts: dict, token_counter: str) -> None:
    """The stats file: the Stats counters and errors, what the steps left (dedup's cluster sizes) and the token
    counter used."""
    data = stats.to_dict()
    data.update(facts)
    data["token_counter"] = token_counter
    atomic_write_json(path, data)


# ------------------------------------------------------------------------------------------ the completion task

def completion_steps(options: Options, counter: tokens.TokenCounter) -> list:
    style = options.text_style()
    return [
        token_step(counter, lambda item: write.row_text(item.record, style)),
        Filter(filters.build_checks(options.license, options.max_tokens, options.min_lines, options.dialect,
                                    options.drop_helpers), record_details),
        decontaminate_step(options),
        dedup_step(options.near_threshold),
        validate_step(options.validate),
        Filter(options.require_checks, record_details),
        split_step(options.val_fraction),
        sort_step(_row_order),
    ]


def record_details(item: Item) -> dict:
    return filters.reject_details(item.record)


def decontaminate_step(options: Options) -> BatchStep:
    """Drop items that match an evaluation file (a no-op without --decontaminate)."""
    return lambda items, run: drop_contaminated(items, options, run.stats, run.rejects)


def dedup_step(near_threshold: float) -> BatchStep:
    """Exact then near dedup; the cluster sizes are left in the run's facts."""

    def step(items: list, run: Run) -> list:
        kept, run.facts["clusters"] = deduplicate(items, near_threshold, run.rejects)
        return kept

    return step


def validate_step(validate: Optional[Callable[[list, Stats], None]]) -> BatchStep:
    """Fill the verification levels of the records left (--validate), for the --require filter after it."""

    def step(items: list, run: Run) -> list:
        if validate is not None:
            validate([item.record for item in items], run.stats)
        return items

    return step


def drop_contaminated(items: list[Item], options: Options, stats: Stats, rejects: Rejects) -> list[Item]:
    """Items that match no evaluation file (a no-op without --decontaminate)."""
    if not options.decontaminate:
        return items
    eval_texts = decontam.load_eval_texts(options.decontaminate, stats)
    matches = decontam.find_contaminated([item.record for item in items], eval_texts,
                                         options.decontaminate_threshold)
    for index, (label, how, similarity) in sorted(matches.items()):
        rejects.add("contaminated", **filters.reject_details(items[index].record), matches=label, match=how,
                    similarity=similarity)
    log.info("decontamination: %d of %d kernels match the evaluation set", len(matches), len(items))
    return [item for index, item in enumerate(items) if index not in matches]


def deduplicate(items: list[Item], near_threshold: float, rejects: Rejects) -> tuple[list[Item], dict]:
    """Exact then near dedup; dropped copies go to rejects with the id they duplicate. Returns the kept items
    and {"exact"|"near": {cluster size: number of clusters}}."""
    result = dedup.exact_dedup(items)
    _reject_duplicates(result, "exact_duplicate", rejects)
    clusters = {"exact": _sizes(result.cluster_sizes)}
    if near_threshold and near_threshold > 0:
        result = dedup.near_dedup(result.kept, near_threshold, progress=_band_progress)
        _reject_duplicates(result, "near_duplicate", rejects)
        clusters["near"] = _sizes(result.cluster_sizes)
    return result.kept, clusters


def _band_progress(bands):
    return progress(bands, desc="near dedup (LSH bands)", unit="band")


def _reject_duplicates(result: dedup.DedupResult, reason: str, rejects: Rejects) -> None:
    for item, kept_id in result.dropped:
        rejects.add(reason, **filters.reject_details(item.record), duplicate_of=kept_id)


def _sizes(counter: Counter) -> dict:
    return {str(size): count for size, count in sorted(counter.items())}


def _row_order(item: Item) -> tuple:
    record = item.record
    return (item.split != split.TRAIN, item.group, record.source, record.name, record.id)


def write_kernels(output: Path, items: list[Item]) -> None:
    """kernels.jsonl beside the dataset: the kept records with their provenance, in the rows' order."""
    with ManifestWriter(output.parent / KERNELS) as writer:
        for item in items:
            writer.write(item.record)


COMPLETION = Task(
    name="completion", stem=DEFAULT_STEM, stage="create_json",
    load=lambda options, run: load.load_inputs(options.inputs, run.stats, run.rejects),
    steps=completion_steps,
    row=lambda item, options: write.to_row(item, options.column, options.text_style()),
    columns=lambda options: schema.completion_columns(options.column),
    side_files=lambda output: (output.parent / REJECTS, output.parent / STATS),
    claims=lambda output: [KERNELS, STATS, REJECTS],
    extra_output=write_kernels, card=True, by_source=True)


def build_dataset(options: Options) -> BuildResult:
    """The text-completion dataset (the default task): every row, its split files, kernels.jsonl, stats.json,
    rejects.jsonl and the card in the output's folder."""
    return build(COMPLETION, options)


def torchtune_snippet(train_file: Path, fmt: str, column: str) -> str:
    """The torchtune YAML that loads the training split."""
    source = "parquet" if fmt == "parquet" else "json"
    return "\n".join([
        "dataset:",
        "  _component_: torchtune.datasets.text_completion_dataset",
        f"  source: {source}",
        f"  data_files: {train_file}",
        f"  column: {column}",
        "  split: train",
    ])
