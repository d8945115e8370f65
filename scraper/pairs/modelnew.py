"""`class ModelNew` of a pair's triton_code: what turns `call(args)` back into a module with Model's interface.

Model level (the suite recorded how the model's parameters, buffers and inputs map to `call`'s arguments, and its
outputs to `call`'s outputs; scraper.worker.recording): ModelNew builds the model with the program's own build()
(the triton_code starts with the program, as the problem does, and binds its build() as _program_build: the same
seed, so the same weights; KernelBench's evaluator builds Model and ModelNew separately), keeps every parameter and buffer `call` reads under Model's own
state-dict names, and `forward(*inputs)` takes get_inputs() as Model does, passes weights and inputs to `call` in the
recorded order and returns what Model returns: one tensor, or pack() of several.

Graph level (no recording: an older debug root, graph breaks, a training graph): Model is the ATen graph itself
(scraper.pairs.graph_problem), whose forward arguments are exactly `call`'s, so `forward(*args)` is
`call(list(args))` with the arguments laid out as call() asserts, its outputs returned as Model returns them.
"""

from __future__ import annotations

import re
from scraper.pairs.launch import PairError

MODEL_ATTRIBUTE = "model"  # Model (scraper.kernelbench) keeps the suite's model as self.model
_DTYPE = re.compile(r"^[a-z][a-z0-9_]*$")

_PACK = '''def pack(*outputs):
    """Several output tensors as one (KernelBench's evaluator compares one): each flattened, as float32, in order."""
    return torch.cat([output.reshape(-1).to(torch.float32) for output in outputs])


def strided(x, size, stride, dtype):
    """`x` in the layout call() asserts: this dtype, size and stride (copied only when it is laid out otherwise)."""
    x = x.to(dtype)
    if tuple(x.shape) == size and tuple(x.stride()) == stride:
        return x
    out = torch.empty_strided(size, stride, dtype=dtype, device=x.device)
    out.copy_(x)
    return out
'''

_GRAPH_LEVEL = '''# Each argument of call(): size, stride, dtype (as Inductor compiled the graph).
LAYOUTS = [
{layouts}]


class ModelNew(nn.Module):
    """The graph as Triton: forward(*args) takes the graph's inputs (Model's forward arguments), lays them out as
    call() asserts, and returns what Model returns: call()'s one output, or pack() of its outputs."""

    def forward(self, *args):
        outputs = call([strided(a, *layout) for a, layout in zip(args, LAYOUTS)])
        return {returns}
'''

_MODEL_LEVEL = '''# Model's parameters and buffers that call() reads: (state-dict name, shape, dtype).
WEIGHTS = [
{weights}]


class ModelNew(nn.Module):
    """{model} as Triton: forward(*inputs) takes Model's inputs and returns what Model returns. It builds the
    model as Model does (build() above: the same seed, so the same weights) and keeps the weights call() reads
    under Model's names."""

    def __init__(self):
        super().__init__()
        built, args, kwargs = _program_build("cpu")
        state = {{**dict(built.named_parameters()), **dict(built.named_buffers())}}
        self.dtypes = [v.dtype if isinstance(v, torch.Tensor) else None for v in (*args, *kwargs.values())]
        for name, shape, dtype in WEIGHTS:
            *path, leaf = name.split(".")
            module = self
            for part in path:
                if part not in module._modules:
                    module.add_module(part, nn.Module())
                module = module._modules[part]
            module.register_buffer(leaf, state[name.split(".", 1)[1]].detach().to(dtype).clone())

    def forward(self, *inputs):
        inputs = [x.to(d) if d is not None and isinstance(x, torch.Tensor) else x
                  for x, d in zip(inputs, self.dtypes)]  # back to build()'s dtypes (a harness may cast them)
        weight = self.get_buffer
        outputs = call([
{arguments}        ])
        return {returns}
'''


def returns_text(indices: list) -> str:
    """ModelNew's return: call()'s one output (a float), else pack() of them."""
    if len(indices) == 1:
        index = indices[0]
        return f"outputs[{index}] if outputs[{index}].is_floating_point() else pack(outputs[{index}])"
    return "pack(" + ", ".join(f"outputs[{i}]" for i in indices) + ")"


def graph_level(layouts: list, outputs: list) -> str:
    """ModelNew of a graph-level pair: call()'s arguments laid out as it asserts (layouts: (size, stride, dtype
    name) each), the outputs at these indices returned as Model returns them (one, or packed)."""
    rows = "".join(f"    ({tuple(size)!r}, {tuple(stride)!r}, torch.{dtype_name(dtype)}),\n"
                   for size, stride, dtype in layouts)
    return _PACK + "\n\n" + _GRAPH_LEVEL.format(layouts=rows, returns=returns_text(list(outputs)))


def model_level(model: str, graph, state: dict, output_offset: int) -> str:
    """ModelNew of a model-level pair from one recorded graph (scraper.suiterun.PairingGraph, whose model-level
    check passed), the model's state table and where the model's outputs start among call()'s outputs. The record
    is data a worker wrote (for --suite modules, next to scraped code): only checked ints, reprs of strings and
    known dtype names reach the code; anything else raises PairError("bad_pairing")."""
    weights, arguments = [], []
    for entry in graph.inputs:
        if entry.kind == "input":
            arguments.append(f"inputs[{integer(entry.index)}]")
            continue
        if entry.kind not in ("parameter", "buffer") or not isinstance(entry.name, str):
            raise PairError("bad_pairing", f"input entry {entry!r:.80}")
        name = f"{MODEL_ATTRIBUTE}.{entry.name}"
        info = state.get(entry.name) or {}
        info = info if isinstance(info, dict) else {}
        shape = tuple(integer(n) for n in info.get("shape") or ())
        weights.append(f"    ({name!r}, {shape!r}, torch.{dtype_name(info.get('dtype', 'float32'))}),\n")
        arguments.append(f"weight({name!r})")
    indices = [integer(output_offset) + integer(index) for index in graph.returns]
    return _PACK + "\n\n" + _MODEL_LEVEL.format(
        model=model, weights="".join(dict.fromkeys(weights)),
        arguments="".join(f"            {a},\n" for a in arguments), returns=returns_text(indices))


def integer(value) -> int:
    """A non-negative int of the pairing record, else PairError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PairError("bad_pairing", f"{value!r:.40} where a count or an index belongs")
    return value


def dtype_name(value) -> str:
    """A torch dtype's name of the pairing record (float32, bfloat16, ...), else PairError."""
    if isinstance(value, str) and value.startswith("torch."):
        value = value[6:]
    if not isinstance(value, str) or not _DTYPE.match(value):
        raise PairError("bad_pairing", f"dtype {value!r:.40}")
    return value
