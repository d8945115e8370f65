"""Parse Python source with `ast`, salvaging what parses when the whole file does not.

Real repositories hold files the running Python cannot parse: 3.12-only f-strings (`f"{x["k"]}"`), Python 2
(`print "x"`), a half-edited file. Losing the whole file would lose every kernel in it, so on a syntax error the
text is cut into top-level blocks (a line at column 0 starts a block; decorators stay with their def/class) and
each block is parsed on its own, its line numbers shifted back to the file's. Nothing is ever executed.

What is parsed is bounded before `ast.parse` sees it: a syntax tree costs ~200 bytes a token for real code and
~400 for `x=1` lines (a 1 MiB file of them: ~350 MB), so a file of more than MAX_PARSE_LINES lines or
MAX_PARSE_TOKENS tokens is not parsed (`skipped` says why; its tree is empty), and a caller may give a smaller
token budget (what is left of a repository's).
"""

from __future__ import annotations

import ast
import functools
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger(__name__)

# A block cannot start with these: they continue the statement above (closing brackets, else/except branches).
_CONTINUATION = re.compile(r"(?:[)\]}]|(?:else|elif|except|finally|case)\b)")
# When a block does not parse alone, it is retried joined with up to this many following blocks (a string or a
# bracket spanning column-0 lines), so one bad block never costs more than this many retries.
_MAX_JOIN = 8
MAX_PARSE_LINES = 50_000  # torch/_inductor/ir.py, among the largest real files: 11,000
MAX_PARSE_TOKENS = 250_000  # ir.py: 73,000; at most ~100 MB of syntax tree
_TOKEN = re.compile(r"\w+|[^\w\s]")  # a word or one other character: an upper bound of Python's tokens


@dataclass
class ParsedModule:
    """An ast.Module over `text` (possibly salvaged) and what went wrong on the way."""

    text: str
    tree: ast.Module
    salvaged: bool = False  # True when the file as a whole did not parse
    errors: list = field(default_factory=list)  # one message per block (or file) that did not parse
    blocks_lost: int = 0
    tokens: int = 0  # what parsing it cost (tokens_of)
    skipped: Optional[str] = None  # too_many_lines | too_many_tokens | over_budget: not parsed (`tree` is empty)


def _parse(text: str, filename: str) -> ast.Module:
    # SyntaxWarnings (invalid escapes in scraped code) are noise here; ValueError covers NUL bytes on 3.11.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text, filename=filename)


def parse_source(text: str, path: str = "", max_tokens: int = MAX_PARSE_TOKENS) -> ParsedModule:
    """Parse `text`; on a syntax error fall back to `salvage_blocks`. A file over MAX_PARSE_LINES lines or
    `max_tokens` tokens is not parsed (`skipped`, an empty tree). Never raises for bad source."""
    tokens = tokens_of(text)
    skipped = oversized(text, tokens, max_tokens)
    if skipped:
        return ParsedModule(text, ast.Module(body=[], type_ignores=[]), errors=[f"not parsed: {skipped}"],
                            tokens=0, skipped=skipped.split(" (")[0])
    try:
        return ParsedModule(text, _parse(text, path or "<unknown>"), tokens=tokens)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        first_error = f"{type(exc).__name__}: {exc}"
    tree, errors, lost = salvage_blocks(text, path)
    return ParsedModule(text, tree, salvaged=True, errors=[first_error] + errors, blocks_lost=lost, tokens=tokens)


def tokens_of(text: str) -> int:
    """An upper bound of the tokens of `text`: its words and other characters, counted without a list."""
    return sum(1 for _ in _TOKEN.finditer(text))


def oversized(text: str, tokens: int, max_tokens: int) -> Optional[str]:
    """Why `text` is too large to parse (`too_many_lines (N)`, `too_many_tokens (N)`, `over_budget (N)`: more
    tokens than a caller's budget has left), or None."""
    lines = text.count("\n") + 1
    if lines > MAX_PARSE_LINES:
        return f"too_many_lines ({lines} > {MAX_PARSE_LINES})"
    if tokens > MAX_PARSE_TOKENS:
        return f"too_many_tokens ({tokens} > {MAX_PARSE_TOKENS})"
    if tokens > max_tokens:
        return f"over_budget ({tokens} tokens, {max(0, max_tokens)} left)"
    return None


def block_starts(lines: list[str]) -> list[int]:
    """0-based indices of the lines that start a top-level block (decorators grouped with what they decorate)."""
    starts = []
    previous_is_decorator = False
    for index, line in enumerate(lines):
        if not line or line[0] in " \t\r\n#\f" or _CONTINUATION.match(line):
            continue
        if not previous_is_decorator:
            starts.append(index)
        previous_is_decorator = line.startswith("@")
    return starts


def salvage_blocks(text: str, path: str = "") -> tuple[ast.Module, list[str], int]:
    """Parse each top-level block of `text` alone; returns (module of what parsed, error messages, blocks lost).

    Line numbers in the returned tree are the file's, so `ast.get_source_segment(text, node)` works on it."""
    lines = text.splitlines(keepends=True)
    starts = block_starts(lines) + [len(lines)]
    body, errors, lost = [], [], 0
    index = 0
    while index < len(starts) - 1:
        parsed, used = _parse_block(lines, starts, index, path)
        if parsed is None:
            errors.append(f"{path}:{starts[index] + 1}: top-level block does not parse ({used})")
            lost += 1
            index += 1
            continue
        body.extend(parsed.body)
        index += used
    return ast.Module(body=body, type_ignores=[]), errors, lost


def _parse_block(lines, starts, index, path):
    """Try block `index` alone, then joined with the next ones; (module, blocks used) or (None, error)."""
    first_error = ""
    for used in range(1, min(_MAX_JOIN, len(starts) - 1 - index) + 1):
        begin, end = starts[index], starts[index + used]
        chunk = "".join(lines[begin:end])
        try:
            module = _parse(chunk, path or "<unknown>")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            continue
        ast.increment_lineno(module, begin)
        return module, used
    return None, first_error


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


@functools.lru_cache(maxsize=64)
def line_table(text: str) -> list[str]:
    """The lines of `text` split as `ast` counts them (\\r\\n, \\r, \\n; form feeds kept), cached per text."""
    return _LINE.findall(text)


def source_segment(text: str, node: ast.AST) -> Optional[str]:
    """`ast.get_source_segment(text, node)` over a cached line table (the stdlib one re-splits the whole file
    on every call, which dominates the generator's time on large files)."""
    end_lineno, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
    if end_lineno is None or end_col is None:
        return None
    lines = line_table(text)
    lineno, col = node.lineno - 1, node.col_offset
    if end_lineno - 1 >= len(lines):
        return None
    if end_lineno - 1 == lineno:
        return lines[lineno].encode()[col:end_col].decode("utf-8", "replace")
    first = lines[lineno].encode()[col:].decode("utf-8", "replace")
    last = lines[end_lineno - 1].encode()[:end_col].decode("utf-8", "replace")
    return "".join([first] + lines[lineno + 1:end_lineno - 1] + [last])


def line_bytes(text: str, lineno: int) -> bytes:
    """Line `lineno` (1-based) of `text` as UTF-8 bytes, without its line ending (ast columns are byte offsets)."""
    lines = line_table(text)
    return lines[lineno - 1].rstrip("\r\n").encode() if 0 < lineno <= len(lines) else b""
