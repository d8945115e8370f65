"""The Triton side of a pair: one graph's kernels and the host code that launches them, as a standalone module
with `class ModelNew`.

From the graph's output_code.py (as Inductor wrote it) and its extracted kernels (the stage's KernelRecords):

  * every kernel `call` launches, as plain `@triton.jit` source (the records' clean code: Inductor's heuristics
    decorator and `set_driver_to_gpu()` removed), its imports once at the top;
  * the header lines of output_code.py that `call` needs (`empty_strided_cuda`, `reinterpret_tensor`,
    `extern_kernels`, `assert_size_stride`, ...: plain torch);
  * `call(args)`, Inductor's wrapper function, with each `kernel.run(*args, stream=stream0)` rewritten as
    `kernel[grid](*args, XBLOCK=..., num_warps=..., num_stages=...)` (scraper.pairs.launch), and the CUDA
    device guard, `set_device` and raw-stream lines dropped (Triton launches on the current stream);
  * `class ModelNew(nn.Module)` (scraper.pairs.modelnew).

Nothing of Inductor's cache is needed (`# kernel path:` files exist only where the model was compiled). What cannot
be rewritten raises PairError with a named reason: a kernel the extraction lost, a launch or grid form other than
those of scraper.pairs.launch (combo and foreach kernels, cooperative reductions, ...), a name `call` uses that
the output_code.py header does not define, graph partitions (`call` using `self`).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from typing import Optional

from scraper.generator.detect import find_kernel_function
from scraper.pairs.launch import GRIDS, LaunchConfig, PairError, grid_text, launch_config
from scraper.records import KernelRecord

_WAIT = re.compile(r"^async_compile\.wait\(", re.MULTILINE)
_FIRST_KERNEL = re.compile(r"^\w+ = async_compile\.", re.MULTILINE)
_PROVENANCE_COMMENT = re.compile(r"^\s*# \[Provenance debug handles\]")
DROPPED_CALLS = ("set_device", "get_raw_stream")
PROLOGUE = "import torch\nimport triton\nimport triton.language as tl\nfrom torch import nn\n"
NUMELS = ("xnumel", "ynumel", "znumel", "r0_numel", "r1_numel")


@dataclass
class Kernel:
    """One kernel of the graph as the pair uses it: its record, its jit function's name and parameters, and its
    launch configuration."""

    record: KernelRecord
    function: str
    params: list
    config: LaunchConfig


@dataclass
class HostCode:
    """`call` rewritten, the header lines it needs, and the kernels it launches (in order of first launch)."""

    call: str
    helpers: list = field(default_factory=list)
    kernels: list = field(default_factory=list)
    config_sources: dict = field(default_factory=dict)  # recorded / heuristics / decorator -> kernels


def split_output_code(text: str) -> tuple[str, str]:
    """(header: everything before the first kernel, wrapper: from `async_compile.wait(` on)."""
    wait = _WAIT.search(text)
    if wait is None:
        raise PairError("no_call", "output_code.py has no async_compile.wait(...) line")
    first = _FIRST_KERNEL.search(text)
    return text[: first.start() if first else wait.start()], text[wait.start():]


def find_call(wrapper: ast.Module) -> ast.FunctionDef:
    """`def call(args)` at module level, or `call` of the `Runner` class of torch >= 2.9."""
    for node in wrapper.body:
        if isinstance(node, ast.FunctionDef) and node.name == "call":
            return node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "call":
                    return item
    raise PairError("no_call", "output_code.py defines no call(args)")


@dataclass
class ParsedWrapper:
    """An output_code.py's wrapper part (from `async_compile.wait(` on), parsed once for every pair of its graph:
    the header before the kernels, the wrapper's text, lines and its `call` function."""

    header: str
    text: str
    lines: list
    function: ast.FunctionDef


def parse_wrapper(output_code: str) -> ParsedWrapper:
    """The ParsedWrapper of an output_code.py's text; raises PairError."""
    header, wrapper_text = split_output_code(output_code)
    try:
        tree = ast.parse(wrapper_text)
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise PairError("output_code_does_not_parse", str(exc)) from exc
    return ParsedWrapper(header, wrapper_text, wrapper_text.split("\n"), find_call(tree))


def host_code(parsed: ParsedWrapper, records: list[KernelRecord], recorded: Optional[dict]) -> HostCode:
    """The rewritten `call` of one output_code.py (module docstring); raises PairError."""
    header, wrapper_text, function = parsed.header, parsed.text, parsed.function
    by_variable = {r.extra.get("variable") or r.name: r for r in records}
    rewriter = CallRewriter(wrapper_text, by_variable, recorded)
    call = rewriter.rewrite(function)
    host = HostCode(call=call, kernels=list(rewriter.kernels.values()))
    host.helpers = needed_helpers(header, call, {k.function for k in host.kernels})
    for kernel in host.kernels:
        host.config_sources[kernel.config.source] = host.config_sources.get(kernel.config.source, 0) + 1
    return host


class CallRewriter:
    """Rewrites the lines of Inductor's `call` (see module docstring)."""

    def __init__(self, text: str, by_variable: dict, recorded: Optional[dict]) -> None:
        self.lines = text.split("\n")
        self.by_variable, self.recorded = by_variable, recorded
        self.kernels: dict[str, Kernel] = {}
        self.launched: set = set()  # ids of the .run() calls rewritten as statements
        self.replace: dict[int, Optional[str]] = {}  # 0-based line -> new text (None: drop the line)
        self.dedent: dict[int, int] = {}  # 0-based line -> extra columns to remove

    def rewrite(self, function: ast.FunctionDef) -> str:
        """The new `def call(args):` text."""
        if any(isinstance(n, ast.Name) and n.id == "self" for n in ast.walk(function)):
            raise PairError("graph_partitions", "call uses self (graph partitions)")
        for node in ast.walk(function):
            self.visit(node)
        first, last = function.body[0].lineno - 1, function.end_lineno
        body = [self.line(index) for index in range(first, last)]
        body = [line for line in body if line is not None]
        indent = min((len(l) - len(l.lstrip()) for l in body if l.strip()), default=0)
        return "def call(args):\n" + "".join("    " + l[indent:] + "\n" if l.strip() else "\n" for l in body)

    def line(self, index: int) -> Optional[str]:
        text = self.replace[index] if index in self.replace else self.lines[index]
        if text is None or _PROVENANCE_COMMENT.match(text):
            return None
        cut = min(self.dedent.get(index, 0), len(text) - len(text.lstrip()))
        return text[cut:]

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.With) and is_device_guard(node):
            self.replace[node.lineno - 1] = None
            shift = node.body[0].col_offset - node.col_offset
            for index in range(node.body[0].lineno - 1, node.end_lineno):
                self.dedent[index] = self.dedent.get(index, 0) + shift
        elif isinstance(node, (ast.Expr, ast.Assign)) and dropped_call(node):
            self.drop(node)
        elif isinstance(node, ast.Expr) and self.kernel_run(node.value) is not None:
            self.launched.add(id(node.value))
            self.launch(node, self.kernel_run(node.value))
        elif isinstance(node, ast.Call) and id(node) not in self.launched and self.kernel_run(node) is not None:
            raise PairError("unknown_launch", "a kernel launch that is not a statement of its own")

    def drop(self, node: ast.stmt) -> None:
        for index in range(node.lineno - 1, node.end_lineno):
            self.replace[index] = None

    def kernel_run(self, call: ast.expr) -> Optional[str]:
        """The kernel variable of a `<kernel>.run(...)` call, else None."""
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "run"
                and isinstance(call.func.value, ast.Name)):
            name = call.func.value.id
            if name not in self.by_variable:  # only kernels have .run() in Inductor's call
                raise PairError("kernel_missing", f"{name} launched but not among the extracted kernels")
            return name
        return None

    def launch(self, node: ast.Expr, variable: str) -> None:
        kernel = self.kernel(variable)
        text = launch_text(kernel, node.value, self.lines)
        indent = self.lines[node.lineno - 1][: node.col_offset]
        self.replace[node.lineno - 1] = indent + text
        for index in range(node.lineno, node.end_lineno):
            self.replace[index] = None

    def kernel(self, variable: str) -> Kernel:
        if variable not in self.kernels:
            record = self.by_variable[variable]
            function = jit_function(record)
            params = [arg.arg for arg in function.args.args]
            self.kernels[variable] = Kernel(record, function.name, params, launch_config(record, self.recorded))
        return self.kernels[variable]


def is_device_guard(node: ast.With) -> bool:
    """`with torch.cuda._DeviceGuard(0):` (or another device module's)."""
    return any(isinstance(item.context_expr, ast.Call) and isinstance(item.context_expr.func, ast.Attribute)
               and item.context_expr.func.attr == "_DeviceGuard" for item in node.items)


def dropped_call(node: ast.stmt) -> bool:
    """`torch.cuda.set_device(0)` or `stream0 = get_raw_stream(0)`: host lines a plain Triton launch does not
    need."""
    call = node.value
    if not isinstance(call, ast.Call):
        return False
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    return name in DROPPED_CALLS


def jit_function(record: KernelRecord) -> ast.FunctionDef:
    """The kernel's @triton.jit function in its clean code."""
    try:
        return find_kernel_function(ast.parse(record.code), record.name)
    except Exception as exc:  # SyntaxError, KernelModuleError
        raise PairError("kernel_does_not_parse", f"{record.name}: {exc}") from exc


def launch_text(kernel: Kernel, call: ast.Call, lines: list[str]) -> str:
    """`fn[grid](args..., CONSTEXPR=..., num_warps=..., num_stages=...)` for one `.run(...)` call. Only the
    configuration's values for parameters of the function are passed (a persistent reduction defines its R0_BLOCK
    inside); the grid sees them all, as Inductor's does."""
    record, config = kernel.record, kernel.config
    meta = (record.launch or {}).get("inductor_meta") or {}
    arguments = [segment(lines, arg) for arg in call.args]
    extra_count = len(meta.get("extra_launcher_args") or [])
    positional, extra = arguments[: len(arguments) - extra_count], arguments[len(arguments) - extra_count:]
    params = [p for p in kernel.params if p not in config.kwargs]
    if len(positional) > len(params):
        raise PairError("unknown_launch", f"{record.name}: {len(positional)} arguments for {len(params)} parameters")
    named = dict(zip(params, positional))
    kwargs = {key: value for key, value in config.kwargs.items() if key in kernel.params}
    for param in params[len(positional):]:
        if param not in (record.constants or {}):
            raise PairError("unknown_launch", f"{record.name}: no value for parameter {param}")
        kwargs[param] = record.constants[param]
    grid = launch_grid(call, meta, named, config, extra, lines)
    options = [f"{key}={value!r}" for key, value in kwargs.items()]
    options += [f"{key}={value}" for key, value in (("num_warps", config.num_warps),
                                                     ("num_stages", config.num_stages)) if value is not None]
    return f"{kernel.function}[{grid}]({', '.join(positional + options)})"


def launch_grid(call: ast.Call, meta: dict, named: dict, config: LaunchConfig, extra: list, lines: list[str]) -> str:
    """The grid of a launch: from the decorator's grid_type, or from an older torch's `grid=grid(...)` argument."""
    old_grid = next((kw.value for kw in call.keywords if kw.arg == "grid"), None)
    if old_grid is not None:
        return legacy_grid(old_grid, config, lines)
    grid_type = meta.get("grid_type")
    if grid_type not in GRIDS:
        raise PairError("unknown_launch", f"grid type {grid_type}")
    return grid_text(grid_type, {k: v for k, v in named.items() if k in NUMELS}, config, extra)


def legacy_grid(node: ast.expr, config: LaunchConfig, lines: list[str]) -> str:
    """torch <= 2.5 wrote `kernel.run(..., grid=grid(xnumel[, ynumel]), stream=...)`."""
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "grid" and 1 <= len(node.args) <= 3):
        raise PairError("unknown_launch", f"grid {ast.unparse(node)[:80]}")
    numels = {f"{axis}numel": segment(lines, arg) for axis, arg in zip("xyz", node.args)}
    return grid_text(("Grid1D", "Grid2D", "Grid3D")[len(node.args) - 1], numels, config, [])


def segment(lines: list[str], node: ast.expr) -> str:
    """The source text of an expression (a launch argument) as written; unparsed when it spans lines."""
    if node.lineno != node.end_lineno:
        return ast.unparse(node)
    return lines[node.lineno - 1].encode("utf-8")[node.col_offset: node.end_col_offset].decode("utf-8")


# ---------------------------------------------------------------------------------------------- the module


def needed_helpers(header: str, call: str, kernel_functions: set) -> list[str]:
    """The header statements of output_code.py that define names `call` uses (imports and `name = ...`), in
    header order; raises PairError for a name nothing defines."""
    used = free_names(call) - kernel_functions - {"torch", "triton", "tl", "nn"}
    definitions = header_definitions(header)
    missing = sorted(name for name in used if name not in definitions)
    if missing:
        raise PairError("unresolved_name", ", ".join(missing))
    wanted = {definitions[name] for name in used}
    return [text for text in dict.fromkeys(definitions.values()) if text in wanted]


def header_definitions(header: str) -> dict[str, str]:
    """name -> the header statement that binds it (imports and simple assignments)."""
    try:
        tree = ast.parse(header)
    except SyntaxError:
        return {}
    found = {}
    for node in tree.body:
        text = ast.get_source_segment(header, node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                found[(alias.asname or alias.name).split(".")[0]] = text
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            for target in node.targets:
                found[target.id] = text
    return found


def free_names(function_text: str) -> set:
    """Names a function reads that it does not bind itself (nor Python's builtins)."""
    tree = ast.parse(function_text)
    bound = {a.arg for node in ast.walk(tree) if isinstance(node, ast.arguments) for a in node.args}
    bound |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - bound - set(dir(builtins))


def kernel_sources(kernels: list[Kernel]) -> tuple[list[str], list[str]]:
    """(import statements, other top-level statements) of the kernels' clean modules, each once, in order;
    raises PairError when two kernels define one name differently."""
    imports, definitions, by_name = [], [], {}
    for kernel in kernels:
        code = kernel.record.code
        lines = code.splitlines()
        for node in ast.parse(code).body:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            text = "\n".join(lines[start - 1: node.end_lineno])
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(text)
                continue
            name = getattr(node, "name", None)
            if name is not None and by_name.setdefault(name, text) != text:
                raise PairError("kernel_name_clash", f"two different definitions of {name}")
            definitions.append(text)
    return list(dict.fromkeys(imports)), list(dict.fromkeys(definitions))


_FUTURE = re.compile(r"^from __future__ import [\w, ()]+$")

# After a model-level pair's program: its build() keeps the program's own names (the kernels and call() come next).
PROGRAM_BUILD = ("import types as _types  # noqa: E402\n\n"
                 "# build() as the program defines it, bound to the program's names (taken before the kernels').\n"
                 "_program_build = _types.FunctionType(build.__code__, dict(globals()), \"build\",\n"
                 "                                     build.__defaults__)\n")


def module_text(docstring: str, host: HostCode, model_new: str, program: Optional[str] = None) -> str:
    """The whole triton_code module; a model-level one starts with the suite's program (ModelNew builds the model
    with its build(), as the problem does)."""
    imports, definitions = kernel_sources(host.kernels)
    imports = [line for line in imports if line + "\n" not in PROLOGUE]
    parts = [f'"""{docstring}"""\n']
    if program is not None:
        futures = [line for line in program.split("\n") if _FUTURE.match(line)]
        if futures:  # `from __future__` must come first
            parts.append("\n".join(futures) + "\n")
            program = "\n".join(line for line in program.split("\n") if not _FUTURE.match(line))
        parts += ["# " + "-" * 40 + " the model's program (the problem's own)\n" + program, PROGRAM_BUILD,
                  "# " + "-" * 40 + " the kernels PyTorch Inductor generated for it, and call()\n"]
    parts.append(PROLOGUE + "".join(line + "\n" for line in imports))
    if host.helpers:
        parts.append("".join(text + "\n" for text in host.helpers))
    parts += [definition + "\n" for definition in definitions]
    parts += [host.call, model_new]
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"
