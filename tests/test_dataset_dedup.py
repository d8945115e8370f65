"""Exact and near dedup on hand-made kernels and the real fixture kernels, with set-based oracles."""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pytest

from dataset_helpers import (ADD_KERNEL, ADD_KERNEL_NEAR, SOFTMAX_KERNEL, embedded_inductor_kernels, run_script,
                             true_jaccard)
from scraper.dataset import dedup
from scraper.dataset.item import Item
from scraper.records import KernelRecord


def record(code, name="k", **fields):
    """A dataset item holding a GitHub kernel record."""
    return Item(KernelRecord(name=name, code=code, source="github", **fields))


def names(items):
    return [item.record.name for item in items]


def test_hand_made_near_pair_collapses_and_a_different_kernel_stays():
    assert true_jaccard(ADD_KERNEL, ADD_KERNEL_NEAR) >= 0.85  # the pair is near by the oracle's measure
    assert true_jaccard(ADD_KERNEL, SOFTMAX_KERNEL) < 0.3
    records = [record(ADD_KERNEL_NEAR, "add_near", repo="b/b"), record(SOFTMAX_KERNEL, "softmax", repo="c/c"),
               record(ADD_KERNEL, "add", repo="a/a", license="MIT")]
    result = dedup.near_dedup(records, threshold=0.85)
    assert names(result.kept) == ["softmax", "add"]  # input order; the licensed copy kept
    assert [(r.record.name, kept) for r, kept in result.dropped] == [("add_near", records[2].record.id)]
    assert result.cluster_sizes == {1: 1, 2: 1}
    assert records[2].cluster_size == 2


def test_near_dedup_keeps_pair_apart_above_its_similarity():
    similarity = true_jaccard(ADD_KERNEL, ADD_KERNEL_NEAR)
    records = [record(ADD_KERNEL), record(ADD_KERNEL_NEAR)]
    assert len(dedup.near_dedup(records, threshold=similarity + 0.08).kept) == 2


def test_exact_dedup_keeps_best_provenance():
    renamed_comment = ADD_KERNEL.replace('"""out = x + y', '# a comment\n    """out = x + y')
    copies = [
        record(ADD_KERNEL, "no_license_many_stars", repo="z/z", stars=5000),
        record(renamed_comment, "mit_few_stars", repo="y/y", license="MIT", stars=10),
        record(ADD_KERNEL, "mit_more_stars", repo="x/x", license="MIT", stars=50),
        record(ADD_KERNEL, "mit_more_stars_b", repo="w/w", license="Apache-2.0", stars=50),
        record(ADD_KERNEL, "noassertion", repo="v/v", license="NOASSERTION", stars=9000),  # GitHub: unrecognised
    ]
    assert len({c.record.id for c in copies}) == 1  # a comment does not change identity
    result = dedup.exact_dedup(copies)
    # license known, then stars, then repo name (w/w < x/x) as the deterministic tie-break
    assert names(result.kept) == ["mit_more_stars_b"]
    assert {r.record.name for r, _ in result.dropped} == {"no_license_many_stars", "mit_few_stars",
                                                          "mit_more_stars", "noassertion"}
    assert result.cluster_sizes == {5: 1}
    shuffled = dedup.exact_dedup(list(reversed(copies)))
    assert names(shuffled.kept) == ["mit_more_stars_b"]


def test_exact_dedup_folds_inductor_kernel_numbers():
    kernel = "@triton.jit\ndef triton_poi_fused_relu_0(in_ptr0, xnumel):\n    tmp0 = tl.load(in_ptr0)\n"
    a = KernelRecord(name="triton_poi_fused_relu_0", code=kernel, source="inductor", model="m1")
    b = KernelRecord(name="triton_poi_fused_relu_7", code=kernel.replace("_0(", "_7("), source="inductor",
                     model="m2")
    result = dedup.exact_dedup([Item(a), Item(b)])
    assert len(result.kept) == 1 and result.dropped[0][1] == result.kept[0].record.id


def test_signature_estimate_tracks_true_jaccard_on_fixture_kernels(tcd_roots):
    kernels = embedded_inductor_kernels(tcd_roots["tcd_timm"])[:60]
    table, usable = dedup.signatures(kernels)
    assert usable.all()
    rng = random.Random(0)
    pairs = rng.sample(list(itertools.combinations(range(len(kernels)), 2)), 150)
    # tokens here come from the regex of dedup, the oracle uses Python's tokenizer: both are code tokens
    errors = [abs(dedup.estimated_jaccard(table[i], table[j]) - true_jaccard(kernels[i], kernels[j]))
              for i, j in pairs]
    assert np.mean(errors) < 0.06
    assert max(errors) < 0.25


def test_identical_text_gives_identical_signature_and_empty_text_is_skipped():
    table, usable = dedup.signatures([ADD_KERNEL, "", ADD_KERNEL, "# only a comment\n"])
    assert list(usable) == [True, False, True, False]
    assert (table[0] == table[2]).all()
    assert dedup.estimated_jaccard(table[0], table[2]) == 1.0


def test_many_copies_form_one_cluster():
    # 300 variants of one kernel differing in one constant, plus the softmax: two clusters
    variants = [ADD_KERNEL.replace("pid * BLOCK_SIZE", f"pid * BLOCK_SIZE + {i}") for i in range(300)]
    records = [record(code, f"v{i}") for i, code in enumerate(variants)] + [record(SOFTMAX_KERNEL, "softmax")]
    result = dedup.near_dedup(records, threshold=0.8)
    assert sorted(names(result.kept)) == ["softmax", "v0"]
    assert result.cluster_sizes == {1: 1, 300: 1}


@pytest.mark.parametrize("threshold", [0.7, 0.85])
def test_near_dedup_threshold_is_respected_for_direct_pairs(threshold):
    # A kernel and a copy with k extra statements: merged exactly when the true similarity reaches the threshold
    # (away from the boundary, where the estimate's noise decides).
    for extra in range(1, 12):
        near = ADD_KERNEL.replace("    output = x + y\n",
                                  "    output = x + y\n" + "".join(f"    t{i} = x * {i}\n" for i in range(extra)))
        similarity = true_jaccard(ADD_KERNEL, near)
        if abs(similarity - threshold) < 0.08:
            continue
        merged = len(dedup.near_dedup([record(ADD_KERNEL), record(near)], threshold).kept) == 1
        assert merged == (similarity >= threshold), (extra, similarity)


def test_benchmark_script_runs_and_its_counts_add_up():
    done = run_script("benchmarks/bench_dedup.py", "-n", "400")
    result = re.search(r"(\d+) in, (\d+) exact duplicates, (\d+) near duplicates, (\d+) kept", done.stdout)
    total, exact, near, kept = map(int, result.groups())
    assert total == 400 and exact + near + kept == total and exact > 0 and near > 0
    assert "ratio     dedup / baseline = " in done.stdout
