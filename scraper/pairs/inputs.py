"""What values a problem's inputs must hold for its reference to mean something: read from the FX nodes that use
them, for kernel-level and graph-level problems alike.

    positive      something takes the input's sqrt, rsqrt, log, reciprocal, or divides by it (through adds of
                  constants, views, casts: a BatchNorm running variance in `sqrt(var + eps)`): uniform in [0.5, 1.5)
    index N       an integer input used as indices into a dimension of size N (embedding, gather, index,
                  index_select): uniform in [0, N)
    bool          a boolean input: 0 or 1
    zeros         an integer input of no known use (zero is inside every range)
    normal        any other floating-point input: standard normal

`get_inputs()` draws them from torch's global generator, so a harness that seeds it (KernelBench does, per trial)
gets the same inputs on both sides.
"""

from __future__ import annotations

from typing import Iterable, Optional

from scraper.pairs.fragment import Layout, Node, Ref

POSITIVE_OPS = {"sqrt", "rsqrt", "log", "log2", "log10", "reciprocal", "lgamma", "digamma"}
DIVIDES = {"div", "remainder", "fmod", "floor_divide"}
# ops whose output is positive wherever their first input is (and keeps its position): the need goes through them
PASS_THROUGH = {"add", "mul", "view", "reshape", "unsqueeze", "squeeze", "permute", "expand", "clone", "slice",
                "select", "convert_element_type", "_to_copy", "contiguous", "alias", "as_strided", "t", "transpose",
                "_unsafe_view", "index", "gather", "cat", "sum", "mean", "amax", "amin", "repeat", "copy"}
# op -> (position of the indexed tensor, position of the indices, position of the dim or None: dim 0)
INDEXING = {"embedding": (0, 1, None), "gather": (0, 2, 1), "index_select": (0, 2, 1)}

_KIND_FROM_DTYPE = {"bool": "bool"}
FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64", "float8_e4m3fn", "float8_e5m2"}

MAKE_INPUT = '''def make_input(size, stride, dtype, values):
    """A tensor of this size, stride and dtype holding `values`: "normal" floats, "positive" ones (in [0.5, 1.5):
    the computation takes their sqrt, log or reciprocal), "index N" integers in [0, N), "bool", or "zeros"."""
    storage = sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    if values == "positive":
        data = torch.rand(storage) + 0.5
    elif values.startswith("index"):
        data = torch.randint(0, int(values.split()[1]), (storage,))
    elif values == "bool":
        data = torch.randint(0, 2, (storage,)) > 0
    elif values == "normal":
        data = torch.randn(storage)
    else:
        data = torch.zeros(storage)
    return torch.as_strided(data.to(dtype), size, stride)
'''


def op_name(node: Node) -> str:
    """`torch.ops.aten.add.Tensor` -> "add" (the op without namespace and overload)."""
    parts = node.op.split(".")
    return parts[-2] if len(parts) >= 2 and node.op.startswith("torch.ops.") else node.op


def input_kinds(nodes: list[Node], inputs: dict[str, Optional[Layout]], layouts: dict[str, Layout]) -> dict:
    """{input name: "positive" | "index N" | "bool" | "zeros" | "normal"} for the inputs of a problem, from the nodes
    that use them. `layouts` gives node and input layouts (for the size an index points into)."""
    by_name = {node.name: node for node in nodes}
    positive = set()
    for node in nodes:
        for argument in needs_positive(node):
            positive |= sources(argument, by_name, set(inputs))
    bounds = index_bounds(nodes, by_name, set(inputs), layouts)
    kinds = {}
    for name, layout in inputs.items():
        dtype = layout.dtype if layout is not None else "float32"
        if dtype == "bool":
            kinds[name] = "bool"
        elif dtype not in FLOAT_DTYPES:
            kinds[name] = f"index {bounds[name]}" if bounds.get(name) else "zeros"
        else:
            kinds[name] = "positive" if name in positive else "normal"
    return kinds


def needs_positive(node: Node) -> list:
    """The arguments of `node` that must be positive for it to give a finite value."""
    op = op_name(node)
    if op in POSITIVE_OPS and node.args:
        return [node.args[0]]
    if op in DIVIDES and len(node.args) >= 2:
        return [node.args[1]]
    if op == "pow" and len(node.args) >= 2 and isinstance(node.args[1], float) and not node.args[1].is_integer():
        return [node.args[0]]
    return []


def sources(argument, by_name: dict, inputs: set) -> set:
    """The inputs a value comes from through PASS_THROUGH ops (their first tensor argument each)."""
    found, todo, seen = set(), [argument], set()
    while todo:
        item = todo.pop()
        if not isinstance(item, Ref) or item.name in seen:
            continue
        seen.add(item.name)
        if item.name in inputs:
            found.add(item.name)
            continue
        node = by_name.get(item.name)
        if node is not None and op_name(node) in PASS_THROUGH:
            todo += [arg for arg in node.args[:2] if isinstance(arg, Ref)]
    return found


def index_bounds(nodes: Iterable[Node], by_name: dict, inputs: set, layouts: dict) -> dict:
    """{input name: the size of the dimension it indexes} for integer inputs used as indices."""
    bounds: dict = {}
    for node in nodes:
        rule = INDEXING.get(op_name(node))
        if rule is not None and len(node.args) > rule[1]:
            size = indexed_size(node.args[rule[0]], node.args[rule[2]] if rule[2] is not None else 0, layouts)
            for name in sources(node.args[rule[1]], by_name, inputs):
                if size:
                    bounds[name] = min(size, bounds.get(name, size))
        if op_name(node) == "index" and len(node.args) == 2 and isinstance(node.args[1], list):
            for dim, indices in enumerate(node.args[1]):
                size = indexed_size(node.args[0], dim, layouts)
                for name in sources(indices, by_name, inputs) if indices is not None else ():
                    if size:
                        bounds[name] = min(size, bounds.get(name, size))
    return bounds


def indexed_size(tensor, dim, layouts: dict) -> Optional[int]:
    """The size of dimension `dim` of a tensor argument (None when its layout is not known)."""
    if not isinstance(tensor, Ref) or not isinstance(dim, int):
        return None
    layout = layouts.get(tensor.name)
    if layout is None or layout.size is None or not layout.size:
        return None
    return layout.size[dim] if -len(layout.size) <= dim < len(layout.size) else None
