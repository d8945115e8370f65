"""A graph-level KernelBench problem: the ATen graph Inductor compiled, as `class Model`, for pairs without a
recorded mapping (debug roots made before the suite recorded one, plain TORCH_COMPILE_DEBUG runs, graph breaks,
training graphs).

`fx_graph_readable.py` is the graph Inductor received: `class <lambda>(torch.nn.Module): def forward(self, arg0_1:
"f32[4, 3, 64, 64]", ...)` whose arguments are exactly those of output_code.py's `call(args)` and whose return value
is `call`'s. Its body is kept as written (the `# File: ...` comments say which line of the model each op comes
from); only the header becomes `class Model(torch.nn.Module):` and the device literals of the compiling machine
(`device=device(type='cuda', index=0)`) become the device of the first input, so the problem runs on any device
where its ops exist (the device is read from the first input before the graph frees it). Graphs that use
Inductor's own prims (`torch.ops.prims._low_memory_max_pool_with_offsets`, ...) import the module that registers
them. Inputs: size, stride and dtype of each argument from output_code.py's `get_args()`, filled as
`torch._dynamo.testing.rand_strided` does (normal floats; integers and bools zero, which any index accepts).
"""

from __future__ import annotations

import ast
import builtins
import re

from scraper.pairs.launch import PairError

_CLASS_HEADER = re.compile(r"^class [^\n]*?\(torch\.nn\.Module\):[ \t]*$", re.MULTILINE)
_DEVICE_LITERAL = re.compile(r"device\(type='\w+'(?:, index=\d+)?\)")
_DTYPE = re.compile(r"^torch\.\w+$")
ALLOWED_NAMES = {"torch", "inf", "nan"}
INDUCTOR_PRIMS = ("import torch._inductor.inductor_prims  # noqa: F401,E402  (registers Inductor's prims the graph "
                  "uses)\n")

_TEMPLATE = '''"""{description}"""
from math import inf, nan  # noqa: F401  (the graph writes -inf and nan as names)

import torch
{prims}

{model}


# Size, stride and dtype of each forward argument, as Inductor compiled the graph.
INPUTS = [
{inputs}]


def rand_strided(size, stride, dtype):
    """A tensor of this size and stride: normal floats; zeros for integers and bools."""
    needed = sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    storage = torch.randn(needed) if dtype.is_floating_point else torch.zeros(needed)
    return torch.as_strided(storage.to(dtype), size, stride)


def get_inputs():
    return [rand_strided(size, stride, dtype) for size, stride, dtype in INPUTS]


def get_init_inputs():
    return []
'''


def graph_problem(fx_graph: str, output_code: str, description: str) -> str:
    """The problem text of one graph (module docstring); raises PairError when the graph cannot stand alone."""
    model, forward = model_class(fx_graph)
    inputs = input_specs(output_code)
    arguments = [a.arg for a in forward.args.args[1:]]
    if len(arguments) != len(inputs):
        raise PairError("graph_inputs_unknown", f"{len(arguments)} forward arguments, {len(inputs)} in get_args()")
    if arguments and _DEVICE_LITERAL.search(model):
        model = with_input_device(_DEVICE_LITERAL.sub("inputs_device", model), forward, arguments[0])
    prims = INDUCTOR_PRIMS if "torch.ops.prims." in model else ""
    rows = "".join(f"    ({size!r}, {stride!r}, {dtype}),\n" for size, stride, dtype in inputs)
    return _TEMPLATE.format(description=description, model=model.rstrip("\n"), inputs=rows, prims=prims)


def with_input_device(model: str, forward: ast.FunctionDef, first_argument: str) -> str:
    """`inputs_device = <first argument>.device` as the forward's first statement (the substitution before
    changed no line, so the forward's line numbers still hold)."""
    lines = model.split("\n")
    first = forward.body[0]
    indent = lines[first.lineno - 1][: first.col_offset]
    lines.insert(first.lineno - 1, f"{indent}inputs_device = {first_argument}.device  # the graph's device literals")
    return "\n".join(lines)


def model_class(fx_graph: str) -> tuple[str, ast.FunctionDef]:
    """The graph module of fx_graph_readable.py as `class Model(torch.nn.Module)` with only a forward that
    reads nothing but its arguments, torch, inf and nan; and that forward's tree."""
    header = _CLASS_HEADER.search(fx_graph)
    if header is None:
        raise PairError("graph_not_readable", "fx_graph_readable.py has no graph module class")
    text = "class Model(torch.nn.Module):" + fx_graph[header.end():]
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise PairError("graph_not_readable", str(exc)) from exc
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    members = [node for node in classes[0].body if not isinstance(node, ast.Expr)] if classes else []
    if len(classes) != 1 or [getattr(m, "name", None) for m in members] != ["forward"]:
        raise PairError("graph_has_subgraphs", "more than a forward (nested graph modules, attributes)")
    check_names(members[0])
    if "torch.ops.higher_order." in text:
        raise PairError("graph_has_user_kernels", "higher-order ops (user Triton kernels, subgraphs) need their "
                        "side tables")
    return text, members[0]


def check_names(forward: ast.FunctionDef) -> None:
    """Raise PairError when the forward reads `self.<attribute>` or a name it does not define."""
    if any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
           for n in ast.walk(forward)):
        raise PairError("graph_uses_attributes", "the graph reads attributes of its module (constants, subgraphs)")
    bound = {a.arg for a in forward.args.args} | {n.id for n in ast.walk(forward)
                                                   if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    read = {n.id for n in ast.walk(forward) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    unknown = sorted(read - bound - ALLOWED_NAMES - set(dir(builtins)) - {"device"})
    if unknown:
        raise PairError("unresolved_name", ", ".join(unknown[:5]))


def input_specs(output_code: str) -> list[tuple]:
    """(size, stride, dtype source) of each argument of `call`, from output_code.py's get_args()."""
    start = output_code.find("\ndef get_args():")
    if start < 0:
        raise PairError("graph_inputs_unknown", "output_code.py has no get_args()")
    end = output_code.find("\n\n\n", start + 1)
    try:
        function = ast.parse(output_code[start + 1: end if end > 0 else None]).body[0]
    except (SyntaxError, IndexError) as exc:
        raise PairError("graph_inputs_unknown", f"get_args() does not parse: {exc}") from exc
    specs = {}
    for node in function.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            specs[node.targets[0].id] = rand_strided_spec(node.value)
    returned = function.body[-1].value if isinstance(function.body[-1], ast.Return) else None
    if not isinstance(returned, ast.List) or not all(isinstance(e, ast.Name) and e.id in specs
                                                       for e in returned.elts):
        raise PairError("graph_inputs_unknown", "get_args() does not return a list of its tensors")
    return [specs[element.id] for element in returned.elts]


def rand_strided_spec(call: ast.expr) -> tuple:
    """(size, stride, dtype) of a `rand_strided(size, stride, device=..., dtype=torch.X)` call."""
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "rand_strided" and len(call.args) >= 2):
        raise PairError("graph_inputs_unknown", f"an argument that is not a tensor: {ast.unparse(call)[:60]}")
    try:
        size, stride = ast.literal_eval(call.args[0]), ast.literal_eval(call.args[1])
    except ValueError as exc:  # symbolic sizes
        raise PairError("graph_inputs_unknown", "symbolic sizes") from exc
    dtype = next((ast.unparse(kw.value) for kw in call.keywords if kw.arg == "dtype"), "torch.float32")
    if not _DTYPE.match(dtype):
        raise PairError("graph_inputs_unknown", f"dtype {dtype}")
    return tuple(size), tuple(stride), dtype
