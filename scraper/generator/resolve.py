"""What a name in a file of the repository refers to: a top-level def/class of some file, or a module.

`Resolver(index).definitions(path, name)` follows the file's top-level bindings as `import` would: a def or
class of the file; `from m import x [as y]` to `x` in m (re-exports in `__init__.py`, star imports);
`import pkg.m as y` / `from pkg import m` to the module; `y = x` to `x`; a wrapper applied by hand
(`y = triton.autotune(...)(x)`, `y = triton.jit(x)`) to `x`. `expression(path, expr)` does the same for a
Name/Attribute chain (`ops.kernel`). Static only; results cached per (file, name).
"""

from __future__ import annotations

import ast
from typing import NamedTuple, Optional

from scraper.generator.syntax import DEFINITIONS

_MAX_DEPTH = 24


class Target(NamedTuple):
    """A definition (`name` set) or a module (`name` None) of the repository."""

    path: str
    name: Optional[str] = None


def resolver_of(index) -> "Resolver":
    """The Resolver of a repository index, made once and kept in the index's cache."""
    if "resolver" not in index.cache:
        index.cache["resolver"] = Resolver(index)
    return index.cache["resolver"]


class Resolver:
    """Name resolution over one repository index (repoindex.RepoIndex)."""

    def __init__(self, index) -> None:
        self.index = index
        self._cache: dict[tuple, tuple] = {}

    def definitions(self, path: str, name: str, depth: int = 0) -> tuple:
        """Targets `name` refers to at the top level of file `path` (empty when unknown or external)."""
        key = (path, name)
        if key not in self._cache:
            self._cache[key] = ()  # an import cycle resolves to nothing
            self._cache[key] = self._definitions(path, name, depth) if depth < _MAX_DEPTH else ()
        return self._cache[key]

    def expression(self, path: str, expr: ast.AST, depth: int = 0) -> tuple:
        """Targets of a Name or an Attribute chain on a module (`pkg.ops.kernel`) read in file `path`."""
        if isinstance(expr, ast.Name):
            return self.definitions(path, expr.id, depth)
        if not isinstance(expr, ast.Attribute):
            return ()
        found = []
        for base in self.expression(path, expr.value, depth + 1):
            if base.name is None:  # a module: its attribute
                found.extend(self.member(base.path, expr.attr, depth + 1))
        return tuple(found)

    def member(self, module_path: str, name: str, depth: int = 0) -> tuple:
        """`module.name`: a definition of the module, or its submodule."""
        found = self.definitions(module_path, name, depth)
        submodule = self.index.submodule(module_path, name)
        return found or ((Target(submodule),) if submodule else ())

    def _definitions(self, path: str, name: str, depth: int) -> tuple:
        module = self.index.module(path)
        if module is None:
            return ()
        found = []
        for binding in module.bindings.get(name, []):
            for inner in binding.inner if binding.inner is not None else [binding]:
                found.extend(self._binding(path, name, inner, depth + 1))
        if not found:
            for node in module.star_imports:
                target = self.index.find_module(path, node.module, node.level)
                if target and not name.startswith("_"):
                    found.extend(self.definitions(target, name, depth + 1))
        return tuple(dict.fromkeys(found))

    def _binding(self, path: str, name: str, binding, depth: int) -> list:
        node, alias = binding.node, binding.alias
        if isinstance(node, DEFINITIONS):
            return [Target(path, node.name)]
        if isinstance(node, ast.Import):
            dotted = alias.name if alias.asname else alias.name.split(".")[0]
            target = self.index.find_module(path, dotted, 0)
            return [Target(target)] if target else []
        if isinstance(node, ast.ImportFrom):
            target = self.index.find_module(path, node.module, node.level)
            return list(self.member(target, alias.name, depth)) if target else []
        value = getattr(node, "value", None)
        if isinstance(value, ast.Call) and value.args:  # `y = wrapper(...)(x)` / `y = triton.jit(x)`
            value = value.args[0]
        if isinstance(value, (ast.Name, ast.Attribute)) and not (isinstance(value, ast.Name) and value.id == name):
            return list(self.expression(path, value, depth))
        return []
