"""What a module's own source says about the values it wants, read with `ast` from the closure text (the class
and the classes of the closure it inherits from):

    facts = SourceFacts(code, "ResBlock")
    facts.attributes("config")    # {"hidden_size", "num_heads"}: what `config.<attr>` / getattr(config, ...) read
    facts.choices("act")          # ["gelu", "relu"]: strings `act` (or self.act) is compared with or looked up in
    facts.keys("batch", "forward")  # ["image", "mask"]: strings `batch[...]` / batch.get(...) use in forward
    facts.assigned_from("config") # {"config"}: self attributes holding a parameter (self.cfg = config)
"""

from __future__ import annotations

import ast
from typing import Optional


class SourceFacts:
    """Static facts about one class of a closure; empty when the source does not parse or has no such class."""

    def __init__(self, code: str, class_name: str) -> None:
        self.source = code
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError):
            tree = ast.Module(body=[], type_ignores=[])
        classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
        self.classes = list(lineage(classes, class_name))
        self.dict_keys = {key.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
                          for key in node.keys if isinstance(key, ast.Constant) and isinstance(key.value, str)}

    def methods(self, name: Optional[str] = None):
        """The method definitions of the class and its bases (only those called `name`, when given)."""
        for cls in self.classes:
            for node in cls.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and name in (None, node.name):
                    yield node

    def holders(self, param: str) -> set[str]:
        """Names through which the class reads parameter `param`: itself and the `self.<x>` assigned from it
        (`self.x = param`), as `self.x`."""
        names = {param}
        for method in self.methods("__init__"):
            for node in ast.walk(method):
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == param):
                    names.update(f"self.{t.attr}" for t in node.targets if isinstance(t, ast.Attribute))
        return names

    def reads(self, node: ast.AST, names: set[str]) -> bool:
        """Whether `node` is one of `names` (`x`, or `self.x` for an attribute)."""
        if isinstance(node, ast.Name):
            return node.id in names
        return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                and f"self.{node.attr}" in names)

    def attributes(self, param: str) -> list[str]:
        """Attributes read on parameter `param` (also through `self.x = param`), in first-use order."""
        names, found = self.holders(param), {}
        for method in self.methods():
            for node in ast.walk(method):
                if isinstance(node, ast.Attribute) and self.reads(node.value, names):
                    found.setdefault(node.attr, None)
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in
                      ("getattr", "hasattr") and len(node.args) >= 2 and self.reads(node.args[0], names)
                      and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                    found.setdefault(node.args[1].value, None)
        return [name for name in found if not name.startswith("__")]

    def choices(self, param: str) -> list[str]:
        """Strings the class compares parameter `param` with (`==`, `in (...)`, match cases), or looks it up
        with in a dict of string keys, in first-use order."""
        names, found = self.holders(param), {}
        for method in self.methods():
            for node in ast.walk(method):
                if isinstance(node, ast.Compare) and any(self.reads(side, names) for side in
                                                         [node.left, *node.comparators]):
                    for side in [node.left, *node.comparators]:
                        for constant in string_constants(side):
                            found.setdefault(constant, None)
                elif isinstance(node, ast.Subscript) and self.reads(node.slice, names):
                    found.update((key, None) for key in sorted(self.dict_keys))
        return list(found)

    def keys(self, param: str, method: str = "forward") -> list[str]:
        """String keys the method reads from parameter `param` (`param["k"]`, `param.get("k")`), first use
        first."""
        found = {}
        for function in self.methods(method):
            for node in ast.walk(function):
                if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == param
                        and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
                    found.setdefault(node.slice.value, None)
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                      and isinstance(node.func.value, ast.Name) and node.func.value.id == param and node.args
                      and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    found.setdefault(node.args[0].value, None)
        return list(found)

    def unpacked(self, param: str, method: str = "forward") -> Optional[int]:
        """N when the method unpacks parameter `param` itself into N names (`a, b = param`): it is a tuple."""
        for function in self.methods(method):
            for node in ast.walk(function):
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == param
                        and len(node.targets) == 1 and isinstance(node.targets[0], (ast.Tuple, ast.List))):
                    return len(node.targets[0].elts)
        return None


def lineage(classes: dict, name: str):
    """The class called `name` and the classes of the same module it inherits from (nearest first)."""
    seen = set()
    todo = [name]
    while todo:
        current = todo.pop(0)
        if current in seen or current not in classes:
            continue
        seen.add(current)
        yield classes[current]
        todo.extend(base.id for base in classes[current].bases if isinstance(base, ast.Name))


def string_constants(node: ast.AST) -> list[str]:
    """The string constants of a node: itself, or the items of a tuple/list/set literal."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]
