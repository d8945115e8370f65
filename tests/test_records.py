"""The record type and its JSONL files."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from scraper.records import (
    KernelRecord,
    append_jsonl,
    atomic_write_text,
    kernel_id,
    normalize_source,
    read_records,
    write_jsonl,
)
from scraper.stats import Rejects, Stats, error_group_key

KERNEL = textwrap.dedent(
    '''
    @triton.jit
    def triton_poi_fused_relu_0(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):
        # load
        x = tl.load(in_ptr0 + tl.arange(0, XBLOCK))
        tl.store(out_ptr0 + tl.arange(0, XBLOCK), x)
    '''
)


def test_id_ignores_comments_whitespace_and_inductor_numbers():
    renumbered = KERNEL.replace("_relu_0", "_relu_7").replace("# load", "# another comment")
    reindented = renumbered.replace("    x = ", "    x  =  ")
    assert kernel_id(KERNEL) == kernel_id(reindented)
    normalized = normalize_source(KERNEL)
    assert "triton_poi_fused_relu_N" in normalized and "#" not in normalized and "\n" not in normalized


def test_id_changes_with_code():
    assert kernel_id(KERNEL) != kernel_id(KERNEL.replace("in_ptr0 +", "in_ptr0 + 1 +"))


def test_id_of_untokenizable_code_still_works():
    broken = 'def f(:\n    s = """unterminated\n'
    assert len(kernel_id(broken)) == 16


def test_record_fills_id_and_rejects_unknown_source():
    record = KernelRecord(name="k", code=KERNEL, source="github")
    assert record.id == kernel_id(KERNEL)
    with pytest.raises(ValueError):
        KernelRecord(name="k", code=KERNEL, source="gitlab")


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    record = KernelRecord(name="k", code=KERNEL, source="inductor", model="resnet18", aten_ops=["aten.relu"],
                          signature={"in_ptr0": "*fp32"}, extra={"note": "x"})
    data = record.to_dict() | {"future_field": 3}
    path = tmp_path / "k.jsonl"
    write_jsonl(path, [KernelRecord.from_dict(data), record])
    first, second = read_records(path)
    assert second == record
    assert first.extra == {"note": "x", "future_field": 3}


def test_torn_last_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "k.jsonl"
    append_jsonl(path, KernelRecord(name="a", code="x = 1", source="github"))
    with open(path, "a") as handle:
        handle.write('{"name": "b", "code": "y')  # what a crash mid-write leaves
    problems = []
    records = read_records(path, on_error=lambda n, m: problems.append(n))
    assert [r.name for r in records] == ["a"]
    assert problems == [2]


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    # A child process that dies in the middle of writing (os._exit skips every cleanup).
    script = (
        "import os, scraper.records as r\n"
        "class Boom:\n"
        "    def __str__(self): os._exit(3)\n"
        f"r.atomic_write_text({str(target)!r}, 'new' + str(Boom()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 3
    assert target.read_text() == "old"
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stats_groups_errors_and_saves(tmp_path):
    stats = Stats("demo")
    stats.inc("parsed", 2)
    stats.error("parse", "a.py", SyntaxError("invalid syntax at line 3"))
    stats.error("parse", "b.py", SyntaxError("invalid syntax at line 9"))
    stats.error("download", "x/y", "HTTP 502")
    data = stats.to_dict()
    assert data["counts"]["errors_parse"] == 2
    assert data["errors"]["parse"][0]["count"] == 2  # one group: the line numbers are folded
    assert "a.py" in stats.summary()
    stats.save(tmp_path / "stats.json")
    assert json.loads((tmp_path / "stats.json").read_text())["counts"]["parsed"] == 2
    assert error_group_key("No such file '/a/b/c.py' 12") == error_group_key("No such file '/d.py' 7")


def test_rejects_file_and_counter(tmp_path):
    stats = Stats("demo")
    rejects = Rejects(tmp_path / "rejects.jsonl", stats)
    rejects.add("duplicate", id="abc", duplicate_of="def")
    lines = (tmp_path / "rejects.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"reason": "duplicate", "id": "abc", "duplicate_of": "def"}
    assert stats.counts["dropped_duplicate"] == 1


def test_hash_inside_strings_is_not_a_comment_and_spacing_is_folded():
    a = 'x = "a # b"  # note\ny=f(1,\n      2)\n'
    b = 'x = "a # b"\ny = f(1, 2)\n'
    assert normalize_source(a) == normalize_source(b)
    assert "\"a#b\"" in normalize_source(a)  # the string survives (its spacing folded like the code's)
    assert kernel_id(a) != kernel_id(b.replace("a # b", "a"))


def _tokenize_normal_form(code: str) -> str:
    """An independent normal form (Python's own tokenizer) to check the regex one against."""
    import io
    import re
    import tokenize

    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    text = " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                                                 tokenize.INDENT, tokenize.DEDENT))
    return re.sub(r"\b(triton_\w*?)_\d+\b", r"\1_N", text)


def test_same_equivalence_classes_as_the_tokenizer_on_real_kernels(tcd_roots):
    import ast

    texts = []
    for root in tcd_roots.values():
        for path in root.rglob("output_code.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "triton":
                    texts.append(node.args[1].value)
    assert len(texts) == 312

    def classes(key):
        groups = {}
        for index, text in enumerate(texts):
            groups.setdefault(key(text), []).append(index)
        return sorted(groups.values())

    assert classes(normalize_source) == classes(_tokenize_normal_form)
    assert len(classes(normalize_source)) < 312  # the fixtures do repeat kernels across models


def test_bad_lines_are_reported_with_the_file_line_numbers(tmp_path):
    path = tmp_path / "k.jsonl"
    good = json.dumps(KernelRecord(name="a", code="x = 1", source="github").to_dict())
    path.write_text("\n".join([good, '{"torn', "", json.dumps({"name": "no code"}), good]) + "\n")
    problems = []
    records = read_records(path, on_error=lambda number, message: problems.append(number))
    assert [r.name for r in records] == ["a", "a"]
    assert problems == [2, 4]  # the blank line 3 counts as a line
