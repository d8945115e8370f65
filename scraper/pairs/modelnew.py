"""`class ModelNew` of a pair's triton_code: what turns `call(args)` back into a module with Model's interface.

Model level (the suite recorded how the model's parameters, buffers and inputs map to `call`'s arguments, and its
outputs to `call`'s outputs; scraper.worker.recording): ModelNew holds every parameter and buffer `call` reads under
Model's own state-dict names (as buffers: they are only read), so `load_state_dict` gives it Model's weights;
`forward(*inputs)` takes get_inputs() as Model does, passes weights and inputs to `call` in the recorded order and
returns the recorded outputs (one tensor, or a tuple).

Graph level (no recording: an older debug root, graph breaks, a training graph): Model is the ATen graph itself
(scraper.pairs.graph_problem), whose forward arguments are exactly `call`'s, so `forward(*args)` is
`call(list(args))`.
"""

from __future__ import annotations

import re
from scraper.pairs.launch import PairError

MODEL_ATTRIBUTE = "model"  # Model (scraper.kernelbench) keeps the suite's model as self.model
_DTYPE = re.compile(r"^[a-z][a-z0-9_]*$")

_GRAPH_LEVEL = '''class ModelNew(nn.Module):
    """The graph as Triton: forward(*args) takes the graph's inputs (Model's forward arguments) and returns
    call()'s outputs."""

    def forward(self, *args):
        return call(list(args))
'''

_MODEL_LEVEL = '''# Model's parameters and buffers that call() reads: (state-dict name, shape, dtype).
WEIGHTS = [
{weights}]


class ModelNew(nn.Module):
    """{model} as Triton: forward(*inputs) takes Model's inputs and returns Model's output tensors. It holds the
    weights call() reads under Model's names; copy Model's into it with
    load_state_dict({{**model.state_dict(), **dict(model.named_buffers())}}, strict=False)."""

    def __init__(self):
        super().__init__()
        for name, shape, dtype in WEIGHTS:
            *path, leaf = name.split(".")
            module = self
            for part in path:
                if part not in module._modules:
                    module.add_module(part, nn.Module())
                module = module._modules[part]
            module.register_buffer(leaf, torch.empty(shape, dtype=dtype))

    def forward(self, *inputs):
        weight = self.get_buffer
        outputs = call([
{arguments}        ])
        return {returns}
'''


def graph_level() -> str:
    """ModelNew of a graph-level pair."""
    return _GRAPH_LEVEL


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
    returns = f"outputs[{indices[0]}]" if len(indices) == 1 else \
        "(" + ", ".join(f"outputs[{i}]" for i in indices) + ")"
    return _MODEL_LEVEL.format(model=model, weights="".join(dict.fromkeys(weights)),
                               arguments="".join(f"            {a},\n" for a in arguments), returns=returns)


def integer(value) -> int:
    """A non-negative int of the pairing record, else PairError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PairError("bad_pairing", f"{value!r:.40} where a count or an index belongs")
    return value


def dtype_name(value) -> str:
    """A torch dtype's name of the pairing record (float32, bfloat16, ...), else PairError."""
    if not isinstance(value, str) or not _DTYPE.match(value):
        raise PairError("bad_pairing", f"dtype {value!r:.40}")
    return value
