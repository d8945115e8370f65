"""--suite modules in persistent workers (scraper.worker.serve driven by orchestrate.PersistentWorker, outside the
wall: --unsafe-no-sandbox): several modules per process, a fresh process after a failure, a crash or after
--modules-per-process modules, and the same results as one process per module (behind the wall:
tests/test_suite_walled.py). The REAL worker on CPU; the oracles are the process ids the worker
reports (its `pid`) and the one-process-per-module run of the same modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite_helpers import run_modules

HEADER = "import os\nimport signal\nimport torch\nfrom torch import nn\n"
MODULES = [
    ("first", "class Double(nn.Module):\n    def forward(self, x):\n        return x * 2\n"),
    ("second", "class Linear(nn.Module):\n    def __init__(self, dim):\n        super().__init__()\n"
               "        self.fc = nn.Linear(dim, 3)\n    def forward(self, x):\n        return self.fc(x)\n"),
    # changes a global default at import: the next module must not see it
    ("float64", "torch.set_default_dtype(torch.float64)\n"
                "class Wide(nn.Module):\n    def forward(self, x):\n        return x + torch.ones(x.shape[-1])\n"),
    ("third", "class Dtype(nn.Module):\n    def forward(self, x):\n"
              "        assert torch.ones(1).dtype == torch.float32, 'a default dtype leaked from another module'\n"
              "        return x.sum(-1)\n"),
    # needs a one-rank process group (scraper.worker.infer.setup) ...
    ("collective", "class Gathered(nn.Module):\n    def forward(self, x):\n        out = torch.empty_like(x)\n"
                   "        torch.distributed.all_to_all_single(out, x.contiguous())\n        return out * 2\n"),
    # ... which the next module must not find
    ("no_group", "class Alone(nn.Module):\n    def forward(self, x):\n"
                 "        assert not torch.distributed.is_initialized(), 'a process group leaked from another module'\n"
                 "        return x + 1\n"),
    ("fails", "class Never(nn.Module):\n    def forward(self, x):\n        raise ValueError('never works')\n"),
    ("after_failure", "class Half(nn.Module):\n    def forward(self, x):\n        return x / 2\n"),
    ("crashes", "class Crash(nn.Module):\n    def forward(self, x):\n"
                "        os.kill(os.getpid(), signal.SIGKILL)\n"),
    ("after_crash", "class Neg(nn.Module):\n    def forward(self, x):\n        return -x\n"),
]
COMPARED = ("status", "phase", "error", "init_kwargs", "inputs", "input_shapes", "inference", "parameters",
            "graphs", "kernels")


def run(tmp_path: Path, name: str, *extra: str, unsafe: bool = True) -> dict[str, dict]:
    """The modules above through the suite (one worker slot), its manifest by model name; outside the wall
    (where persistent workers run) unless `unsafe` is False."""
    return run_modules(tmp_path, MODULES, "--timeout", "300", *(["--unsafe-no-sandbox"] if unsafe else []), *extra,
                       name=name, header=HEADER).rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("persistent")
    return {"persistent": run(base, "persistent"), "single": run(base, "single", "--modules-per-process", "1"),
            "reuse2": run(base, "reuse2", "--modules-per-process", "2")}


def test_several_modules_share_one_process(runs):
    rows = runs["persistent"]
    assert [rows[n]["status"] for n in ("first", "second", "float64", "third")] == ["ok"] * 4
    assert len({rows[n]["pid"] for n in ("first", "second", "float64", "third")}) == 1


def test_a_process_group_ends_with_its_module(runs):
    rows = runs["persistent"]
    assert rows["collective"]["status"] == "ok" and rows["collective"]["inputs"]["prepare"] == ["single_process_group()"]
    assert rows["no_group"]["status"] == "ok" and rows["no_group"]["pid"] == rows["collective"]["pid"]


def test_a_failure_gets_a_fresh_process(runs):
    rows = runs["persistent"]
    assert rows["fails"]["status"] == "failed" and rows["fails"]["phase"] == "inputs"
    assert rows["fails"]["pid"] == rows["third"]["pid"]  # it ran in the shared process ...
    assert rows["after_failure"]["status"] == "ok"
    assert rows["after_failure"]["pid"] != rows["fails"]["pid"]  # ... which ended with it


def test_a_crash_is_recorded_and_the_next_module_runs(runs):
    rows = runs["persistent"]
    assert rows["crashes"]["status"] == "crashed" and "signal 9" in rows["crashes"]["error"]
    assert rows["after_crash"]["status"] == "ok" and rows["after_crash"]["pid"] != rows["after_failure"]["pid"]


def test_results_equal_one_process_per_module(runs):
    persistent, single = runs["persistent"], runs["single"]
    assert set(persistent) == set(single) == {name for name, _ in MODULES}
    for name in persistent:
        assert {k: persistent[name].get(k) for k in COMPARED} == {k: single[name].get(k) for k in COMPARED}, name
    assert len({row["pid"] for row in single.values() if row.get("pid")}) == len(MODULES) - 1  # crash: no pid


def test_a_fresh_process_after_n_modules(runs):
    rows = runs["reuse2"]
    assert rows["first"]["pid"] == rows["second"]["pid"] != rows["float64"]["pid"] == rows["third"]["pid"]
    assert rows["third"]["status"] == "ok"


def test_each_module_has_its_own_log(runs):
    rows = runs["persistent"]
    log = (rows["fails"]["_root"] / rows["fails"]["log"]).read_text()
    assert "never works" in log and "Double" not in log
    assert "never works" not in (rows["after_failure"]["_root"] / rows["after_failure"]["log"]).read_text()
