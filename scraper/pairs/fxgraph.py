"""fx_graph_readable.py (the graph Inductor compiled) read as FX nodes, the same `Node` values a graph fragment
gives (scraper.pairs.fragment), without running it.

    class <lambda>(torch.nn.Module):
        def forward(self, arg0_1: "f32[64]", arg1_1: "i64[2, 128]"):
            var_mean = torch.ops.aten.var_mean.correction(add_1, [2], correction = 0, keepdim = True)
            getitem_1: "f32[2, 128, 1]" = var_mean[1];  var_mean = None
            return (add_3, getitem_1)

Each statement `name[: "layout"] = torch.ops.<ns>.<op>.<overload>(args)` or `name = other[i]` becomes a Node; the
`x = y = None` clean-ups and comments are skipped. A kernel's fragment lists the nodes it fused, but not always
the ones its values come through (the `getitem` of a `var_mean`, an `expand` a clone copies): those are looked up
here. Arguments become values (Ref, Literal, numbers, lists), never code; a statement of any other shape makes the
graph unreadable (GraphError) rather than guessed at.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from scraper.pairs.fragment import DTYPES, TORCH_CONSTANTS, Layout, Literal, Node, Ref, integers

_CLASS_HEADER = re.compile(r"^class [^\n]*?\(torch\.nn\.Module\):[ \t]*$", re.MULTILINE)
_ANNOTATION = re.compile(r"^(?P<dtype>\w+)\[(?P<size>[^\]]*)\](?:\[(?P<stride>[^\]]*)\])?")
MAX_GRAPH_NODES = 200_000


class GraphError(ValueError):
    """An fx_graph_readable.py this reader does not read."""


@dataclass
class FxGraph:
    """The forward of fx_graph_readable.py: its placeholders (with their annotated layouts), nodes, outputs."""

    inputs: dict = field(default_factory=dict)  # name -> Layout (strides: None, the annotation has none)
    nodes: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # Ref / None per returned value
    by_name: dict = field(default_factory=dict)

    def node(self, name: str) -> Optional[Node]:
        return self.by_name.get(name)


def read_fx_graph(text: str) -> FxGraph:
    """The graph of one fx_graph_readable.py; GraphError when it is not one this reader knows."""
    text = _CLASS_HEADER.sub("class Graph(torch.nn.Module):", text, count=1)  # FX names the class `<lambda>`
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise GraphError(f"does not parse: {exc}") from None
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    forwards = [item for item in (classes[0].body if len(classes) == 1 else [])
                if isinstance(item, ast.FunctionDef) and item.name == "forward"]
    if len(forwards) != 1:
        raise GraphError("no single graph module with a forward")
    graph = FxGraph()
    for argument in forwards[0].args.args[1:]:
        graph.inputs[argument.arg] = annotation_layout(argument.annotation)
    for statement in forwards[0].body:
        read_statement(statement, graph)
        if len(graph.nodes) > MAX_GRAPH_NODES:
            raise GraphError("too many nodes")
    graph.by_name = {node.name: node for node in graph.nodes}
    return graph


def read_statement(statement: ast.stmt, graph: FxGraph) -> None:
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return  # a docstring
    if isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets) \
            and isinstance(statement.value, ast.Constant) and statement.value.value is None:
        return  # `x = y = None`: the graph freeing what it no longer needs
    if isinstance(statement, ast.Return):
        values = statement.value.elts if isinstance(statement.value, (ast.Tuple, ast.List)) else [statement.value]
        graph.outputs = [Ref(v.id) if isinstance(v, ast.Name) else None for v in values]
        return
    target, value, annotation = assignment(statement)
    graph.nodes.append(node_of(target, value, annotation_layout(annotation)))


def assignment(statement: ast.stmt) -> tuple[str, ast.expr, Optional[ast.expr]]:
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
        return statement.target.id, statement.value, statement.annotation
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id, statement.value, None
    raise GraphError(f"statement at line {statement.lineno}")


def node_of(name: str, value: ast.expr, layout: Optional[Layout]) -> Node:
    if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) and isinstance(value.slice, ast.Constant):
        return Node(name, "operator.getitem", (Ref(value.value.id), value.slice.value), {}, layout)
    if isinstance(value, ast.Call):
        op = dotted(value.func)
        if not op.startswith("torch.ops."):
            raise GraphError(f"{name}: call of {op or 'something'}")
        args = tuple(argument(arg) for arg in value.args)
        kwargs = {kw.arg: argument(kw.value) for kw in value.keywords if kw.arg}
        return Node(name, op, args, kwargs, layout)
    if isinstance(value, ast.Name):
        return Node(name, "torch.ops.aten.alias.default", (Ref(value.id),), {}, layout)
    raise GraphError(f"{name}: value of another shape")


def argument(node: ast.expr) -> Any:
    """A call argument as a value (Ref for names, Literal for dtypes and devices, Python literals)."""
    if isinstance(node, ast.Name):
        if node.id in ("inf", "nan"):
            return float(node.id)
        return Ref(node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool, str, type(None))):
        return node.value if not isinstance(node.value, str) else Literal("string", node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = argument(node.operand)
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return -inner
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [argument(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    text = dotted(node)
    if text.startswith("torch.") and text[6:] in TORCH_CONSTANTS:
        return Literal("torch", text)
    if isinstance(node, ast.Call) and dotted(node.func) == "device":
        return Literal("device", "cuda")
    raise GraphError(f"argument {ast.unparse(node)[:40]}")


def annotation_layout(annotation: Optional[ast.expr]) -> Optional[Layout]:
    """The layout of an annotation such as `"f32[2, 128]"` (strides when it gives them)."""
    if not (isinstance(annotation, ast.Constant) and isinstance(annotation.value, str)):
        return None
    match = _ANNOTATION.match(annotation.value)
    if match is None or match["dtype"] not in DTYPES:
        return None
    stride = integers(match["stride"]) if match["stride"] is not None else None
    return Layout(DTYPES[match["dtype"]], integers(match["size"]), stride)


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""
