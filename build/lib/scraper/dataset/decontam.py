"""Decontamination: drop dataset kernels that match, exactly or nearly, files of a local evaluation set.

The evaluation set is any mix of .py files, folders of them and kernels.jsonl manifests (KernelBench,
TritonBench, ...). Each .py file counts whole and, besides, each jit kernel in it on its own (found with the
generator's detection, never executed), so a dataset kernel matches an evaluation kernel even when the
evaluation file wraps it in a test harness. Exact = equal `kernel_id`; near = estimated Jaccard of the 5-token
shingle sets at or above the threshold (the MinHash signatures of scraper.dataset.dedup).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from scraper.dataset import dedup
from scraper.dataset.load import MAX_SCAN_BYTES, python_files, read_manifest
from scraper.records import kernel_id
from scraper.stats import Stats

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.7  # lower than dedup's: missing a leak costs more than dropping a few kernels


def load_eval_texts(paths: list, stats: Stats) -> list:
    """(label, text) for every evaluation file and every jit kernel inside it; problems are `decontaminate`
    errors."""
    texts = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            stats.error("decontaminate", str(path), "evaluation set path does not exist")
        elif path.is_file() and path.suffix == ".jsonl":
            texts += [(f"{path}:{r.name}", r.code) for r in read_manifest(path, stats) if r.code]
        elif path.is_file():
            texts += _file_texts(path, path.name, stats)
        else:
            for file in python_files(path):
                texts += _file_texts(file, file.relative_to(path).as_posix(), stats)
    stats.inc("decontaminate_eval_texts", len(texts))
    return texts


def _file_texts(file: Path, label: str, stats: Stats) -> list:
    from scraper.generator import find_kernels_in_source

    try:
        if file.stat().st_size > MAX_SCAN_BYTES:
            raise ValueError(f"file larger than {MAX_SCAN_BYTES} bytes")
        text = file.read_text(encoding="utf-8", errors="replace")
        kernels = find_kernels_in_source(text, label)
    except Exception as exc:  # untrusted file: count it and go on
        stats.error("decontaminate", str(file), exc)
        return []
    return [(label, text)] + [(f"{label}::{k.qualname}", k.source) for k in kernels if k.source.strip()]


def find_contaminated(records: list, eval_texts: list, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """{index in `records`: (evaluation label, "exact" | "near", similarity)} for every matching record."""
    if not records or not eval_texts:
        return {}
    exact = {kernel_id(text): label for label, text in eval_texts}
    matches = {i: (exact[r.id], "exact", 1.0) for i, r in enumerate(records) if r.id in exact}
    table, usable = dedup.signatures([r.code for r in records] + [text for _, text in eval_texts])
    offset = len(records)
    lsh = dedup.build_lsh(table, [offset + j for j in range(len(eval_texts)) if usable[offset + j]], threshold)
    for index in np.flatnonzero(usable[:offset]):
        if index in matches:
            continue
        for other in lsh.query(dedup.Signature(table[index])):
            similarity = dedup.estimated_jaccard(table[index], table[other])
            if similarity >= threshold:
                matches[int(index)] = (eval_texts[other - offset][0], "near", round(similarity, 3))
                break
    return matches
