"""`class ModelNew` of a pair's triton_code: what turns `call(args)` back into a module with Model's interface.

Model level (the suite recorded how the model's parameters, buffers and inputs map to `call`'s arguments, and its
outputs to `call`'s outputs; scraper.suite.recording): ModelNew holds every parameter and buffer `call` reads under
Model's own state-dict names (as buffers: they are only read), so `load_state_dict` gives it Model's weights;
`forward(*inputs)` takes get_inputs() as Model does, passes weights and inputs to `call` in the recorded order and
returns the recorded outputs (one tensor, or a tuple).

Graph level (no recording: an older debug root, graph breaks, a training graph): Model is the ATen graph itself
(scraper.pairs.graph_problem), whose forward arguments are exactly `call`'s, so `forward(*args)` is
`call(list(args))`.
"""

from __future__ import annotations

from typing import Optional

MODEL_ATTRIBUTE = "model"  # Model (scraper.suite.problems) keeps the suite's model as self.model

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


def model_level(model: str, graph: dict, state: dict, output_offset: int) -> str:
    """ModelNew of a model-level pair from one recorded graph (scraper.suite.recording.model_level_graph), the
    model's state table and where the model's outputs start among call()'s outputs."""
    weights, arguments = [], []
    for entry in graph["inputs"]:
        if entry["kind"] == "input":
            arguments.append(f"inputs[{entry['index']}]")
            continue
        name = f"{MODEL_ATTRIBUTE}.{entry['name']}"
        info = state.get(entry["name"]) or {}
        weights.append(f"    ({name!r}, {tuple(info.get('shape') or ())!r}, torch.{info.get('dtype', 'float32')}),\n")
        arguments.append(f"weight({name!r})")
    indices = [output_offset + index for index in graph["returns"]]
    returns = f"outputs[{indices[0]}]" if len(indices) == 1 else \
        "(" + ", ".join(f"outputs[{i}]" for i in indices) + ")"
    return _MODEL_LEVEL.format(model=model, weights="".join(dict.fromkeys(weights)),
                               arguments="".join(f"            {a},\n" for a in arguments), returns=returns)


def weight_names(graph: Optional[dict]) -> list[str]:
    """The state-dict names (in Model, with its `model.` prefix) a model-level ModelNew holds."""
    return [f"{MODEL_ATTRIBUTE}.{e['name']}" for e in (graph or {}).get("inputs", []) if e["kind"] != "input"]
