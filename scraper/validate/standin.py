"""A minimal stand-in for the Inductor stage (contract 2), used only by this package's tests and benchmark.

It cuts the `async_compile.triton('<name>', '''<code>''')` strings out of an `output_code.py` with `ast`, removes the
`@triton_heuristics.*(...)` decorator and `triton_helpers.set_driver_to_gpu()` and keeps the decorator text, the
signature and constants as contract 2 describes. The real stage (scraper.inductor) supersedes it once it lands:
`inductor_records()` uses scraper.inductor when that module is importable and offers `records_from_output_code`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from scraper.records import KernelRecord

_KIND = {"pointwise": "pointwise", "reduction": "reduction", "persistent_reduction": "persistent_reduction",
         "template": "template", "user_autotune": "user_defined", "foreach": "foreach"}


def _literal(node: ast.AST):
    """A literal decorator argument; `DeviceProperties(...)` calls become dicts, `set()` an empty list."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "DeviceProperties":
            return {kw.arg: _literal(kw.value) for kw in node.keywords}
        if node.func.id == "set" and not node.args:
            return []
    if isinstance(node, ast.Dict):
        return {_key(_literal(k)): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Attribute):
        return ast.unparse(node)  # TileHint.SQUARE and friends
    if isinstance(node, ast.Name):
        return node.id  # __file__
    return ast.literal_eval(node)


def _key(key):
    return str(tuple(key)) if isinstance(key, list) else key  # (0,) keys of triton_meta["configs"] -> "(0,)"


def clean_kernel(text: str, name: str) -> tuple[str, dict]:
    """(clean module, launch dict) for one embedded kernel text."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    drop: list[tuple[int, int]] = []
    launch: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and "set_driver_to_gpu" in ast.unparse(node):
            drop.append((node.lineno, node.end_lineno))
        if isinstance(node, ast.FunctionDef) and node.name == name:
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func).startswith("triton_heuristics."):
                    kwargs = {kw.arg: _literal(kw.value) for kw in deco.keywords if kw.arg}
                    launch = {"heuristic": deco.func.attr, "decorator": "@" + ast.get_source_segment(text, deco),
                              "size_hints": kwargs.pop("size_hints", None), **kwargs}
                    drop.append((deco.lineno, deco.end_lineno))
    for start, end in sorted(drop, reverse=True):
        del lines[start - 1:end]
    return "".join(lines), launch


def records_from_output_code(path: Path) -> list[KernelRecord]:
    """One record per `async_compile.triton(...)` call of an output_code.py."""
    text = Path(path).read_text()
    records = []
    for node in ast.walk(ast.parse(text)):
        if (isinstance(node, ast.Call) and ast.unparse(node.func) == "async_compile.triton"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
            name, original = node.args[0].value, node.args[1].value
            code, launch = clean_kernel(original, name)
            meta = launch.get("triton_meta") or {}
            records.append(KernelRecord(
                name=name, code=code, source="inductor", original=original, launch=launch,
                kind=_KIND.get(launch.get("heuristic"), launch.get("heuristic")),
                signature=meta.get("signature"), constants=meta.get("constants"),
                output_code=str(path), graph=Path(path).parent.name))
    return records


def inductor_records(root: Path) -> list[KernelRecord]:
    """Records for every output_code.py under `root` (sorted by path)."""
    records = []
    for path in sorted(Path(root).rglob("output_code.py")):
        records.extend(records_from_output_code(path))
    return records
