"""The reference runner (scraper.pairs.reference): a verdict per problem, and nothing left behind in the temp
folder once the runner is closed, whether the child ended well or was killed after a timeout."""

import tempfile
from pathlib import Path

from scraper.pairs.reference import ReferenceRunner

FINITE = """
import torch
class Model(torch.nn.Module):
    def forward(self, x):
        return x.exp()
def get_inputs():
    return [torch.ones(4)]
def get_init_inputs():
    return []
"""

SLOW = FINITE.replace("return x.exp()", "import time; time.sleep(60)")


def reference_folders() -> set:
    return set(Path(tempfile.gettempdir()).glob("reference-*"))


def test_a_closed_runner_leaves_no_folder_behind():
    before = reference_folders()
    with ReferenceRunner(timeout=60) as runner:
        assert runner.check(FINITE)["finite"] is True
        assert runner.check(FINITE.replace("x.exp()", "x / 0"))["finite"] is False
        assert len(reference_folders() - before) == 1  # the child's problems are there while it runs
    assert reference_folders() - before == set()


def test_a_runner_killed_after_a_timeout_leaves_no_folder_behind():
    before = reference_folders()
    with ReferenceRunner(timeout=3) as runner:
        assert runner.check(SLOW)["error"] == "reference timed out"
        assert runner.check(FINITE)["finite"] is True  # a fresh child
    assert reference_folders() - before == set()
