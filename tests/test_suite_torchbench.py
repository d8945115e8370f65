"""--suite torchbench on CPU, against a small TorchBench-shaped checkout the tests write (tests/torchbench_helpers.py:
same layout and Model API as pytorch/benchmark, none of its code): listing, the REAL worker with --backend none
(models built through the checkout, batch sizes, skip reasons, failures), the program rebuilt in a fresh
interpreter, the offline guard, --random-weights, resume and sharding, trimming a checkout, and the kernels of a
torchbench graph joined back to their program. Oracles are the numbers and names written in the fake checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import get_kernels_from_debug_info
import run_inductor_suite
from scraper.suites import torchbench
from scraper.suite.model_lists import read_model_list
from torchbench_helpers import MODELS, RUNNABLE, write_checkout

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITE_RUN = REPO_ROOT / "tests" / "fixtures" / "suite_run" / "suite_run.tar.gz"
# Every fake model, fixed_batch asked for 5 (which it refuses), and "ghost", a name the checkout does not have.
ALL = ",".join([*(name + ":5" if name == "fixed_batch" else name for name in MODELS), "ghost"])


def rows(out: Path) -> dict[str, dict]:
    """Latest manifest line per model (plain json)."""
    lines = (out / "suite" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["model"]: row for row in map(json.loads, lines)}


def run_cpu(out: Path, checkout: Path, *args: str) -> int:
    return run_inductor_suite.main(["--suite", "torchbench", "--torchbench-dir", str(checkout), "--out", str(out),
                                    "--gpus", "none", "--device", "cpu", "--backend", "none", "-q", *args])


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return write_checkout(tmp_path_factory.mktemp("tb") / "benchmark")


@pytest.fixture(scope="module")
def suite_run(checkout, tmp_path_factory) -> tuple[Path, int]:
    """One run of every fake model (and "ghost") with the real worker: (debug root, exit code)."""
    out = tmp_path_factory.mktemp("tcd") / "tcd"
    code = run_cpu(out, checkout, "--models", ALL, "--workers-per-gpu", "2")
    return out, code


def test_list_shows_every_model_of_the_checkout_with_left_out_reasons(checkout, tmp_path, capsys):
    models_file = tmp_path / "tb.txt"
    models_file.write_text("tinyconv\ntinylm 4\n# - needs_pkg: missing package not_installed_pkg_xyz\n")
    assert run_inductor_suite.main(["--suite", "torchbench", "--torchbench-dir", str(checkout), "--list",
                                    "--models-file", str(models_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(MODELS)  # fb/ and not_a_model/ are no models
    assert "tinyconv" in lines and "tinylm" in lines
    assert "needs_pkg  # left out: missing package not_installed_pkg_xyz" in lines
    assert "broken  # left out: not selected" in lines

    assert run_inductor_suite.main(["--suite", "torchbench", "--torchbench-dir", str(checkout), "--list",
                                    "--models", "all", "--shard", "1/2"]) == 0
    chosen = [line for line in capsys.readouterr().out.splitlines() if "#" not in line]
    assert chosen == sorted(MODELS)[1::2]


def test_checkout_is_required_and_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(torchbench.CHECKOUT_ENV, raising=False)
    assert run_inductor_suite.main(["--suite", "torchbench", "--list"]) == 2
    assert run_inductor_suite.main(["--suite", "torchbench", "--list", "--torchbench-dir", str(tmp_path)]) == 2
    monkeypatch.setenv(torchbench.CHECKOUT_ENV, str(write_checkout(tmp_path / "tb")))
    assert run_inductor_suite.main(["--suite", "torchbench", "--list", "--models", "tinyconv"]) == 0
    assert "tinyconv" in capsys.readouterr().out.splitlines()


def test_models_are_built_through_the_checkout(suite_run):
    out, _ = suite_run
    found = rows(out)
    for name in RUNNABLE:
        assert found[name]["status"] == "ok", found[name]
        assert found[name]["device"] == "cpu" and found[name]["torchbench_dir"]
    # Parameters and batch sizes as written in the fake checkout (DEFAULT_EVAL_BSIZE; fixed_batch refuses 5).
    assert found["tinyconv"]["parameters"] == 3 * 4 * 9 + 4 + 4 * 2 + 2 and found["tinyconv"]["batch_size"] == 3
    assert found["tinylm"]["parameters"] == 11 * 6 + 6 * 11 + 11 and found["tinylm"]["batch_size"] == 2
    assert found["fixed_batch"]["parameters"] == 4 * 4 + 4 and found["fixed_batch"]["batch_size"] == 2
    assert found["maml"]["batch_size"] == 1  # ran: its forward takes gradients, so grad was on
    program = (out / found["tinyconv"]["program"]).read_text()
    assert "MODEL = 'tinyconv'" in program and "BATCH_SIZE = None" in program and "TEST = 'eval'" in program


def test_downloads_and_missing_packages_are_skipped_with_the_reason(suite_run):
    out, code = suite_run
    found = rows(out)
    expected = {"pretrained_net": "needs download", "needs_data": "needs download",
                "needs_pkg": "missing package not_installed_pkg_xyz", "cuda_only": "not implemented",
                "ghost": "not in the checkout"}
    for name, reason in expected.items():
        assert (found[name]["status"], found[name]["skip_reason"]) == ("skipped", reason), found[name]
        assert found[name]["success"] is False
    assert found["pretrained_net"]["blocked"] == ["https://download.example.invalid/checkpoints/"
                                                  "pretrained_net-0123abcd.pth"]
    assert "needs_data_inputs" in found["needs_data"]["error"]
    assert found["broken"]["status"] == "failed" and found["broken"]["skip_reason"] is None
    assert found["broken"]["phase"] == "build" and found["broken"]["error"] == "ValueError: broken on purpose"
    assert code == 1  # "broken" failed; the skipped ones alone would not fail the run
    counts = json.loads((out / "suite" / "stats.json").read_text())["counts"]
    assert counts["models_ok"] == len(RUNNABLE) and counts["models_skipped"] == 5 and counts["models_failed"] == 1
    assert counts["models_skipped_needs_download"] == 2
    assert counts["models_skipped_missing_package_not_installed_pkg_xyz"] == 1
    assert counts["models_skipped_not_implemented"] == 1 and counts["models_skipped_not_in_the_checkout"] == 1


def test_program_rebuilds_the_model_in_a_fresh_interpreter(suite_run, checkout, tmp_path):
    out, _ = suite_run
    program = out / rows(out)["tinylm"]["program"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(checkout, moved)  # the program must use the path it is given, not only its default
    check = ("import importlib.util,sys; s=importlib.util.spec_from_file_location('p', sys.argv[1]); "
             "m=importlib.util.module_from_spec(s); s.loader.exec_module(m); model,a,k=m.build('cpu', sys.argv[2]); "
             "print(sum(p.numel() for p in model.parameters()), a, sorted(k), tuple(k['input_ids'].shape), "
             "model.training, m.benchmark.batch_size, m.benchmark.precision, type(model).__module__)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    shown = subprocess.run([sys.executable, "-c", check, str(program), str(moved)], capture_output=True, text=True,
                           env=env, timeout=120, cwd=tmp_path)
    assert shown.stdout.split("\n")[0] == "143 () ['input_ids'] (2, 7) False 2 fp32 torchbenchmark.models.tinylm", \
        shown.stderr
    ran = subprocess.run([sys.executable, str(out / rows(out)["tinyconv"]["program"]), "--device", "cpu"],
                         capture_output=True, text=True, env=dict(env, TORCHBENCH_DIR=str(moved)), timeout=120,
                         cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.strip() == "Tensor", ran.stderr


def test_training_and_dtype(checkout, tmp_path):
    out = tmp_path / "tcd"
    assert run_cpu(out, checkout, "--models", "tinylm,tinyconv:6", "--mode", "training", "--dtype",
                   "bfloat16") == 0
    found = rows(out)
    assert found["tinylm"]["batch_size"] == 4 and found["tinyconv"]["batch_size"] == 6  # DEFAULT_TRAIN / asked
    program = (out / found["tinyconv"]["program"]).read_text()
    assert "TEST = 'train'" in program and "DTYPE = torch.bfloat16" in program and "BATCH_SIZE = 6" in program
    check = ("import importlib.util,sys; s=importlib.util.spec_from_file_location('p', sys.argv[1]); "
             "m=importlib.util.module_from_spec(s); s.loader.exec_module(m); model,a,k=m.build('cpu'); "
             "print(a[0].dtype, a[0].shape[0], next(model.parameters()).dtype, model.training)")
    shown = subprocess.run([sys.executable, "-c", check, str(out / found["tinyconv"]["program"])],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shown.stdout.strip() == "torch.bfloat16 6 torch.bfloat16 True", shown.stderr


def test_random_weights_keep_the_initialization_instead_of_downloading(checkout, tmp_path):
    out = tmp_path / "tcd"
    assert run_cpu(out, checkout, "--models", "pretrained_net", "--random-weights") == 0
    row = rows(out)["pretrained_net"]
    assert row["status"] == "ok" and row["parameters"] == 3 * 3 + 3 and row["random_weights"] is True
    assert row["random_weights_used"] == ["https://download.example.invalid/checkpoints/pretrained_net-0123abcd.pth"]
    assert "RANDOM_WEIGHTS = True" in (out / row["program"]).read_text()


def test_offline_guard_refuses_remote_hosts_only(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(torchbench_program_text(), encoding="utf-8")
    script = r'''
import importlib.util, socket, sys, urllib.request
s = importlib.util.spec_from_file_location("p", sys.argv[1]); m = importlib.util.module_from_spec(s)
s.loader.exec_module(m)
seen = []
with m.offline():
    for call in (lambda: socket.getaddrinfo("example.org", 443),
                 lambda: urllib.request.urlopen("http://example.org/weights.pth", timeout=1)):
        try:
            call()
            seen.append("passed")
        except m.NeedsDownload as exc:
            seen.append(str(exc))
    socket.getaddrinfo("localhost", 80)  # local addresses stay usable (torch.distributed, ...)
print(seen, m.blocked)
'''
    shown = subprocess.run([sys.executable, "-c", script, str(program)], capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip() == ("['needs download: example.org', 'needs download: http://example.org/weights.pth'] "
                                    "['example.org', 'http://example.org/weights.pth']"), shown.stderr


def torchbench_program_text() -> str:
    from scraper.worker.programs import torchbench_program

    return torchbench_program("tinyconv", None, "float32", False, "/nonexistent")


def test_skip_reason_rules(tmp_path):
    def chained(outer: BaseException, inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as exc:
                raise outer from exc
        except BaseException as exc:
            return exc

    root = tmp_path / "benchmark"
    missing = ModuleNotFoundError("No module named 'detectron2'", name="detectron2.config")
    assert torchbench.skip_reason(chained(RuntimeError("x"), missing), root) == "missing package detectron2"
    own = ModuleNotFoundError("no", name="torchbenchmark.util.framework.fb")
    assert torchbench.skip_reason(own, root) is None  # a module of the checkout: not a package to install
    data = FileNotFoundError(2, "No such file", str(root / "torchbenchmark" / "models" / "m" / "batch.pt"))
    assert torchbench.skip_reason(data, root) == "needs download"
    assert torchbench.skip_reason(FileNotFoundError(2, "No such file", "/etc/elsewhere"), root) is None
    asserted = AssertionError(f"Couldn't find coco128 data dir: {root}/torchbenchmark/data/.data/coco128")
    assert torchbench.skip_reason(asserted, root) == "needs download"
    assert torchbench.skip_reason(type("OfflineModeIsEnabled", (ConnectionError,), {})("off"), root) == \
        "needs download"
    assert torchbench.skip_reason(ValueError("boom"), root, blocked=["example.org"]) == "needs download"
    assert torchbench.skip_reason(NotImplementedError("Model requires CUDA"), root) == "not implemented"
    assert torchbench.skip_reason(ValueError("boom"), root) is None


def test_batch_sizes_follow_pytorchs_runner():
    assert torchbench.batch_size_for("resnet18", "inference", None) is None  # TorchBench's own default
    assert torchbench.batch_size_for("resnet18", "inference", 16) == 16
    assert torchbench.batch_size_for("timm_efficientdet", "inference", None) == 32
    assert torchbench.batch_size_for("densenet121", "training", None) == 4
    assert torchbench.batch_size_for("vision_maskrcnn", "inference", 8) is None  # never resized
    assert torchbench.batch_size_for("demucs", "training", 16) == 4


def test_resume_and_redo_of_skipped_models(suite_run, tmp_path):
    out = tmp_path / "tcd"
    shutil.copytree(suite_run[0], out)
    checkout = Path(rows(out)["tinyconv"]["torchbench_dir"])
    before = (out / "suite" / "manifest.jsonl").read_text()
    assert run_cpu(out, checkout, "--models", "tinyconv,needs_pkg") == 0  # both in the manifest: nothing runs
    assert (out / "suite" / "manifest.jsonl").read_text() == before
    counts = json.loads((out / "suite" / "stats.json").read_text())["counts"]
    assert counts["skipped_done"] == 1 and counts["skipped_failed_before"] == 1
    assert run_cpu(out, checkout, "--models", "tinyconv,needs_pkg", "--redo", "failed") == 0
    added = (out / "suite" / "manifest.jsonl").read_text()[len(before):].splitlines()
    assert [json.loads(line)["model"] for line in added] == ["needs_pkg"]  # a skipped model is retried


def test_models_file_names_each_model_once_with_a_reason():
    path = torchbench.__file__.replace("torchbench.py", "models/torchbench.txt")
    listed = [spec.name for spec in read_model_list(path)]
    left_out = torchbench.read_left_out(path)
    assert len(listed) == len(set(listed)) and not set(listed) & set(left_out)
    assert all(reason.strip() for reason in left_out.values())
    assert len(listed) + len(left_out) == 104  # the models of pytorch/benchmark at the commit the file names


def test_trim_keeps_code_and_drops_data(checkout, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(checkout, source)
    extra = {"torchbenchmark/data/.data/coco128/labels.txt": b"data", "torchbenchmark/models/tinyconv/w.pt": b"w",
             "torchbenchmark/models/tinyconv/demo.ipynb": b"{}", "torchbenchmark/models/tinyconv/big.txt":
             b"x" * (torchbench.TRIM_MAX_BYTES + 1), "LICENSE": b"BSD", "docs/index.md": b"not copied",
             "COMMIT": b"0123abc\n"}
    for relative, data in extra.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(data)
    dest = tmp_path / "trimmed"
    assert torchbench.main(["trim", str(source), str(dest)]) == 0
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    code = sorted(str(p.relative_to(checkout)) for p in checkout.rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts)
    assert kept == sorted([*code, "LICENSE", "COMMIT"])
    assert torchbench.checkout_commit(dest) == "0123abc"
    assert torchbench.list_models(dest) == sorted(MODELS)
    assert torchbench.main(["trim", str(source), str(dest)]) == 2  # never over an existing folder


def test_torchbench_kernels_join_back_to_their_program(suite_run, tmp_path):
    """A torchbench manifest line whose graph holds real Inductor output (a graph folder of the H100 fixture,
    renamed as the model's graph): get_kernels_from_debug_info.py gives each kernel the model's program."""
    import tarfile

    out = tmp_path / "tcd"
    shutil.copytree(suite_run[0], out)
    entry = rows(out)["tinyconv"]
    graph, run_dir = "tinyconv__0_inference_0.0", "run_2026_01_01_00_00_00_000000-pid_4242"
    with tarfile.open(SUITE_RUN) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("BertForMaskedLM__0_inference_0.0/output_code.py"))
        code = tar.extractfile(member).read().decode()
    (out / run_dir / "torchinductor" / graph).mkdir(parents=True)
    (out / run_dir / "torchinductor" / graph / "output_code.py").write_text(code)
    with open(out / "suite" / "manifest.jsonl", "a") as handle:  # what a compiled run would have recorded
        handle.write(json.dumps(dict(entry, run_dir=run_dir, graphs=[graph])) + "\n")
    kernels = tmp_path / "kernels"
    assert get_kernels_from_debug_info.main([str(out), "-o", str(kernels), "-q"]) == 0
    records = [json.loads(line) for line in (kernels / "kernels.jsonl").read_text().splitlines()]
    assert len(records) == code.count("async_compile.triton(") > 0
    program = (out / entry["program"]).read_text()
    for record in records:
        side = record["extra"]["pytorch"]
        assert (record["model"], record["graph"]) == ("tinyconv", graph)
        assert (side["suite"], side["model"]) == ("torchbench", "tinyconv") and "scraped" not in record["extra"]
        assert side["program_file"] == entry["program"]
        assert (kernels / side["program_copy"]).read_text() == program
