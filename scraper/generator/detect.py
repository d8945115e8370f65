"""Find `@triton.jit` functions in Python source, whatever the spelling. The one implementation of the test.

A function is a jit kernel when one of its decorators resolves, through the module's own imports, to triton's
`jit`: `@triton.jit`, `@triton.jit(...)`, `import triton as tr` + `@tr.jit`, `from triton import jit [as j]`,
`from triton.runtime.jit import jit`, `jit = triton.jit`, `from triton import *`,
`jit_fn = functools.partial(triton.jit, ...)`. A `@jit` from numba or jax does not count. Aliases defined in
another file of the repository and imported (`from .u import my_jit`) are resolved by the repository pass
(`closure.RepoIndex.triton_aliases`) and passed in as `aliases`; a file alone cannot know them. Kernels under
`@triton.autotune(...)`, `@triton.heuristics(...)` or a project's own decorator (`@libentry()`) are found the
same way, and so are methods and nested functions (`nested=True`). The module-level call form
`kernel = triton.jit(fn)` marks `fn` too. Source is parsed with `ast` (salvaging top-level blocks of files the
running Python cannot parse) and never executed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from scraper.generator.parse import ParsedModule, line_bytes, parse_source, source_segment

# Fully qualified names that are triton's decorators (re-exports included).
JIT_NAMES = frozenset({"triton.jit", "triton.runtime.jit", "triton.runtime.jit.jit", "triton.runtime.jit.JITFunction"})
AUTOTUNE_NAMES = frozenset({"triton.autotune", "triton.runtime.autotune", "triton.runtime.autotuner.autotune"})
HEURISTICS_NAMES = frozenset({"triton.heuristics", "triton.runtime.heuristics", "triton.runtime.autotuner.heuristics"})
_EXPORTED = {"jit": "triton.jit", "autotune": "triton.autotune", "heuristics": "triton.heuristics"}
DECORATOR_NAMES = JIT_NAMES | AUTOTUNE_NAMES | HEURISTICS_NAMES


@dataclass
class JitFunction:
    """One jit function found in a file."""

    name: str
    qualname: str  # "kernel", "Class.kernel", "outer.<locals>.kernel"
    lineno: int  # first line, decorators included
    end_lineno: int
    decorators: list  # source text of each decorator, outermost first
    source: str  # exact text, decorators included (from the first decorator's column)
    nested: bool  # inside a class or a function
    kind: str = "jit"  # outermost triton decorator: "jit" | "autotune" | "heuristics"
    path: str = ""
    parent: str = "module"  # "module" | "class" | "function"
    via_call: bool = False  # marked by `x = triton.jit(fn)`, not by a decorator
    node: Optional[ast.AST] = field(default=None, repr=False, compare=False)


_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def iter_statements(body):
    """Every statement in `body` and in the statement lists nested in it (function bodies included), without
    visiting expressions: imports can only be statements, and this is ~10x cheaper than ast.walk."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        for name in _STATEMENT_LISTS:
            children = getattr(node, name, None)
            if children:
                stack.extend(reversed(children))


class TritonNames:
    """What each name bound by a module's imports means, as a dotted triton name (or nothing)."""

    def __init__(self, tree: ast.AST, aliases: Optional[dict] = None) -> None:
        self.names: dict[str, str] = {}  # local name -> fully qualified name
        self.star_triton = False
        for node in iter_statements(getattr(tree, "body", [])):
            if isinstance(node, ast.Import):
                self._add_import(node)
            elif isinstance(node, ast.ImportFrom):
                self._add_import_from(node)
        # names the file imports from repository modules that are aliases there (`from .u import my_jit`)
        self.names.update(aliases or {})
        for node in getattr(tree, "body", []):
            self._add_assignment_alias(node)

    def _add_import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.names[alias.asname] = alias.name
            else:  # `import triton.language` binds `triton`
                top = alias.name.split(".")[0]
                self.names.setdefault(top, top)

    def _add_import_from(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        for alias in node.names:
            if alias.name == "*":
                self.star_triton |= node.module.split(".")[0] == "triton"
                continue
            self.names[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _add_assignment_alias(self, node: ast.AST) -> None:
        # `jit = triton.jit` / `autotune = triton.autotune` at module level
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            resolved = self.resolve(node.value)
            if resolved == "functools.partial" and node.value.args:  # `functools.partial(triton.jit, ...)`
                resolved = self.resolve_name(node.value.args[0])
            if resolved in DECORATOR_NAMES:
                self.names[node.targets[0].id] = resolved

    def resolve_name(self, expr: ast.AST) -> Optional[str]:
        """Like `resolve`, for a Name/Attribute chain only (not a call)."""
        return None if isinstance(expr, ast.Call) else self.resolve(expr)

    def aliases(self) -> dict[str, str]:
        """The names bound to one of triton's decorators ({local name: fully qualified name}), own imports,
        assignments and `aliases` given included: what other files of the repository can import from here."""
        return {name: full for name, full in self.names.items() if full in DECORATOR_NAMES}

    def resolve(self, expr: ast.AST) -> Optional[str]:
        """Dotted fully qualified name of a Name/Attribute chain (a call's callee for a Call), else None."""
        if isinstance(expr, ast.Call):
            expr = expr.func
        parts = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        base = self.names.get(expr.id)
        if base is None:
            if self.star_triton and expr.id in _EXPORTED:
                base = _EXPORTED[expr.id]
            elif expr.id == "triton":  # used without a visible import (star import from a sibling module)
                base = "triton"
            else:
                return None
        return ".".join([base] + parts[::-1])

    def triton_role(self, decorator: ast.AST) -> Optional[str]:
        """"jit", "autotune", "heuristics" when `decorator` is that triton decorator, else None."""
        resolved = self.resolve(decorator)
        if resolved in JIT_NAMES:
            return "jit"
        if resolved in AUTOTUNE_NAMES:
            return "autotune"
        if resolved in HEURISTICS_NAMES:
            return "heuristics"
        return None


def decorator_roles(func: ast.AST, names: TritonNames) -> list[Optional[str]]:
    """The triton role of each decorator of `func` (None for others), outermost first."""
    return [names.triton_role(d) for d in getattr(func, "decorator_list", [])]


def is_jit_function(func: ast.AST, names: TritonNames) -> bool:
    """True when a decorator of `func` resolves to triton's jit."""
    return "jit" in decorator_roles(func, names)


def first_line(func: ast.AST) -> int:
    """First line of a def including its decorators."""
    return min([func.lineno] + [d.lineno for d in func.decorator_list])


def function_source(text: str, func: ast.AST, first_decorator: int = 0) -> str:
    """Exact source of a def/class from its `first_decorator`-th decorator's `@` (all of them by default)."""
    decorators = func.decorator_list[first_decorator:]
    if not decorators:
        if not first_decorator:
            return source_segment(text, func) or ""
        decorators = None
    span = ast.Module(body=[], type_ignores=[])
    if decorators:
        span.lineno, span.col_offset = decorators[0].lineno, _at_column(text, decorators[0])
    else:
        span.lineno, span.col_offset = _def_start(text, func)
    span.end_lineno, span.end_col_offset = func.end_lineno, func.end_col_offset
    return source_segment(text, span) or ""


def _at_column(text: str, decorator: ast.AST) -> int:
    """Byte column of the `@` before a decorator expression (`@ triton.jit` has a space in between)."""
    line = line_bytes(text, decorator.lineno)
    at = line.rfind(b"@", 0, decorator.col_offset)
    return at if at >= 0 else max(decorator.col_offset - 1, 0)


def _def_start(text: str, func: ast.AST) -> tuple[int, int]:
    """(line, byte column) where `def`/`async def`/`class` starts (func.lineno/col_offset in Python >= 3.8)."""
    return func.lineno, func.col_offset


def _walk_defs(body, prefix="", parent="module"):
    """Yield (function node, qualname, parent kind) for every def in `body`, nested ones included."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            qualname = f"{prefix}{node.name}"
            yield node, qualname, parent
            yield from _walk_defs(node.body, f"{qualname}.<locals>.", "function")
        elif isinstance(node, ast.ClassDef):
            yield from _walk_defs(node.body, f"{prefix}{node.name}.", "class")
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)) or type(node).__name__ == "TryStar":
            # defs under `if HAS_TRITON:` / `try:` are still at this scope
            for child in ("body", "orelse", "finalbody"):
                yield from _walk_defs(getattr(node, child, []), prefix, parent)
            for handler in getattr(node, "handlers", []):
                yield from _walk_defs(handler.body, prefix, parent)


def _called_by_jit(tree: ast.Module, names: TritonNames) -> set[str]:
    """Names of module-level functions wrapped as `x = triton.jit(fn)` (or `triton.jit(...)(fn)`)."""
    marked = set()
    for statement in tree.body:  # module-level statements only: `kernel = triton.jit(fn)`
        value = getattr(statement, "value", None)
        if not isinstance(value, ast.Call) or not value.args or not isinstance(value.args[0], ast.Name):
            continue
        callee = value.func.func if isinstance(value.func, ast.Call) else value.func
        if names.triton_role(callee) == "jit":
            marked.add(value.args[0].id)
    return marked


def find_kernels_in_tree(parsed: ParsedModule, path: str = "", aliases: Optional[dict] = None) -> list[JitFunction]:
    """Every jit function of an already parsed module, in source order. `aliases` ({local name: "triton.jit"
    ...}) adds names the file imports from other files of its repository that are aliases of triton's
    decorators (see closure.RepoIndex.triton_aliases)."""
    names = TritonNames(parsed.tree, aliases)
    via_call = _called_by_jit(parsed.tree, names)
    found = []
    for func, qualname, parent in _walk_defs(parsed.tree.body):
        roles = decorator_roles(func, names)
        called = parent == "module" and func.name in via_call
        if "jit" not in roles and not called:
            continue
        kind = next((role for role in roles if role), "jit")
        found.append(JitFunction(
            name=func.name, qualname=qualname, lineno=first_line(func), end_lineno=func.end_lineno,
            decorators=[source_segment(parsed.text, d) or "" for d in func.decorator_list],
            source=function_source(parsed.text, func), nested=parent != "module", kind=kind, path=path,
            parent=parent, via_call="jit" not in roles, node=func,
        ))
    return found


def find_kernels_in_source(text: str, path: str = "", aliases: Optional[dict] = None) -> list[JitFunction]:
    """Every jit function defined in `text` (a Python file's content), in source order. Never executes it.
    `aliases`: as for find_kernels_in_tree (without it, only the file's own spellings count)."""
    return find_kernels_in_tree(parse_source(text, path), path, aliases)
