"""Issue 23, route 4: what sandboxed code gets of the pipeline's environment is an allow-list (PATH, LANG/LC_*, the
TRITON_/TORCH_/CUDA_/NVIDIA_ variables, HOME=/tmp, ...), not os.environ less what looks like a secret; and any
value of the pipeline's environment that sandboxed code was not given is masked wherever its results are written.
The hostile input: secrets whose names and values look like nothing (DATABASE_URL, KAGGLE_KEY,
SLACK_WEBHOOK_URL) set in the host's environment, and kernels and modules that copy what they see into their
results."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from suite_helpers import run_modules
import scraper.validate.__main__ as validate_cli
from scraper.records import KernelRecord, write_jsonl
from scraper.sandbox import clean_result, worker_environment
from test_sandbox_attacks import KERNEL

NET = "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
NAMES = ("DATABASE_URL", "KAGGLE_KEY", "SLACK_WEBHOOK_URL")
# What a module reports: the three variables as it sees them, and every value of its environment.
TELLER = '''
import os
seen = " | ".join(f"{name}=" + os.environ.get(name, "<unset>") for name in %r)
raise RuntimeError(seen + " || " + " ".join(os.environ.values()))
''' % (NAMES,)


@pytest.fixture
def host_secrets(monkeypatch) -> dict[str, str]:
    """The three variables set to fresh values in this process's environment."""
    values = {"DATABASE_URL": f"postgres://app:{secrets.token_hex(8)}@db.internal:5432/prod",
              "KAGGLE_KEY": secrets.token_hex(16),
              "SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/T0/B0/{secrets.token_hex(12)}"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_sandboxed_code_gets_only_the_allow_list(host_secrets, monkeypatch):
    monkeypatch.setenv("TRITON_PRINT_AUTOTUNING", "1")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("SOME_SERVICE_ENDPOINT", "https://internal.example:8443")
    env = worker_environment()
    assert not set(NAMES) & set(env) and "SOME_SERVICE_ENDPOINT" not in env
    assert env["TRITON_PRINT_AUTOTUNING"] == "1" and env["LC_ALL"] == "C.UTF-8" and env["HOME"] == "/tmp"
    assert set(host_secrets.values()).isdisjoint(env.values())


def test_a_value_sandboxed_code_was_not_given_is_masked_in_its_results(host_secrets):
    result = {"ok": False, "error": "RuntimeError: " + " ".join(host_secrets.values()),
              "nested": {"tail": [f"it said {host_secrets['KAGGLE_KEY']}"]}}
    text = json.dumps(clean_result(result))
    for value in host_secrets.values():
        assert value not in text


def test_a_kernel_never_sees_nor_writes_the_pipelines_secrets(host_secrets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [KernelRecord(name="kern", code=KERNEL + TELLER, source="github")])
    assert validate_cli.main([str(manifest), "--level", "imports", "--jobs", "1", "-q"]) == 0
    error = json.loads(manifest.read_text())["validation"]["imports"]["error"]
    assert all(f"{name}=<unset>" in error for name in NAMES), error
    for path in tmp_path.iterdir():
        text = path.read_text(errors="replace")
        for value in host_secrets.values():
            assert value not in text, (path.name, value)


def test_a_module_never_sees_nor_writes_the_pipelines_secrets(host_secrets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = run_modules(tmp_path, [{"name": "teller", "class_name": "Net", "code": TELLER + NET}])
    code, out = done.code, done.out
    assert code == 1  # the module failed: it raised what it saw
    row = done.rows["teller"]
    assert all(f"{name}=<unset>" in row["error"] for name in NAMES), row["error"]
    for path in Path(out).rglob("*"):  # manifest, stats, errors.csv, the worker's log, its result
        if path.is_file():
            text = path.read_text(errors="replace")
            for value in host_secrets.values():
                assert value not in text, (path, value)
