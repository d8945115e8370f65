"""How a repository's own files use an nn.Module class: the constructor arguments and input tensors of its tests,
benchmarks and examples, found statically (`ast` only; nothing is imported or executed).

    usages = repository_usages(files, candidates)     # {(path, class name): [usage, ...]}

A usage is plain JSON, handed to the worker as a hint (scraper.worker.infer tries it before its own guesses):

    {"where": "test/test_rms_norm.py:166",
     "init": {"args": ["64"], "kwargs": {"eps": "1e-06"}},        # Python expressions; null: not known statically
     "inputs": [{"shape": [2, 16, 64], "dtype": "bfloat16"}, {"value": "None"}]}   # absent when not known

Values are evaluated from literals only: constants, arithmetic, names bound to such values earlier in the same
function or at module level, function defaults and the first case of `@pytest.mark.parametrize`. The expressions
written are `repr()`s of those values (and `torch.<dtype>`), never text copied from the repository.
"""

from __future__ import annotations

import ast
import re
from typing import Iterable, Optional

MAX_USAGES = 3  # per class: the best few call sites (known inputs, most known arguments) are enough
MAX_SEEN = 12  # call sites looked at per class before choosing
CONFIG_CALLS = re.compile(r"(Config|Args|Cfg|Params|Options|Arguments)$")
MAX_SCAN_FILES = 2000  # files parsed per repository for usages
UNKNOWN = object()
TENSOR_MAKERS = {"randn", "rand", "zeros", "ones", "empty", "randint", "full", "arange"}
DTYPES = {"float16", "half", "bfloat16", "float32", "float", "float64", "double", "int64", "long", "int32", "int",
          "bool", "int8", "uint8", "float8_e4m3fn"}
# Methods that return the module itself (or a copy of it) when chained on the constructor call.
SELF_METHODS = {"to", "cuda", "cpu", "eval", "train", "half", "float", "bfloat16", "double", "requires_grad_"}
TENSOR_METHODS = SELF_METHODS | {"clone", "detach", "contiguous", "requires_grad_", "normal_", "uniform_"}


class Dtype(str):
    """A torch dtype seen in the source (`torch.bfloat16`): written back as that expression."""

    def __repr__(self) -> str:
        return f"torch.{self}"


class Namespace(dict):
    """A config object built from keyword literals (`LlamaConfig(hidden_size=64)`): written back as a
    types.SimpleNamespace of those attributes (the worker adds the ones the module reads besides)."""

    def __repr__(self) -> str:
        return "types.SimpleNamespace(" + ", ".join(f"{k}={v!r}" for k, v in self.items()) + ")"


def repository_usages(files: Iterable, candidates: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list]:
    """Usages of the candidate classes ((path, class name) pairs) in `files` (objects with .path and .text)."""
    by_name: dict[str, list[str]] = {}
    for path, name in candidates:
        by_name.setdefault(name, []).append(path)
    if not by_name:
        return {}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(by_name))) + r")\s*\(")
    found: dict[tuple[str, str], list] = {}
    scanned = 0
    for file in files:
        names = set(pattern.findall(file.text))
        if not names or scanned >= MAX_SCAN_FILES:
            continue
        scanned += 1
        for name, usage in file_usages(file.path, file.text, names):
            for path in matching_paths(by_name[name], file.path, usage.pop("module")):
                bucket = found.setdefault((path, name), [])
                if len(bucket) < MAX_SEEN and usage not in bucket:
                    bucket.append(usage)
    return {key: sorted(bucket, key=usage_rank)[:MAX_USAGES] for key, bucket in found.items()}


def usage_rank(usage: dict) -> tuple:
    """Best first: usages with known inputs, then those with more known constructor arguments."""
    init = usage["init"]
    known = sum(v is not None for v in [*init["args"], *init["kwargs"].values()])
    unknown = sum(v is None for v in [*init["args"], *init["kwargs"].values()])
    return ("inputs" not in usage, unknown, -known)


def matching_paths(paths: list[str], user: str, module: Optional[str]) -> list[str]:
    """The candidate files a usage in file `user` refers to: the same file, or the file its import names
    (`from pkg.mod import Name`: a path ending in pkg/mod.py, or a package re-exporting it)."""
    if module is None:
        return [path for path in paths if path == user]
    wanted = module.strip(".").replace(".", "/")
    return [path for path in paths if path.removesuffix(".py").removesuffix("/__init__").endswith(wanted)
            or path.startswith(wanted + "/") or ("/" + wanted + "/") in path]


def file_usages(path: str, text: str, names: set[str]):
    """(class name, usage) for every call of one of `names` in one file."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return
    imported = imported_from(tree, names)
    module_env = bind_assignments(tree.body, {})
    own_classes = defined_classes(tree)
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        env = module_env if scope is tree else function_env(scope, module_env)
        for name, usage in scope_usages(scope, env, names):
            if name in imported or name in own_classes:
                usage["module"] = imported.get(name)
                usage["where"] = f"{path}:{usage['where']}"
                yield name, usage


def imported_from(tree: ast.Module, names: set[str]) -> dict[str, str]:
    """{name: module} for `from module import name` of the wanted names (relative imports keep their dots)."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in names and (alias.asname or alias.name) == alias.name:
                    found[alias.name] = "." * node.level + (node.module or "")
    return found


def defined_classes(tree: ast.Module) -> set[str]:
    """Top-level class names of a file (its own classes are used without an import)."""
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def function_env(function, module_env: dict) -> dict:
    """Names known in a function: module constants, parameter defaults, the first pytest.mark.parametrize case,
    then its own simple assignments in order."""
    env = dict(module_env)
    params = function.args.args + function.args.kwonlyargs
    defaults = [None] * (len(function.args.args) - len(function.args.defaults)) + list(function.args.defaults)
    for param, default in zip(params, defaults + list(function.args.kw_defaults)):
        env.pop(param.arg, None)
        if default is not None:
            bind(env, param.arg, evaluate(default, env))
    for decorator in reversed(function.decorator_list):
        bind_parametrize(decorator, env)
    return bind_assignments(function.body, env)


def bind_parametrize(decorator: ast.expr, env: dict) -> None:
    """`@pytest.mark.parametrize("a, b", [(1, 2), ...])`: bind a and b to the first case."""
    if not (isinstance(decorator, ast.Call) and dotted(decorator.func).endswith("parametrize")
            and len(decorator.args) >= 2):
        return
    names = evaluate(decorator.args[0], env)
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    cases = decorator.args[1]
    if not isinstance(names, (list, tuple)) or not isinstance(cases, (ast.List, ast.Tuple)) or not cases.elts:
        return
    first = cases.elts[0]
    if isinstance(first, ast.Call) and dotted(first.func).endswith("param"):  # pytest.param(1, 2, marks=...)
        first = ast.Tuple(elts=first.args, ctx=ast.Load())
    values = [first] if len(names) == 1 else getattr(first, "elts", [])
    for name, value in zip(names, values):
        bind(env, name, evaluate(value, env))


def bind_assignments(body: list, env: dict) -> dict:
    """`env` extended with the simple assignments of a statement list (and of its `with` / `if` blocks), in
    order; a name assigned something unknown is forgotten."""
    for statement in body:
        if isinstance(statement, ast.Assign):
            value = evaluate(statement.value, env)
            for target in statement.targets:
                bind_target(env, target, value, statement.value)
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            bind_target(env, statement.target, evaluate(statement.value, env), statement.value)
        elif isinstance(statement, (ast.With, ast.AsyncWith)):
            bind_assignments(statement.body, env)
    return env


def bind_target(env: dict, target: ast.expr, value, node: ast.expr) -> None:
    """Bind `target = value` (names, and tuples of names against a tuple value or a tuple expression)."""
    if isinstance(target, ast.Name):
        bind(env, target.id, value)
    elif isinstance(target, (ast.Tuple, ast.List)):
        parts = node.elts if isinstance(node, (ast.Tuple, ast.List)) else None
        for index, element in enumerate(target.elts):
            if parts is not None and index < len(parts):
                bind_target(env, element, evaluate(parts[index], env), parts[index])
            elif isinstance(element, ast.Name):
                env.pop(element.id, None)


def bind(env: dict, name: str, value) -> None:
    """Bind a known value, forget the name otherwise."""
    if value is UNKNOWN:
        env.pop(name, None)
    else:
        env[name] = value


def scope_usages(scope, env: dict, names: set[str]):
    """(class name, usage) of every `X = Name(...)` / `Name(...)(inputs)` in one scope (not nested scopes)."""
    instances: dict[str, tuple[str, dict]] = {}
    tensors: dict[str, dict] = {}
    for node in own_nodes(scope):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            made = constructor_call(node.value, names)
            if made is not None:
                instances[target] = (made.func_name, {"where": node.lineno, "init": call_arguments(made, env)})
                continue
            tensor = tensor_spec(node.value, env, tensors)
            if tensor is not None:
                tensors[target] = tensor
        elif isinstance(node, ast.Call):
            usage = instance_call(node, instances, names, env, tensors)
            if usage is not None:
                yield usage
    for name, usage in instances.values():
        yield name, usage  # instances never called with known inputs still tell their constructor arguments


def own_nodes(scope):
    """The nodes of a scope in source order, without those of nested functions and classes."""
    stack = list(reversed(scope.body))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


class Constructed:
    """A call of a candidate class (under any chain of `.to(...)`/`.cuda()` calls)."""

    def __init__(self, call: ast.Call, func_name: str) -> None:
        self.call, self.func_name = call, func_name


def constructor_call(node: ast.expr, names: set[str]) -> Optional[Constructed]:
    """The `Name(...)` call inside `Name(...).to(device).eval()`, when Name is one of `names`."""
    while isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in names:
            return Constructed(node, node.func.id)
        if isinstance(node.func, ast.Attribute) and node.func.attr in names:  # module.Name(...)
            return Constructed(node, node.func.attr)
        if isinstance(node.func, ast.Attribute) and node.func.attr in SELF_METHODS:
            node = node.func.value
            continue
        return None
    return None


def instance_call(node: ast.Call, instances: dict, names: set[str], env: dict, tensors: dict):
    """(class name, usage) for `inst(inputs)`, `inst.forward(inputs)` or `Name(...)(inputs)`; None otherwise."""
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "forward":
        func = func.value
    made = constructor_call(func, names) if isinstance(func, ast.Call) else None
    if made is not None:
        name, usage = made.func_name, {"where": func.lineno, "init": call_arguments(made, env)}
    elif isinstance(func, ast.Name) and func.id in instances:
        name, usage = instances.pop(func.id)
    else:
        return None
    inputs = [input_spec(arg, env, tensors) for arg in node.args]
    if inputs and all(spec is not None for spec in inputs) and not node.keywords:
        usage = dict(usage, inputs=inputs)
    return name, usage


def call_arguments(made: Constructed, env: dict) -> dict:
    """{"args": [...], "kwargs": {...}} of a constructor call, each value an expression or None (unknown)."""
    args = [expression(evaluate(arg, env)) for arg in made.call.args if not isinstance(arg, ast.Starred)]
    kwargs = {kw.arg: expression(evaluate(kw.value, env)) for kw in made.call.keywords if kw.arg}
    return {"args": args, "kwargs": kwargs}


def expression(value) -> Optional[str]:
    """The Python expression of a statically known value; None when it is not known."""
    return None if value is UNKNOWN else repr(value)


def input_spec(node: ast.expr, env: dict, tensors: dict) -> Optional[dict]:
    """A forward input: a tensor of a known shape (a name bound to torch.randn(...) etc., or the call itself)
    or a known plain value; None when unknown."""
    if isinstance(node, ast.Name) and node.id in tensors:
        return tensors[node.id]
    tensor = tensor_spec(node, env, tensors)
    if tensor is not None:
        return tensor
    value = evaluate(node, env)
    return None if value is UNKNOWN else {"value": repr(value)}


def tensor_spec(node: ast.expr, env: dict, tensors: dict) -> Optional[dict]:
    """{"shape", "dtype"[, "high"]} of `torch.randn(2, 3, dtype=...)`-like expressions (also under
    `.to(...)`/`.clone()`/`.requires_grad_()` chains, or a copy of a known tensor); None otherwise."""
    dtype = None
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TENSOR_METHODS:
        dtype = dtype or first_dtype(node, env)
        node = node.func.value
    if isinstance(node, ast.Name) and node.id in tensors:
        return dict(tensors[node.id], **({"dtype": dtype} if dtype else {}))
    if not (isinstance(node, ast.Call) and dotted(node.func) in {f"torch.{m}" for m in TENSOR_MAKERS}):
        return None
    maker = dotted(node.func).split(".")[-1]
    args = [evaluate(arg, env) for arg in node.args]
    high = None
    if maker == "randint":  # randint(high, size) or randint(low, high, size)
        high, args = (args[-2], args[-1:]) if len(args) >= 2 else (UNKNOWN, [])
    elif maker == "full":
        args = args[:1]
    elif maker == "arange":
        return None
    shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    shape = keyword(node, "size", env, shape)
    if not shape or not all(isinstance(d, int) and 0 < d <= 1 << 16 for d in shape) or high is UNKNOWN:
        return None
    spec = {"shape": list(shape), "dtype": dtype or first_dtype(node, env) or
            ("int64" if maker == "randint" else "float32")}
    if isinstance(high, int):
        spec["high"] = high
    return spec


def keyword(call: ast.Call, name: str, env: dict, default):
    """The value of keyword `name` of a call, else `default`."""
    for kw in call.keywords:
        if kw.arg == name:
            value = evaluate(kw.value, env)
            return default if value is UNKNOWN else value
    return default


def first_dtype(call: ast.Call, env: dict) -> Optional[str]:
    """The dtype a call names (`dtype=torch.bfloat16`, or `.to(torch.float16)`), as a string."""
    for node in [kw.value for kw in call.keywords if kw.arg == "dtype"] + list(call.args):
        value = evaluate(node, env)
        if isinstance(value, Dtype):
            return str(value)
    if isinstance(call.func, ast.Attribute) and call.func.attr in ("half", "bfloat16", "float", "double"):
        return {"half": "float16", "float": "float32", "double": "float64"}.get(call.func.attr, call.func.attr)
    return None


def dotted(node: ast.expr) -> str:
    """`a.b.c` of a Name/Attribute chain, "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.FloorDiv: lambda a, b: a // b, ast.Div: lambda a, b: a / b, ast.Mod: lambda a, b: a % b,
          ast.Pow: lambda a, b: a ** b if abs(b) < 64 else UNKNOWN}


def evaluate(node: ast.expr, env: dict):
    """The value of a constant expression (literals, arithmetic, known names, torch dtypes); UNKNOWN else."""
    try:
        return _evaluate(node, env)
    except (ArithmeticError, TypeError, ValueError, RecursionError):
        return UNKNOWN


def _evaluate(node: ast.expr, env: dict):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id, UNKNOWN)
    if isinstance(node, ast.Attribute) and dotted(node).startswith("torch.") and node.attr in DTYPES:
        return Dtype(node.attr)
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_evaluate(element, env) for element in node.elts]
        if any(item is UNKNOWN for item in items):
            return UNKNOWN
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, env)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and CONFIG_CALLS.search(dotted(node.func)) and not node.args:
        values = {kw.arg: _evaluate(kw.value, env) for kw in node.keywords if kw.arg}
        if values and UNKNOWN not in values.values() and len(values) == len(node.keywords):
            return Namespace(values)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _evaluate(node.left, env), _evaluate(node.right, env)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            return BINARY[type(node.op)](left, right)
    return UNKNOWN
