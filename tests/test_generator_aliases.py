"""Jit aliases the per-file spellings miss (issue #4): an alias of triton.jit defined in another file of the
repository and imported, and `functools.partial(triton.jit, ...)`.

The repository below is written by hand; the expected kernels are read off it, not off the generator's output."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scraper.generator import main as generator_main
from scraper.generator.closure import RepoIndex, extract_closure
from scraper.generator.detect import find_kernels_in_source
from scraper.records import read_records
from tests.generator_helpers import coarse_unbound_names

BODY = "(X, N: tl.constexpr):\n    i = tl.arange(0, N)\n    tl.store(X + i, tl.load(X + i) * 2)\n"

FILES = {
    "pkg/__init__.py": "from .u import my_jit as pkg_jit\n",
    # the aliases: an assignment, a re-exported `from triton import jit as ...`, functools.partial
    "pkg/u.py": "import triton\nimport triton.language as tl\n\nmy_jit = triton.jit\n",
    "pkg/v.py": "from triton import jit as other_jit\n",
    "pkg/p.py": ("import functools\n\nimport triton\n\n"
                 "jit_fn = functools.partial(triton.jit, do_not_specialize=['N'])\n"),
    "pkg/fake.py": "def fake_jit(fn):\n    return fn\n",
    "pkg/k.py": (
        "import triton.language as tl\n\n"
        "from .u import my_jit\n"
        "from pkg.v import other_jit\n"
        "from pkg import pkg_jit\n"
        "from .p import jit_fn\n"
        "from .fake import fake_jit\n\n\n"
        f"@my_jit\ndef k_relative{BODY}\n\n"
        f"@my_jit(do_not_specialize=['N'])\ndef k_relative_call{BODY}\n\n"
        f"@other_jit\ndef k_absolute_reexport{BODY}\n\n"
        f"@pkg_jit\ndef k_package_chain{BODY}\n\n"
        f"@jit_fn\ndef k_imported_partial{BODY}\n\n"
        f"@fake_jit\ndef not_a_kernel_fake{BODY}\n"
    ),
    # no word "triton" in this file: only the repository's alias makes it a kernel file
    "pkg/quiet.py": f"from .u import my_jit, tl\n\n\n@my_jit\ndef k_quiet{BODY}",
    # a star import of the alias's module (no word "triton" either), and the call form with an imported alias
    "pkg/star.py": f"from .u import *\n\n\n@my_jit\ndef k_star{BODY}",
    "pkg/called.py": (f"import triton.language as tl\n\nfrom .u import my_jit\n\n\ndef k_called{BODY}\n\n"
                      "k_called_jit = my_jit(k_called)\n"),
    # re-exported by a package's star import
    "pkg/sub/__init__.py": "from ..u import *\n",
    "pkg/via_sub.py": f"from pkg.sub import my_jit, tl\n\n\n@my_jit\ndef k_star_reexport{BODY}",
    # a local name that happens to equal a repository alias but comes from numba
    "pkg/numba_user.py": ("from numba import jit as my_jit\nimport triton.language as tl\n\n\n"
                          f"@my_jit\ndef not_a_kernel_numba{BODY}"),
    # partial in the kernel's own file, both spellings
    "pkg/partial_local.py": (
        "from functools import partial\n\nimport triton\nimport triton.language as tl\n\n"
        "jit2 = partial(triton.jit, debug=False)\nprinter = partial(print, end='')\n\n\n"
        f"@jit2\ndef k_local_partial{BODY}\n\n"
        f"@printer\ndef not_a_kernel_printer{BODY}"
    ),
}
EXPECTED = {
    "pkg/k.py": ["k_relative", "k_relative_call", "k_absolute_reexport", "k_package_chain", "k_imported_partial"],
    "pkg/quiet.py": ["k_quiet"],
    "pkg/star.py": ["k_star"],
    "pkg/called.py": ["k_called"],
    "pkg/via_sub.py": ["k_star_reexport"],
    "pkg/partial_local.py": ["k_local_partial"],
}
# the statement each module must carry (exactly as written in its file) so that the alias is bound
ALIAS_LINE = {"k_relative": "my_jit = triton.jit", "k_relative_call": "my_jit = triton.jit",
              "k_absolute_reexport": "from triton import jit as other_jit",
              "k_package_chain": "my_jit = triton.jit",
              "k_imported_partial": "jit_fn = functools.partial(triton.jit, do_not_specialize=['N'])",
              "k_quiet": "my_jit = triton.jit", "k_star": "my_jit = triton.jit",
              "k_called": "my_jit = triton.jit", "k_star_reexport": "my_jit = triton.jit", "k_local_partial": "jit2 = partial(triton.jit, debug=False)"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aliases") / "me__aliases"
    for relative, text in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


@pytest.fixture(scope="module")
def generated(repo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aliases_out")
    assert generator_main.main(["--generate-one", str(repo), "-o", str(out), "--jobs", "1", "-q"]) == 0
    return out


def test_partial_of_triton_jit_in_the_same_file():
    for spelling in ("import functools\nimport triton\n\nj = functools.partial(triton.jit, debug=True)\n",
                     "from functools import partial\nimport triton as tr\n\nj = partial(tr.jit, debug=True)\n",
                     "import functools as ft\nfrom triton import jit\n\nj = ft.partial(jit)\n"):
        text = spelling + "\n\n@j\ndef k(x):\n    pass\n\n\n@j()\ndef k2(x):\n    pass\n"
        assert [k.name for k in find_kernels_in_source(text)] == ["k", "k2"], spelling
    # partial of something else, or a `partial` that is not functools', is no kernel
    for spelling in ("import functools\nimport triton\n\nj = functools.partial(print, end='')\n",
                     "import triton\n\ndef partial(f, **kw):\n    return f\n\nj = partial(triton.jit)\n",
                     "from mylib import partial\nimport triton\n\nj = partial(triton.jit)\n"):
        assert find_kernels_in_source(spelling + "\n\n@j\ndef k(x):\n    pass\n") == [], spelling


def test_single_file_api_sees_only_the_file_but_takes_extra_aliases():
    # unchanged for create_json's scan: a file alone cannot know what `my_jit` of another file is
    assert find_kernels_in_source(FILES["pkg/quiet.py"], "pkg/quiet.py") == []
    found = find_kernels_in_source(FILES["pkg/quiet.py"], "pkg/quiet.py", aliases={"my_jit": "triton.jit"})
    assert [(k.name, k.kind) for k in found] == [("k_quiet", "jit")]


def test_repository_index_resolves_imported_aliases_through_the_files_imports(repo):
    index = RepoIndex.from_location(repo)
    assert index.triton_aliases("pkg/k.py") == {"my_jit": "triton.jit", "other_jit": "triton.jit",
                                                "pkg_jit": "triton.jit", "jit_fn": "triton.jit"}
    assert index.triton_aliases("pkg/quiet.py") == {"my_jit": "triton.jit"}
    assert index.triton_aliases("pkg/star.py") == {"my_jit": "triton.jit"}
    assert index.triton_aliases("pkg/numba_user.py") == {}  # numba's jit, not the repository's alias
    assert index.triton_aliases("pkg/fake.py") == {}


def test_generator_finds_every_kernel_of_the_repository(generated):
    records = read_records(generated / "kernels.jsonl")
    found = {}
    for record in records:
        found.setdefault(record.path, []).append(record.name)
    assert {path: sorted(names) for path, names in found.items()} == {p: sorted(n) for p, n in EXPECTED.items()}
    assert all(record.kind == "jit" for record in records)


def test_generated_modules_carry_the_alias_definition_and_are_self_contained(generated):
    for record in read_records(generated / "kernels.jsonl"):
        assert record.self_contained and record.unresolved == [], (record.name, record.unresolved)
        assert coarse_unbound_names(record.code) == set(), record.name
        lines = record.code.splitlines()
        assert ALIAS_LINE[record.name] in lines, (record.name, record.code)
        if record.extra["via_call"]:  # the wrapping statement comes with the def
            assert record.decorators == [] and "k_called_jit = my_jit(k_called)" in lines
        else:
            assert record.decorators[0].split("(")[0] in record.code  # the decorator is kept, not dropped
        assert record.extra["dropped_decorators"] == []


RUN_GENERATED = textwrap.dedent("""
    import importlib.util, sys
    import torch, triton
    from triton.runtime.interpreter import InterpretedFunction  # what triton.jit returns with TRITON_INTERPRET=1

    ran = []
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        kernel = getattr(module, name + "_jit", None) or getattr(module, name)
        assert isinstance(kernel, InterpretedFunction), (name, type(kernel))
        x = torch.arange(8, dtype=torch.float32)
        kernel[(1,)](x, N=8)
        assert torch.equal(x, torch.arange(8, dtype=torch.float32) * 2), name
        ran.append(name)
    print("ran", len(ran))
""")


def test_generated_modules_run_under_the_interpreter(generated):
    args = [f"{r.name}={generated / r.file}" for r in read_records(generated / "kernels.jsonl")]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", RUN_GENERATED, *args], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"ran {len(args)}" in done.stdout


def test_closure_keeps_the_imported_alias_decorator_when_dropping_project_decorators():
    # `@my_jit` is triton's jit, never a project decorator to leave out, even when the alias's file also reads
    # an external library (here an earlier binding of the name) and the kernel would be self-contained without it
    u = "import triton\nimport triton.language as tl\nfrom vendorlib import vjit\n\n"
    u += "my_jit = vjit\nmy_jit = triton.jit\n"
    index = RepoIndex({**FILES, "pkg/u.py": u})
    assert index.triton_aliases("pkg/quiet.py") == {"my_jit": "triton.jit"}
    result = extract_closure(index, "pkg/quiet.py", "k_quiet")
    assert result.dropped_decorators == [] and "my_jit = triton.jit" in result.code.splitlines()
    assert result.reasons == {"vjit": "external:vendorlib"}
