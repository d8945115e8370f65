"""Helpers for the dataset-builder tests: real stage outputs, hand-made kernels and independent oracles.

The oracles here do not use scraper.records / scraper.dataset: the Inductor kernel count comes from an `ast` walk
over each fixture output_code.py, and similarity from Python's `tokenize` and plain sets.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

from conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "repos"

ADD_KERNEL = textwrap.dedent('''\
    import triton
    import triton.language as tl


    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
        """out = x + y over a flat range of n_elements."""
        pid = tl.program_id(axis=0)
        block_start = pid * BLOCK_SIZE
        offsets = block_start + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        x = tl.load(x_ptr + offsets, mask=mask)
        y = tl.load(y_ptr + offsets, mask=mask)
        output = x + y
        tl.store(out_ptr + offsets, output, mask=mask)
''')

# The same kernel as a near copy: another docstring (what a fork typically changes).
ADD_KERNEL_NEAR = ADD_KERNEL.replace('"""out = x + y over a flat range of n_elements."""',
                                     '"""Elementwise sum of two vectors."""')

SOFTMAX_KERNEL = textwrap.dedent('''\
    import triton
    import triton.language as tl


    @triton.jit
    def softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(in_ptr + row * in_stride + cols, mask=mask, other=-float("inf"))
        x = x - tl.max(x, axis=0)
        numerator = tl.exp(x)
        denominator = tl.sum(numerator, axis=0)
        tl.store(out_ptr + row * out_stride + cols, numerator / denominator, mask=mask)
''')


def github_record(name: str, code: str, repo: str, **fields) -> dict:
    """A github kernel record as the generator writes it (a plain dict, every other field absent)."""
    return {"name": name, "code": code, "source": "github", "repo": repo, "path": f"{name}.py", **fields}


def run_script(*args, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    """Run a pipeline script with this interpreter; fail the test with its stderr when it fails."""
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stderr[-3000:]}"
    return done


def build_stage_outputs(tcd_roots: dict, work: Path) -> tuple[Path, Path]:
    """Run the real stage 1 (Inductor) on the fixtures and stages 2a/2b (offline ingest + generator) on the
    bundled example repositories. Returns (inductor output folder, generator output folder)."""
    inductor, download, generated = work / "inductor_kernels", work / "download", work / "generated"
    run_script("get_kernels_from_debug_info.py", *tcd_roots.values(), "-o", inductor, "-q")
    local = [f"{repo}={repo.relative_to(EXAMPLES).as_posix()}" for repo in sorted(EXAMPLES.glob("*/*"))]
    run_script("scrape_github.py", "--local", *local, "-o", download, "-q")
    run_script("main.py", "--generate-all", "--download-dir", download, "-o", generated, "--jobs", "1",
               "-q", cwd=REPO_ROOT / "scraper" / "generator")
    return inductor, generated


def embedded_inductor_kernels(tcd_root: Path) -> list[str]:
    """The kernel strings passed to `async_compile.triton(name, source, ...)` in every output_code.py."""
    kernels = []
    for output_code in sorted(Path(tcd_root).rglob("output_code.py")):
        tree = ast.parse(output_code.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "triton"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "async_compile"):
                kernels.append(node.args[1].value)
    return kernels


def simple_kernel_key(kernel: str) -> str:
    """Identity of an embedded Inductor kernel, by a rule of this test: the text from `@triton.jit` on, comments
    dropped, `triton_..._<number>` names numbered alike, all whitespace removed."""
    body = kernel[kernel.index("@triton.jit"):]
    body = re.sub(r"#[^\n]*", "", body)
    body = re.sub(r"(triton_\w+?)_\d+\b", r"\1_N", body)
    return "".join(body.split())


def python_tokens(code: str) -> list[str]:
    """Tokens of `code` by Python's own tokenizer, comments and layout tokens left out."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type not in skip]


def true_jaccard(first: str, second: str, width: int = 5) -> float:
    """Exact Jaccard similarity of the sets of `width`-token windows of two sources."""
    def shingles(code):
        tokens = python_tokens(code)
        return {tuple(tokens[i:i + width]) for i in range(max(1, len(tokens) - width + 1))}
    a, b = shingles(first), shingles(second)
    return len(a & b) / len(a | b)
