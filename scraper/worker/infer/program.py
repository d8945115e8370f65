"""The program of one scraped module: its closure executed, the class constructed, inputs found, the program's
text written with what worked (scraper.worker.programs.module_program).

The search: each model the constructor starts build (scraper.worker.infer.construct), best start first, gets an
input search (scraper.worker.infer.inputs); the first model whose forward accepts inputs wins. What was tried is
recorded in the result's `inference`: the path that succeeded for the constructor (`usage <file:line>`,
`defaults`, `signature`) and for the inputs (`usage <file:line>`, `docstring`, `model`, `generic`), the trial
counts, and the first errors. A failure (the last model's: the one that got furthest) is raised as the phase's
PhaseError carrying the module's own exception (so `error` says what the module said, `Type: message`), with the
same details.
"""

from __future__ import annotations


import errno
import inspect
import os
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

from scraper.worker import programs
from scraper.worker.infer import repairs, setup
from scraper.worker.infer.construct import Constructor
from scraper.worker.infer.errors import failure_of
from scraper.worker.infer.inputs import InputSearch
from scraper.worker.infer.source import SourceFacts
from scraper.worker.infer.guarded import guarded_missing
from scraper.phases import PhaseError

MODULE_NAME = "suite_module"  # the scraped closure's name in sys.modules while the worker runs it
MAX_MODELS = 4  # constructed models an input search is tried on before giving up
SEARCH_SECONDS = 60  # for the whole search (constructor and inputs): a model that needs more is not compiled
MAX_ERRORS = 4  # trial errors kept per phase in the result


def module_program(args, device: str, training: bool) -> tuple[str, dict]:
    """Load a scraped module's source, infer constructor arguments and inputs by trial, and return its program
    (the source plus a build() holding what was inferred) and the manifest fields of the inference."""
    import torch

    if not args.source or not args.class_name:
        raise PhaseError("program", "--suite modules needs --source and --class-name")
    source = Path(args.source).read_text(encoding="utf-8")
    try:
        namespace = exec_source(source, args.source)
    except Exception as exc:  # scraped code
        raise PhaseError("import", exc, data_file_skip(exc)) from exc
    cls = namespace.get(args.class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise PhaseError("import", f"{args.class_name} is not an nn.Module class of {args.source}")
    hints = list(getattr(args, "hints", None) or [])
    found = search(cls, namespace, SourceFacts(source, args.class_name), hints, args.source, device,
                   getattr(torch, args.dtype))
    dtype = (found["dtype"] or f"torch.{args.dtype}").removeprefix("torch.")
    init, inputs = found["init"], found["inputs"]
    text = programs.module_program(source, args.class_name, init.call.args, init.call.kwargs, inputs.args,
                                   inputs.kwargs, dtype, training,
                                   f"constructor from {init.path}, inputs from {inputs.path}", inputs.prepare)
    return text, found["fields"]


def exec_source(source: str, filename: str) -> dict:
    """Execute module source as module `suite_module` (registered in sys.modules, as an imported module is:
    dataclasses and typing look their module up there) in this worker process only."""
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = filename
    sys.modules[MODULE_NAME] = module
    # dont_inherit: not this file's `from __future__ import annotations` (the module's hints stay objects, as
    # when its program is imported)
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, module.__dict__)  # noqa: S102 - scraped code, isolated worker process
    return module.__dict__


def search(cls, namespace: dict, facts: SourceFacts, hints: list, filename: str, device: str, dtype) -> dict:
    """Constructor call and inputs (expressions) that work, and the manifest fields saying how they were found;
    raises PhaseError("init") when no start constructs, PhaseError("inputs") when no input works. A forward
    error caused by a constructor argument gets the constructor repaired (Constructor.rebuild)."""
    import torch

    env = {**namespace, "torch": torch, "types": types, "device": device, "DTYPE": dtype}
    exec(setup.PROCESS_GROUP_HELPER, env)  # noqa: S102 - our own helper, as the program will have it
    evaluate = lambda expression: eval(expression, env)  # noqa: E731,S307 - our own expressions
    run = lambda statement: exec(statement, env)  # noqa: E731,S102 - our own set-up statements (setup.py)
    deadline = time.monotonic() + SEARCH_SECONDS
    constructor = Constructor(cls, evaluate, filename, facts, namespace, deadline, repairs.INIT)
    searches, paths = [], []
    models = constructor.models(hints)
    built = next(models, None)
    while built is not None and len(searches) < MAX_MODELS:
        paths.append(built.path)
        env["DTYPE"] = dtype
        model = env["model"] = built.model  # set-up statements name it
        inputs = InputSearch(model, facts, filename, call_with(model, evaluate, run), cast_with(model, env, dtype),
                             deadline, repairs.INPUTS)
        found = inputs.find(hints, lambda: (model.to(device=device, dtype=dtype), eval_mode(model)))
        searches.append(inputs)
        if found is not None:
            found.prepare = setup.carried(found.prepare)
            fields = details(constructor, searches, built.path, found.path)
            fields.update(init_args=built.call.args, init_kwargs=built.call.kwargs, input_shapes=found.shapes,
                          inputs={"args": found.args, "kwargs": found.kwargs})
            if found.prepare:
                fields["inputs"]["prepare"] = list(found.prepare)
            if found.dtype:
                fields["module_dtype"] = found.dtype.removeprefix("torch.")
            return {"init": built, "inputs": found, "dtype": found.dtype, "fields": fields}
        rebuilt = constructor.rebuild(built, inputs.constructor_failures())
        built = rebuilt or next(models, None)
    if not searches:
        obstacle, fields = constructor.obstacle, details(constructor, searches, None, None)
        raise PhaseError("init", obstacle or "no constructor call to try", with_skip(fields, obstacle, cls, namespace,
                                                                                   facts.source, filename))
    obstacle, fields = searches[-1].obstacle, details(constructor, searches, paths[-1], None)
    raise PhaseError("inputs", obstacle or "no inputs to try", with_skip(fields, obstacle, cls, namespace,
                                                                        facts.source, filename))


# What a module says when it fails for want of an optional import: the name is unbound (NameError), was set to
# None in the except block, or the module asks for something to be installed or built.
WANTS_IMPORT = (r"^NameError|'NoneType' object (is not callable|has no attribute)|[Ii]nstall|not installed|"
                r"not available|[Bb]uild the|[Cc]ompile the")


def with_skip(fields: dict, obstacle, cls, namespace: dict, source: str, filename: str) -> dict:
    """`fields`, with a `skip_reason` ("missing package X") when the module failed in code that uses a name
    bound by a try-import of a module not installed here (scraper.worker.infer.guarded.guarded_missing) and says so:
    kernl's `with nvtx.annotate(...)` after `try: import nvtx except ImportError: ...`, lmdeploy's
    `if awq_inference_engine is None: raise RuntimeError("... install the kernel ...")`."""
    if not isinstance(obstacle, BaseException):
        return fields
    if data_file_skip(obstacle):
        return {**fields, **data_file_skip(obstacle)}
    failure = failure_of(obstacle, filename)
    guarded = guarded_missing(source)
    if not guarded or not failure.search(WANTS_IMPORT):
        return fields
    text = " ".join(failure.lines + [own_source(cls, namespace, name) for name in failure.functions])
    for name, module in guarded.items():
        if re.search(rf"\b{re.escape(name)}\b", text):
            return {**fields, "skip_reason": f"missing package {module}"}
    return fields


def data_file_skip(error: BaseException) -> dict:
    """{"skip_reason": "missing data file X"} where the module failed opening a file that is not there (a
    checkpoint, a vocabulary, `np.load("./pnet.npy")`): the worker has the closure's source only, the
    repository's other files never (and a `.py`-only archive has none). {} for any other error."""
    if not isinstance(error, OSError) or error.errno != errno.ENOENT:
        return {}
    name = error.filename if isinstance(error.filename, str) else ""
    return {"skip_reason": f"missing data file {os.path.basename(name.rstrip('/')) or name or '(unnamed)'}"}


def own_source(cls, namespace: dict, name: str) -> str:
    """The source of method `name` of `cls` (or of function `name` of the module), "" when there is none."""
    function = getattr(cls, name, None) or namespace.get(name)
    try:
        return inspect.getsource(function)
    except (TypeError, OSError):
        return ""


def eval_mode(model) -> None:
    """Every submodule in eval mode without calling model.eval(): a scraped class may override train() or
    eval() with another signature (`def train(self)`), which nn.Module.eval would call."""
    for module in model.modules():
        module.training = False


def call_with(model, evaluate, run):
    """forward of `model` on evaluated argument expressions, without autograd, after the trial's set-up
    statements."""
    import torch

    def call(args: list, kwargs: dict, prepare: tuple = ()):
        for statement in prepare:
            run(statement)
        with torch.no_grad():
            return model(*(evaluate(a) for a in args), **{k: evaluate(v) for k, v in kwargs.items()})
    return call


def cast_with(model, env: dict, dtype):
    """A function that moves the model (and the DTYPE inputs use) to a trial's dtype (None: the suite's)."""
    def cast(wanted):
        target = env["torch"].__dict__[wanted.removeprefix("torch.")] if wanted else dtype
        if env["DTYPE"] is not target:
            model.to(dtype=target)
            env["DTYPE"] = target
    return cast


def details(constructor: Constructor, searches: list, init_path, inputs_path) -> dict[str, Any]:
    """The `inference` manifest field: paths taken, trials, first errors of each phase."""
    found = {"init": init_path, "inputs": inputs_path, "init_trials": constructor.trials,
             "input_trials": sum(s.trials for s in searches)}
    if constructor.errors:
        found["init_errors"] = constructor.errors[:MAX_ERRORS]
    errors = [error for s in searches for error in s.errors]
    if errors:
        found["input_errors"] = errors[:MAX_ERRORS]
    return {"inference": found}
