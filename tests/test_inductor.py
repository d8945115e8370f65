"""The Inductor stage on the real torch_compile_debug fixtures (18 graphs, 312 kernels)."""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

from inductor_helpers import archive_of, extracted, load_manifest, readme_counts, run_extraction  # noqa: F401

from scraper.records import kernel_id, read_records


def embedded_strings(output_code: Path) -> list[tuple[str, str]]:
    """(name, text) of every kernel in an output_code.py, cut out with plain string search (no ast): the text
    between `async_compile.triton('<name>', '''` and the closing `''', device_str=`."""
    text = output_code.read_text(encoding="utf-8")
    found, start = [], 0
    while (call := text.find("async_compile.triton('", start)) >= 0:
        name_end = text.index("'", call + len("async_compile.triton('"))
        name = text[call + len("async_compile.triton('") : name_end]
        body_start = text.index("'''", name_end) + 3
        body_end = text.index("''', device_str=", body_start)
        found.append((name, text[body_start:body_end]))
        start = body_end
    return found


def test_every_graph_has_the_readme_kernel_count(extracted, tcd_roots):
    out, rows = extracted
    expected = readme_counts()
    assert len(expected) == 18 and sum(kernels for kernels, _ in expected.values()) == 312
    got = Counter((archive_of(row["extra"]["input_output_code"]), row["graph"]) for row in rows)
    assert got == Counter({key: kernels for key, (kernels, _) in expected.items()})
    # Independent count: the async_compile.triton( calls in each source output_code.py.
    for root in tcd_roots.values():
        for path in root.rglob("output_code.py"):
            key = (archive_of(path), path.parent.name)
            assert path.read_text(encoding="utf-8").count("async_compile.triton(") == got[key]


def test_kernel_path_comments_match_readme(extracted):
    _, rows = extracted
    with_path = Counter(
        (archive_of(row["extra"]["input_output_code"]), row["graph"])
        for row in rows
        if "# kernel path: " in row["comment"]
    )
    assert with_path == Counter({key: paths for key, (_, paths) in readme_counts().items()})
    assert sum(row["extra"]["kernel_path"] is not None for row in rows) == 311


def test_original_is_exactly_the_embedded_string(extracted):
    _, rows = extracted
    by_source = {}
    for row in rows:
        by_source.setdefault(row["extra"]["input_output_code"], []).append(row)
    for source, group in by_source.items():
        assert [(row["name"], row["original"]) for row in group] == embedded_strings(Path(source))


def test_clean_code_drops_only_the_decorator_and_gpu_statement(extracted):
    _, rows = extracted
    for row in rows:
        original, code = row["original"].splitlines(), row["code"].splitlines()
        removed = [line[2:] for line in difflib.ndiff(original, code) if line.startswith("- ")]
        added = [line for line in difflib.ndiff(original, code) if line.startswith("+ ")]
        assert not added
        decorator = row["launch"]["decorator"].splitlines()
        assert decorator[0].startswith("@triton_heuristics." + row["launch"]["heuristic"] + "(")
        gpu_lines = ["triton_helpers.set_driver_to_gpu()"] if "triton_helpers.set_driver_to_gpu()" in original else []
        assert [line for line in removed if line.strip()] == [
            line for line in gpu_lines + decorator if line.strip()
        ], row["file"]
        assert "set_driver_to_gpu" not in row["code"] and "@triton_heuristics" not in row["code"]
        assert f"@triton.jit\ndef {row['name']}(" in row["code"]


def test_kernel_files_hold_the_clean_code_and_define_the_kernel(extracted):
    out, rows = extracted
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("kernels/*.py")
                   if p.relative_to(out).parts[0] != "problems")  # problems/kernels/: the kernel-level problems
    assert files == sorted(row["file"] for row in rows) and len(files) == 312
    for row in rows:
        text = (out / row["file"]).read_text(encoding="utf-8")
        assert text == row["code"]
        tree = ast.parse(text)
        jitted = [
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and [ast.unparse(d) for d in node.decorator_list] == ["triton.jit"]
        ]
        assert jitted == [row["name"]]


def test_kinds_from_decorators(extracted):
    _, rows = extracted
    heuristics = Counter(row["launch"]["heuristic"] for row in rows)
    assert heuristics == Counter(pointwise=193, persistent_reduction=74, reduction=37, template=7, user_autotune=1)
    kinds = Counter(row["kind"] for row in rows)
    assert kinds == Counter(pointwise=193, persistent_reduction=74, reduction=37, template=7, user_defined=1)
    prefixes = {"pointwise": "triton_poi_", "reduction": "triton_red_", "persistent_reduction": "triton_per_",
                "template": "triton_tem_"}
    for row in rows:
        if row["kind"] in prefixes:
            assert row["name"].startswith(prefixes[row["kind"]])


def test_user_defined_kernel(extracted):
    _, rows = extracted
    (row,) = [row for row in rows if row["kind"] == "user_defined"]
    assert row["name"] == "scaled_add" and row["model"] == "ScaledAdd"
    assert row["file"] == "ScaledAdd/ScaledAdd__0_inference_0.0/kernels/scaled_add.py"
    assert row["extra"]["kernel_path"] is None and row["extra"]["original_path"].endswith("compile_one.py:31")
    assert row["signature"] == {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32",
                                "alpha": "fp64", "BLOCK": "constexpr"}
    assert row["constants"] == {"BLOCK": 256}
    assert row["launch"]["configs"] == [] and row["launch"]["custom_kernel"] is True
    assert row["launch"]["triton_meta"]["device"]["cc"] == 90  # DeviceProperties(...) as a dict


def test_templates_and_backward_graphs(extracted):
    _, rows = extracted
    templates = [row for row in rows if row["kind"] == "template"]
    assert len(templates) == 7 and {row["graph"] for row in templates} == {"GPT2LMHeadModel__0_inference_0.0"}
    assert all(row["launch"]["num_stages"] > 0 and row["launch"]["num_warps"] > 0 for row in templates)
    assert all("aten.addmm" in row["aten_ops"] for row in templates)
    backward = Counter(row["graph"] for row in rows if row["extra"]["graph_kind"] == "backward")
    assert backward == Counter({"resnet18__0_backward_3.1": 37, "LlamaForCausalLM__0_backward_3.1": 15})


def test_provenance_of_the_scaled_add_graph(extracted):
    out, rows = extracted
    (row,) = [row for row in rows if row["name"] == "triton_poi_fused_mul_relu_0"]
    assert row["source_nodes"] == ["relu", "mul"] and row["aten_ops"] == ["aten.relu", "aten.mul"]
    assert row["extra"]["source_node_mapping"] == {"mul": ["mul"], "relu": ["relu"]}
    assert row["graph_fragment"].splitlines()[0] == "%buf1 : Tensor  = PlaceHolder[target=buf1]"
    assert row["graph_fragment"].splitlines()[-1] == "return %mul"
    assert row["launch"]["size_hints"] == {"x": 4096}
    assert row["signature"] == {"in_ptr0": "*fp32", "out_ptr0": "*fp32", "xnumel": "i32", "XBLOCK": "constexpr"}
    assert row["run_dir"].startswith("run_") and row["model"] == "ScaledAdd"
    graph_dir = Path(row["extra"]["input_output_code"]).parent
    assert (out / row["fx_graph"]).read_bytes() == (graph_dir / "fx_graph_readable.py").read_bytes()
    assert (out / row["output_code"]).read_bytes() == (graph_dir / "output_code.py").read_bytes()
    assert row["id"] == kernel_id(row["code"])


def test_records_round_trip_through_the_record_type(extracted):
    out, rows = extracted
    records = read_records(out / "kernels.jsonl")
    assert [record.to_dict() for record in records] == rows
    assert all(record.source == "inductor" for record in records)


def test_same_graph_name_from_two_runs_both_survive(extracted):
    out, rows = extracted
    gpt2 = [row for row in rows if row["graph"] == "GPT2LMHeadModel__0_inference_0.0"]
    by_archive: dict[str, set] = {}
    for row in gpt2:
        source = Path(row["extra"]["input_output_code"])
        by_archive.setdefault(archive_of(source), set()).add((Path(row["file"]).parent.parent.as_posix(), source))
    assert sorted(by_archive) == ["tcd_autotune", "tcd_huggingface"]
    (autotune,), (huggingface,) = by_archive["tcd_autotune"], by_archive["tcd_huggingface"]
    assert autotune[0] != huggingface[0]  # two folders
    for (folder, source), kernels in [(autotune, 16), (huggingface, 9)]:
        assert (out / folder / "output_code.py").read_bytes() == source.read_bytes()
        assert len(list((out / folder / "kernels").glob("*.py"))) == kernels


def test_rerun_gives_the_same_output_in_any_order(extracted, tcd_roots, tmp_path):
    out, _ = extracted
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = snapshot(copy)
    # Reversed input order, then one archive alone: every graph maps to the same folder, nothing is duplicated.
    assert run_extraction(list(reversed(tcd_roots.values())), copy) == 0
    assert snapshot(copy) == before
    assert run_extraction([tcd_roots["tcd_huggingface"]], copy) == 0
    assert snapshot(copy) == before
    stats = json.loads((copy / "stats.json").read_text())
    assert stats["counts"]["kernels"] == 55 and stats["counts"]["manifest_records"] == 312
    assert "manifest_lines_appended" not in stats["counts"]


def test_separate_runs_into_one_folder_equal_one_run(extracted, tcd_roots, tmp_path):
    out, rows = extracted
    one_by_one = tmp_path / "out"
    for name in ["tcd_userkernel", "tcd_huggingface", "tcd_timm", "tcd_training", "tcd_autotune"]:
        assert run_extraction([tcd_roots[name]], one_by_one) == 0
    got = load_manifest(one_by_one)
    # The GPT2 graph that came first takes the plain folder name, so compare everything but the folders.
    def key(row):
        return row["extra"]["input_output_code"], row["name"], row["id"], row["original"]

    assert sorted(map(key, got)) == sorted(map(key, rows))
    assert len({row["file"] for row in got}) == 312


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` but the per-run stats.json and rejects.jsonl."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in ("stats.json", "rejects.jsonl")
    }


# The canonical digest of kernels.jsonl over the fixtures as the code before the architecture change (69898c7:
# records carried as a list through extract -> attach -> pair -> validate) wrote it; the chain over graphs
# (scraper.inductor.unit) must give the same records. The one field left out is the absolute input path.
KERNELS_BEFORE_THE_GRAPH_UNIT = "d2da9a8912f4ba87"


def test_the_same_records_as_before_the_graph_became_the_unit(extracted):
    out, _ = extracted
    rows = [json.loads(line) for line in (out / "kernels.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["extra"].pop("input_output_code", None)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    assert (len(rows), digest) == (312, KERNELS_BEFORE_THE_GRAPH_UNIT)


THIS_RUN_ONLY = {"manifest_records_changed", "graphs_kept_done_earlier"}  # facts of one run, not of the output


def test_a_rerun_keeps_finished_graphs_and_redoes_a_changed_one(extracted, tcd_roots, tmp_path, monkeypatch):
    """Issue #26 item 5: a rerun into the same folder used to extract and pair every graph again (~25 s on the
    shared fixtures). Unchanged graphs are kept as written; the files and counts are those of the fresh run."""
    import scraper.inductor.stage as stage

    out, _ = extracted
    copy, inputs = tmp_path / "out", tmp_path / "tcd"
    shutil.copytree(out, copy)
    shutil.copytree(tcd_roots["tcd_userkernel"], inputs / "tcd_userkernel")
    roots = [tcd_roots[name] for name in tcd_roots if name != "tcd_userkernel"] + [inputs / "tcd_userkernel"]
    assert run_extraction(roots, copy) == 0  # the userkernel graphs come from another path now: redone
    fresh = snapshot(copy)
    fresh_counts = json.loads((copy / "stats.json").read_text())["counts"]
    done = []
    real = stage.extract_graph
    monkeypatch.setattr(stage, "extract_graph", lambda item, *rest: done.append(item.folder) or real(item, *rest))
    assert run_extraction(roots, copy) == 0
    assert done == [] and snapshot(copy) == fresh
    counts = json.loads((copy / "stats.json").read_text())["counts"]
    assert {k: v for k, v in counts.items() if k not in THIS_RUN_ONLY} == \
        {k: v for k, v in fresh_counts.items() if k not in THIS_RUN_ONLY}
    assert counts["graphs_kept_done_earlier"] == 18  # README of the fixtures: 18 graphs
    # one input edited: that graph alone is done again, and its copy in the output is the edited one
    edited = next((inputs / "tcd_userkernel").rglob("output_code.py"))
    edited.write_text(edited.read_text() + "\n# edited\n")
    assert run_extraction(roots, copy) == 0
    assert len(done) == 1 and (copy / done[0] / "output_code.py").read_text().endswith("# edited\n")
