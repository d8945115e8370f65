"""The dataset build, step by step: load, count tokens, filter, decontaminate, dedup, check, split, write.

Filters that are properties of one copy (license, length) run before dedup, so that dedup picks the best copy
among those that can stay; the expensive `--require` checks (filters.requirement_check) run after it, on fewer
items.
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
from scraper.records import KERNELS, ManifestWriter
from scraper.stats import REJECTS, STATS, Rejects, Stats

log = logging.getLogger(__name__)

DEFAULT_STEM = "triton_functions"


@dataclass
class Options:
    """Everything `create_json.py` can ask for (see its --help)."""

    inputs: list
    output: Optional[Path] = None  # default datasets/triton_functions.<format>
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
    # --require: `validate(records, stats)` fills parses/imports/compiles on the deduplicated records, then
    # `require_checks` (e.g. filters.requirement_check("compiles", scraper.validate.meets)) drop.
    validate: Optional[Callable[[list, Stats], None]] = None
    require_checks: list = field(default_factory=list)

    def text_style(self) -> write.TextStyle:
        """How each row's text is made."""
        return write.TextStyle(self.fenced, self.with_reference, self.with_launcher)

    def output_path(self) -> Path:
        """The main output file (`-o DIR/` or an existing folder gets the default file name inside)."""
        return outputs.resolve(self.output, f"{DEFAULT_STEM}.{self.fmt}")


@dataclass
class BuildResult:
    """What a build wrote: the rows, the files per split and the stats."""

    rows: list
    output: Path
    split_files: dict
    stats: Stats
    cluster_sizes: dict


def build_dataset(options: Options) -> BuildResult:
    """Run every step and write the dataset, its per-split files, kernels.jsonl, stats.json, rejects.jsonl and
    the card into the output's folder."""
    output = options.output_path()
    folder = output.parent
    counter = tokens.TokenCounter(options.tokenizer)  # first: a bad tokenizer path fails before any work
    side = [write.split_path(output, name).name for name in (split.TRAIN, split.VALIDATION)]
    card_ok = outputs.claim(output, side + [KERNELS, STATS, REJECTS], card=options.card)
    stats = Stats("create_json")
    rejects = Rejects(folder / REJECTS, stats)
    rejects.reset()
    atomic_write_text(rejects.path, "")  # present even when nothing is dropped

    items = load.load_inputs(options.inputs, stats, rejects)
    count_tokens(items, counter, options.text_style())
    items = filters.apply_filters(items, filters.build_checks(
        options.license, options.max_tokens, options.min_lines, options.dialect, options.drop_helpers), rejects)
    items = drop_contaminated(items, options, stats, rejects)
    items, clusters = deduplicate(items, options.near_threshold, rejects)
    if options.validate is not None:
        options.validate([item.record for item in items], stats)
    items = filters.apply_filters(items, options.require_checks, rejects)
    split.assign_splits(items, options.val_fraction).record(stats)

    items = sorted(items, key=_row_order)
    rows = [write.to_row(item, options.column, options.text_style()) for item in items]
    columns = schema.completion_columns(options.column)
    split_files = write_outputs(output, rows, items, options.fmt, columns)
    count_outputs(rows, stats)
    save_stats(folder, stats, clusters, counter.name)
    if card_ok:
        card.write_card(folder, rows, {s: p.name for s, p in split_files.items()}, stats.to_dict(), counter.name,
                        columns)
    return BuildResult(rows, output, split_files, stats, clusters)


def count_tokens(items: list[Item], counter: tokens.TokenCounter, style: write.TextStyle) -> None:
    """Store each item's token count (of the text it will train on)."""
    counts = counter.count([write.row_text(item.record, style) for item in items])
    for item, count in zip(items, counts):
        item.n_tokens = count


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


def write_outputs(output: Path, rows: list, items: list[Item], fmt: str, columns: dict) -> dict:
    """The main file (every row), one file per split, and kernels.jsonl (the kept records with provenance), in
    the rows' order. Returns {split: path}."""
    write.write_rows(output, rows, fmt, columns)
    split_files = {}
    for name in (split.TRAIN, split.VALIDATION):
        split_files[name] = write.split_path(output, name)
        write.write_rows(split_files[name], [row for row in rows if row["split"] == name], fmt, columns)
    with ManifestWriter(output.parent / KERNELS) as writer:
        for item in items:
            writer.write(item.record)
    return split_files


def count_outputs(rows: list, stats: Stats) -> None:
    """Counters `out_rows`, `out_<split>` and `out_<split>_<source>`, and the rows by split and source as
    `stats.extra["out"]` ({split: {source: rows}}) for summaries."""
    stats.inc("out_rows", len(rows))
    by_split: dict = {}
    for row in rows:
        stats.inc(f"out_{row['split']}")
        stats.inc(f"out_{row['split']}_{row['source']}")
        sources = by_split.setdefault(row["split"], {})
        sources[row["source"]] = sources.get(row["source"], 0) + 1
    stats.extra["out"] = by_split


def save_stats(folder: Path, stats: Stats, clusters: dict, token_counter: str) -> None:
    """stats.json: the Stats counters and errors, the dedup cluster sizes and the token counter used."""
    data = stats.to_dict()
    data["clusters"] = clusters
    data["token_counter"] = token_counter
    atomic_write_json(folder / STATS, data)


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
