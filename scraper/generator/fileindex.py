"""The name index of one file: which top-level statements bind each name, and which fill it in place.

`index_module(path, parsed)` maps every name a file's top level binds to the statements that bind it, in source
order (defs, classes, assignments, imports: one `Binding` per imported alias). A name bound inside an
if/try/with/for/while statement is bound to that whole statement (copied whole, it keeps choosing at run
time), except in a statement with a repository import that runs, which is indexed statement by statement.
`index_function_scope` does the same for a function's body (what a nested kernel reads around it).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from scraper.generator.parse import ParsedModule
from scraper.generator.scopes import bound_names
from scraper.generator.syntax import (DEFINITIONS, branches, function_params, is_compound, is_type_checking,
                                      iter_statements)

_MUTATING_METHODS = {"append", "extend", "insert", "update", "add", "setdefault", "__setitem__"}


@dataclass
class Binding:
    """A top-level statement binding a name; for imports, the one alias that binds it."""

    node: ast.stmt
    alias: Optional[ast.alias] = None
    # for a compound statement copied whole: the name's bindings inside it, statement by statement (used when
    # the statement holds the definition being extracted, which must not be copied a second time)
    inner: Optional[list] = None


@dataclass
class ModuleIndex:
    """One parsed file of a repository with its top-level bindings."""

    path: str
    parsed: ParsedModule
    bindings: dict = field(default_factory=dict)  # name -> [Binding] in source order
    mutators: dict = field(default_factory=dict)  # name -> [top-level statements that fill it]
    star_imports: list = field(default_factory=list)  # ImportFrom nodes with `*`
    future: list = field(default_factory=list)  # `from __future__ import ...` nodes
    in_repo: Optional[Callable] = None  # (path, import node) -> bool, see index_module
    parent: Optional["ModuleIndex"] = None  # for a function body seen as a scope: the module around it
    params: set = field(default_factory=set)  # for a function body: its parameters (not resolvable statically)
    memo: dict = field(default_factory=dict)  # analyses of this file kept for the next kernel (see closure.py)

    @property
    def text(self) -> str:
        return self.parsed.text


def index_module(path: str, parsed: ParsedModule, in_repo: Optional[Callable] = None) -> ModuleIndex:
    """Bindings, mutators, star and __future__ imports of a parsed file's top level (through if/try/with).

    `in_repo(path, import_node)` tells whether an import names a module of the repository (relative imports
    always do)."""
    module = ModuleIndex(path, parsed, in_repo=in_repo)
    _index_body(module, parsed.tree.body)
    return module


def index_function_scope(module: ModuleIndex, function: ast.AST) -> ModuleIndex:
    """A function's body indexed like a module (its local imports, helpers and constants), falling back to
    `module` for the rest: what a kernel defined inside a function reads from around it."""
    scope = ModuleIndex(f"{module.path}::{function.name}", module.parsed, parent=module, in_repo=module.in_repo)
    scope.params = function_params(function.args)
    _index_body(scope, function.body)
    return scope


def _index_body(module: ModuleIndex, body: list) -> None:
    # most files have no `global` at all: the text says so before any tree is walked
    setters = _global_setters(body) if "global" in module.parsed.text else {}
    for statement in body:
        _index_statement(module, statement)
        for name in mutated_names(statement) | _set_by_call(statement, setters):
            module.mutators.setdefault(name, []).append(statement)


def _global_setters(body: list) -> dict[str, set[str]]:
    """{function: module-level names it assigns through `global`} for the functions defined in `body`."""
    setters = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = {name for inner in iter_statements(node.body) if isinstance(inner, ast.Global)
                     for name in inner.names}  # a statement: no need to visit expressions
            if names:
                setters[node.name] = names
    return setters


def _set_by_call(statement: ast.stmt, setters: dict[str, set[str]]) -> set[str]:
    """Names a call statement sets through a same-file function's `global` (lightllm's `_setup_logger()` filling
    `_default_handler`): such a call is a mutator of those names, copied with them."""
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call) and \
            isinstance(statement.value.func, ast.Name):
        return setters.get(statement.value.func.id, set())
    return set()


def _bind(module: ModuleIndex, name: str, binding: Binding) -> None:
    module.bindings.setdefault(name, []).append(binding)


def _index_statement(module: ModuleIndex, node: ast.stmt) -> None:
    if isinstance(node, DEFINITIONS):
        _bind(module, node.name, Binding(node))
    elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
        module.future.append(node)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            if alias.name == "*":
                module.star_imports.append(node)
            else:
                _bind(module, alias.asname or alias.name.split(".")[0], Binding(node, alias))
    elif isinstance(node, (ast.Assign, ast.AnnAssign)) and getattr(node, "value", None) is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for name in sorted(bound_names(targets)):
            _bind(module, name, Binding(node))
    elif is_compound(node):
        _index_compound(module, node)


def _index_compound(module: ModuleIndex, node: ast.stmt) -> None:
    """Bind every name a compound statement binds to the whole statement (its guard, its alternatives and
    all), keeping the bindings inside it for when it holds the target; a statement with a repository import
    that runs cannot be copied as text and is indexed statement by statement (its main path wins)."""
    inner = ModuleIndex(module.path, module.parsed, in_repo=module.in_repo)
    _index_branches(inner, node)
    module.star_imports.extend(inner.star_imports)
    if runs_repository_import(module, node):
        if isinstance(node, (ast.For, ast.With)):  # loop / with targets bind to the whole statement
            heads = [node.target] if isinstance(node, ast.For) else [i.optional_vars for i in node.items if i.optional_vars]
            for name in sorted(bound_names(heads)):
                _bind(module, name, Binding(node))
        for name, bindings in inner.bindings.items():
            module.bindings.setdefault(name, []).extend(bindings)
        return
    for name in sorted(bound_names([node])):
        _bind(module, name, Binding(node, inner=inner.bindings.get(name, [])))


def _index_branches(module: ModuleIndex, node: ast.stmt) -> None:
    """Index the statements inside a compound statement; a name the main path binds is taken from the main
    path only (`if triton is not None: import triton.language as tl` / `else: class tl: ...` must not end with
    the stand-in); the other branches add only new names."""
    primary, alternatives = branches(node)
    for child in primary:
        _index_statement(module, child)
    taken = bound_names(primary)
    side = ModuleIndex(module.path, module.parsed, in_repo=module.in_repo)
    for child in alternatives:
        _index_statement(side, child)
    module.star_imports.extend(side.star_imports)
    for name, bindings in side.bindings.items():
        if name not in taken:
            module.bindings.setdefault(name, []).extend(bindings)


def runs_repository_import(module: ModuleIndex, node: ast.stmt) -> bool:
    """True when a compound statement holds an import of the repository (relative, or of one of its modules)
    that runs: copied as text it would fail outside the repository. Imports under `if TYPE_CHECKING:` never
    run, so they do not count."""
    stack = [node]
    while stack:
        child = stack.pop()
        if isinstance(child, ast.If) and is_type_checking(child.test):
            stack.extend(child.orelse)
            continue
        if isinstance(child, ast.ImportFrom) and (child.level or child.module == "__future__"):
            return True
        if isinstance(child, (ast.Import, ast.ImportFrom)) and module.in_repo and module.in_repo(module.path, child):
            return True
        stack.extend(c for c in ast.iter_child_nodes(child) if isinstance(c, (ast.stmt, ast.excepthandler)))
    return False


def mutated_names(statement: ast.stmt) -> set[str]:
    """Names a top-level statement fills in place: `X.append(...)`, `X += ...`, `X[k] = ...`, and the name a
    hand-applied decorator re-binds (`f = triton.jit(f)`)."""
    if isinstance(statement, DEFINITIONS + (ast.Import, ast.ImportFrom)):
        return set()
    if isinstance(statement, (ast.Assign, ast.AnnAssign)) and not any(
            isinstance(t, ast.Subscript) for t in getattr(statement, "targets", [getattr(statement, "target", None)])):
        # a plain assignment fills nothing in place (skips walking big literal tables); `f = triton.jit(f)` re-binds
        wrapped = rewrapped_name(statement) if isinstance(statement, ast.Assign) else None
        return {wrapped} if wrapped else set()
    names = set()
    for node in _walk_module_scope(statement):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            if node.func.attr in _MUTATING_METHODS:
                names.add(node.func.value.id)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name):
            names.add(node.value.id)
    wrapped = rewrapped_name(statement)
    if wrapped:
        names.add(wrapped)
    return names


def _walk_module_scope(statement: ast.stmt):
    """ast.walk that does not enter function, class or lambda bodies (what runs there is not module level)."""
    stack = [statement]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, DEFINITIONS + (ast.Lambda,)):
            stack.extend(ast.iter_child_nodes(node))


def rewrapped_name(statement: ast.stmt) -> Optional[str]:
    """`f = triton.jit(f)` (a decorator applied by hand, as unsloth does): the name it re-binds, else None."""
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.value, ast.Call)):
        return None
    target, call = statement.targets[0], statement.value
    if isinstance(target, ast.Name) and call.args and isinstance(call.args[0], ast.Name) and call.args[0].id == target.id:
        return target.id
    return None


def wrappers_of(module: ModuleIndex, name: str, aliases: Iterable[str] = ()) -> list:
    """Top-level `other = something.jit(name)` (or `other = my_jit(name)` for a name in `aliases`) statements:
    the kernel as the file's users see it."""
    found = []
    for statement in module.parsed.tree.body:
        value = getattr(statement, "value", None)
        if (isinstance(statement, ast.Assign) and isinstance(value, ast.Call) and value.args
                and isinstance(value.args[0], ast.Name) and value.args[0].id == name):
            callee = value.func.func if isinstance(value.func, ast.Call) else value.func
            called = getattr(callee, "attr", None) or getattr(callee, "id", None)
            if called == "jit" or (isinstance(callee, ast.Name) and called in aliases):
                found.append(statement)
    return found
