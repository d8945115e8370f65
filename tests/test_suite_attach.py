"""The PyTorch side of suite kernels (scraper.inductor.attach), on two real H100 suite runs:
tests/fixtures/suite_run/suite_run.tar.gz (--suite huggingface) and suite_modules.tar.gz (--suite modules: nn.Module
classes of timm read as a repository, and the failed acme Block), plus a debug folder without a suite manifest
(tests/fixtures/torch_compile_debug/tcd_userkernel.tar.gz). The oracles are the fixture files themselves: the
`def triton_` lines of each output_code.py, the program files, and suite/sources/ (the closure each worker ran)."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

import get_kernels_from_debug_info
from scraper.records import write_jsonl
from scraper.suiterun import SuiteRoot
from scraper.worker.programs import module_program, module_source, timm_program

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARCHIVES = {"suite_run": FIXTURES / "suite_run" / "suite_run.tar.gz",
            "suite_modules": FIXTURES / "suite_run" / "suite_modules.tar.gz",
            "tcd_userkernel": FIXTURES / "torch_compile_debug" / "tcd_userkernel.tar.gz"}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """The three fixtures unpacked: {"suite_run": debug root, "suite_modules": debug root, "tcd_userkernel": ...}."""
    base = tmp_path_factory.mktemp("attach")
    for archive in ARCHIVES.values():
        with tarfile.open(archive) as tar:
            tar.extractall(base, filter="data")
    return {"suite_run": base / "suite_run", "suite_modules": base / "suite_modules",
            "tcd_userkernel": base / "torch_compile_debug"}


@pytest.fixture(scope="module")
def extracted(roots, tmp_path_factory) -> Path:
    """get_kernels_from_debug_info.py over all three inputs."""
    out = tmp_path_factory.mktemp("kernels")
    argv = [str(roots["suite_modules"]), str(roots["suite_run"]), str(roots["tcd_userkernel"]), "-o", str(out), "-q"]
    assert get_kernels_from_debug_info.main(argv) == 0
    return out


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def manifest_entries(root: Path) -> list[dict]:
    return [entry for path in sorted((root / "suite").glob("manifest*.jsonl")) for entry in read_lines(path)]


def fixture_kernels(root: Path) -> dict[tuple[str, str], int]:
    """(run_dir, graph) -> Triton kernels defined in its output_code.py, for every graph folder of a debug root."""
    return {(code.parents[2].name, code.parent.name): len(re.findall(r"^def triton_", code.read_text(), re.M))
            for code in root.glob("run_*/torchinductor/*/output_code.py")}


def by_graph(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        grouped.setdefault((record["run_dir"], record["graph"]), []).append(record)
    return grouped


def closure_of(root: Path, program: str) -> str:
    """The file of suite/sources/ that `program` starts with: the closure its worker executed."""
    found = [p.read_text() for p in (root / "suite" / "sources").glob("*.py")
             if program.startswith(p.read_text().rstrip("\n") + "\n")]
    assert len(found) == 1
    return found[0]


def program_of(extracted: Path, record: dict) -> str:
    """The program a kernel record points at: its graph folder's copy, written once per graph."""
    copy = record["extra"]["pytorch"]["program_copy"]
    assert copy == f"{Path(record['file']).parent.parent.as_posix()}/program.py"
    return (extracted / copy).read_text()


def test_every_modules_kernel_carries_its_module_source(roots, extracted):
    root = roots["suite_modules"]
    expected = fixture_kernels(root)
    assert sum(expected.values()) == 9 and len(expected) == 5  # the fixture: 5 graphs, one without kernels
    grouped = by_graph(read_lines(extracted / "kernels.jsonl"))
    entries = {(e["run_dir"], g): e for e in manifest_entries(root) for g in e["graphs"]}
    assert set(entries) == set(expected)
    for key, count in expected.items():
        records = grouped.get(key, [])
        assert len(records) == count
        entry = entries[key]
        program = (root / entry["program"]).read_text()
        for record in records:
            side = record["extra"]["pytorch"]
            assert (side["suite"], side["model"], side["mode"], side["dtype"]) == (
                "modules", entry["model"], "inference", "float32")
            assert record["model"] == entry["model"]  # the manifest's name, not the graph folder's
            assert record["extra"]["scraped"] is True
            assert side["program_file"] == entry["program"] and program_of(extracted, record) == program
            assert "program" not in side and "module" not in side  # texts once per graph, not per kernel
            module = module_source(program_of(extracted, record))
            assert module.rstrip("\n") == closure_of(root, program).rstrip("\n")
            class_name = entry["module"]["class_name"]
            assert re.search(rf"^class {class_name}\b", module, re.M) and "def build(" not in module
            assert side["module_provenance"] == entry["module"]


def test_huggingface_kernels_carry_their_program_and_others_are_left_alone(roots, extracted):
    records = read_lines(extracted / "kernels.jsonl")
    hf_expected = fixture_kernels(roots["suite_run"])
    hf = [r for r in records if (r["run_dir"], r["graph"]) in hf_expected]
    assert len(hf) == sum(hf_expected.values()) == 17
    for record in hf:
        side = record["extra"]["pytorch"]
        assert side["suite"] == "huggingface" and side["model"] == record["model"] and "scraped" not in record["extra"]
        assert program_of(extracted, record) == (roots["suite_run"] / side["program_file"]).read_text()
        assert f"MODEL = {record['model']!r}" in program_of(extracted, record)
    suite_graphs = hf_expected | fixture_kernels(roots["suite_modules"])
    others = [r for r in records if (r["run_dir"], r["graph"]) not in suite_graphs]
    assert others and all("pytorch" not in r["extra"] for r in others)
    assert len(records) == len(hf) + 9 + len(others)
    counts = json.loads((extracted / "stats.json").read_text())["counts"]
    assert counts["pytorch_side_attached"] == 17 + 9 and "pytorch_side_missing" not in counts


def test_the_program_is_stored_once_per_graph(roots, extracted):
    """Every kernel record of a graph used to carry its model's whole program (242 KB over 65 records)."""
    records = read_lines(extracted / "kernels.jsonl")
    suite = [r for r in records if "pytorch" in r["extra"]]
    copies = {r["extra"]["pytorch"]["program_copy"] for r in suite}
    assert len(copies) == len({Path(r["file"]).parent.parent for r in suite}) < len(suite)
    programs = {e["program"] for name in ("suite_run", "suite_modules") for e in manifest_entries(roots[name])
                if e["kernels"]}
    assert all(len(json.dumps(r["extra"]["pytorch"])) < 2000 for r in suite)
    assert {r["extra"]["pytorch"]["program_file"] for r in suite} == programs


def test_rerun_gives_the_same_manifest(roots, extracted, tmp_path):
    out = Path(shutil.copytree(extracted, tmp_path / "again"))
    argv = [str(roots["suite_modules"]), str(roots["suite_run"]), str(roots["tcd_userkernel"]), "-o", str(out), "-q"]
    assert get_kernels_from_debug_info.main(argv) == 0
    assert (out / "kernels.jsonl").read_bytes() == (extracted / "kernels.jsonl").read_bytes()
    assert (out / "pairs.jsonl").read_bytes() == (extracted / "pairs.jsonl").read_bytes()


def test_a_run_folder_a_file_or_a_folder_of_roots_as_input(roots, tmp_path, monkeypatch):
    run_dir = next(roots["suite_modules"].glob("run_*-pid_505"))  # PosEmbedRel: 2 kernels
    assert get_kernels_from_debug_info.main([str(run_dir), "-o", str(tmp_path / "one"), "-q"]) == 0
    records = read_lines(tmp_path / "one" / "kernels.jsonl")
    assert len(records) == 2
    assert {r["extra"]["pytorch"]["model"] for r in records} == {"timm-src/timm/layers/halo_attn.py:PosEmbedRel"}
    # One output_code.py, named relative to the working folder: the suite root is found above it.
    monkeypatch.chdir(roots["suite_modules"])
    code = next(Path(run_dir.name).glob("torchinductor/*/output_code.py"))
    assert get_kernels_from_debug_info.main([str(code), "-o", str(tmp_path / "file"), "-q"]) == 0
    assert [r["extra"]["pytorch"]["model"] for r in read_lines(tmp_path / "file" / "kernels.jsonl")] == [
        "timm-src/timm/layers/halo_attn.py:PosEmbedRel"] * 2
    # The parent of both suite roots (and of the userkernel folder): every suite kernel is joined.
    parent = roots["suite_modules"].parent
    assert get_kernels_from_debug_info.main([str(parent), "-o", str(tmp_path / "all"), "-q"]) == 0
    counts = json.loads((tmp_path / "all" / "stats.json").read_text())["counts"]
    assert counts["pytorch_side_attached"] == 26


def test_graph_missing_from_the_manifest_and_a_lost_program(roots, tmp_path):
    root = Path(shutil.copytree(roots["suite_modules"], tmp_path / "copy"))
    manifest = root / "suite" / "manifest-0-of-15.jsonl"
    entries = read_lines(manifest)
    write_jsonl(manifest, [e for e in entries if not e["model"].endswith(":GlobalResponseNormMlp")])  # 4 kernels
    eca = next(e for e in entries if e["model"].endswith(":EcaModule"))  # 2 kernels
    (root / eca["program"]).unlink()
    out = tmp_path / "out"
    assert get_kernels_from_debug_info.main([str(root), "-o", str(out), "-q"]) == 0
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert (counts["pytorch_side_attached"], counts["pytorch_side_missing"], counts["pytorch_program_missing"]) == (
        5, 4, 2)
    records = read_lines(out / "kernels.jsonl")
    missing = [r for r in records if "pytorch" not in r["extra"]]
    assert {r["graph"] for r in missing} == {"timm-src_timm_layers_mlp_py_GlobalResponseNormMlp__0_inference_0.0"}
    assert all(r["model"] is None for r in missing)  # a folder the manifest does not list is no model's
    lost = [r["extra"]["pytorch"] for r in records if r["extra"].get("pytorch", {}).get("model") == eca["model"]]
    assert len(lost) == 2 and all(s["program_copy"] is None for s in lost)


def test_a_forged_graph_folder_is_credited_to_the_module_that_wrote_it(roots, tmp_path):
    """A scraped module writes `resnet18__0_inference_0.0` into its own run folder (issue 23, route 3): its
    kernels are the module's, marked scraped, never resnet18's."""
    root = Path(shutil.copytree(roots["suite_modules"], tmp_path / "copy"))
    manifest = root / "suite" / "manifest-0-of-15.jsonl"
    entries = read_lines(manifest)
    eca = next(e for e in entries if e["model"].endswith(":EcaModule"))
    real = next((root / eca["run_dir"] / "torchinductor").iterdir())
    forged = real.parent / "resnet18__0_inference_0.0"
    shutil.copytree(real, forged)
    eca["graphs"] = sorted(eca["graphs"] + [forged.name])  # what a walled run lists: the folders on disk
    write_jsonl(manifest, entries)
    out = tmp_path / "out"
    assert get_kernels_from_debug_info.main([str(root), "-o", str(out), "-q"]) == 0
    forged_records = [r for r in read_lines(out / "kernels.jsonl") if r["graph"] == forged.name]
    assert forged_records and all(r["model"] == eca["model"] and r["extra"]["scraped"] is True
                                  and r["extra"]["pytorch"]["suite"] == "modules" for r in forged_records)
    assert not [r for r in read_lines(out / "kernels.jsonl") if r["model"] == "resnet18"]


def test_program_path_outside_the_debug_root_is_not_read(roots, tmp_path):
    (tmp_path / "secret.py").write_text("SECRET = 1\n")
    root = SuiteRoot(roots["suite_modules"])
    outside = f"../{'../' * len(roots['suite_modules'].parts)}{tmp_path}/secret.py"
    assert root.read(outside) is None and root.read(str(tmp_path / "secret.py")) is None
    (roots["suite_modules"] / "suite" / "link.py").symlink_to(tmp_path / "secret.py")
    try:
        assert root.read("suite/link.py") is None  # inside by name, outside by target
    finally:
        (roots["suite_modules"] / "suite" / "link.py").unlink()


def test_module_source_round_trip():
    source = "import torch\n\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x  # ---\n"
    program = module_program(source, "Net", ["4"], {"eps": "0.1"}, ["torch.rand((4, 4), device=device)"], {},
                             "bfloat16", True)
    assert program.startswith(source.rstrip("\n")) and "model = Net(4, eps=0.1)" in program
    assert module_source(program) == source
    assert module_source(timm_program("resnet18", 2, "float32", False)) is None


def test_dataset_rows_point_at_the_program(roots, extracted, tmp_path):
    import create_json

    out = tmp_path / "ds.jsonl"
    assert create_json.main([str(extracted), "-o", str(out), "--format", "jsonl", "--near-threshold", "0",
                             "--val-fraction", "0", "--no-card", "-q"]) == 0
    rows = read_lines(out)
    programs = {row["pytorch_program"] for row in rows}
    expected = {e["program"] for name in ("suite_modules", "suite_run") for e in manifest_entries(roots[name])
                if e["kernels"]}
    assert programs - {None} == expected and None in programs  # tcd_userkernel has no program
