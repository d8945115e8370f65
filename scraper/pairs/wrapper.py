"""Inductor's `call(args)` read statement by statement, without running it: the buffers it allocates, the views
and aliases it makes of them, what extern kernels write, and every Triton kernel launch with its arguments.

    buf0 = empty_strided_cuda((2, 3, 224, 224), (150528, 1, 672, 3), torch.float32)      -> Buffer (allocated)
    triton_poi_fused_convolution_0.run(arg1_1, buf0, 6, 50176, stream=stream0)          -> Launch
    buf2 = extern_kernels.convolution(buf0, buf1, stride=(2, 2), ...)                    -> Buffer (extern)
    assert_size_stride(buf2, (2, 64, 112, 112), (802816, 1, 7168, 64), 'torch.ops.aten.convolution.default')
    buf3 = buf2; del buf2  # reuse                                                       -> an alias of buf2
    buf4 = reinterpret_tensor(buf3, (2, 128, 1), (128, 1, 1), 0); del buf3  # reuse      -> a view of buf3

Every name gets a `Buffer`: where its storage comes from (`input`, `alloc`, `extern`, `view`, `alias`, `other`)
and, when the code says it, its size, stride and dtype. The text is data: only these forms are read, with
`ast.literal_eval` for sizes; anything else is `other` (unknown layout), never evaluated.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

ALLOCATORS = ("empty_strided_cuda", "empty_strided_cpu", "empty_strided_xpu", "empty_strided", "empty_strided_mtia")


@dataclass
class Buffer:
    """One name of call(): how its storage was made and its layout where known."""

    name: str
    kind: str  # input | alloc | extern | view | alias | other
    size: Optional[tuple] = None
    stride: Optional[tuple] = None
    dtype: Optional[str] = None  # torch dtype name
    base: Optional[str] = None  # view / alias: the name it was made from
    offset: int = 0  # view: its storage offset (elements)
    written_by: list = field(default_factory=list)  # statement numbers of the launches / externs that wrote it
    extern_inputs: tuple = ()  # extern: the graph inputs its call reads (a convolution's weight, ...)
    extern_op: Optional[str] = None  # extern: the op (convolution, mm, ...)
    extern_args: tuple = ()  # extern: the call() name of each positional argument (None: not a plain name)


@dataclass
class Launch:
    """One `kernel.run(...)` statement."""

    index: int  # its number among call()'s statements (order)
    kernel: str  # the kernel's variable
    args: list  # ast.expr of each positional argument
    texts: list  # ... and its source text
    node: ast.Call = None


@dataclass
class Wrapper:
    """What call() holds (module docstring)."""

    buffers: dict = field(default_factory=dict)  # name -> Buffer
    launches: list = field(default_factory=list)  # Launch, in order
    inputs: list = field(default_factory=list)  # call()'s argument names, in order
    statements: int = 0

    def root(self, name: str) -> Optional[Buffer]:
        """The buffer whose storage `name` uses (following views and aliases)."""
        seen = set()
        buffer = self.buffers.get(name)
        while buffer is not None and buffer.kind in ("view", "alias") and buffer.base not in seen:
            seen.add(buffer.name)
            buffer = self.buffers.get(buffer.base)
        return buffer

    def first_launch(self, kernel: str) -> Optional[Launch]:
        return next((launch for launch in self.launches if launch.kernel == kernel), None)

    def written_before(self, name: str, index: int) -> bool:
        """Whether some statement before `index` wrote `name`'s storage (or it is an input of the graph)."""
        root = self.root(name)
        if root is None:
            return False
        if root.kind in ("input", "extern"):
            return True
        aliases = {b.name for b in self.buffers.values() if self.root(b.name) is root}
        return any(i < index for b in aliases for i in self.buffers[b].written_by)


def read_wrapper(function: ast.FunctionDef, lines: list[str]) -> Wrapper:
    """The Wrapper of Inductor's `call` function (its tree and the source lines of the file it is in)."""
    wrapper = Wrapper()
    for index, statement in enumerate(statements(function.body)):
        wrapper.statements = index + 1
        read_statement(statement, index, wrapper, lines)
    return wrapper


def statements(body: list) -> list:
    """The statements of a body, those inside `with` blocks (the device guard) in place."""
    found = []
    for statement in body:
        if isinstance(statement, ast.With):
            found += statements(statement.body)
        else:
            found.append(statement)
    return found


def read_statement(statement: ast.stmt, index: int, wrapper: Wrapper, lines: list[str]) -> None:
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target = statement.targets[0]
        if isinstance(target, ast.Tuple) and isinstance(statement.value, ast.Name) and statement.value.id == "args":
            wrapper.inputs = [element.id for element in target.elts if isinstance(element, ast.Name)]
            for name in wrapper.inputs:
                wrapper.buffers[name] = Buffer(name, "input")
        elif isinstance(target, ast.Name):
            wrapper.buffers[target.id] = assigned(target.id, statement.value, index, wrapper)
    elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        read_call(statement.value, index, wrapper, lines)


def assigned(name: str, value: ast.expr, index: int, wrapper: Wrapper) -> Buffer:
    """The Buffer a `name = value` statement makes."""
    call = value if isinstance(value, ast.Call) else None
    callee = called_name(call) if call is not None else None
    if callee in ALLOCATORS and len(call.args) >= 2:
        size, stride = literal(call.args[0]), literal(call.args[1])
        dtype = dtype_name(call.args[2]) if len(call.args) > 2 else None
        return Buffer(name, "alloc", size, stride, dtype)
    if callee == "reinterpret_tensor" and len(call.args) >= 3 and isinstance(call.args[0], ast.Name):
        offset = literal(call.args[3]) if len(call.args) > 3 else 0
        base = wrapper.buffers.get(call.args[0].id)
        return Buffer(name, "view", literal(call.args[1]), literal(call.args[2]), base.dtype if base else None,
                      base=call.args[0].id, offset=offset if isinstance(offset, int) else 0)
    if isinstance(value, ast.Name) and value.id in wrapper.buffers:
        base = wrapper.buffers[value.id]
        return Buffer(name, "alias", base.size, base.stride, base.dtype, base=value.id)
    if call is not None and callee is not None and is_extern(call):
        return Buffer(name, "extern", written_by=[index], extern_inputs=graph_inputs(call, wrapper),
                      extern_op=extern_op_name(dotted(call.func)), extern_args=argument_names(call))
    return Buffer(name, "other")


def read_call(call: ast.Call, index: int, wrapper: Wrapper, lines: list[str]) -> None:
    """A call statement: a kernel launch, an assert that gives a layout, an extern writing into `out=`."""
    callee = called_name(call)
    if isinstance(call.func, ast.Attribute) and call.func.attr == "run" and isinstance(call.func.value, ast.Name):
        texts = [segment(lines, arg) for arg in call.args]
        wrapper.launches.append(Launch(index, call.func.value.id, list(call.args), texts, call))
        return
    if callee == "assert_size_stride" and len(call.args) >= 3 and isinstance(call.args[0], ast.Name):
        buffer = wrapper.buffers.get(call.args[0].id)
        if buffer is not None and buffer.size is None:
            buffer.size, buffer.stride = literal(call.args[1]), literal(call.args[2])
        return
    out = next((kw.value for kw in call.keywords if kw.arg == "out"), None)
    if isinstance(out, ast.Name) and out.id in wrapper.buffers:
        buffer = wrapper.buffers[out.id]
        buffer.written_by.append(index)
        if is_extern(call):
            buffer.extern_inputs, buffer.extern_op = graph_inputs(call, wrapper), extern_op_name(dotted(call.func))
            buffer.extern_args = argument_names(call)


def graph_inputs(call: ast.Call, wrapper: Wrapper) -> tuple:
    """The graph inputs (call()'s own arguments) an extern call reads, directly or through reinterpret_tensor."""
    names = {node.id for node in ast.walk(call) if isinstance(node, ast.Name)}
    return tuple(sorted(name for name in names if name in wrapper.inputs))


def argument_names(call: ast.Call) -> tuple:
    """The name passed as each positional argument of a call (None for anything else)."""
    return tuple(arg.id if isinstance(arg, ast.Name) else None for arg in call.args)


def extern_op_name(call_text: str) -> str:
    """`torch.ops.aten.convolution_backward.default` -> "convolution_backward", `extern_kernels.mm` -> "mm"."""
    parts = call_text.split(".")
    return parts[-2] if call_text.startswith("torch.ops.") and len(parts) >= 2 else parts[-1]


def note_writes(wrapper: Wrapper, launch: Launch, written: list[str]) -> None:
    """Record that `launch` wrote the buffers named `written`."""
    for name in written:
        if name in wrapper.buffers:
            wrapper.buffers[name].written_by.append(launch.index)


def is_extern(call: ast.Call) -> bool:
    """`extern_kernels.X(...)`, `torch.ops.<ns>.X.<overload>(...)`, `aten.X(...)`: an op Inductor did not
    generate."""
    text = dotted(call.func)
    return text.startswith(("extern_kernels.", "torch.ops.", "aten.", "torch."))


def called_name(call: Optional[ast.Call]) -> Optional[str]:
    if call is None:
        return None
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def literal(node: ast.expr):
    """A literal size, stride or offset (None when it is not one: symbolic sizes)."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None
    if isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def dtype_name(node: ast.expr) -> Optional[str]:
    """`torch.float32` -> "float32"."""
    text = dotted(node)
    return text.split(".", 1)[1] if text.startswith("torch.") and text.count(".") == 1 else None


def segment(lines: list[str], node: ast.expr) -> str:
    """The source text of an expression as written (unparsed when it spans lines)."""
    if node.lineno != node.end_lineno:
        return ast.unparse(node)
    return lines[node.lineno - 1].encode("utf-8")[node.col_offset: node.end_col_offset].decode("utf-8")
