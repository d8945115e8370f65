"""`python -m scraper.validate` on a manifest, the result cache, and the small API helpers."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

from scraper.paths import PACKAGE_PARENT as REPO_ROOT
from scraper.records import KernelRecord, iter_jsonl, write_jsonl
from scraper.validate import add_validate_args, level_fractions, meets
from scraper.validate.__main__ import main
from scraper.validate.cache import ResultCache

GOOD = '''import triton
import triton.language as tl


@triton.jit
def copy(src, dst, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + offsets, tl.load(src + offsets, mask=offsets < n), mask=offsets < n)
'''


def write_manifest(path) -> list[KernelRecord]:
    records = [
        KernelRecord(name="copy", code=GOOD, source="github", repo="a/b"),
        KernelRecord(name="copy", code=GOOD.replace("import triton\n", "import triton\nimport nope_missing\n"),
                     source="github", repo="a/b"),
        KernelRecord(name="copy", code=GOOD + "\n# sig\n", source="inductor",
                     signature={"src": "*fp32", "dst": "*fp32", "n": "i32", "BLOCK": "constexpr"},
                     constants={"BLOCK": 128}),
    ]
    write_jsonl(path, records)
    with open(path, "a") as handle:
        handle.write('{"torn": \n')  # a damaged line the rewrite must not silently lose
    return records


def test_cli_validates_rewrites_and_caches(tmp_path):
    manifest = tmp_path / "kernels.jsonl"
    write_manifest(manifest)
    assert main([str(manifest), "--jobs", "2"]) == 0
    rows = list(iter_jsonl(manifest))
    assert [(r["parses"], r["imports"], r["compiles"]) for r in rows] == [
        (True, True, None), (True, False, False), (True, True, True)]
    assert rows[1]["validation"]["imports"]["error"] == "ModuleNotFoundError: No module named 'nope_missing'"
    assert rows[2]["validation"]["compiles"]["config"] == {"BLOCK": 128}
    rejects = list(iter_jsonl(tmp_path / "validate_rejects.jsonl"))
    assert [(r["reason"], r["line"], r["text"]) for r in rejects] == [("not_a_record", 4, '{"torn": ')]
    assert manifest.read_text().splitlines()[3] == '{"torn": '  # kept in place, not silently removed
    stats = json.loads((tmp_path / "validate_stats.json").read_text())
    assert stats["counts"]["validate_jobs_run"] == 3 + 1  # three imports, one compile (the only signature)
    first = manifest.read_text()

    assert main([str(manifest), "--jobs", "2"]) == 0  # rerun: everything from the cache
    stats = json.loads((tmp_path / "validate_stats.json").read_text())
    assert "validate_jobs_run" not in stats["counts"] and stats["counts"]["validate_cached"] == 3 + 1
    assert manifest.read_text() == first
    assert stats["fractions"] == {
        "github": {"records": 2, "parses": 1.0, "imports": 0.5, "compiles": 0.0,
                   "checked": {"parses": 2, "imports": 2, "compiles": 1}},
        "inductor": {"records": 1, "parses": 1.0, "imports": 1.0, "compiles": 1.0,
                     "checked": {"parses": 1, "imports": 1, "compiles": 1}}}


def test_cli_help_and_missing_manifest(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scraper.validate", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    assert "--jobs" in done.stdout and "compiles" in done.stdout
    assert main([str(tmp_path / "absent.jsonl")]) == 2


def test_cache_reuses_timeouts_only_under_a_longer_limit(tmp_path):
    cache = ResultCache(tmp_path / "cache.jsonl")
    cache.put("k1", {"ok": False, "error_class": "Timeout"}, timeout=5)
    cache.put("k2", {"ok": True}, timeout=5)
    cache.put("k3", {"ok": False, "error_class": "SandboxError", "infrastructure": True}, timeout=5)
    reread = ResultCache(tmp_path / "cache.jsonl")
    assert reread.get("k1", timeout=5) == {"ok": False, "error_class": "Timeout"}
    assert reread.get("k1", timeout=60) is None  # a longer limit might let it finish
    assert reread.get("k2", timeout=60) == {"ok": True}
    assert reread.get("k3", timeout=5) is None  # a dead worker says nothing about the kernel
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 2


def test_add_validate_args_defaults():
    parser = argparse.ArgumentParser()
    add_validate_args(parser)
    assert parser.parse_args([]).validate is None
    args = parser.parse_args(["--validate"])
    assert (args.validate, args.validate_jobs, args.validate_cache) == ("compiles", None, None)
    args = parser.parse_args(["--validate", "imports", "--validate-jobs", "3", "--validate-timeout", "5",
                              "--validate-memory-mb", "256", "--validate-cache", "c.jsonl"])
    assert (args.validate, args.validate_jobs, args.validate_timeout, args.validate_memory_mb,
            args.validate_cache) == ("imports", 3, 5.0, 256, "c.jsonl")


def test_meets_and_level_fractions_on_hand_made_records():
    def rec(source, parses, imports, compiles):
        return KernelRecord(name="k", code=f"# {source}{parses}{imports}{compiles}", source=source,
                            parses=parses, imports=imports, compiles=compiles)

    records = [rec("github", True, True, None), rec("github", True, False, False), rec("github", None, None, None),
               rec("inductor", True, True, True)]
    assert [meets(r, "imports") for r in records] == [True, False, False, True]
    assert [meets(r, "compiles") for r in records] == [False, False, False, True]
    assert level_fractions(records) == {
        "github": {"records": 3, "parses": 0.6667, "imports": 0.3333, "compiles": 0.0,
                   "checked": {"parses": 2, "imports": 2, "compiles": 1}},
        "inductor": {"records": 1, "parses": 1.0, "imports": 1.0, "compiles": 1.0,
                     "checked": {"parses": 1, "imports": 1, "compiles": 1}}}


def _alive(pid: int) -> bool:
    """True while /proc/<pid> is a process that is not a zombie."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def test_a_dead_worker_is_replaced_and_its_child_dies_with_it():
    from scraper.validate.pool import Worker

    def job(code):
        return {"level": "imports", "name": "copy", "code": code, "timeout": 60, "memory_mb": 512}

    worker = Worker()
    worker.start()
    try:
        assert worker.run(job(GOOD))["ok"] is True
        answer = {}
        thread = threading.Thread(target=lambda: answer.update(worker.run(job(GOOD + "\nimport time\n"
                                                                                   "time.sleep(600)\n"))))
        thread.start()
        init = worker.proc.init_pid  # the sandbox's init (bwrap's), on the host
        [inner] = _children(init)  # the worker process, inside the sandbox
        deadline = time.monotonic() + 30
        children = []
        while not children and time.monotonic() < deadline:
            children = _children(inner)
            time.sleep(0.05)
        assert children, "the worker never forked a child for the job"
        os.kill(inner, signal.SIGKILL)
        thread.join(timeout=60)
        assert answer["error_class"] == "SandboxError" and answer["infrastructure"] is True
        assert not any(_alive(pid) for pid in [init, inner, *children])  # the whole sandbox is gone
        assert worker.run(job(GOOD))["ok"] is True  # a fresh worker took over
    finally:
        worker.stop()


def test_validate_from_args_does_nothing_without_the_flag_and_parses_only_when_asked(tmp_path):
    from scraper.stats import Stats
    from scraper.validate import validate_from_args

    parser = argparse.ArgumentParser()
    add_validate_args(parser)
    records = [KernelRecord(name="copy", code=GOOD, source="github"),
               KernelRecord(name="copy", code="def copy(:\n", source="github")]
    validate_from_args(records, parser.parse_args([]))
    assert [(r.parses, r.imports, r.validation) for r in records] == [(None, None, None)] * 2
    stats = Stats("x")
    validate_from_args(records, parser.parse_args(["--validate", "parses"]), stats=stats,
                       default_cache=str(tmp_path / "cache.jsonl"))
    assert [(r.parses, r.imports, r.compiles) for r in records] == [(True, None, None), (False, None, None)]
    assert records[1].validation["parses"]["error_class"] == "SyntaxError"
    assert (stats.counts["validate_parses_ok"], stats.counts["validate_parses_failed"]) == (1, 1)
    assert "validate_jobs_run" not in stats.counts  # parsing needs no sandbox


def test_an_interrupted_run_stops_its_workers_at_once():
    from scraper.validate.pool import WorkerPool

    def job(code):
        return {"level": "imports", "name": "copy", "code": code, "timeout": 600, "memory_mb": 512}

    def stop(job, result):
        raise KeyboardInterrupt  # as Ctrl-C while results come in

    sleeper = job(GOOD + "\nimport time\ntime.sleep(600)\n")
    pool = WorkerPool(2)
    started = time.monotonic()
    try:
        pool.run([job(GOOD), sleeper, sleeper, sleeper], stop)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt was swallowed")
    roots = [w.base for w in pool.workers]
    pool.close()
    assert time.monotonic() - started < 60  # not the sleepers' 600 s
    assert roots == [None, None]  # killed workers' scratch roots are gone


def test_lines_that_are_not_records_keep_their_own_number_and_text(tmp_path):
    """A torn line before a JSON object that is no record: each reject names its own line, nothing is lost."""
    manifest = tmp_path / "kernels.jsonl"
    write_jsonl(manifest, [KernelRecord(name="copy", code=GOOD, source="github")])
    with open(manifest, "a") as handle:
        handle.write('{"torn": \n\n{"name": "no code"}\n[1, 2]\n')
    assert main([str(manifest), "--level", "parses"]) == 0
    rejects = [(r["line"], r["text"]) for r in iter_jsonl(tmp_path / "validate_rejects.jsonl")]
    assert rejects == [(2, '{"torn": '), (4, '{"name": "no code"}'), (5, "[1, 2]")]
    lines = manifest.read_text().splitlines()
    assert json.loads(lines[0])["parses"] is True
    assert lines[1:] == ['{"torn": ', '{"name": "no code"}', "[1, 2]"]  # every line that is no record stays
    assert json.loads((tmp_path / "validate_stats.json").read_text())["counts"]["dropped_not_a_record"] == 3
