"""What a PyTorch -> Triton pair needs from the compile, recorded by the worker while it compiles (the debug files
alone do not say it).

`GraphRecorder` is a torch.compile backend that wraps the real one (Inductor by default). For every graph Dynamo
hands it, it notes each placeholder's Dynamo source in order (`L['self']._modules['conv1']._parameters['weight']`,
`L['x']`, ...) and the number of outputs; it then compiles with `compile_fx(gm, example_inputs,
inner_compile=...)`, whose wrapped inner compile sees the graph AOT autograd made of it, i.e. exactly the graph
whose `call(args)` Inductor writes to output_code.py: its placeholders (`arg0_1` ... for inference, `primals_1`
... for a training forward, saved tensors and tangents for a backward), its outputs, where the model's own outputs
start among them (AOT's `num_mutated_inp_runtime_indices`, as Inductor itself reads it) and the debug folder it
wrote (the graph folder that appeared during that compile). For inference AOT keeps Dynamo's placeholder order, so
call's argument i is Dynamo's placeholder i whenever the two counts agree (`verified`).

After the compiled run, `finish(model, args, kwargs, output)` resolves each source against the real objects:
a parameter or buffer of the model (by identity, under its state-dict name) or one of the inputs (its position in
`[*args, *kwargs.values()]`, the order of the problem's get_inputs()); and it finds each tensor of the model's
output (scraper.accuracy.flat_tensors order) among the graph's outputs by identity. `kernel_configs()` reads
the launch configuration Inductor's autotuner kept for each Triton kernel (by kernel file and name).

The result (`pairing`) is saved as JSON beside the program; scraper.pairs turns it into ModelNew.
"""

from __future__ import annotations

import functools
import logging
import re
import weakref
from pathlib import Path
from typing import Any, Callable, Optional

from scraper.accuracy import flat_tensors

log = logging.getLogger(__name__)

PAIRING_VERSION = 1
_ROOT = re.compile(r"""^(?P<scope>[LG])\[(?P<quote>['"])(?P<name>.+?)(?P=quote)\]""")
_STEP = re.compile(r"""\.(?P<attr>\w+)|\[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]|\[(?P<index>-?\d+)\]""")


def source_name(node) -> Optional[str]:
    """The Dynamo source of a placeholder node (`L['x']`), or None. `Source.name` is a method in torch 2.11 and a
    property in later versions."""
    grapharg = node.meta.get("grapharg")
    source = getattr(grapharg, "source", None)
    if source is None:
        return None
    name = source.name
    return name() if callable(name) else str(name)


def parse_source(text: str) -> Optional[tuple[str, str, list]]:
    """(scope "L" | "G", root name, steps) of a source name such as `L['self']._modules['fc']._parameters['w']`;
    steps are ("attr", name), ("key", text) or ("index", int). None when the text has another shape."""
    root = _ROOT.match(text or "")
    if root is None:
        return None
    steps, position = [], root.end()
    while position < len(text):
        step = _STEP.match(text, position)
        if step is None:
            return None
        if step["attr"] is not None:
            steps.append(("attr", step["attr"]))
        elif step["index"] is not None:
            steps.append(("index", int(step["index"])))
        else:
            steps.append(("key", step["key"]))
        position = step.end()
    return root["scope"], root["name"], steps


def follow(value: Any, steps: list) -> Any:
    """Walk `steps` from `value` (getattr for attributes, [] for keys and indices); raises on a dead end."""
    for kind, step in steps:
        value = getattr(value, step) if kind == "attr" else value[step]
    return value


def frame_locals(model, args: tuple, kwargs: dict) -> dict:
    """What `L[...]` can name in the frame Dynamo traced: the forward's own parameters bound to the call, and, for
    forwards behind a `def wrapper(self, *args, **kwargs)` decorator, `args` and `kwargs` themselves."""
    import inspect

    names: dict = {"self": model, "args": tuple(args), "kwargs": dict(kwargs)}
    try:
        bound = inspect.signature(type(model).forward).bind(model, *args, **kwargs)
        names.update(bound.arguments)
    except (TypeError, ValueError):
        pass
    return names


def resolve_input(source: Optional[str], names: dict, by_id: dict, inputs: list) -> dict:
    """What one placeholder is: {"kind": "parameter"|"buffer", "name": state-dict name} or {"kind": "input",
    "index": position in inputs}, else {"kind": "unmapped", "source": source}."""
    parsed = parse_source(source) if source else None
    if parsed is not None and parsed[0] == "L" and parsed[1] in names:
        try:
            value = follow(names[parsed[1]], parsed[2])
        except (AttributeError, KeyError, IndexError, TypeError):
            value = None
        if value is not None and id(value) in by_id:
            return dict(by_id[id(value)])
        for index, candidate in enumerate(inputs):
            if candidate is value and value is not None:
                return {"kind": "input", "index": index}
    return {"kind": "unmapped", "source": source}


def state_by_id(model) -> dict:
    """id(tensor) -> {"kind", "name"} for the model's parameters and buffers (the first name of a tied one)."""
    found: dict = {}
    for name, tensor in model.named_buffers():
        found.setdefault(id(tensor), {"kind": "buffer", "name": name})
    for name, tensor in model.named_parameters():
        found.setdefault(id(tensor), {"kind": "parameter", "name": name})
    return found


def debug_graph_folders(debug_dir: Optional[Path]) -> set:
    """The graph folders under <debug dir>/torchinductor/ now."""
    root = Path(debug_dir) / "torchinductor" if debug_dir else None
    return {p.name for p in root.iterdir() if p.is_dir()} if root and root.is_dir() else set()


def aot_kind(kwargs: dict) -> str:
    """inference | forward | backward, from the flags compile_fx passes its inner compile."""
    if kwargs.get("is_backward"):
        return "backward"
    return "inference" if kwargs.get("is_inference") else "forward"


def output_offset(kind: str) -> int:
    """Where the model's own outputs start among a forward graph's outputs: after the mutated inputs AOT returns
    first (0 for inference, whose input mutations stay in the graph)."""
    if kind != "forward":
        return 0
    import torch._guards

    context = torch._guards.TracingContext.try_get()
    metadata = getattr(context, "fw_metadata", None)
    return int(getattr(metadata, "num_mutated_inp_runtime_indices", 0) or 0)


def placeholders(gm) -> list:
    """The placeholder nodes of an FX graph module, in order."""
    return [node for node in gm.graph.nodes if node.op == "placeholder"]


def output_count(gm) -> int:
    """How many values an FX graph returns."""
    node = next(node for node in reversed(gm.graph.nodes) if node.op == "output")
    values = node.args[0]
    return len(values) if isinstance(values, (list, tuple)) else 1


class GraphRecorder:
    """A torch.compile backend recording what each graph's `call(args)` takes and returns (module docstring).
    `backend`: "inductor" (compile_fx, the inner AOT graphs recorded too), "aot_eager" (AOT autograd without
    Inductor: the same AOT graphs, for CPU tests) or any other backend name (Dynamo level only)."""

    def __init__(self, backend: str = "inductor", mode: Optional[str] = None,
                 debug_dir: Optional[Callable[[], Optional[Path]]] = None) -> None:
        self.backend, self.mode = backend, mode
        self.debug_dir = debug_dir or (lambda: None)
        self.graphs: list[dict] = []
        self._outputs: list[list] = []  # per graph: weak references to the outputs of its first call

    def __call__(self, gm, example_inputs):
        graph = {"index": len(self.graphs), "sources": [source_name(n) for n in placeholders(gm)],
                 "own_state": [name for name, _ in [*gm.named_parameters(), *gm.named_buffers()]],
                 "outputs": output_count(gm), "aot": []}
        self.graphs.append(graph)
        self._outputs.append([])
        return self._capturing(self._compile(gm, example_inputs, graph), graph["index"])

    def _compile(self, gm, example_inputs, graph: dict):
        if self.backend == "inductor":
            import torch._inductor
            from torch._inductor.compile_fx import compile_fx

            patches = torch._inductor.list_mode_options(self.mode) if self.mode else None
            return compile_fx(gm, example_inputs, inner_compile=self._inner(graph), config_patches=patches)
        if self.backend == "aot_eager":
            from functorch.compile import make_boxed_func
            from torch._dynamo.backends.common import aot_autograd

            def nop(aot_gm, aot_inputs, **kwargs):
                self._note_aot(graph, aot_gm, kwargs)
                return make_boxed_func(aot_gm.forward)

            return aot_autograd(fw_compiler=nop, bw_compiler=functools.partial(nop, is_backward=True),
                                inference_compiler=functools.partial(nop, is_inference=True))(gm, example_inputs)
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend(self.backend)(gm, example_inputs)

    def _inner(self, graph: dict):
        """compile_fx's inner compile, recording the AOT graph it compiles and the debug folder it writes."""
        from torch._inductor.compile_fx import compile_fx_inner

        def inner(aot_gm, aot_inputs, **kwargs):
            before = debug_graph_folders(self.debug_dir())
            compiled = compile_fx_inner(aot_gm, aot_inputs, **kwargs)
            new = sorted(debug_graph_folders(self.debug_dir()) - before)
            self._note_aot(graph, aot_gm, kwargs, folder=new[0] if len(new) == 1 else None)
            return compiled

        return inner

    def _note_aot(self, graph: dict, aot_gm, kwargs: dict, folder: Optional[str] = None) -> None:
        kind = aot_kind(kwargs)
        graph["aot"].append({"kind": kind, "folder": folder, "inputs": [n.name for n in placeholders(aot_gm)],
                             "outputs": output_count(aot_gm), "output_offset": output_offset(kind)})

    def _capturing(self, compiled, index: int):
        """`compiled`, noting (weakly) the outputs of its first call. Arguments pass through untouched, so
        whichever calling convention Dynamo uses (a boxed list or plain arguments) is kept."""

        def run(*args, **kwargs):
            outputs = compiled(*args, **kwargs)
            if not self._outputs[index] and isinstance(outputs, (list, tuple)):
                self._outputs[index] = [weak(value) for value in outputs]
            return outputs

        if hasattr(compiled, "_boxed_call"):
            run._boxed_call = compiled._boxed_call
        return run

    def finish(self, model, args: tuple, kwargs: dict, output) -> dict:
        """The pairing record of this model (module docstring), from the real model, inputs and output."""
        names, by_id = frame_locals(model, args, kwargs), state_by_id(model)
        inputs = [*args, *kwargs.values()]
        leaves = flat_tensors(output)
        graphs = []
        for graph, outputs in zip(self.graphs, self._outputs):
            entry = {key: graph[key] for key in ("index", "sources", "own_state", "outputs", "aot")}
            entry["inputs"] = [resolve_input(s, names, by_id, inputs) for s in graph["sources"]]
            entry["returns"] = [index_of(leaf, outputs) for leaf in leaves]
            graphs.append(entry)
        return {"version": PAIRING_VERSION, "backend": self.backend, "graphs": graphs,
                "state": state_table(model), "inputs": input_table(inputs)}


def weak(value):
    """A weak reference to a tensor (None for what cannot be referenced weakly)."""
    try:
        return weakref.ref(value)
    except TypeError:
        return None


def index_of(leaf, outputs: list) -> Optional[int]:
    """Position of `leaf` among a graph's captured outputs (by identity), or None."""
    return next((i for i, ref in enumerate(outputs) if ref is not None and ref() is leaf), None)


def state_table(model) -> dict:
    """name -> {"shape", "dtype", "persistent"} of every parameter and buffer (persistent: in the state dict)."""
    keys = set(model.state_dict().keys())
    table = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        table[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                       "persistent": name in keys}
    return table


def input_table(inputs: list) -> list:
    """Shape and dtype of each input (None for what is not a tensor)."""
    table = []
    for value in inputs:
        shape = getattr(value, "shape", None)
        table.append({"shape": list(shape), "dtype": str(value.dtype).removeprefix("torch.")}
                     if shape is not None and hasattr(value, "dtype") else None)
    return table


def model_level_graph(pairing: Optional[dict]) -> tuple[Optional[dict], Optional[str]]:
    """The one graph through which `call(args)` computes the whole model, with its single inference AOT graph,
    or None and why not: several graphs (graph breaks), not an inference graph, counts that disagree (AOT
    deduplicated or added inputs), a placeholder that is neither a parameter, a buffer nor an input, or an output
    tensor that is not among the graph's outputs."""
    graphs = (pairing or {}).get("graphs") or []
    if len(graphs) != 1:
        return None, "no_pairing" if not graphs else "graph_breaks"
    graph = graphs[0]
    aot = graph.get("aot") or []
    if len(aot) != 1 or aot[0].get("kind") != "inference":
        return None, "not_inference"
    if graph.get("own_state") or len(aot[0]["inputs"]) != len(graph["inputs"]):
        return None, "inputs_not_one_to_one"
    if any(entry["kind"] == "unmapped" for entry in graph["inputs"]):
        return None, "unmapped_input"
    if not graph["returns"] or any(index is None for index in graph["returns"]):
        return None, "unmapped_output"
    if aot[0]["output_offset"] + graph["outputs"] > aot[0]["outputs"]:
        return None, "outputs_not_one_to_one"
    return graph, None


def kernel_configs() -> dict:
    """{"by_file": {kernel file: config}, "by_name": {kernel name: config}} for every Triton kernel Inductor has
    loaded in this process: the launch configuration its autotuner kept (kwargs such as XBLOCK, num_warps,
    num_stages). Names that occur in several graphs with different configs are left out of by_name."""
    by_file, by_name, clashes = {}, {}, set()
    for autotuner in loaded_autotuners():
        config = chosen_config(autotuner)
        name = (getattr(autotuner, "inductor_meta", None) or {}).get("kernel_name") or \
            getattr(getattr(autotuner, "fn", None), "__name__", None)
        if config is None or not name:
            continue
        if getattr(autotuner, "filename", None):
            by_file[str(autotuner.filename)] = config
        if name in by_name and by_name[name] != config:
            clashes.add(name)
        by_name.setdefault(name, config)
    return {"by_file": by_file, "by_name": {k: v for k, v in by_name.items() if k not in clashes}}


def loaded_autotuners() -> list:
    """Inductor's CachingAutotuner objects in the modules its code cache loaded (output_code.py modules)."""
    try:
        from torch._inductor.codecache import PyCodeCache
        from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    except ImportError:
        return []
    modules = list(getattr(PyCodeCache, "modules", []) or []) + \
        list((getattr(PyCodeCache, "modules_no_attr", {}) or {}).values())
    found, seen = [], set()
    for module in modules:
        for value in list(vars(module).values()):
            if isinstance(value, CachingAutotuner) and id(value) not in seen:
                seen.add(id(value))
                found.append(value)
    return found


def chosen_config(autotuner) -> Optional[dict]:
    """The config the autotuner launches with (its only launcher after autotuning; its only config when there
    was nothing to tune), as {"kwargs", "num_warps", "num_stages"}; None before it ever ran with several."""
    launchers = getattr(autotuner, "launchers", None) or []
    configs = [launcher.config for launcher in launchers if hasattr(launcher, "config")]
    if len(configs) != 1:
        configs = list(getattr(autotuner, "configs", None) or [])
    if len(configs) != 1:
        return None
    config = configs[0]
    return {"kwargs": {k: v for k, v in dict(config.kwargs).items() if isinstance(v, (int, float, bool, str))},
            "num_warps": config.num_warps, "num_stages": config.num_stages}
