"""Walking a module's syntax tree: statements, definitions, the blocks that hold them, and their branches.

The one definition walker (`walk_definitions`) serves detection (which defs are jit kernels) and the closure
(which def or class to cut out); both see the same qualnames (`Class.method`, `outer.<locals>.inner`).
"""

from __future__ import annotations

import ast
from typing import Iterator, NamedTuple, Optional

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_COMPOUND = (ast.If, ast.Try, ast.With, ast.For, ast.While)
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def is_compound(node: ast.AST) -> bool:
    """if/try/with/for/while (and 3.11's try/except*): statements whose blocks stay in the enclosing scope."""
    return isinstance(node, _COMPOUND) or type(node).__name__ == "TryStar"


def iter_statements(body) -> Iterator[ast.stmt]:
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


def import_statements(tree: ast.Module) -> list:
    """Every import statement of a module, at any depth (in functions and blocks too), in source order;
    memoized on the tree: detection and the alias pass both ask."""
    cached = getattr(tree, "_import_statements", None)
    if cached is None:
        cached = tree._import_statements = [node for node in iter_statements(tree.body)
                                            if isinstance(node, (ast.Import, ast.ImportFrom))]
    return cached


def block_statements(node: ast.stmt) -> list:
    """The statements directly inside a compound statement: body, else, finally and every handler's body."""
    inner = list(getattr(node, "body", [])) + list(getattr(node, "orelse", [])) + list(getattr(node, "finalbody", []))
    for handler in getattr(node, "handlers", []):
        inner.extend(handler.body)
    return inner


class Definition(NamedTuple):
    """A def or class found by walk_definitions."""

    node: ast.AST
    qualname: str  # "k", "Class.k", "outer.<locals>.k"
    parent: str  # what it sits in directly: "module" | "class" | "function"
    enclosing: Optional[ast.AST]  # the innermost function around it (None at module or class level)


def walk_definitions(body, prefix: str = "", parent: str = "module", enclosing=None) -> Iterator[Definition]:
    """Every def and class in `body`, nested ones included, in source order (defs under `if HAS_TRITON:` or
    `try:` are still at their block's scope)."""
    for node in body:
        if isinstance(node, DEFINITIONS):
            qualname = f"{prefix}{node.name}"
            yield Definition(node, qualname, parent, enclosing)
            if isinstance(node, ast.ClassDef):
                yield from walk_definitions(node.body, f"{qualname}.", "class", enclosing)
            else:
                yield from walk_definitions(node.body, f"{qualname}.<locals>.", "function", node)
        elif is_compound(node):
            yield from walk_definitions(block_statements(node), prefix, parent, enclosing)


def holders_of(body: list, target: ast.AST) -> set[int]:
    """ids of the compound statements (if/try/with/for/while, at any depth, also inside an enclosing def or
    class) that hold `target`."""
    holders: set[int] = set()
    statements = list(body)
    while statements:
        statement = statements.pop()
        if statement is target or not statement.lineno <= target.lineno <= (statement.end_lineno or 0):
            continue
        if not isinstance(statement, DEFINITIONS):
            holders.add(id(statement))
        statements.extend(block_statements(statement))
    return holders


def first_line(node: ast.AST) -> int:
    """First line of a def or class, decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def branches(node: ast.stmt) -> tuple[list, list]:
    """(statements of the main path, statements of the alternatives) of a compound statement."""
    if isinstance(node, ast.If):
        return node.body, node.orelse
    if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
        return node.body + node.orelse + node.finalbody, [s for h in node.handlers for s in h.body]
    return node.body + getattr(node, "orelse", []), []


def is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` without an else (a script's harness, never run on import)."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and not node.orelse and isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq) and {_name_or_text(test.left), _name_or_text(test.comparators[0])}
            == {"__name__", "__main__"})


def _name_or_text(node: ast.expr) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING` (true only for static type checkers)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def function_params(args: ast.arguments) -> set[str]:
    """Names of every parameter of a function (positional-only, keyword-only, *args, **kwargs included)."""
    every = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    return {a.arg for a in every}


def attribute_uses(node: ast.AST) -> dict:
    """{name: attributes read on it} for every `name.attr` in `node` (memoized on the node). A plain stack
    over `_fields`: ast.walk's generators cost more than the walk itself."""
    cached = getattr(node, "_attribute_uses", None)
    if cached is None:
        cached = {}
        stack = [node]
        while stack:
            child = stack.pop()
            if child.__class__ is ast.Attribute and child.value.__class__ is ast.Name:
                cached.setdefault(child.value.id, set()).add(child.attr)
                continue
            for name in getattr(child, "_fields", ()):  # strings in lists (`global a, b`) have no _fields
                value = getattr(child, name, None)
                if value.__class__ is list:
                    stack.extend(value)
                elif isinstance(value, ast.AST):
                    stack.append(value)
        node._attribute_uses = cached
    return cached
