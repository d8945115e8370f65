"""One embedded Inductor kernel module: its kind, its launch metadata and its clean, importable form.

The embedded module is what Inductor compiles: imports, `triton_helpers.set_driver_to_gpu()` (which raises
"Could not find an active GPU backend" on a machine without a GPU) and one function under two decorators,
`@triton_heuristics.<heuristic>(size_hints=..., triton_meta=..., inductor_meta=..., ...)` over `@triton.jit`.
The clean form drops the heuristics decorator and the GPU-only statements by cutting their lines out of the
text, so everything else (the body, its comments and formatting) stays exactly as Inductor wrote it; the
decorator's arguments are kept on the record as plain JSON (`launch`).
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from typing import Any, Optional

from scraper.generator.detect import find_kernel_function
from scraper.inductor.output_code import split_lines

log = logging.getLogger(__name__)

# Heuristic decorator (torch._inductor.runtime.triton_heuristics.<name>) -> record kind.
HEURISTIC_KINDS = {
    "pointwise": "pointwise",
    "reduction": "reduction",
    "persistent_reduction": "persistent_reduction",
    "cooperative_reduction": "cooperative_reduction",
    "template": "template",
    "user_autotune": "user_defined",
    "foreach": "foreach",
    "split_scan": "split_scan",
    "fixed_config": "fixed_config",
    "pointwise_with_reduction": "combo",
}
# Inductor names kernels triton_<first 3 letters of the category>_... (codegen/triton.py, wrapper_benchmark.py).
NAME_PREFIX_KINDS = {
    "triton_poi_": "pointwise",
    "triton_red_": "reduction",
    "triton_per_": "persistent_reduction",
    "triton_tem_": "template",
    "triton_for_": "foreach",
    "triton_spl_": "split_scan",
}
# Module-level calls that need a GPU (or a GPU driver) when the module is imported.
GPU_ONLY_CALLS = frozenset({"set_driver_to_gpu"})
# Decorator keyword arguments that say nothing about the kernel (filename=__file__).
IGNORED_DECORATOR_KWARGS = frozenset({"filename"})


class KernelModuleError(ValueError):
    """The embedded module text is not a usable kernel module (does not parse, no kernel function...)."""


@dataclass
class CleanKernel:
    """What `clean_kernel` makes of one embedded module."""

    code: str  # the clean module
    kind: str
    launch: Optional[dict]  # None when there was no heuristics decorator
    signature: Optional[dict]
    constants: Optional[dict]
    dropped_statements: list  # source text of the GPU-only module statements that were removed


def clean_kernel(module_text: str, name: str) -> CleanKernel:
    """Split an embedded kernel module into its clean code, kind and launch metadata.

    Raises KernelModuleError when the text does not parse or defines no function called `name` (or, failing
    that, no @triton.jit function at all).
    """
    try:
        tree = ast.parse(module_text)
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise KernelModuleError(f"kernel module does not parse: {exc}") from exc
    try:
        function = find_kernel_function(tree, name)
    except ValueError as exc:
        raise KernelModuleError(str(exc)) from exc
    heuristic = find_heuristics_decorator(function)
    gpu_only = [stmt for stmt in tree.body if is_gpu_only_statement(stmt)]
    lines = split_lines(module_text)
    cuts = [_span(lines, node) for node in gpu_only]
    launch = None
    if heuristic is not None:
        cuts.append(_span(lines, heuristic, decorator=True))
        launch = launch_metadata(segment(lines, cuts[-1]), heuristic)
    code = remove_spans(lines, cuts).lstrip("\n")
    # `meta=` is what PyTorch 2.0/2.1 called triton_meta.
    triton_meta = (launch or {}).get("triton_meta") or (launch or {}).get("meta") or {}
    if not isinstance(triton_meta, dict):  # not a literal dict: nothing to read from it
        triton_meta = {}
    return CleanKernel(
        code=code,
        kind=classify(launch["heuristic"] if launch else None, name, launch),
        launch=launch,
        signature=triton_meta.get("signature"),
        constants=triton_meta.get("constants"),
        dropped_statements=[segment(lines, span) for span in cuts[: len(gpu_only)]],
    )


def classify(heuristic: Optional[str], name: str, launch: Optional[dict] = None) -> str:
    """Kernel kind: "combo" for Inductor's combo kernels (several fused kernels in one: `combo_grid_meta` in
    inductor_meta) unless they are foreach kernels; else from a known heuristics decorator; else from Inductor's
    name prefix (triton_poi_ ...); else the name of an unknown heuristics decorator; else "user_defined" (a plain
    @triton.jit kernel without a decorator)."""
    inductor_meta = (launch or {}).get("inductor_meta")
    if heuristic != "foreach" and isinstance(inductor_meta, dict) and "combo_grid_meta" in inductor_meta:
        return "combo"
    if heuristic in HEURISTIC_KINDS:
        return HEURISTIC_KINDS[heuristic]
    for prefix, kind in NAME_PREFIX_KINDS.items():
        if name.startswith(prefix):
            return kind
    return heuristic or "user_defined"


def find_heuristics_decorator(function: ast.FunctionDef) -> Optional[ast.expr]:
    """The `@triton_heuristics.<name>(...)` decorator of `function` (or, as PyTorch 2.0/2.1 wrote it, a bare
    `@pointwise(...)`, `@reduction(...)`, ... imported from Inductor), if any."""
    for decorator in function.decorator_list:
        callee = _dotted(_callee(decorator))
        if callee.split(".")[0] == "triton_heuristics" or callee in HEURISTIC_KINDS:
            return decorator
    return None


def is_gpu_only_statement(stmt: ast.stmt) -> bool:
    """A module-level call such as `triton_helpers.set_driver_to_gpu()` that fails without a GPU."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    return _dotted(stmt.value.func).rsplit(".", 1)[-1] in GPU_ONLY_CALLS


def launch_metadata(decorator_text: str, decorator: ast.expr) -> dict:
    """The heuristics decorator as JSON: heuristic name, exact decorator text (from its `@`) and its keyword
    arguments."""
    launch: dict = {
        "heuristic": _dotted(_callee(decorator)).rsplit(".", 1)[-1],
        "decorator": decorator_text,
        "size_hints": None,
    }
    if isinstance(decorator, ast.Call):
        if decorator.args:
            launch["args"] = [to_json(arg) for arg in decorator.args]
        for keyword in decorator.keywords:
            if keyword.arg and keyword.arg not in IGNORED_DECORATOR_KWARGS:
                launch[keyword.arg] = to_json(keyword.value)
    return launch


def to_json(node: ast.expr) -> Any:
    """A decorator argument as plain JSON, without evaluating anything.

    Literals stay literals; tuples and sets become lists, `set()` an empty list; dict keys that are not strings
    become their repr (`(0,)` -> "(0,)") so the value survives a JSON round trip unchanged; a call with only
    keyword arguments (`DeviceProperties(type='cuda', ...)`) becomes the dict of its arguments; anything else
    (`ReductionHint.INNER`, names) becomes its source text.
    """
    if isinstance(node, ast.Constant):
        plain = node.value is None or isinstance(node.value, (str, int, float, bool))
        return node.value if plain else ast.unparse(node)  # bytes, complex, ...: their source text
    if isinstance(node, ast.Dict):
        return {_json_key(k): to_json(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [to_json(item) for item in node.elts]
    if isinstance(node, ast.Set):
        return sorted((to_json(item) for item in node.elts), key=repr)
    if isinstance(node, ast.Call) and not node.args and all(kw.arg for kw in node.keywords):
        if not node.keywords and _dotted(node.func) in ("set", "list", "tuple", "frozenset"):
            return []
        return {kw.arg: to_json(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        if isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
            return -node.operand.value
    return ast.unparse(node)


def _json_key(node: ast.expr) -> str:
    value = to_json(node)
    return value if isinstance(value, str) else repr(_as_tuple(value))


def _as_tuple(value: Any) -> Any:
    """Lists back to tuples, so a key written `(0,)` keeps its Python spelling."""
    return tuple(_as_tuple(item) for item in value) if isinstance(value, list) else value


def _callee(decorator: ast.expr) -> ast.expr:
    return decorator.func if isinstance(decorator, ast.Call) else decorator


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _span(lines: list[str], node: ast.AST, decorator: bool = False) -> tuple[int, int, int, int]:
    """(first line, first col, last line, end col): 1-based lines, columns in characters (ast counts UTF-8
    bytes); a decorator's span starts at its `@`."""
    col = _char_col(lines[node.lineno - 1], node.col_offset)
    if decorator:
        col = lines[node.lineno - 1][:col].rfind("@")
    return node.lineno, col, node.end_lineno, _char_col(lines[node.end_lineno - 1], node.end_col_offset)


def segment(lines: list[str], span: tuple[int, int, int, int]) -> str:
    """The exact text of a span (as ast.get_source_segment, without re-splitting the text every time)."""
    first, col, last, end_col = span
    if first == last:
        return lines[first - 1][col:end_col]
    return lines[first - 1][col:] + "".join(lines[first : last - 1]) + lines[last - 1][:end_col]


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def remove_spans(lines: list[str], spans: list[tuple[int, int, int, int]]) -> str:
    """The text of `lines` without the given spans. A span alone on its lines takes those whole lines with it;
    one sharing a line with other code (`a; b`) is replaced by `pass` so the code around it stays valid."""
    lines = list(lines)
    for first, col, last, end_col in sorted(spans, reverse=True):
        head, tail = lines[first - 1][:col], lines[last - 1][end_col:]
        if not head.strip() and (not tail.strip() or tail.strip().startswith("#")):
            del lines[first - 1 : last]
        else:
            lines[first - 1 : last] = [head + "pass" + tail]
    return "".join(lines)
