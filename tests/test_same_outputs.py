"""The same inputs give the same outputs as before a change to the code's structure (issue #27's done-when).

tests/fixtures/same_outputs.json is the digest (tests/corpus_helpers.corpus_digest: rows and a hash per file, what
varies between runs taken out) of the corpus that tests/corpus_helpers.build_corpus makes from the fixtures and the
bundled demo's inputs (every torch_compile_debug fixture, the suite runs, examples/repos through the offline path
and the generator, the three datasets). It was written by the code as it stood before the dataset's three tasks
became step lists over one item type (b7d4e53): this helper copied into a worktree of that commit, then
`python tests/corpus_helpers.py tests/fixtures/same_outputs.json` there. Files in which nothing varies (the
datasets, pairs.jsonl, kernels.jsonl, ...) are compared as their text, byte for byte.

A change that means to change what the stages write rewrites the file the same way and says so in its commit; any
other difference is a regression, and the test names the files that differ.
"""

from __future__ import annotations

import json

from corpus_helpers import REPO_ROOT, corpus_digest

BEFORE = REPO_ROOT / "tests" / "fixtures" / "same_outputs.json"


def test_the_fixtures_and_the_demo_inputs_give_the_outputs_recorded_before(fixture_corpus):
    before = json.loads(BEFORE.read_text(encoding="utf-8"))
    root, corpus = fixture_corpus  # conftest: build_corpus(root, PLAIN_ALL), shared with the report's tests
    now = corpus_digest(corpus, root)
    assert sorted(set(before) - set(now)) == [], "files no longer written"
    assert sorted(set(now) - set(before)) == [], "files written that were not before"
    changed = {name: (before[name], now[name]) for name in before if before[name] != now[name]}
    assert changed == {}, f"{len(changed)} files differ: {sorted(changed)[:20]}"
    # what the comparison stands on: every stage wrote something
    for part in ("kernels/kernels.jsonl", "kernels/pairs.jsonl", "generated/kernels.jsonl",
                 "datasets/triton_functions.json", "datasets/triton_pairs.json", "datasets/triton_problems.json"):
        assert now[part]["rows"] > 0, part
