"""The dataset card beside the output: README.md in Hugging Face's format and a token-length histogram PNG.

The card's YAML header names the data files per split (`configs: data_files`) and the licenses; the body gives
counts by split, source, kind and license, the dedup and filter figures, and shows the histogram.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from scraper.dataset import outputs, schema
from scraper.fileio import atomic_write_bytes, atomic_write_text

HISTOGRAM = "token_lengths.png"


# License ids the Hugging Face Hub knows that differ from the lower-cased SPDX id only by SPDX's -only suffix,
# plus those equal to it. Anything else is "other"; no license at all is "unknown".
_HF_LICENSES = frozenset({
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "cc0-1.0", "isc", "unlicense",
    "bsl-1.0", "wtfpl", "artistic-2.0", "postgresql", "zlib", "ncsa", "mpl-2.0", "epl-2.0", "gpl-2.0", "gpl-3.0",
    "lgpl-2.1", "lgpl-3.0", "agpl-3.0", "cc-by-4.0", "cc-by-sa-4.0", "afl-3.0", "ecl-2.0", "osl-3.0", "0bsd",
})


def hf_license(spdx) -> str:
    """Hugging Face's license id for an SPDX id: "MIT" -> "mit", "GPL-3.0-only" -> "gpl-3.0"; None -> "unknown",
    an id the Hub does not list -> "other"."""
    if not spdx:
        return "unknown"
    name = spdx.lower().removesuffix("-only")
    return name if name in _HF_LICENSES else "other"


def _table(title: str, counts: Counter) -> list:
    lines = [f"| {title} | rows |", "|---|---:|"]
    lines += [f"| {key} | {value} |" for key, value in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    return lines + [""]


def card_text(rows: list, split_files: dict, stats: dict, token_counter: str, histogram: str | None,
              columns: dict) -> str:
    """README.md text. `split_files`: {split: file name relative to the card}; `stats`: Stats.to_dict();
    `columns`: {column: type} (scraper.dataset.schema), the card's `dataset_info.features`."""
    licenses = sorted({hf_license(row["license"]) for row in rows}) or ["unknown"]
    header = ["---", "license:"] + [f"- {name}" for name in licenses]
    header += ["pretty_name: Triton kernels", "task_categories:", "- text-generation", "tags:", "- code",
               "- triton", "- gpu-kernels", "size_categories:", f"- {_size_category(len(rows))}",
               "configs:", "- config_name: default", "  data_files:"]
    # Only splits with rows: datasets.load_dataset(<folder>) fails on a split whose file holds none.
    present = {row["split"] for row in rows}
    listed = {split: name for split, name in split_files.items() if split in present} or split_files
    header += [f"  - split: {split}\n    path: {name}" for split, name in listed.items()]
    header += schema.card_features(columns) + ["---", outputs.CARD_MARKER, ""]
    counts = stats.get("counts", {})
    body = ["# Triton kernels", "",
            "Triton GPU kernels for fine-tuning language models: kernels PyTorch Inductor generated for a set of "
            "models and `@triton.jit` kernels from GitHub repositories, each as a self-contained module, "
            "deduplicated (exact and MinHash near-duplicates) and split by repository / model.", "",
            f"Rows: {len(rows)}. Token counts: `{token_counter}`.", ""]
    body += _table("split", Counter(row["split"] for row in rows))
    body += [f"Note: {note}." for note in stats.get("split_notes", [])] + ([""] if stats.get("split_notes") else [])
    body += _table("source", Counter(row["source"] for row in rows))
    body += _table("kind", Counter(row["kind"] or "unknown" for row in rows))
    body += _table("license", Counter(row["license"] or "unknown" for row in rows))
    body += _token_table(rows, token_counter)
    body += ["## Processing", "", "| step | count |", "|---|---:|"]
    body += [f"| {key} | {value} |" for key, value in sorted(counts.items())] + [""]
    if histogram:
        body += ["## Token lengths", "", f"![token lengths per source]({histogram})", ""]
    return "\n".join(header + body)


def _token_table(rows: list, token_counter: str) -> list:
    by_source: dict = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row["n_tokens"] or 0)
    lines = [f"| tokens ({token_counter}) | rows | median | max | total |", "|---|---:|---:|---:|---:|"]
    for source, values in sorted(by_source.items()):
        values.sort()
        lines.append(f"| {source} | {len(values)} | {values[len(values) // 2]} | {values[-1]} | {sum(values)} |")
    return lines + [""]


def _size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return name
    return "n>1M"


def histogram_png(rows: list, token_counter: str) -> bytes:
    """PNG bytes of a histogram of `n_tokens` per source (log-spaced bins)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    import numpy as np

    by_source: dict = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(max(1, row["n_tokens"] or 1))
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if by_source:
        low = min(min(values) for values in by_source.values())
        top = max(max(values) for values in by_source.values())
        bins = np.logspace(np.log10(low) - 0.05, np.log10(max(top, low * 10)) + 0.05, 40)
        for source, values in sorted(by_source.items()):
            axes.hist(values, bins=bins, alpha=0.6, label=f"{source} ({len(values)})")
        axes.set_xscale("log")
        axes.legend()
    axes.set_xlabel(f"tokens per row ({token_counter})")
    axes.set_ylabel("rows")
    axes.set_title("Token lengths per source")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_card(folder: Path, rows: list, split_files: dict, stats: dict, token_counter: str, columns: dict) -> Path:
    """Write README.md and the histogram PNG into `folder`; returns the README path."""
    atomic_write_bytes(folder / HISTOGRAM, histogram_png(rows, token_counter))
    readme = folder / "README.md"
    atomic_write_text(readme, card_text(rows, split_files, stats, token_counter, HISTOGRAM, columns))
    return readme
