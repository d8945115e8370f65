"""PyTorch source for FX nodes (scraper.pairs.fragment.Node): the forward of a kernel-level or graph-level problem.

Each node becomes one statement, `name = <op>(<args>)`, spelled as plain torch where that is the same computation
(`add.Tensor(a, b)` -> `a + b`, `relu.default(x)` -> `torch.relu(x)`, `view.default(x, [2, 3])` -> `x.view([2, 3])`)
and as the ATen call otherwise (`torch.ops.aten.var_mean.correction(x, [1], correction=0, keepdim=True)`), which
is exactly what the graph ran. Every value is written from the parsed node, never copied from the text it came
from: names are checked identifiers, op targets are checked `torch.ops.<namespace>.<op>.<overload>` paths of the
namespaces below (or operator.getitem), literals are Python literals, dtypes and memory formats known names, and
device literals become the forward's `device`. In-place ops become their functional form (`copy_` -> `copy`), so a
problem never changes its own inputs. Ops that draw random numbers are refused (a check cannot compare them).
"""

from __future__ import annotations

import keyword
import math
import re
from typing import Any, Iterable, Optional

from scraper.pairs.fragment import Literal, Node, Ref, refs

NAMESPACES = ("aten", "prims")
_TARGET = re.compile(r"^torch\.ops\.(?P<namespace>\w+)\.(?P<op>\w+)\.(?P<overload>\w+)$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
RANDOM_OPS = ("rand", "bernoulli", "dropout", "seed", "normal", "uniform", "exponential", "multinomial", "poisson")
RESERVED = {"torch", "self", "device", "nn", "pack", "math", "inf", "nan", "triton", "tl", "Model", "ModelNew"}

# aten op (without overload) -> how plain torch spells it, for the overloads listed; {0}, {1} are the arguments.
BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==",
          "ne": "!=", "bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^"}
BINARY_OVERLOADS = ("Tensor", "Scalar")
UNARY = {"relu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "reciprocal", "abs", "erf", "sin", "cos",
         "neg", "floor", "ceil", "round", "log1p", "expm1", "exp2", "logical_not", "sign", "trunc", "isnan",
         "isinf", "log2"}
METHODS = {("view", "default"), ("reshape", "default"), ("unsqueeze", "default"), ("squeeze", "dim"),
           ("squeeze", "dims"), ("permute", "default"), ("expand", "default"), ("clone", "default")}
REDUCTIONS = {("sum", "dim_IntList"), ("mean", "dim"), ("amax", "default"), ("amin", "default")}


class EmitError(ValueError):
    """A node this emitter does not write (its reason names it)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def variable(name: str) -> str:
    """A node or input name as a Python variable (FX names are identifiers; a clash with a keyword or with the
    problem's own names gets a trailing underscore)."""
    if not _IDENTIFIER.match(name):
        raise EmitError("bad_name", name[:40])
    return name + "_" if keyword.iskeyword(name) or name in RESERVED else name


def target_of(op: str) -> tuple[str, str, str]:
    """(namespace, op, overload) of a `torch.ops.<ns>.<op>.<overload>` target; EmitError for anything else."""
    match = _TARGET.match(op)
    if match is None or match["namespace"] not in NAMESPACES:
        raise EmitError("unsupported_op", op[:80])
    if any(word in match["op"] for word in RANDOM_OPS):
        raise EmitError("random", op)
    return match["namespace"], match["op"], match["overload"]


def value(item: Any) -> str:
    """The Python source of one argument value."""
    if isinstance(item, Ref):
        return variable(item.name)
    if isinstance(item, Literal):
        if item.kind == "device":
            return "device"
        if item.kind == "string":
            return repr(item.text)
        return item.text  # torch.float32, torch.contiguous_format, ...
    if isinstance(item, bool) or item is None:
        return repr(item)
    if isinstance(item, int):
        return repr(item)
    if isinstance(item, float):
        if math.isnan(item):
            return "float('nan')"
        if math.isinf(item):
            return "float('inf')" if item > 0 else "float('-inf')"
        return repr(item)
    if isinstance(item, list):
        return "[" + ", ".join(value(x) for x in item) + "]"
    if isinstance(item, tuple):
        return "(" + ", ".join(value(x) for x in item) + ("," if len(item) == 1 else "") + ")"
    raise EmitError("unsupported_value", type(item).__name__)


def call_text(node: Node) -> str:
    """The right-hand side of `node`'s statement."""
    if node.op == "operator.getitem":
        if len(node.args) != 2 or not isinstance(node.args[1], int):
            raise EmitError("unsupported_getitem", node.name)
        return f"{value(node.args[0])}[{node.args[1]}]"
    namespace, op, overload = target_of(node.op)
    if op.endswith("_") and not op.startswith("_"):
        op = op[:-1]  # the functional form: a problem never changes its inputs
    readable = plain(namespace, op, overload, node.args, node.kwargs)
    if readable is not None:
        return readable
    arguments = [value(arg) for arg in node.args] + [f"{key}={value(item)}" for key, item in node.kwargs.items()]
    return f"torch.ops.{namespace}.{op}.{overload}({', '.join(arguments)})"


def plain(namespace: str, op: str, overload: str, args: tuple, kwargs: dict) -> Optional[str]:
    """The plain-torch spelling of an ATen call when there is one with the same meaning, else None."""
    if namespace != "aten":
        if (namespace, op) == ("prims", "convert_element_type") and len(args) == 2 and not kwargs:
            return f"{value(args[0])}.to({value(args[1])})"
        return None
    if op in BINARY and overload in BINARY_OVERLOADS and len(args) == 2 and not kwargs:
        return f"{operand(args[0])} {BINARY[op]} {operand(args[1])}"
    if op in UNARY and overload == "default" and len(args) == 1 and not kwargs:
        return f"-{operand(args[0])}" if op == "neg" else f"torch.{op}({value(args[0])})"
    if (op, overload) in METHODS and not kwargs and args and isinstance(args[0], Ref):
        return f"{value(args[0])}.{op}({', '.join(value(a) for a in args[1:])})"
    if (op, overload) in REDUCTIONS and not kwargs and args and isinstance(args[0], Ref):
        return f"{value(args[0])}.{op}({', '.join(value(a) for a in args[1:])})"
    return None


def operand(item: Any) -> str:
    """An operand of a binary operator: a name or a number (a negative number in parentheses)."""
    text = value(item)
    return f"({text})" if text.startswith("-") or " " in text else text


def statements(nodes: Iterable[Node]) -> list[str]:
    """`name = <call>` for each node, in order."""
    return [f"{variable(node.name)} = {call_text(node)}" for node in nodes]


def needed(nodes: list[Node], inputs: set[str], outputs: list[str], more: Optional[dict] = None) -> list[Node]:
    """The nodes needed to compute `outputs` from `inputs`, each after the nodes it reads: from `nodes` (a kernel's
    fragment) first, else from `more` (name -> Node: the whole graph, for the `getitem`s and views a fragment does
    not list); EmitError("not_computable") when a value is neither an input nor a node of either."""
    by_name = {**(more or {}), **{node.name: node for node in nodes}}
    ordered: list[Node] = []
    done: set[str] = set(inputs)
    for output in outputs:
        visit(output, by_name, done, ordered, set())
    return ordered


def visit(name: str, by_name: dict, done: set, ordered: list, path: set) -> None:
    """Depth-first: the nodes `name` needs, then its own (iterative enough for graphs: fragments are small)."""
    if name in done:
        return
    node = by_name.get(name)
    if node is None or name in path:
        raise EmitError("not_computable", name)
    path.add(name)
    for ref in refs(node.args) + refs(node.kwargs):
        visit(ref, by_name, done, ordered, path)
    path.discard(name)
    done.add(name)
    ordered.append(node)


def uses_device(nodes: Iterable[Node]) -> bool:
    """Whether some node has a device argument (`device=cuda:0`): the forward then needs `device`."""
    def has(item: Any) -> bool:
        if isinstance(item, Literal):
            return item.kind == "device"
        if isinstance(item, (list, tuple)):
            return any(has(x) for x in item)
        if isinstance(item, dict):
            return any(has(x) for x in item.values())
        return False

    return any(has(node.args) or has(node.kwargs) for node in nodes)
