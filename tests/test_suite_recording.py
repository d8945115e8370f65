"""The pairing record (scraper.worker.recording) on CPU: which parameters, buffers and inputs `call(args)` takes, in
order, and which of its outputs the model returns. With Inductor itself (C++ kernels on CPU, but the same placeholder
order and the same `call`), the oracle is the generated output_code.py: its `call`, given the arguments the record
names, returns the model's outputs. With aot_eager (fast), the expected order is written out by hand."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import run_inductor_suite
from scraper.worker.recording import GraphRecorder, chosen_config, model_level_graph, parse_source


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.register_buffer("scale", torch.full((4,), 2.0))

    def forward(self, x, y=None):
        h = self.norm(self.fc(x)) * self.scale
        return {"a": h.relu(), "b": (h + y, x.view(-1))}


def keyword_wrapper(function):
    """A Hugging Face style decorator: Dynamo then traces `wrapper(self, *args, **kwargs)`."""
    @functools.wraps(function)
    def wrapper(self, *args, **kwargs):
        return function(self, *args, **kwargs)
    return wrapper


class WrappedNet(Net):
    @keyword_wrapper
    def forward(self, x, y=None):
        return super().forward(x, y)


EXPECTED_INPUTS = [{"kind": "parameter", "name": "fc.weight"}, {"kind": "parameter", "name": "fc.bias"},
                   {"kind": "input", "index": 0}, {"kind": "buffer", "name": "norm.running_mean"},
                   {"kind": "buffer", "name": "norm.running_var"}, {"kind": "parameter", "name": "norm.weight"},
                   {"kind": "parameter", "name": "norm.bias"}, {"kind": "buffer", "name": "scale"},
                   {"kind": "input", "index": 1}]


def record(model, backend: str, *args, **kwargs):
    torch._dynamo.reset()
    recorder = GraphRecorder(backend)
    with torch.no_grad():
        output = torch.compile(model, backend=recorder)(*args, **kwargs)
    return recorder.finish(model, args, kwargs, output), output


@pytest.mark.parametrize("cls", [Net, WrappedNet])
def test_placeholders_map_to_parameters_buffers_and_inputs(cls):
    model = cls().eval()
    pairing, _ = record(model, "aot_eager", torch.randn(3, 4), y=torch.randn(3, 4))
    graph, reason = model_level_graph(pairing)
    assert reason is None and graph["inputs"] == EXPECTED_INPUTS
    assert graph["returns"] == [0, 1, 2]  # a, b[0], b[1] of the output, in flat_tensors order
    assert graph["aot"][0]["kind"] == "inference" and len(graph["aot"][0]["inputs"]) == len(EXPECTED_INPUTS)
    assert pairing["state"]["norm.running_mean"] == {"shape": [4], "dtype": "float32", "persistent": True}
    assert pairing["inputs"] == [{"shape": [3, 4], "dtype": "float32"}, {"shape": [3, 4], "dtype": "float32"}]


def test_why_a_model_has_no_model_level_graph():
    class Broken(nn.Module):
        def forward(self, x):
            x = x * 2
            torch._dynamo.graph_break()
            return x + 1

    class PassThrough(nn.Module):
        def forward(self, x):
            return x, x * 2  # x itself is no graph output

    assert model_level_graph(record(Broken(), "aot_eager", torch.randn(3))[0])[1] == "graph_breaks"
    assert model_level_graph(record(PassThrough(), "aot_eager", torch.randn(3))[0])[1] == "unmapped_output"
    assert model_level_graph(record(Net().eval(), "eager", torch.randn(3, 4), torch.randn(3, 4))[0])[1] \
        == "not_inference"  # no AOT graph, so nothing says what call() takes
    assert model_level_graph(None)[1] == "no_pairing"


def test_inductor_call_takes_what_the_record_says(tmp_path, monkeypatch):
    import torch._dynamo.config
    import torch._inductor.config

    monkeypatch.setattr(torch._dynamo.config, "debug_dir_root", str(tmp_path))
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._inductor.config, "trace.enabled", True)  # TORCH_COMPILE_DEBUG=1's debug files
    torch._dynamo.reset()
    model = Net().eval()
    args, kwargs = (torch.randn(3, 4),), {"y": torch.randn(3, 4)}
    recorder = GraphRecorder("inductor", debug_dir=lambda: Path(torch._dynamo.utils.get_debug_dir()))
    with torch.no_grad():
        output = torch.compile(model, backend=recorder)(*args, **kwargs)
    pairing = recorder.finish(model, args, kwargs, output)
    graph, reason = model_level_graph(pairing)
    assert reason is None and graph["inputs"] == EXPECTED_INPUTS
    (output_code,) = tmp_path.rglob("output_code.py")  # found independently of the record
    assert graph["aot"][0]["folder"] == output_code.parent.name
    spec = importlib.util.spec_from_file_location("generated", output_code)
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    inputs = [*args, *kwargs.values()]
    call_args = [inputs[e["index"]] if e["kind"] == "input" else state[e["name"]] for e in graph["inputs"]]
    with torch.no_grad():
        returned = generated.call(list(call_args))
        expected = model(*args, **kwargs)
    for index, tensor in zip(graph["returns"], (expected["a"], *expected["b"])):
        torch.testing.assert_close(returned[index], tensor)


def test_worker_writes_pairing_and_problem_beside_the_program(tmp_path):
    code = "import torch\nfrom torch import nn\nclass Twice(nn.Module):\n" \
           "    def __init__(self):\n        super().__init__()\n        self.w = nn.Parameter(torch.ones(4))\n" \
           "    def forward(self, x):\n        return x * self.w * 2\n"
    modules_file = tmp_path / "modules.jsonl"
    modules_file.write_text(json.dumps({"name": "twice", "class_name": "Twice", "code": code}) + "\n")
    out = tmp_path / "tcd"
    assert run_inductor_suite.main(["--out", str(out), "--gpus", "none", "--device", "cpu", "-q", "--suite",
                                    "modules", "--modules-file", str(modules_file), "--backend", "aot_eager"]) == 0
    row = json.loads((out / "suite" / "manifest.jsonl").read_text().splitlines()[-1])
    assert row["pairing"] == "suite/pairing/modules/inference-float32/twice.json"
    assert row["problem"] == "suite/problems/modules/inference-float32/twice.py"
    pairing = json.loads((out / row["pairing"]).read_text())
    graph, _ = model_level_graph(pairing)
    assert sorted(map(sorted_json, graph["inputs"])) == sorted(map(sorted_json, [
        {"kind": "input", "index": 0}, {"kind": "parameter", "name": "w"}]))
    assert pairing["kernels"] == {"by_file": {}, "by_name": {}}  # no Triton kernel was compiled


def test_source_names_and_chosen_configs():
    assert parse_source("L['self']._modules['0']._parameters['weight']") == \
        ("L", "self", [("attr", "_modules"), ("key", "0"), ("attr", "_parameters"), ("key", "weight")])
    assert parse_source("L['args'][1]") == ("L", "args", [("index", 1)])
    assert parse_source("not a source") is None
    config = SimpleNamespace(kwargs={"XBLOCK": 128}, num_warps=4, num_stages=1)
    tuned = SimpleNamespace(launchers=[SimpleNamespace(config=config)], configs=[config, config])
    assert chosen_config(tuned) == {"kwargs": {"XBLOCK": 128}, "num_warps": 4, "num_stages": 1}
    untuned = SimpleNamespace(launchers=[], configs=[config, config])
    assert chosen_config(untuned) is None  # several candidates, none chosen yet


def sorted_json(value) -> str:
    return json.dumps(value, sort_keys=True)
