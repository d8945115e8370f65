"""Exact source text of statements and definitions, as `ast.get_source_segment` gives it, never rewritten.

Definitions start at their first decorator's `@`; statements inside a block are dedented (only); a trailing
`# comment` on a statement's last line is kept (ast positions stop before it).
"""

from __future__ import annotations

import ast
import textwrap

from scraper.generator.parse import line_bytes, source_segment
from scraper.generator.syntax import DEFINITIONS


def at_column(text: str, decorator: ast.AST) -> int:
    """Byte column of the `@` before a decorator expression (`@ triton.jit` has a space in between)."""
    line = line_bytes(text, decorator.lineno)
    at = line.rfind(b"@", 0, decorator.col_offset)
    return at if at >= 0 else max(decorator.col_offset - 1, 0)


def _start(text: str, node: ast.AST, first_decorator: int = 0) -> tuple[int, int]:
    """(line, byte column) where a def/class begins from its `first_decorator`-th decorator on."""
    decorators = getattr(node, "decorator_list", [])[first_decorator:]
    if decorators:
        return decorators[0].lineno, at_column(text, decorators[0])
    return node.lineno, node.col_offset


def function_source(text: str, func: ast.AST, first_decorator: int = 0) -> str:
    """Exact source of a def/class from its `first_decorator`-th decorator's `@` (all of them by default)."""
    if not func.decorator_list:
        return source_segment(text, func) or ""
    span = ast.Module(body=[], type_ignores=[])
    span.lineno, span.col_offset = _start(text, func, first_decorator)
    span.end_lineno, span.end_col_offset = func.end_lineno, func.end_col_offset
    return source_segment(text, span) or ""


def statement_text(text: str, node: ast.AST, first_decorator: int = 0) -> str:
    """Exact source of a statement (a def/class from its `first_decorator`-th decorator on), dedented when it
    sits inside a block, with the comment trailing its last line."""
    if isinstance(node, DEFINITIONS):
        segment = function_source(text, node, first_decorator)
    else:
        segment = source_segment(text, node) or ""
    return dedent(text, _start(text, node, first_decorator), segment + trailing_comment(text, node))


def trailing_comment(text: str, node: ast.AST) -> str:
    """The `  # comment` after a statement's last token on its last line (ast segments stop before it)."""
    rest = line_bytes(text, node.end_lineno)[node.end_col_offset:]
    return rest.decode("utf-8", "replace").rstrip() if rest.strip().startswith(b"#") else ""


def dedent(text: str, start: tuple, segment: str) -> str:
    """Dedent a segment that starts at byte column start[1] of line start[0] (its first line lacks the indent)."""
    if start[1] <= 0:
        return segment
    prefix = line_bytes(text, start[0])[: start[1]].decode("utf-8", "replace")
    if prefix.strip():  # `if x: y = 1` on one line: the indent of what follows is unknown, use spaces
        prefix = " " * len(prefix)
    return textwrap.dedent(prefix + segment)
