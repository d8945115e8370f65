"""A graph-level KernelBench problem: the ATen graph Inductor compiled, as `class Model`, for pairs without a
recorded mapping (debug roots made before the suite recorded one, plain TORCH_COMPILE_DEBUG runs, graph breaks,
training graphs).

`fx_graph_readable.py` is the graph Inductor received: `class <lambda>(torch.nn.Module): def forward(self, arg0_1:
"f32[4, 3, 64, 64]", ...)` whose arguments are exactly those of output_code.py's `call(args)` and whose return value
is `call`'s. It comes from a debug folder (hostile input): it is read as FX nodes (scraper.pairs.fxgraph, never run)
and the forward is written again from them (scraper.pairs.emit: checked names, ATen targets, literals; device
literals become the first input's device; in-place ops their functional form), as the kernel-level problems are.
Inputs: size, stride and dtype of each argument from output_code.py's `get_args()`, their values by what the graph
does with them (scraper.pairs.inputs: positive for a sqrt, in range for an index). The forward returns its one
floating-point output, else pack() of its outputs (KernelBench's evaluator compares one tensor), and casts its
inputs back to the graph's dtypes first (the evaluator casts every input to float32).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from scraper.pairs.emit import EmitError, needed, statements, uses_device, variable
from scraper.pairs.fragment import Layout
from scraper.pairs.fxgraph import GraphError, read_fx_graph
from scraper.pairs.launch import PairError

_DTYPE = re.compile(r"^torch\.\w+$")
FLOATING = ("float32", "float16", "bfloat16", "float64")
MAX_GRAPH_STATEMENTS = 20_000  # a graph-level problem larger than this is no training example (and no context)


@dataclass
class GraphProblem:
    """A graph-level problem and what its ModelNew needs to match it."""

    text: str
    layouts: list  # (size, stride, dtype source) of each call() argument
    ops: list  # the ATen ops Model calls
    outputs: list  # which of call()'s outputs the forward returns (the tensors: a backward's Nones are left out)


def graph_problem(fx_graph: str, output_code: str, description: str) -> GraphProblem:
    """The problem of one graph (module docstring); raises PairError when the graph cannot stand alone."""
    from scraper.pairs.kernel_level import model_text, problem_text
    from scraper.pairs.inputs import MAKE_INPUT, input_kinds

    if "torch.ops.higher_order." in fx_graph:
        raise PairError("graph_has_user_kernels", "higher-order ops (user Triton kernels, subgraphs) need their "
                        "side tables")
    try:
        graph = read_fx_graph(fx_graph)
    except GraphError as exc:
        raise PairError("graph_not_readable", str(exc)) from None
    specs = input_specs(output_code)
    names = list(graph.inputs)
    if len(names) != len(specs):
        raise PairError("graph_inputs_unknown", f"{len(names)} forward arguments, {len(specs)} in get_args()")
    returned = [index for index, output in enumerate(graph.outputs) if output is not None]
    if not returned:  # a backward graph returns None for the gradients nothing asked for: those are left out
        raise PairError("graph_outputs_unknown", "the graph returns no tensor it computes")
    layouts = {name: Layout(dtype[6:], size, stride) for name, (size, stride, dtype) in zip(names, specs)}
    outputs = [graph.outputs[index].name for index in returned]
    try:
        nodes = needed(graph.nodes, set(names), outputs)
        body = statements(nodes)
        arguments = [variable(name) for name in names]
    except EmitError as exc:
        raise PairError(f"graph_{exc.reason}", str(exc)) from None
    if len(set(arguments)) != len(arguments):
        raise PairError("graph_not_readable", "two arguments of one name")
    if len(body) > MAX_GRAPH_STATEMENTS:
        raise PairError("graph_too_large", f"{len(body)} statements")
    known = {**{node.name: node.layout for node in graph.nodes if node.layout is not None}, **layouts}
    kinds = input_kinds(nodes, layouts, known)
    packed = len(outputs) > 1 or any(known.get(name) is None or known[name].dtype not in FLOATING
                                     for name in outputs)
    model = model_text(names, layouts, body, outputs, uses_device(nodes), variable, packed)
    text = problem_text(description, model, names, layouts, kinds, packed, MAKE_INPUT)
    return GraphProblem(text, specs, sorted({node.op for node in nodes}), returned)


def input_specs(output_code: str) -> list[tuple]:
    """(size, stride, dtype source) of each argument of `call`, from output_code.py's get_args()."""
    start = output_code.find("\ndef get_args():")
    if start < 0:
        raise PairError("graph_inputs_unknown", "output_code.py has no get_args()")
    end = output_code.find("\n\n\n", start + 1)
    try:
        function = ast.parse(output_code[start + 1: end if end > 0 else None]).body[0]
    except (SyntaxError, IndexError, ValueError, RecursionError) as exc:
        raise PairError("graph_inputs_unknown", f"get_args() does not parse: {exc}") from None
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
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in size + stride)):
        raise PairError("graph_inputs_unknown", "size and stride are not tuples of integers")
    dtype = next((ast.unparse(kw.value) for kw in call.keywords if kw.arg == "dtype"), "torch.float32")
    if not _DTYPE.match(dtype):
        raise PairError("graph_inputs_unknown", f"dtype {dtype}")
    return tuple(size), tuple(stride), dtype
