"""Issue 23, route 14: terminal control sequences in scraped or sandboxed text are never printed raw. The hostile
inputs: a kernel whose error text erases the line above and prints a fake "all passed", a suite worker whose
result's error does the same, and a repository file whose name holds an escape sequence (in a local clone: a zip
member's name is refused already). What each stage prints (log lines, summaries, listings) is read back from
stderr and stdout."""

from __future__ import annotations

import json

import run_inductor_suite
import scraper.validate.__main__ as validate_cli
from scraper.generator.main import main as generator_main
from scraper.records import KernelRecord, write_jsonl
from test_sandbox_attacks import KERNEL

FORGERY = "\x1b[2K\x1b[1A\r\u202e== all passed =="
CONTROLS = ("\x1b", "\r", "\u202e")


def raw_controls(text: str) -> list[str]:
    """The control characters of CONTROLS that `text` holds raw."""
    return [char for char in CONTROLS if char in text]


def test_a_kernels_error_text_is_printed_escaped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [KernelRecord(name="kern", code=KERNEL + f"raise RuntimeError({FORGERY!r})\n",
                                        source="github")])
    assert validate_cli.main([str(manifest), "--level", "imports", "--jobs", "1"]) == 0
    printed = capsys.readouterr()
    assert "\\x1b[2K" in printed.err  # escaped, so a reader sees what the kernel tried
    assert raw_controls(printed.err + printed.out) == []


def test_a_suite_workers_error_is_printed_escaped(tmp_path, capsys):
    worker = tmp_path / "worker.py"
    worker.write_text("import json, sys\njob = json.load(open(sys.argv[1]))\n"
                      f"json.dump({{'success': False, 'phase': 'compile', 'error': {FORGERY!r}}}, open(job['result'], 'w'))\n"
                      "sys.exit(1)\n")
    modules = tmp_path / "modules.jsonl"
    modules.write_text(json.dumps({"name": "net", "class_name": "Net", "code": "class Net: pass\n"}) + "\n")
    assert run_inductor_suite.main(["--suite", "modules", "--modules-file", str(modules), "--out",
                                    str(tmp_path / "tcd"), "--worker", str(worker), "--gpus", "none"]) == 1
    printed = capsys.readouterr()
    assert "all passed" in printed.err and raw_controls(printed.err + printed.out) == []


def test_a_file_name_with_an_escape_sequence_is_refused_and_printed_escaped(tmp_path, capsys):
    repo = tmp_path / "downloads" / "owner__repo" / "pkg"
    repo.mkdir(parents=True)
    (repo / "ok.py").write_text(KERNEL)
    (repo / f"evil{FORGERY}.py").write_text("import triton\ndef broken(:\n")
    code = generator_main(["--generate-all", "--download-dir", str(tmp_path / "downloads"), "-o",
                           str(tmp_path / "out"), "--jobs", "1"])
    assert code == 0
    printed = capsys.readouterr()
    assert "evil" in printed.err and raw_controls(printed.err + printed.out) == []
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [row["reason"] for row in rejects] == ["unsafe_path"]
