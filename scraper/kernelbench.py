"""KernelBench-form reference problems from the suite's programs.

Every program the suite writes defines `build(device) -> (model, args, kwargs)` (scraper.worker.programs; TorchBench's
builder too). `problem_text(program)` appends the KernelBench interface to it:

    class Model(nn.Module)   # Model(*get_init_inputs()): the model build() makes, random weights, on the CPU
    get_inputs()             # build()'s inputs as one list: positional arguments, then keyword arguments' values
    get_init_inputs()        # []

Model.forward(*get_inputs()) calls the model as the suite did and returns its output tensors (one tensor, or a
tuple in `flat_tensors` order). The program is kept whole above the interface, so the problem needs nothing but
what the program needs (torch and timm / transformers, or the scraped module's closure) and downloads nothing. It
is the same text for a program written today or one found in an old debug root, so problems of old runs are
derived the same way (scraper.pairs).
"""

from __future__ import annotations

import ast
import inspect
import sys
from typing import Optional

from scraper.accuracy import flat_tensors

INTERFACE_NAMES = ("Model", "ModelNew", "get_inputs", "get_init_inputs")
MARKER = "# " + "-" * 105 + "\n# KernelBench interface, added by triton-data"
INTERFACE_VERSION = "KernelBench interface version 2"  # in every problem this version writes (older: rewritten)

_INTERFACE = '''

''' + MARKER + ''' (scraper/kernelbench.py): Model(*get_init_inputs()) and get_inputs()
# build the model and its inputs as build() above does (random weights, the shapes that were compiled), on the CPU;
# move both to a GPU with .to(device). Model's forward returns the model's output: its one tensor, or pack() of its
# tensors (one tensor: what KernelBench's evaluator compares). Inputs come back to build()'s dtypes first (the
# evaluator casts every input to float32, token ids too). {version}.
import copy as _copy  # noqa: E402

import torch  # noqa: E402

MODEL_NAME = {name!r}
_BUILT = {{}}
{build_binding}

def _build_once():
    """build("cpu") once per process: (model, args, kwargs)."""
    if not _BUILT:
        _BUILT["cpu"] = _build("cpu")
    return _BUILT["cpu"]


{flat_tensors}

def _kb_pack(*outputs):
    """Several output tensors as one (KernelBench's evaluator compares one): each flattened, as float32, in order."""
    return torch.cat([output.reshape(-1).to(torch.float32) for output in outputs])


def _kb_dtypes(args, kwargs):
    """The dtype of each input tensor of build() (None for what is not a tensor)."""
    return [value.dtype if isinstance(value, torch.Tensor) else None for value in (*args, *kwargs.values())]


def _kb_restore(inputs, dtypes):
    """The inputs in build()'s dtypes again (a harness may have cast them)."""
    return [x.to(d) if d is not None and isinstance(x, torch.Tensor) else x for x, d in zip(inputs, dtypes)]


class Model(torch.nn.Module):
    """{name} as compiled: forward(*get_inputs()) returns its output tensor (several: packed into one)."""

    def __init__(self):
        super().__init__()
        model, args, kwargs = _build_once()
        self.model = _copy.deepcopy(model)
        self.positional = len(args)
        self.keywords = list(kwargs)
        self.dtypes = _kb_dtypes(args, kwargs)

    def forward(self, *inputs):
        inputs = _kb_restore(inputs, self.dtypes)
        named = dict(zip(self.keywords, inputs[self.positional:]))
        tensors = _kb_flat_tensors(self.model(*inputs[: self.positional], **named))
        return tensors[0] if len(tensors) == 1 and tensors[0].is_floating_point() else _kb_pack(*tensors)


def get_inputs():
    """build()'s inputs as one list (positional arguments, then keyword arguments' values), copied."""
    _, args, kwargs = _build_once()
    return [value.clone() if isinstance(value, torch.Tensor) else value for value in (*args, *kwargs.values())]


def get_init_inputs():
    return []
'''

# When the program itself defines one of the interface's names (a scraped class called Model), build() must not
# see the interface's: it runs with the program's own names, taken before the interface defines them.
_SNAPSHOT_BINDING = '''
import types as _types  # noqa: E402

# The program defines {names} itself: build() runs with the program's own names, taken before this interface.
_PROGRAM_NAMES = dict(globals())
_build = _types.FunctionType(build.__code__, _PROGRAM_NAMES, "build")
'''


def top_level_names(program: str) -> set:
    """Names a program binds at module level (classes, functions, assignments, imports); empty when it does not
    parse."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def defines_build(program: str) -> bool:
    """True when the program has a top-level `def build(...)` (what the interface calls)."""
    return "build" in top_level_names(program)


def packages(program: Optional[str]) -> list:
    """The packages a program imports at its top level besides torch and the standard library (timm,
    transformers, ...): what a problem needs installed."""
    try:
        tree = ast.parse(program or "")
    except (SyntaxError, ValueError, RecursionError):
        return []
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(names - set(sys.stdlib_module_names) - {"torch", "__future__"})


def current(problem: Optional[str]) -> bool:
    """Whether a problem a worker wrote has this version's interface (an older one is made again)."""
    return bool(problem) and INTERFACE_VERSION in problem


def problem_text(program: str, name: str) -> Optional[str]:
    """The KernelBench problem of a suite program (the program, then the interface); None when the program has
    no build()."""
    if not defines_build(program):
        return None
    clashes = sorted(set(INTERFACE_NAMES) & top_level_names(program))
    binding = _SNAPSHOT_BINDING.format(names=", ".join(clashes)) if clashes else "_build = build\n"
    helper = inspect.getsource(flat_tensors).replace("flat_tensors(", "_kb_flat_tensors(")
    interface = _INTERFACE.format(name=name, build_binding=binding, version=INTERFACE_VERSION, flat_tensors=helper)
    return program.rstrip("\n") + "\n" + interface
