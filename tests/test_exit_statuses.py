"""The README's exit-status table, held by `triton-data <stage>` for what a new user gets wrong: 0 only when
something was produced, 1 when nothing was, 3 when an input given is missing or unreadable, and nothing written
when there is nothing to read."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest

from scraper import console

REPO_ROOT = Path(__file__).resolve().parent.parent
SOFTMAX = REPO_ROOT / "examples" / "repos" / "kernelsmith" / "softmax-triton"


def triton_data(*argv) -> int:
    """`triton-data ARGV...` in this process; its exit status."""
    return console.main([str(arg) for arg in argv])


def test_generate_one_folder_without_a_kernel_is_nothing_produced(tmp_path):
    (tmp_path / "empty").mkdir()
    assert triton_data("generate", "--generate-one", tmp_path / "empty", "-o", tmp_path / "out", "--jobs", "1",
                       "-q") == 1


@pytest.mark.parametrize("name, content", [("bad.zip", b"this is no zip archive"), ("some.json", b"{}\n")])
def test_scrape_local_of_what_is_no_archive_is_an_unreadable_input(tmp_path, name, content):
    given = tmp_path / name
    given.write_bytes(content)
    out = tmp_path / "download"
    assert triton_data("scrape", "--local", given, "-o", out, "-q") == 3
    assert not list(out.glob("*.zip"))


def test_scrape_local_keep_going_forgives_an_unreadable_input_when_another_was_ingested(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 cut short")
    out = tmp_path / "download"
    argv = ["scrape", "--local", bad, f"{SOFTMAX}=kernelsmith/softmax-triton", "-o", out, "-q"]
    assert triton_data(*argv) == 3
    assert triton_data(*argv, "--keep-going") == 0
    with zipfile.ZipFile(out / "kernelsmith__softmax-triton.zip") as archive:
        assert any(name.endswith("softmax.py") for name in archive.namelist())


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_discover_only_without_network_is_not_success(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    out = tmp_path / "download"
    status = triton_data("scrape", "--discover-only", "--search", "repo", "--retries", "0", "--timeout", "2",
                         "-o", out, "-q")
    assert status == 1
    assert (out / "candidates.txt").read_text() == ""


@pytest.mark.parametrize("stage", [
    ["inductor", "MISSING", "-o", "OUT"],
    ["dataset", "MISSING", "-o", "OUT/"],
    ["generate", "--generate-one", "MISSING", "-o", "OUT", "--jobs", "1"],
    ["scrape", "--local", "MISSING", "-o", "OUT"],
], ids=lambda argv: argv[0])
def test_a_single_missing_input_exits_3_and_writes_nothing(tmp_path, stage, capsys):
    missing, out = tmp_path / "no-such-input", tmp_path / "out"
    places = {"MISSING": str(missing), "OUT": str(out), "OUT/": f"{out}/"}
    assert triton_data(*[places.get(arg, arg) for arg in stage], "-q") == 3
    assert not out.exists()  # no empty kernels.jsonl, pairs.jsonl, problems/, stats.json
    assert str(missing) in capsys.readouterr().err


def test_a_missing_input_beside_one_that_gave_nothing_is_still_3(tmp_path):
    """Nothing was produced, but the likelier reason is the input that is not there: 3, also with --keep-going."""
    (tmp_path / "empty").mkdir()
    argv = ["inductor", tmp_path / "no-such-input", tmp_path / "empty", "-o", tmp_path / "out", "-q"]
    assert triton_data(*argv) == 3
    assert triton_data(*argv, "--keep-going") == 3
