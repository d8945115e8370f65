"""Launchers, helper roles and the gluon dialect (scraper.generator.launchers, issue #15).

Each repository below is written by hand; the expected launcher (function, line) is read off its text, not
off the generator's output. Generated modules are imported by the real interpreter (TRITON_INTERPRET=1, in a
subprocess) where the claim is that they run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from scraper.generator import main as generator_main
from scraper.generator.closure import RepoIndex
from scraper.generator.launchers import repo_launches
from scraper.records import read_records

KERNEL = '''
@triton.jit
def {name}(X, N, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(X + i, {body}, mask=i < N)
'''

FILES = {
    "ops/__init__.py": "",
    "ops/kernels.py": "import triton\nimport triton.language as tl\n\n\n@triton.jit\ndef _twice(x):\n    return x * 2\n"
                      + KERNEL.format(name="double_kernel", body="_twice(tl.load(X + i, mask=i < N))")
                      + KERNEL.format(name="raw_kernel", body="tl.load(X + i, mask=i < N) + 1")
                      + KERNEL.format(name="run_kernel", body="tl.load(X + i, mask=i < N) - 1")
                      + "\n\n@triton.autotune(configs=[triton.Config({'BLOCK': 16})], key=['N'])"
                      + KERNEL.format(name="tuned_kernel", body="tl.load(X + i, mask=i < N) * 3").replace(
                          "BLOCK: tl.constexpr", "BLOCK: tl.constexpr", 1)
                      + KERNEL.format(name="unused_kernel", body="0.0")
                      + "\n\nwrapped_kernel = triton.autotune(configs=[triton.Config({'BLOCK': 16})], key=['N'])(raw_kernel)\n",
    # launches: directly, through an imported name under another name, through a module attribute, through
    # the hand-wrapped autotuner, via .run, and through a launching wrapper function
    "ops/host.py": textwrap.dedent('''\
        import torch
        import triton

        from . import kernels as K
        from .kernels import double_kernel as dk, run_kernel, tuned_kernel


        def _launch(kernel, grid, *args):
            kernel[grid](*args)


        def double(x):
            n = x.numel()
            dk[(triton.cdiv(n, 16),)](x, n, BLOCK=16)
            return x


        def plus_one(x):
            K.wrapped_kernel[lambda meta: (triton.cdiv(x.numel(), meta["BLOCK"]),)](x, x.numel())
            return x


        def minus_one(x):
            run_kernel.run(x, x.numel(), BLOCK=16, grid=(1,), warmup=False)
            return x


        def triple(x):
            _launch(tuned_kernel, lambda meta: (triton.cdiv(x.numel(), meta["BLOCK"]),), x, x.numel())
            return x
        '''),
}


def line_of(text: str, needle: str) -> int:
    """Oracle: 1-based line of the first occurrence of `needle`."""
    return text[:text.index(needle)].count("\n") + 1


@pytest.fixture(scope="module")
def launches():
    index = RepoIndex(FILES)
    kernels = {k.name: k for k in index.kernels("ops/kernels.py")}
    return repo_launches(index), kernels


@pytest.mark.parametrize("kernel, host, needle, how", [
    ("double_kernel", "double", "dk[(", "grid"),                       # imported under another name
    ("raw_kernel", "plus_one", "K.wrapped_kernel[", "grid"),          # module attribute, hand-wrapped autotuner
    ("run_kernel", "minus_one", "run_kernel.run(", "run"),            # .run
    ("tuned_kernel", "triple", "_launch(tuned_kernel", "wrapper:_launch"),  # through a launching wrapper
])
def test_launcher_is_the_function_holding_the_launch(launches, kernel, host, needle, how):
    repo, kernels = launches
    record = repo.launcher_record(kernels[kernel])
    text = FILES["ops/host.py"]
    assert (record["path"], record["qualname"], record["how"]) == ("ops/host.py", host, how)
    assert record["launch_lineno"] == line_of(text, needle) and record["lineno"] == line_of(text, f"def {host}(")
    # exact source of the host function, and its closure holds the kernel and the host, both as written
    assert record["source"] == text[text.index(f"def {host}("):].split("\n\n\n")[0].rstrip("\n")
    assert record["source"] in record["code"] and f"def {kernel}(" in record["code"]
    assert record["self_contained"] and record["unresolved"] == []
    assert repo.role(kernels[kernel]) == "kernel"


def test_the_wrapper_itself_comes_with_the_launcher(launches):
    repo, kernels = launches
    code = repo.launcher_record(kernels["tuned_kernel"])["code"]
    assert "def _launch(kernel, grid, *args):\n    kernel[grid](*args)" in code


def test_helper_only_and_unlaunched_kernels(launches):
    repo, kernels = launches
    assert repo.role(kernels["_twice"]) == "helper" and repo.launcher_record(kernels["_twice"]) is None
    # launched nowhere but read by no jit function either: a kernel without a launcher
    assert repo.role(kernels["unused_kernel"]) == "kernel" and repo.launcher_record(kernels["unused_kernel"]) is None


def test_launcher_module_runs_the_kernel_in_the_interpreter(launches, tmp_path):
    repo, kernels = launches
    code = repo.launcher_record(kernels["double_kernel"])["code"]
    script = tmp_path / "launcher.py"
    script.write_text(code + "\nimport torch\nx = torch.arange(20, dtype=torch.float32)\nprint(double(x).tolist())\n")
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([float(2 * v) for v in range(20)])


def run_python(script, env_extra=None):
    env = {**os.environ, "TRITON_INTERPRET": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=script.parent)


GLUON = textwrap.dedent('''\
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl

    BLOCK = 64


    @gluon.jit
    def gluon_copy(src, dst, N, XBLOCK: gl.constexpr):
        layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
        offs = gl.program_id(0) * XBLOCK + gl.arange(0, XBLOCK, layout=layout)
        gl.store(dst + offs, gl.load(src + offs, mask=offs < N), mask=offs < N)


    def copy(src, dst):
        gluon_copy[(1,)](src, dst, src.numel(), XBLOCK=BLOCK)
    ''')


def test_gluon_kernels_are_found_extracted_and_launched(tmp_path):
    repo = tmp_path / "gluon-repo"
    (repo / "g").mkdir(parents=True)
    (repo / "g" / "ops.py").write_text(GLUON)
    out = tmp_path / "out"
    assert generator_main.main(["--generate-one", str(repo), "--tests-dir", str(out), "--jobs", "1", "-q"]) == 0
    [record] = read_records(out / "kernels.jsonl")
    assert (record.name, record.dialect, record.role, record.self_contained) == ("gluon_copy", "gluon", "kernel", True)
    assert record.launcher["qualname"] == "copy" and record.launcher["launch_lineno"] == line_of(GLUON, "gluon_copy[(1,)]")
    module = out / record.file
    module.write_text(record.code + "\nprint(type(gluon_copy).__name__)\n")
    done = run_python(module)
    assert done.returncode == 0 and done.stdout.strip() == "GluonJITFunction", done.stderr


def test_cli_records_carry_dialect_role_and_launcher(tmp_path):
    repo = tmp_path / "acme"
    for path, text in FILES.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    out = tmp_path / "out"
    assert generator_main.main(["--generate-one", str(repo), "--tests-dir", str(out), "--jobs", "1", "-q"]) == 0
    records = {r.name: r for r in read_records(out / "kernels.jsonl")}
    assert {r.dialect for r in records.values()} == {"triton"}
    assert {n for n, r in records.items() if r.role == "helper"} == {"_twice"}
    assert {n for n, r in records.items() if r.launcher} == {"double_kernel", "raw_kernel", "run_kernel", "tuned_kernel"}
    stats = (out / "stats.json").read_text()
    assert '"kernels_with_launcher": 4' in stats and '"role_helper": 1' in stats


def test_a_launch_in_a_nested_function_belongs_to_the_function_around_it():
    # sglang's `def op(...): ... def run_kernel(): kernel[grid](...)`: `op` allocates and calls; its closure is
    # the whole operator, where the nested function alone reads op's locals
    host = ("import triton\n\nfrom .kernels import raw_kernel\n\n\n"
            "def op(x):\n    n = x.numel()\n\n    def run():\n        raw_kernel[(1,)](x, n, BLOCK=16)\n\n    run()\n    return x\n")
    index = RepoIndex({**FILES, "ops/nested.py": host})
    kernel = next(k for k in index.kernels("ops/kernels.py") if k.name == "raw_kernel")
    sites = repo_launches(index).sites_of(kernel)
    nested = [s for s in sites if s.path == "ops/nested.py"]
    assert [(s.host, s.lineno, s.host_lineno) for s in nested] == [("op", line_of(host, "raw_kernel[(1,)]"), line_of(host, "def op"))]
