"""Which names a piece of code reads from its enclosing (module) scope: a small static scope analysis.

`free_names(node)` follows Python's rules closely enough for dependency closure: function parameters,
assignments, imports, `for`/`with`/`except` targets, comprehension variables and nested defs are local to their
function; `global` names stay free; decorators, default values, annotations and class bases are read in the
enclosing scope. Class bodies do not leak their names into methods.
"""

from __future__ import annotations

import ast
import builtins
from typing import Iterable

from scraper.generator.syntax import function_params

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__", "__doc__", "__spec__", "__builtins__",
                                       "__package__", "__loader__", "__path__", "__annotations__"}
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def bound_names(statements: Iterable[ast.AST]) -> set[str]:
    """Names bound by `statements` in their own scope (not inside nested functions, classes or comprehensions)."""
    return _bound_and_global(statements)[0]


def _bound_and_global(statements: Iterable[ast.AST]) -> tuple[set[str], set[str]]:
    """(names bound, names declared global/nonlocal) in the scope of `statements`, in one iterative walk."""
    names: set[str] = set()
    declared: set[str] = set()
    stack = list(statements)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            # decorators, defaults and bases run in this scope (a walrus there binds here; rare, ignored)
            continue
        if isinstance(node, (ast.Lambda,) + _COMPREHENSIONS):
            continue
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                names.add(node.id)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(a.asname or a.name.split(".")[0] for a in node.names if a.name != "*")
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
            continue
        if isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif type(node).__name__ in ("MatchAs", "MatchStar") and getattr(node, "name", None):
            names.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return names, declared


def free_names(node: ast.AST) -> frozenset[str]:
    """Names `node` reads that are not bound inside it (builtins included; filter them with BUILTINS).

    Memoized on the node: a helper shared by many kernels of a repository is analysed once."""
    cached = getattr(node, "_free_names", None)
    if cached is not None:
        return cached
    if isinstance(node, ast.Module):
        result = frozenset(_free_in_body(node.body, set()))
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        result = frozenset(_free_in_body([node], set()))
    else:
        result = frozenset(_free_expr(node))
    node._free_names = result
    return result


def _free_in_body(body: list, locals_: set[str]) -> set[str]:
    """Free names of a block of statements whose scope binds `locals_` plus what the block itself binds."""
    bound, declared = _bound_and_global(body)
    scope = locals_ | (bound - declared)
    free: set[str] = set()
    for statement in body:
        free |= _free_statement(statement)
    return free - scope


def _free_statement(node: ast.AST) -> set[str]:
    """Free names of one statement, with nested scopes analysed on their own."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _free_function(node)
    if isinstance(node, ast.ClassDef):
        outer = _free_many(node.decorator_list + node.bases + [k.value for k in node.keywords])
        return outer | _free_in_body(node.body, set())
    return _free_expr(node)


def _free_function(node) -> set[str]:
    args = node.args
    annotations = [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs if a.annotation]
    annotations += [a.annotation for a in (args.vararg, args.kwarg) if a and a.annotation]
    outer = _free_many(node.decorator_list + args.defaults + [d for d in args.kw_defaults if d] + annotations
                       + ([node.returns] if node.returns else []))
    return outer | _free_in_body(node.body, function_params(args))


def _free_many(nodes: Iterable[ast.AST]) -> set[str]:
    free: set[str] = set()
    for node in nodes:
        free |= _free_expr(node)
    return free


def _free_expr(node: ast.AST) -> set[str]:
    """Free names of an expression or simple statement; lambdas and comprehensions are their own scopes."""
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) else set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return _free_statement(node)
    if isinstance(node, ast.Lambda):
        defaults = node.args.defaults + [d for d in node.args.kw_defaults if d]
        return _free_many(defaults) | (_free_expr(node.body) - function_params(node.args))
    if isinstance(node, _COMPREHENSIONS):
        return _free_comprehension(node)
    free: set[str] = set()
    for child in ast.iter_child_nodes(node):
        free |= _free_expr(child)
    return free


def _free_comprehension(node) -> set[str]:
    targets: set[str] = set()
    free: set[str] = set()
    for index, generator in enumerate(node.generators):
        # the first iterable is evaluated in the enclosing scope
        iter_free = _free_expr(generator.iter)
        free |= iter_free if index == 0 else iter_free - targets
        targets |= bound_names([generator.target])
        for condition in generator.ifs:
            free |= _free_expr(condition) - targets
    elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
    return free | (_free_many(elements) - targets)


def class_early_reads(node: ast.ClassDef, outside: Iterable[str]) -> frozenset[str]:
    """Names of `outside` (the module's) that the body of class `node` reads before it binds them: in `def
    device(self) -> device` the annotation runs before the def binds `device`, so it reads the module's `device`
    (a class body looks a name up in its own namespace, then the module's). The symbol tables count such a name
    as the class's own; the closure must still copy the module's binding. Classes nested in it are not looked
    at (rare, and the walk would cost every class of a repository)."""
    bound = bound_names(node.body)
    if bound.isdisjoint(outside):  # the common case, found without reading any annotation
        return frozenset()
    seen, early = set(), set()
    for statement in node.body:
        early |= _class_level_reads(statement) - seen
        seen |= bound_names([statement])
    return frozenset(early & bound & set(outside))  # a name never bound in the body is free for the tables


def _class_level_reads(statement: ast.stmt) -> set[str]:
    """What one class-body statement reads while the class body runs (not what its functions read later)."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = statement.args
        annotations = [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]
                       if a is not None and a.annotation is not None]
        parts = statement.decorator_list + args.defaults + [d for d in args.kw_defaults if d] + annotations
        return _free_many(parts + ([statement.returns] if statement.returns else []))
    if isinstance(statement, ast.ClassDef):
        return _free_many(statement.decorator_list + statement.bases + [k.value for k in statement.keywords])
    return _free_statement(statement)
