"""Read the Triton kernels embedded in one Inductor `output_code.py`, without running it.

Inductor writes each kernel as `name = async_compile.triton('kernel_name', '''<module text>''', device_str=...)`
with a comment block above it (kernel path, source nodes, Original ATen ops, graph fragment). The module is
parsed with `ast`; the kernel text is the string constant itself, so nothing depends on the Inductor cache files
named in `# kernel path:` comments (those exist only on the machine that compiled the model, at that moment);
such a file is read only as a fallback when the embedded text is missing.

Only the part before the wrapper code (`async_compile.wait(globals())`) becomes a tree; the wrapper, which is
most of the parse time, is only compiled to check it. A file that does not parse (typically truncated by a
crash or a copy) is salvaged: it is cut before the line the parser chokes on until the rest parses, and the
kernels in the lost tail are counted.
"""

from __future__ import annotations

import ast
import bisect
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

# At most this many cuts when salvaging a file that does not parse (each cut drops at least one line).
MAX_SALVAGE_CUTS = 50
# A `# kernel path:` file (one kernel module) larger than this is not one Inductor wrote.
MAX_KERNEL_FILE_BYTES = 4 * 1024 * 1024
# The kernel name old Inductor versions passed for every kernel.
PLACEHOLDER_NAME = "triton_"
# Where the wrapper code starts, after the kernels (`async_compile.wait(globals())`).
_WRAPPER_START = re.compile(r"^async_compile\.wait\(", re.MULTILINE)
# Counted in the text, independently of the parser: kernels a damaged file lost, C++/other kernels skipped,
# and the lines worth walking in the tree.
_TRITON_CALL = re.compile(r"async_compile\.triton\(")
_OTHER_COMPILE_CALL = re.compile(r"async_compile\.(cpp_pybinding|cpp|cuda|rocm|halide|mps|submit)\(")
_SOURCE_NODES = re.compile(
    r"^#\s*(?:Topologically Sorted|Unsorted) Source Nodes:\s*\[(?P<nodes>.*?)\],\s*Original ATen:\s*\[(?P<aten>.*?)\]\s*$"
)
_HEADER_VALUE = re.compile(r"^#\s*(?P<key>kernel path|Original path):\s*(?P<value>.*?)\s*$")


@dataclass
class EmbeddedKernel:
    """One `async_compile.triton(...)` call: the kernel's name, its module text and the comment above it."""

    name: str
    source: Optional[str]  # the embedded module text, exactly; None when it was not a string constant
    variable: Optional[str]  # the name the call is assigned to in output_code.py
    lineno: int  # line of the statement in output_code.py
    comment: str = ""  # the comment block right above the statement, as written
    source_from: str = "embedded"  # "embedded" | "kernel_path" (fallback file) | "missing"
    name_passed: Optional[str] = None  # the name argument as written (None: there was none)


@dataclass
class OutputCode:
    """What one output_code.py holds: its kernels, plus what was lost or skipped reading it."""

    kernels: list[EmbeddedKernel] = field(default_factory=list)
    salvaged: bool = False  # the file did not parse; kernels come from the part before the damage
    lost_kernels: int = 0  # `async_compile.triton(` calls in the part that could not be parsed
    parse_error: Optional[str] = None
    other_kernels: int = 0  # C++ / CUDA / Halide ... kernels (a CPU-only graph has only these)


def read_output_code(text: str, filename: str = "<output_code>") -> OutputCode:
    """Every Triton kernel embedded in the text of an output_code.py (see module docstring)."""
    result = OutputCode(other_kernels=len(_OTHER_COMPILE_CALL.findall(text)))
    tree, kept, result.parse_error = parse_output_code(text, filename)
    if kept < len(text):
        result.salvaged = True
        result.lost_kernels = len(_TRITON_CALL.findall(text[kept:]))
    lines = [line.rstrip("\r\n") for line in split_lines(text[:kept])]
    call_lines = _lines_of(_TRITON_CALL, text, kept)
    for statement in tree.body:
        # Only statements that span a line holding `async_compile.triton(` are walked (the wrapper's big
        # `call` function would otherwise cost more than everything else together).
        first = bisect.bisect_left(call_lines, statement.lineno)
        if first < len(call_lines) and call_lines[first] <= statement.end_lineno:
            for call in _triton_calls(statement):
                result.kernels.append(_embedded_kernel(call, statement, lines))
    return result


def parse_output_code(text: str, filename: str = "<output_code>") -> tuple[ast.Module, int, Optional[str]]:
    """The ast of the part of an output_code.py that holds the kernels, how many characters of `text` it
    covers, and the first parse error (None when there was none).

    Inductor writes the kernels first, then `async_compile.wait(globals())`, then the wrapper code that calls
    them. Only the kernel part is needed as a tree; the wrapper (most of the parse time) is only compiled, so
    damage there is still reported. When the kernel part does not parse, `parse_salvaging` takes over.
    """
    wrapper = _WRAPPER_START.search(text)
    if wrapper and not _TRITON_CALL.search(text, wrapper.start()):  # every kernel is before the wrapper
        try:
            tree = ast.parse(text[: wrapper.start()], filename=filename)
        except (SyntaxError, ValueError, RecursionError):
            pass  # damage in the kernel part (or a `wait` line inside a string): the careful path below
        else:
            error = compile_error(text, wrapper.start(), filename)
            return tree, len(text) if error is None else wrapper.start(), error
    return parse_salvaging(text, filename)


def compile_error(text: str, start: int, filename: str) -> Optional[str]:
    """Why text[start:] (whole lines, at module level) does not compile, or None. Compiling runs nothing."""
    padding = "\n" * text.count("\n", 0, start)  # so that error line numbers are those of the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning about escapes and the like in code we only check
        try:
            compile(padding + text[start:], filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            return _describe(exc)
    return None


def parse_salvaging(text: str, filename: str = "<output_code>") -> tuple[ast.Module, int, Optional[str]]:
    """Parse `text`; if it does not parse, cut it before the offending line until it does.

    Returns the tree, how many characters of `text` it covers (len(text) when the whole file parsed) and the
    first parse error (None when there was none).
    """
    kept, first_error = len(text), None
    for _ in range(MAX_SALVAGE_CUTS):
        try:
            return ast.parse(text[:kept], filename=filename), kept, first_error
        except (SyntaxError, ValueError, RecursionError) as exc:  # ValueError: NUL bytes (Python < 3.12)
            first_error = first_error or _describe(exc)
            kept = _cut_before_error(text, kept, exc)
    return ast.parse(""), 0, first_error


def _describe(exc: Exception) -> str:
    where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
    return f"{type(exc).__name__}: {getattr(exc, 'msg', None) or exc}{where}"


def _cut_before_error(text: str, kept: int, exc: Exception) -> int:
    """Where to cut `text[:kept]` so that the line the parser failed on (or the last line) goes."""
    nul = text.find("\0", 0, kept)
    if nul >= 0:
        return text.rfind("\n", 0, nul) + 1
    cut = _offset_of_line(text[:kept], (getattr(exc, "lineno", None) or 1) - 1)
    if cut >= kept:  # the error is on the last line: drop that line
        cut = text.rfind("\n", 0, max(0, kept - 1)) + 1
    return cut


def _lines_of(pattern: re.Pattern, text: str, end: int) -> list[int]:
    """1-based line numbers of the matches of `pattern` in text[:end], ascending."""
    numbers, line, position = [], 1, 0
    for match in pattern.finditer(text, 0, end):
        line += text.count("\n", position, match.start())
        position = match.start()
        numbers.append(line)
    return numbers


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split where Python's parser splits them (str.splitlines also splits on form
    feeds and other separators, which would shift ast line numbers)."""
    return [line for line in re.split(r"(?<=\n)", text) if line]


def _offset_of_line(text: str, index: int) -> int:
    """Character offset where line number `index` (0-based) starts in `text`."""
    offset = 0
    for _ in range(index):
        found = text.find("\n", offset)
        if found < 0:
            return len(text)
        offset = found + 1
    return offset


def _triton_calls(statement: ast.stmt) -> list[ast.Call]:
    """The `async_compile.triton(...)` calls inside one top-level statement, in source order."""
    calls = [
        node
        for node in ast.walk(statement)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "triton"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "async_compile"
    ]
    return sorted(calls, key=lambda call: (call.lineno, call.col_offset))


def _argument(call: ast.Call, position: int, keyword: str) -> Optional[ast.expr]:
    if len(call.args) > position:
        return call.args[position]
    return next((kw.value for kw in call.keywords if kw.arg == keyword), None)


def _string(node: Optional[ast.expr]) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _embedded_kernel(call: ast.Call, statement: ast.stmt, lines: list[str]) -> EmbeddedKernel:
    name_node, source_node = _argument(call, 0, "kernel_name"), _argument(call, 1, "source_code")
    if source_node is None and len(call.args) == 1 and not call.keywords:
        name_node, source_node = None, call.args[0]  # PyTorch 2.0: async_compile.triton(source) only
    passed, source = _string(name_node), _string(source_node)
    variable = None
    if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
        variable = statement.targets[0].id
    # Old Inductor passed no name, or the placeholder "triton_" (its kernels were all `def triton_`): the
    # variable (`triton__0`, `triton_poi_fused_add_0`) is the name that tells them apart.
    name = passed if passed and passed != PLACEHOLDER_NAME else variable or passed
    kernel = EmbeddedKernel(
        name=name or f"kernel_line_{call.lineno}",
        source=source,
        variable=variable,
        lineno=statement.lineno,
        comment=comment_above(lines, statement.lineno),
        name_passed=passed,
    )
    if source is None:
        kernel.source_from = "missing"
    return kernel


def comment_above(lines: list[str], lineno: int) -> str:
    """The block of `#` lines directly above 1-based line `lineno` (no blank line in between), as written."""
    index = lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#"):
        index -= 1
    return "\n".join(lines[index + 1 : lineno - 1])


def read_fallback_source(kernel: EmbeddedKernel, root: Path) -> Optional[str]:
    """The kernel's module text from the file named in its `# kernel path:` comment, if that file lies inside
    `root` (the debug folder being read).

    The comment is input like the rest: a walled module can write its own output_code.py naming any host file.
    Only a regular `.py` file (no link on the way) of at most MAX_KERNEL_FILE_BYTES below `root` is read; Inductor's
    own cache (/tmp/torchinductor_<user>) is outside every debug folder, so real kernels never come this way."""
    named = parse_comment(kernel.comment).get("kernel_path") or ""
    try:
        path, base = Path(named), Path(root).resolve()
        if not path.is_absolute():
            return None
        real = path.resolve()
        if real != path or base not in real.parents or path.suffix != ".py" or not path.is_file():
            return None  # a link somewhere on the way, or a file outside the folder being read
        if path.stat().st_size > MAX_KERNEL_FILE_BYTES:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def parse_comment(comment: str) -> dict:
    """Provenance from Inductor's comment block above a kernel.

    Returns a dict with (when present) kernel_path, original_path, source_nodes (list), aten_ops (list),
    source_node_mapping ({node: [aten nodes]}) and graph_fragment (the fragment's lines, `#` and indent removed).
    """
    info: dict = {}
    section = None
    for line in comment.splitlines():
        header = _HEADER_VALUE.match(line)
        nodes = _SOURCE_NODES.match(line)
        if header:
            info[header["key"].replace(" ", "_").lower()] = header["value"]
            section = None
        elif nodes:
            info["source_nodes"] = _split_list(nodes["nodes"])
            info["aten_ops"] = _split_list(nodes["aten"])
            section = None
        elif re.match(r"^#\s*Source node to ATen node mapping:", line):
            section = "source_node_mapping"
            info[section] = {}
        elif re.match(r"^#\s*Graph fragment:", line):
            section = "graph_fragment"
            info[section] = []
        elif section == "source_node_mapping" and "=>" in line:
            node, _, targets = line.lstrip("#").strip().partition("=>")
            info[section][node.strip()] = _split_list(targets)
        elif section == "graph_fragment":
            info[section].append(line.lstrip("#").strip())
    if "graph_fragment" in info:
        info["graph_fragment"] = "\n".join(info["graph_fragment"])
    return info


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
