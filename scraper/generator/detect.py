"""Find `@triton.jit` functions in Python source, whatever the spelling. The one implementation of the test.

A function is a jit kernel when one of its decorators resolves, through the module's own imports, to triton's
`jit`: `@triton.jit`, `@triton.jit(...)`, `import triton as tr` + `@tr.jit`, `from triton import jit [as j]`,
`from triton.runtime.jit import jit`, `jit = triton.jit`, `from triton import *`,
`jit_fn = functools.partial(triton.jit, ...)`. A `@jit` from numba or jax does not count. Aliases defined in
another file of the repository and imported (`from .u import my_jit`) are resolved by the repository pass
(`RepoAliases`, below) and passed in as `aliases`; a file alone cannot know them. Kernels under
`@triton.autotune(...)`, `@triton.heuristics(...)` or a project's own decorator (`@libentry()`) are found the
same way, and so are methods and nested functions (`nested=True`). The module-level call form
`kernel = triton.jit(fn)` marks `fn` too. Source is parsed with `ast` (salvaging top-level blocks of files the
running Python cannot parse) and never executed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Optional

from scraper.generator.parse import ParsedModule, parse_source, source_segment
from scraper.generator.segments import function_source
from scraper.generator.syntax import FUNCTIONS, first_line, import_statements, walk_definitions

# Fully qualified names that are triton's decorators (re-exports included).
JIT_NAMES = frozenset({"triton.jit", "triton.runtime.jit", "triton.runtime.jit.jit", "triton.runtime.jit.JITFunction"})
AUTOTUNE_NAMES = frozenset({"triton.autotune", "triton.runtime.autotune", "triton.runtime.autotuner.autotune"})
HEURISTICS_NAMES = frozenset({"triton.heuristics", "triton.runtime.heuristics", "triton.runtime.autotuner.heuristics"})
# Gluon, Triton's lower-level dialect (`from triton.experimental import gluon` + `@gluon.jit`).
GLUON_JIT_NAMES = frozenset({"triton.experimental.gluon.jit", "triton.experimental.gluon._runtime.jit",
                             "triton.experimental.gluon._runtime.jit.jit"})
_EXPORTED = {"jit": "triton.jit", "autotune": "triton.autotune", "heuristics": "triton.heuristics"}
DECORATOR_NAMES = JIT_NAMES | GLUON_JIT_NAMES | AUTOTUNE_NAMES | HEURISTICS_NAMES


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
    dialect: str = "triton"  # "triton" | "gluon" (`@gluon.jit`)
    node: Optional[ast.AST] = field(default=None, repr=False, compare=False)


class TritonNames:
    """What each name bound by a module's imports means, as a dotted triton name (or nothing)."""

    def __init__(self, tree: ast.AST, aliases: Optional[dict] = None) -> None:
        self.names: dict[str, str] = {}  # local name -> fully qualified name
        self.star_triton = False
        for node in import_statements(tree) if hasattr(tree, "body") else []:
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

    def dialect(self, func: ast.AST) -> str:
        """"gluon" when a decorator of `func` is gluon's jit, else "triton"."""
        gluon = any(self.resolve(d) in GLUON_JIT_NAMES for d in getattr(func, "decorator_list", []))
        return "gluon" if gluon else "triton"

    def triton_role(self, decorator: ast.AST) -> Optional[str]:
        """"jit", "autotune", "heuristics" when `decorator` is that triton decorator, else None."""
        resolved = self.resolve(decorator)
        if resolved in JIT_NAMES or resolved in GLUON_JIT_NAMES:
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


def find_kernel_function(tree: ast.Module, name: str) -> ast.FunctionDef:
    """The top-level function called `name` of a kernel module, else its last top-level @triton.jit function;
    ValueError when it has neither."""
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    for function in functions:
        if function.name == name:
            return function
    names = TritonNames(tree)
    jitted = [function for function in functions if is_jit_function(function, names)]
    if jitted:
        return jitted[-1]
    raise ValueError(f"no function {name!r} and no @triton.jit function in the kernel module")


def foreign_decorator_count(node: ast.AST, names: TritonNames, start: int = 0) -> int:
    """How many outermost decorators of a def, from the `start`-th on, are not triton's (a project's
    `@libentry()`); 0 for a class decorated by nothing else."""
    count = 0
    for decorator in node.decorator_list[start:]:
        if names.triton_role(decorator) is not None:
            break
        count += 1
    return count if count < len(node.decorator_list) - start or not isinstance(node, ast.ClassDef) else 0


def _called_by_jit(tree: ast.Module, names: TritonNames) -> dict[str, str]:
    """{name: dialect} of module-level functions wrapped as `x = triton.jit(fn)` (or `triton.jit(...)(fn)`)."""
    marked = {}
    for statement in tree.body:  # module-level statements only: `kernel = triton.jit(fn)`
        value = getattr(statement, "value", None)
        if not isinstance(value, ast.Call) or not value.args or not isinstance(value.args[0], ast.Name):
            continue
        callee = value.func.func if isinstance(value.func, ast.Call) else value.func
        if names.triton_role(callee) == "jit":
            marked[value.args[0].id] = "gluon" if names.resolve(callee) in GLUON_JIT_NAMES else "triton"
    return marked


def find_kernels_in_tree(parsed: ParsedModule, path: str = "", aliases: Optional[dict] = None,
                         names: Optional[TritonNames] = None) -> list[JitFunction]:
    """Every jit function of an already parsed module, in source order. `aliases` ({local name: "triton.jit"
    ...}) adds names the file imports from other files of its repository that are aliases of triton's
    decorators (see RepoAliases.triton_aliases); `names`, the file's TritonNames when the caller has them."""
    names = names or TritonNames(parsed.tree, aliases)
    via_call = _called_by_jit(parsed.tree, names)
    found = []
    for func, qualname, parent, _ in walk_definitions(parsed.tree.body):
        if not isinstance(func, FUNCTIONS):
            continue
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
            dialect=names.dialect(func) if "jit" in roles else via_call[func.name],
        ))
    return found


def find_kernels_in_source(text: str, path: str = "", aliases: Optional[dict] = None) -> list[JitFunction]:
    """Every jit function defined in `text` (a Python file's content), in source order. Never executes it.
    `aliases`: as for find_kernels_in_tree (without it, only the file's own spellings count)."""
    return find_kernels_in_tree(parse_source(text, path), path, aliases)


# `@my_jit`, `@ my_jit.x(...)` and a module-level `k = my_jit(fn)`: the names that can make a def a kernel
_ROOT_NAMES = re.compile(r"^[ \t]*@[ \t]*(\w+)|^\w+[ \t]*=[ \t]*(\w+)[ \t]*[(.]", re.M)
# a line that can bind an alias of triton's decorators: `x = ...jit/autotune/heuristics...` or `from triton... import`
_MAY_ALIAS = re.compile(r"^[ \t]*(?:\w+[ \t]*(?::[^=\n]*)?=[^=\n]*\b(?:jit|autotune|heuristics|partial)\b"
                        r"|from[ \t]+triton\b)", re.M)


def decorator_roots(text: str) -> set[str]:
    """Names at the root of the decorators (`my_jit` of `@my_jit(...)`, `u` of `@u.jit`) and of module-level
    calls (`k = my_jit(fn)`) of a file: a cheap superset of the names that can make a def a jit kernel."""
    return {a or b for a, b in _ROOT_NAMES.findall(text)}


class RepoAliases:
    """Aliases of triton's decorators across the files of one repository (`my_jit = triton.jit` in u.py,
    `from .u import my_jit` + `@my_jit` in k.py). `index` is a repository index (repoindex.RepoIndex: `texts`,
    `module(path)`, `find_module(...)`, `is_allowed(name)`); results are cached per file."""

    def __init__(self, index) -> None:
        self.index = index
        self._own: dict[str, dict] = {}  # path -> aliases the file itself binds
        self._imported: dict[str, dict] = {}  # path -> triton_aliases(path)
        self._import_froms: dict[str, list] = {}  # path -> its ImportFrom statements that may name the repository
        self._names: dict[str, TritonNames] = {}  # path -> names(path)

    def names(self, path: str) -> "TritonNames":
        """The TritonNames of file `path` with the aliases it imports from the repository (cached)."""
        if path not in self._names:
            self._names[path] = TritonNames(self.index.module(path).parsed.tree, self.triton_aliases(path))
        return self._names[path]

    def triton_aliases(self, path: str) -> dict[str, str]:
        """{local name: "triton.jit" | "triton.autotune" | "triton.heuristics"} for the names file `path` uses
        as decorators (or calls at module level) and imports from another file of the repository where they are
        aliases of triton's decorators: `from .u import my_jit` with `my_jit = triton.jit` (or
        `from triton import jit as my_jit`, or `functools.partial(triton.jit, ...)`) in u.py, through
        re-exports (`__init__.py`) and star imports. The `aliases` argument of find_kernels_in_tree.
        Only files whose text holds the name are parsed."""
        if path not in self._imported:
            module = self.index.module(path)
            found = {}
            if module is not None and self._repository_import_froms(module):
                found = self._imported_aliases(module, decorator_roots(module.text), {path})
            self._imported[path] = found
        return self._imported[path]

    def own_triton_aliases(self, path: str) -> dict[str, str]:
        """{name: triton decorator} for the aliases of triton's decorators file `path` binds itself
        (`my_jit = triton.jit`, `from triton import jit as my_jit`, `functools.partial(triton.jit, ...)`)."""
        if path not in self._own:
            module = self.index.module(path)
            self._own[path] = TritonNames(module.parsed.tree).aliases() \
                if module is not None and "triton" in module.text and _MAY_ALIAS.search(module.text) else {}
        return self._own[path]

    def _imported_aliases(self, module, wanted: set, seen: set) -> dict[str, str]:
        found: dict[str, str] = {}
        stars = []
        for node in self._repository_import_froms(module):
            for alias in node.names:
                local = alias.asname or alias.name
                if alias.name == "*":
                    stars.append(node)
                elif local in wanted:
                    target = self.index.find_module(module.path, node.module, node.level)
                    resolved = self._alias_in(target, alias.name, seen) if target else None
                    if resolved:
                        found[local] = resolved
        for node in stars:  # `from .u import *` then `@my_jit`
            target = self.index.find_module(module.path, node.module, node.level)
            for name in sorted(wanted - set(found)) if target else []:
                resolved = None if name.startswith("_") else self._alias_in(target, name, seen)
                if resolved:
                    found[name] = resolved
        return found

    def _repository_import_froms(self, module) -> list:
        """The `from X import ...` statements of a file (anywhere in it) that may name a repository module."""
        cached = self._import_froms.get(module.path)
        if cached is None:
            cached = self._import_froms[module.path] = [
                node for node in import_statements(module.parsed.tree)
                if isinstance(node, ast.ImportFrom) and node.module != "__future__"
                and (node.level or (node.module and not self.index.is_allowed(node.module)))]
        return cached

    def _alias_in(self, path: str, name: str, seen: set) -> Optional[str]:
        """The triton decorator that top-level `name` of file `path` is an alias of (own or imported), else None."""
        text = self.index.texts.get(path, "")
        if path in seen or (name not in text and "import *" not in text):
            return None  # an import cycle, or a file that cannot bind the name
        module = self.index.module(path)
        if module is None:
            return None
        own = self.own_triton_aliases(path)
        if name in own:
            return own[name]
        return self._imported_aliases(module, {name}, seen | {path}).get(name)
