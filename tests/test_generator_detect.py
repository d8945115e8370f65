"""Jit-kernel detection (scraper.generator.detect) and the parse salvage (scraper.generator.parse)."""

from __future__ import annotations

import ast
import sys

import pytest

from scraper.generator.archives import decode_source
from scraper.generator.detect import find_kernels_in_source
from scraper.generator.parse import parse_source, source_segment
from tests.generator_helpers import EXPECTED_KERNELS, FIXTURE_REPO, file_lines


def _kernels_of(relative: str):
    text, _ = decode_source((FIXTURE_REPO / relative).read_bytes())
    return find_kernels_in_source(text, relative)


@pytest.mark.parametrize("relative", sorted(EXPECTED_KERNELS))
def test_finds_exactly_the_expected_kernels(relative):
    assert [k.qualname for k in _kernels_of(relative)] == EXPECTED_KERNELS[relative]


def test_every_spelling_and_the_outermost_triton_decorator_is_the_kind():
    kinds = {k.name: k.kind for k in _kernels_of("acme/ops/spellings.py")}
    assert kinds["k_heuristics"] == "heuristics"
    assert kinds["k_call_form"] == "jit" and kinds["k_under_libentry"] == "jit"
    assert {k.name: k.kind for k in _kernels_of("acme/ops/add.py")}["scale_kernel"] == "autotune"
    assert "not_a_kernel_numba" not in kinds  # numba's @jit is not triton's


def test_source_is_the_exact_text_with_decorators():
    for relative in ["acme/ops/add.py", "acme/ops/spellings.py", "acme/broken/py312_fstring.py"]:
        for kernel in _kernels_of(relative):
            if kernel.nested:
                continue
            expected = file_lines(FIXTURE_REPO / relative, kernel.lineno, kernel.end_lineno)
            # as ast.get_source_segment: the first line starts at the `@`, the others keep their indentation
            assert kernel.source == expected.lstrip(" ")
            assert kernel.source.startswith("@") or kernel.via_call
            assert kernel.decorators == [line[1:] for line in kernel.source.splitlines() if line.startswith("@")]


def test_nested_kernels_are_marked_with_qualnames():
    nested = {k.qualname: (k.nested, k.parent) for k in _kernels_of("acme/ops/nested.py")}
    assert nested == {"Ops.k_static_method": (True, "class"), "Ops.k_method": (True, "class"),
                      "make_kernel.<locals>.k_in_function": (True, "function")}


def test_aliases_do_not_leak_between_modules_and_local_names_shadow():
    text = "from numba import jit\nimport triton\n\n@jit\ndef a(x):\n    pass\n\n@triton.jit\ndef b(x):\n    pass\n"
    assert [k.name for k in find_kernels_in_source(text)] == ["b"]
    text = "import jax as triton\n\n@triton.jit\ndef c(x):\n    pass\n"
    assert find_kernels_in_source(text) == []


def test_decorator_with_space_after_at_keeps_the_at():
    text = "import triton\n\n@ triton.jit\ndef k(x):\n    pass\n"
    (kernel,) = find_kernels_in_source(text)
    assert kernel.source == "@ triton.jit\ndef k(x):\n    pass"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 parses this f-string")
def test_salvage_keeps_line_numbers_of_the_file():
    relative = "acme/broken/py312_fstring.py"
    text = (FIXTURE_REPO / relative).read_text()
    with pytest.raises(SyntaxError):
        ast.parse(text)  # precondition: this Python cannot parse the whole file
    parsed = parse_source(text, relative)
    assert parsed.salvaged and parsed.blocks_lost == 2
    names = [getattr(node, "name", None) for node in parsed.tree.body]
    assert names == [None, None, None, "k_after_bad_line", "k_last"]
    for node in parsed.tree.body:
        assert source_segment(text, node) == ast.get_source_segment(text, node)


def test_garbage_file_gives_an_empty_module_not_an_exception():
    parsed = parse_source("def not_python(:\n  triton triton\n\x00", "g.py")
    assert parsed.salvaged and parsed.tree.body == [] and parsed.errors


def test_crlf_and_unicode_columns():
    text = "import triton\r\nS = 'é'  # ü\r\n\r\n@triton.jit\r\ndef k(x):\r\n    y = 'ü'\r\n"
    (kernel,) = find_kernels_in_source(text)
    assert kernel.source == "@triton.jit\r\ndef k(x):\r\n    y = 'ü'"
