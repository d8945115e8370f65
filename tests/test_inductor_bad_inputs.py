"""Bad and unusual inputs: each gets a clear message, is counted, and the run goes on."""

from __future__ import annotations

import ast
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from inductor_helpers import load_manifest, run_extraction

from scraper.inductor import clean_kernel, read_output_code
from scraper.inductor.kernel import to_json

KERNEL = textwrap.dedent(
    """
    import triton
    import triton.language as tl

    from torch._inductor.runtime import triton_helpers, triton_heuristics
    triton_helpers.set_driver_to_gpu()

    @triton_heuristics.pointwise(
        size_hints={'x': 1024}, filename=__file__,
        triton_meta={'signature': {'in_ptr0': '*fp32', 'out_ptr0': '*fp32', 'xnumel': 'i32', 'XBLOCK': 'constexpr'}, 'constants': {}},
        inductor_meta={'kernel_name': 'NAME'},
    )
    @triton.jit
    def NAME(in_ptr0, out_ptr0, xnumel, XBLOCK : tl.constexpr):
        x0 = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
        tl.store(out_ptr0 + x0, tl.load(in_ptr0 + x0, x0 < xnumel), x0 < xnumel)
    """
)


def output_code(*kernels: str, tail: str = "async_compile.wait(globals())\ndel async_compile\n") -> str:
    """A small output_code.py in Inductor's shape, with the given `name = async_compile.triton(...)` blocks."""
    head = "from torch._inductor.async_compile import AsyncCompile\nasync_compile = AsyncCompile()\n\n\n"
    return head + "\n\n".join(kernels) + "\n\n" + tail


def triton_block(name: str, text: str | None = None, comment: str = "") -> str:
    text = KERNEL.replace("NAME", name) if text is None else text
    return f"{comment}{name} = async_compile.triton('{name}', '''{text}''', device_str='cuda')\n"


def graph(root: Path, name: str, content: str | bytes) -> Path:
    """Write root/run_x/torchinductor/<name>/output_code.py."""
    path = root / "run_2026_01_01_00_00_00_000000-pid_1" / "torchinductor" / name / "output_code.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def stats_of(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def rejects_of(out: Path) -> list[dict]:
    path = out / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_missing_path_and_folder_without_output_code_are_reported_and_the_run_goes_on(tmp_path, capfd):
    good = tmp_path / "good"
    graph(good, "m__0_inference_0.0", output_code(triton_block("triton_poi_fused_a_0")))
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert run_extraction([tmp_path / "nope", tmp_path / "empty", good], out) == 3  # an input missing: not 0
    messages = capfd.readouterr().err
    assert run_extraction([tmp_path / "nope", tmp_path / "empty", good], out, "--keep-going") == 0
    assert "nope does not exist" in messages and "empty has no output_code.py below it" in messages
    stats = stats_of(out)
    assert stats["counts"]["errors_input"] == 2 and stats["counts"]["kernels"] == 1
    assert [row["name"] for row in load_manifest(out)] == ["triton_poi_fused_a_0"]


def test_nothing_found_exits_nonzero_with_stats(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert run_extraction([tmp_path / "empty"], out) == 1  # read, but no output_code.py: nothing produced
    assert stats_of(out)["counts"]["errors_input"] == 1
    assert (out / "kernels.jsonl").read_text() == ""


def test_truncated_inside_a_kernel_keeps_the_kernels_before_it(tcd_roots, tmp_path):
    source = next(tcd_roots["tcd_userkernel"].rglob("output_code.py")).read_text()
    cut = source.index("tmp2 = triton_helpers.maximum")  # inside the second (last) kernel's string
    path = graph(tmp_path / "in", "ScaledAdd__0_inference_0.0", source[:cut])
    out = tmp_path / "out"
    assert run_extraction([path.parent], out) == 0  # an output_code.py can be the input too
    assert [row["name"] for row in load_manifest(out)] == ["scaled_add"]
    stats = stats_of(out)
    assert stats["counts"]["errors_parse"] == 1 and stats["counts"]["kernels_lost_in_damaged_files"] == 1
    (reject,) = rejects_of(out)
    assert reject["reason"] == "output_code_does_not_parse" and reject["kernels_lost"] == 1
    assert "unterminated triple-quoted string" in reject["error"]


def test_truncated_in_the_wrapper_keeps_every_kernel_and_says_so(tcd_roots, tmp_path):
    source = next(tcd_roots["tcd_userkernel"].rglob("output_code.py")).read_text()
    cut = source.index("stream0 = get_raw_stream(0)") + 10  # mid-statement, inside Runner.call
    out = tmp_path / "out"
    assert run_extraction([graph(tmp_path / "in", "ScaledAdd__0_inference_0.0", source[:cut])], out) == 0
    assert [row["name"] for row in load_manifest(out)] == ["scaled_add", "triton_poi_fused_mul_relu_0"]
    assert stats_of(out)["counts"]["errors_parse"] == 1
    assert rejects_of(out)[0]["kernels_lost"] == 0


def test_cpu_only_graph_is_counted_not_an_error(tmp_path):
    cpp = (
        "cpp_fused_relu_0 = async_compile.cpp_pybinding(['const float*', 'float*'], r'''\n"
        '#include "/tmp/torchinductor_root/pi/cpicxudqmdsjh5cm4klbtbrvy2cxwr7whxl3md2zzdjdf3orvfdf.h"\n'
        'extern "C" void kernel(const float* in_ptr0, float* out_ptr0) {}\n'
        "''')\n"
    )
    out = tmp_path / "out"
    assert run_extraction([graph(tmp_path / "in", "cpu_model__0_inference_0.0", output_code(cpp))], out) == 0
    counts = stats_of(out)["counts"]
    assert counts["graphs_cpu_only"] == 1 and counts["non_triton_kernels_skipped"] == 1
    assert counts.get("kernels", 0) == 0 and not [key for key in counts if key.startswith("errors")]


def test_non_utf8_bytes(tmp_path):
    blocks = [
        triton_block("triton_poi_fused_a_0", comment="# Original path: caf\xe9.py\n"),
        triton_block("triton_poi_fused_b_1", text=KERNEL.replace("NAME", "triton_poi_fused_b_1") + "# \xe9\n"),
    ]
    content = output_code(*blocks).encode("latin-1")  # é as the single byte 0xE9: not UTF-8
    out = tmp_path / "out"
    assert run_extraction([graph(tmp_path / "in", "m__0_inference_0.0", content)], out) == 0
    # The bad byte in the comment: the kernel is kept; in the kernel text: that kernel is rejected.
    assert [row["name"] for row in load_manifest(out)] == ["triton_poi_fused_a_0"]
    counts = stats_of(out)["counts"]
    assert counts["errors_decode"] == 1 and counts["dropped_not_utf8"] == 1
    assert (out / "m" / "m__0_inference_0.0" / "output_code.py").read_bytes() == content


def test_kernel_text_that_does_not_parse_is_rejected(tmp_path):
    blocks = [triton_block("triton_poi_fused_bad_0", text="\ndef triton_poi_fused_bad_0(:\n"),
              triton_block("triton_poi_fused_good_1")]
    out = tmp_path / "out"
    assert run_extraction([graph(tmp_path / "in", "m__0_inference_0.0", output_code(*blocks))], out) == 0
    assert [row["name"] for row in load_manifest(out)] == ["triton_poi_fused_good_1"]
    assert [r["reason"] for r in rejects_of(out)] == ["kernel_does_not_parse"]


def test_kernel_path_file_is_read_only_inside_the_debug_folder(tmp_path):
    """The `# kernel path:` comment is input: a walled module writes its own output_code.py naming a host file
    (issue 23, route 2). Only a .py file inside the run folder being read is ever a fallback."""
    run = tmp_path / "in" / "run_2026_01_01_00_00_00_000000-pid_1"
    inside = run / "cache" / "cabc.py"
    inside.parent.mkdir(parents=True)
    inside.write_text(KERNEL.replace("NAME", "triton_poi_fused_a_0"))
    host = tmp_path / "host" / "secret.py"  # a host file holding a secret, outside every debug folder
    host.parent.mkdir()
    host.write_text(KERNEL.replace("NAME", "triton_poi_fused_b_1") + "\nTOKEN = 'ghp_SECRET123'\n")
    link = run / "cache" / "link.py"  # inside by name, outside by target
    link.symlink_to(host)
    not_python = run / "cache" / "secret.txt"
    not_python.write_text(KERNEL.replace("NAME", "triton_poi_fused_d_3"))
    blocks = [
        f"# kernel path: {inside}\ntriton_poi_fused_a_0 = async_compile.triton('triton_poi_fused_a_0', source_a)\n",
        f"# kernel path: {host}\ntriton_poi_fused_b_1 = async_compile.triton('triton_poi_fused_b_1', source_b)\n",
        f"# kernel path: {link}\ntriton_poi_fused_c_2 = async_compile.triton('triton_poi_fused_c_2', source_c)\n",
        f"# kernel path: {not_python}\ntriton_poi_fused_d_3 = async_compile.triton('triton_poi_fused_d_3', source_d)\n",
    ]
    out = tmp_path / "out"
    assert run_extraction([graph(tmp_path / "in", "m__0_inference_0.0", output_code(*blocks))], out) == 0
    (row,) = load_manifest(out)
    assert row["name"] == "triton_poi_fused_a_0" and row["extra"]["source_from"] == "kernel_path"
    assert row["original"] == inside.read_text() and row["kind"] == "pointwise"
    assert [r["reason"] for r in rejects_of(out)] == ["no_source"] * 3
    written = "".join(path.read_text(errors="replace") for path in out.rglob("*") if path.is_file())
    assert "ghp_SECRET123" not in written and "triton_poi_fused_b_1(" not in written


def test_hostile_names_stay_inside_the_output_folder(tmp_path):
    block = triton_block("triton_poi_fused_a_0").replace("('triton_poi_fused_a_0'", "('../../../evil'", 1)
    out = tmp_path / "out"
    assert run_extraction([graph(tmp_path / "in", "..", output_code(block))], out) == 0
    (row,) = load_manifest(out)
    assert row["name"] == "../../../evil"
    target = (out / row["file"]).resolve()
    assert target.is_file() and out.resolve() in target.parents
    assert not list(tmp_path.glob("evil*")) and not (tmp_path / "in" / "evil.py").exists()


def test_graph_folder_without_run_folder_or_fx_graph(tmp_path):
    path = tmp_path / "in" / "plain" / "output_code.py"
    path.parent.mkdir(parents=True)
    path.write_text(output_code(triton_block("triton_red_fused_sum_0")))
    out = tmp_path / "out"
    assert run_extraction([tmp_path / "in"], out) == 0
    (row,) = load_manifest(out)
    assert row["model"] == "plain" and row["graph"] == "plain" and row["run_dir"] is None
    assert row["fx_graph"] is None and stats_of(out)["counts"]["graphs_without_fx_graph"] == 1
    assert row["kind"] == "pointwise"  # the decorator wins over the name prefix


def test_help_explains_and_mentions_token_counts(capsys):
    import get_kernels_from_debug_info

    with pytest.raises(SystemExit) as exit_info:
        get_kernels_from_debug_info.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "token counts are not computed here" in text.lower() and "--output" in text


# ------------------------------------------------------------------------------------------------ small units


def test_to_json_keeps_what_the_decorator_says():
    node = ast.parse(
        "{(0,): [['tt.divisibility', 16]], 'device': DeviceProperties(type='cuda', cc=90), 'h': set(),"
        " 'r': ReductionHint.INNER, 'n': -1, 's': {'b', 'a'}, 'e': ..., 'b': b'x', 'm': -'a', 'f': -2.5}",
        mode="eval",
    ).body
    assert to_json(node) == {"(0,)": [["tt.divisibility", 16]], "device": {"type": "cuda", "cc": 90}, "h": [],
                             "r": "ReductionHint.INNER", "n": -1, "s": ["a", "b"], "e": "...", "b": "b'x'",
                             "m": "-'a'", "f": -2.5}


def test_clean_kernel_keeps_everything_else_byte_for_byte():
    text = KERNEL.replace("NAME", "k").replace("x0 = tl", "# café ünïcode\n    x0 = tl")
    clean = clean_kernel(text, "k")
    lines = text.splitlines(keepends=True)
    decorator_start = next(i for i, line in enumerate(lines) if line.startswith("@triton_heuristics"))
    decorator_end = next(i for i, line in enumerate(lines) if line.startswith(")"))
    expected = lines[:decorator_start] + lines[decorator_end + 1 :]
    expected.remove("triton_helpers.set_driver_to_gpu()\n")
    assert clean.code == "".join(expected).lstrip("\n")
    assert clean.launch["size_hints"] == {"x": 1024} and "filename" not in clean.launch
    assert clean.dropped_statements == ["triton_helpers.set_driver_to_gpu()"]


def test_statement_sharing_a_line_is_replaced_by_pass():
    text = "import triton\nx = 1; triton_helpers.set_driver_to_gpu()\n@triton.jit\ndef k(a):\n    pass\n"
    clean = clean_kernel(text, "k")
    assert clean.code.splitlines()[1] == "x = 1; pass" and clean.kind == "user_defined" and clean.launch is None


def test_read_output_code_counts_the_kernels_lost_to_damage():
    text = output_code(triton_block("triton_poi_fused_a_0"), triton_block("triton_poi_fused_b_1"))
    damaged = text[: text.index("triton_poi_fused_b_1 = ") + 60]
    result = read_output_code(damaged)
    assert [k.name for k in result.kernels] == ["triton_poi_fused_a_0"]
    assert result.salvaged and result.lost_kernels == 1 and result.parse_error


@pytest.mark.parametrize("name,kind", [("triton_for_fused_0", "foreach"), ("triton_spl_fused_1", "split_scan"),
                                       ("triton_tem_fused_mm_2", "template"), ("my_kernel", "user_defined")])
def test_kind_from_the_name_when_there_is_no_decorator(name, kind):
    text = f"import triton\n@triton.jit\ndef {name}(a):\n    pass\n"
    assert clean_kernel(text, name).kind == kind


def test_output_folder_inside_the_input_is_not_read_back(tmp_path):
    graph(tmp_path, "m__0_inference_0.0", output_code(triton_block("triton_poi_fused_a_0")))
    out = tmp_path / "inductor_kernels"
    for _ in range(2):
        assert run_extraction([tmp_path], out) == 0
        assert stats_of(out)["counts"]["graphs"] == 1
    assert [row["file"] for row in load_manifest(out)] == ["m/m__0_inference_0.0/kernels/triton_poi_fused_a_0.py"]


def test_torn_manifest_line_from_a_crash_is_repaired_by_a_rerun(tmp_path):
    inputs = graph(tmp_path / "in", "m__0_inference_0.0",
                   output_code(triton_block("triton_poi_fused_a_0"), triton_block("triton_poi_fused_b_1")))
    out = tmp_path / "out"
    assert run_extraction([inputs], out) == 0
    good = (out / "kernels.jsonl").read_bytes()
    with open(out / "kernels.jsonl", "ab") as handle:
        handle.write(good.splitlines(keepends=True)[0][:50])  # what a crash in the middle of a line leaves
    assert run_extraction([inputs], out) == 0
    assert (out / "kernels.jsonl").read_bytes() == good
    assert stats_of(out)["counts"]["errors_manifest"] == 1


def test_kernels_after_the_wrapper_starts_are_found_too():
    text = output_code(triton_block("triton_poi_fused_a_0"),
                       tail="async_compile.wait(globals())\n\n" + triton_block("triton_poi_fused_b_1"))
    result = read_output_code(text)
    assert [k.name for k in result.kernels] == ["triton_poi_fused_a_0", "triton_poi_fused_b_1"]
    assert not result.salvaged and result.parse_error is None


def test_deleted_graph_folder_leaves_the_manifest_and_crash_leftover_folder_is_reused(tmp_path):
    first = graph(tmp_path / "a", "m__0_inference_0.0", output_code(triton_block("triton_poi_fused_a_0")))
    second = graph(tmp_path / "b", "n__0_inference_0.0", output_code(triton_block("triton_poi_fused_b_0")))
    out = tmp_path / "out"
    assert run_extraction([first, second], out) == 0
    shutil.rmtree(out / "n")
    (out / "n" / "n__0_inference_0.0").mkdir(parents=True)  # as a crash right after mkdir leaves it
    assert run_extraction([first], out) == 0
    assert [row["name"] for row in load_manifest(out)] == ["triton_poi_fused_a_0"]
    assert stats_of(out)["counts"]["manifest_records_dropped_folder_gone"] == 1
    assert run_extraction([second], out) == 0
    assert [row["file"] for row in load_manifest(out)] == [
        "m/m__0_inference_0.0/kernels/triton_poi_fused_a_0.py",
        "n/n__0_inference_0.0/kernels/triton_poi_fused_b_0.py",
    ]


def test_the_same_file_through_two_inputs_is_read_once(tmp_path):
    path = graph(tmp_path / "in", "m__0_inference_0.0", output_code(triton_block("triton_poi_fused_a_0")))
    out = tmp_path / "out"
    assert run_extraction([tmp_path / "in", path, path.parent], out) == 0
    assert stats_of(out)["counts"]["graphs"] == 1 and len(load_manifest(out)) == 1


# The shape of a PyTorch 2.0 output_code.py (torch_compile_debug/run_*/aot_torchinductor/<graph>/): no kernel
# name, a bare @pointwise decorator from torch._inductor.triton_ops.autotune, `meta=` and `def triton_`.
OLD_KERNEL = '''
import triton
import triton.language as tl
from torch._inductor.ir import ReductionHint
from torch._inductor.ir import TileHint
from torch._inductor.triton_ops.autotune import pointwise
from torch._inductor.utils import instance_descriptor

@pointwise(size_hints=[16384], filename=__file__, meta={'signature': {0: '*fp32', 1: '*fp32', 2: '*fp32', 3: 'i32'}, 'device': 0, 'constants': {}, 'mutated_arg_names': [], 'configs': [instance_descriptor(divisible_by_16=(0, 1, 2, 3), equal_to_1=())]})
@triton.jit
def triton_(in_ptr0, in_ptr1, out_ptr0, xnumel, XBLOCK : tl.constexpr):
    xnumel = 10000
    xoffset = tl.program_id(0) * XBLOCK
    xindex = xoffset + tl.arange(0, XBLOCK)[:]
    xmask = xindex < xnumel
    x0 = xindex
    tmp0 = tl.load(in_ptr0 + (x0), xmask)
    tmp2 = tl.load(in_ptr1 + (x0), xmask)
    tmp1 = tl.sin(tmp0)
    tmp3 = tl.sin(tmp2)
    tmp4 = tmp1 + tmp3
    tl.store(out_ptr0 + (x0 + tl.zeros([XBLOCK], tl.int32)), tmp4, xmask)
'''


def test_pytorch_2_0_output_code(tmp_path):
    blocks = [f"triton__0 = async_compile.triton('''{OLD_KERNEL}''')\n",
              f"triton__1 = async_compile.triton('triton_', '''{OLD_KERNEL}''')\n"]
    path = tmp_path / "run_2024_01_02_14_44_21_028356-pid_9378" / "aot_torchinductor" / "model__0_inference_0.0"
    path.mkdir(parents=True)
    (path / "output_code.py").write_text(output_code(*blocks))
    out = tmp_path / "out"
    assert run_extraction([tmp_path], out) == 0
    rows = load_manifest(out)
    assert [(row["name"], row["extra"]["name_passed"]) for row in rows] == [("triton__0", None),
                                                                          ("triton__1", "triton_")]
    for row in rows:
        assert row["original"] == OLD_KERNEL and row["kind"] == "pointwise"
        assert row["launch"]["heuristic"] == "pointwise" and row["launch"]["size_hints"] == [16384]
        assert row["signature"] == {"0": "*fp32", "1": "*fp32", "2": "*fp32", "3": "i32"}
        assert row["code"] == OLD_KERNEL.replace(OLD_KERNEL.splitlines()[8] + "\n", "").lstrip("\n")
        assert row["model"] == "model" and row["graph"] == "model__0_inference_0.0"
    assert [Path(row["file"]).name for row in rows] == ["triton__0.py", "triton__1.py"]


def test_byte_order_mark_and_windows_line_ends(tmp_path):
    text = output_code(triton_block("triton_poi_fused_a_0", comment="# Original path: x.py\n"))
    content = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()
    out = tmp_path / "out"
    assert run_extraction([graph(tmp_path / "in", "m__0_inference_0.0", content)], out) == 0
    (row,) = load_manifest(out)
    assert row["comment"] == "# Original path: x.py" and row["extra"]["original_path"] == "x.py"
    # Python reads \r\n inside a string literal as \n: the kernel is the string's value.
    assert row["original"] == KERNEL.replace("NAME", "triton_poi_fused_a_0")
    assert "@triton_heuristics" not in row["code"] and "\n@triton.jit\ndef triton_poi_fused_a_0(" in row["code"]
    assert not [key for key in stats_of(out)["counts"] if key.startswith("errors")]


def test_output_that_is_a_file_is_a_clear_error(tmp_path, capfd):
    (tmp_path / "out").write_text("not a folder")
    assert run_extraction([tmp_path], tmp_path / "out") == 2
    assert "is not a folder" in capfd.readouterr().err


def test_two_graphs_of_one_name_in_one_run_both_survive(tmp_path):
    run = tmp_path / "run_2026_01_01_00_00_00_000000-pid_1"
    for index, where in enumerate(["torchinductor", "nested/torchinductor"]):
        path = run / where / "m__0_inference_0.0" / "output_code.py"
        path.parent.mkdir(parents=True)
        path.write_text(output_code(triton_block(f"triton_poi_fused_k_{index}")))
    out = tmp_path / "out"
    assert run_extraction([tmp_path], out) == 0
    files = sorted(row["file"] for row in load_manifest(out))
    assert len(files) == 2 and len({Path(f).parent.parent for f in files}) == 2


@pytest.mark.parametrize("decorator,kind", [
    ("@triton_heuristics.pointwise(size_hints={'x': 64}, inductor_meta={'combo_grid_meta': {'num_kernels': 2}})",
     "combo"),
    ("@triton_heuristics.foreach(inductor_meta={'combo_grid_meta': {'num_kernels': 2}})", "foreach"),
    ("@triton_heuristics.split_scan(size_hints={'x': 64, 'r0_': 64})", "split_scan"),
    ("@triton_heuristics.cooperative_reduction(size_hints={'x': 64, 'r0_': 64})", "cooperative_reduction"),
    ("@triton_heuristics.mix_order_reduction(size_hints={'x': 64})", "pointwise"),  # unknown: the name decides
])
def test_kind_from_the_decorator(decorator, kind):
    text = f"import triton\n{decorator}\n@triton.jit\ndef triton_poi_fused_0(a):\n    pass\n"
    clean = clean_kernel(text, "triton_poi_fused_0")
    assert clean.kind == kind and clean.code == "import triton\n@triton.jit\ndef triton_poi_fused_0(a):\n    pass\n"
    unnamed = clean_kernel(text.replace("triton_poi_fused_0", "k"), "k")
    assert unnamed.kind == ("mix_order_reduction" if kind == "pointwise" else kind)


def test_a_real_replacement_character_in_utf8_text_is_kept(tmp_path):
    text = KERNEL.replace("NAME", "triton_poi_fused_a_0") + "# \ufffd is a character like any other\n"
    out = tmp_path / "out"
    content = output_code(triton_block("triton_poi_fused_a_0", text=text))
    assert run_extraction([graph(tmp_path / "in", "m__0_inference_0.0", content)], out) == 0
    (row,) = load_manifest(out)
    assert row["original"] == text


def test_relative_path_from_inside_a_run_folder_keeps_the_run(tcd_roots, tmp_path, monkeypatch):
    from scraper.inductor import extract_kernels
    from scraper.records import read_records

    run_folder = next(tcd_roots["tcd_userkernel"].glob("run_*"))
    monkeypatch.chdir(run_folder)
    relative = Path("torchinductor") / "ScaledAdd__0_inference_0.0" / "output_code.py"
    extract_kernels([relative], tmp_path / "out")
    records = read_records(tmp_path / "out" / "kernels.jsonl")
    assert len(records) == 2
    assert {r.run_dir for r in records} == {run_folder.name}


AMPLIFY = textwrap.dedent("""
    import resource, sys
    import get_kernels_from_debug_info
    code = get_kernels_from_debug_info.main([sys.argv[1], "-o", sys.argv[2], "-q"])
    print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def test_a_file_of_tiny_statements_is_not_parsed_and_the_run_goes_on(tmp_path):
    """#23 route 7, stage 1: 6 MiB of `x = 1` lines between the kernels (a syntax tree costs ~130 bytes per token:
    parsed, it took this stage to gigabytes) is refused by its code, while a good graph beside it is extracted; the
    kernels' own source, in strings, does not count."""
    import subprocess
    import sys

    good = output_code(triton_block("triton_poi_good_0"))
    graph(tmp_path / "in", "good__0_inference_0.0", good)
    evil = output_code(triton_block("triton_poi_evil_0"), tail="x = 1\n" * 1_000_000 + "del async_compile\n")
    graph(tmp_path / "in", "evil__0_inference_0.0", evil)
    # the same number of characters in a kernel's string is read as any kernel is
    long_string = output_code(triton_block("triton_poi_long_0", KERNEL.replace("NAME", "triton_poi_long_0")
                                           + "# x = 1\n" * 700_000))
    graph(tmp_path / "in", "long__0_inference_0.0", long_string)
    done = subprocess.run([sys.executable, "-c", AMPLIFY, str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    code, peak_mb = map(int, done.stdout.split()[-2:])
    assert code == 0, done.stderr[-2000:]
    assert peak_mb < 1200, f"stage 1 peaked at {peak_mb} MB"
    out = tmp_path / "out"
    assert sorted(row["name"] for row in load_manifest(out)) == ["triton_poi_good_0", "triton_poi_long_0"]
    assert [r["reason"] for r in rejects_of(out)] == ["too_large_to_parse"]
    assert stats_of(out)["counts"]["graphs_too_large_to_parse"] == 1
