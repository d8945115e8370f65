"""The `# Graph fragment:` Inductor writes above each kernel, parsed: what the kernel reads, the FX nodes it fuses,
what it writes.

    # Graph fragment:
    #   %arg3_1 : Tensor "f32[64][1]cuda:0" = PlaceHolder[target=arg3_1]
    #   %add : Tensor "f32[64][1]cuda:0"[num_users=1] = call_function[target=torch.ops.aten.add.Tensor](args = (%arg3_1, 1e-05), kwargs = {})
    #   %sqrt : Tensor "f32[64][1]cuda:0"[num_users=1] = call_function[target=torch.ops.aten.sqrt.default](args = (%add,), kwargs = {})
    #   return %sqrt

A `PlaceHolder` line is a buffer the kernel reads, named after the FX node that produced it (or the buffer's own
name when no node did), with the buffer's layout (sizes, strides, dtype: how the kernel sees it in memory). A
`call_function` line is an FX node the kernel's computation came from, with its arguments (as FX prints them:
`%name` for a node, literals, lists, dtypes, devices, bare strings) and its logical layout. `return` names what
the kernel writes, in the order of its stores.

The text is data someone else wrote (for --suite modules, next to scraped code): it is parsed into values, never
evaluated, and anything outside the small grammar below is refused (FragmentError).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

# torch.fx's short dtype names (torch._inductor.utils dtype_abbrs / torch.fx.graph.dtype_abbrs)
DTYPES = {"bf16": "bfloat16", "f64": "float64", "f32": "float32", "f16": "float16", "f8e4m3fn": "float8_e4m3fn",
          "f8e5m2": "float8_e5m2", "c32": "complex32", "c64": "complex64", "c128": "complex128", "i8": "int8",
          "i16": "int16", "i32": "int32", "i64": "int64", "b8": "bool", "u8": "uint8", "u16": "uint16",
          "u32": "uint32", "u64": "uint64"}
TORCH_CONSTANTS = {"contiguous_format", "channels_last", "channels_last_3d", "preserve_format", "strided",
                   "sparse_coo", *DTYPES.values(), "float", "int", "long", "half", "double", "bool"}
MAX_NODES = 2000  # a fused kernel has tens of nodes; a fragment of thousands is not one Inductor wrote
MAX_ARGUMENT_CHARS = 20000

_LAYOUT = r'"(?P<dtype>\w+)\[(?P<size>[^\]]*)\]\[(?P<stride>[^\]]*)\](?P<device>[^"]*)"'
_READ = re.compile(r"^%(?P<name>\w+) : Tensor (?:" + _LAYOUT + r")? ?= PlaceHolder\[target=(?P<target>\w+)\]$")
_NODE = re.compile(r"^%(?P<name>\w+) : (?:Tensor " + _LAYOUT + r")?\[num_users=\d+\] = call_function\[target="
                   r"(?P<op>[\w.]+)\]\(args = (?P<args>.*), kwargs = (?P<kwargs>\{.*\})\)$")
_RETURN = re.compile(r"^return (?P<names>.*)$")
_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?(\d+\.\d*|\d*\.\d+|\d+)([eE][-+]?\d+)?$")
_WORD = re.compile(r"^[A-Za-z_][\w.]*$")
_DEVICE = re.compile(r"^(cuda|cpu|xpu|mps|meta)(:\d+)?$")


class FragmentError(ValueError):
    """A fragment this parser does not read (a reason for the rejects, not a crash)."""


@dataclass(frozen=True)
class Ref:
    """`%name`: the value of another node or of a read."""

    name: str


@dataclass(frozen=True)
class Literal:
    """A value FX printed that Python cannot spell as it is: a dtype, a memory format, a device, a bare string."""

    kind: str  # torch | device | string
    text: str


@dataclass
class Layout:
    """A tensor's layout as a fragment line gives it (None sizes: symbolic, not known here)."""

    dtype: str  # torch dtype name: float32, int64, ...
    size: Optional[tuple]
    stride: Optional[tuple]

    @property
    def numel(self) -> Optional[int]:
        return math.prod(self.size) if self.size is not None else None


@dataclass
class Node:
    """One call_function line."""

    name: str
    op: str  # torch.ops.aten.add.Tensor, operator.getitem, ...
    args: tuple
    kwargs: dict
    layout: Optional[Layout]  # None: not a tensor (a tuple of outputs)


@dataclass
class Fragment:
    """A whole graph fragment (module docstring)."""

    reads: dict = field(default_factory=dict)  # name -> Layout (the buffer's), in order
    nodes: list = field(default_factory=list)  # Node, in the graph's order
    writes: list = field(default_factory=list)  # names, in the kernel's store order

    def node(self, name: str) -> Optional[Node]:
        return next((node for node in self.nodes if node.name == name), None)


def parse_fragment(text: Optional[str]) -> Fragment:
    """A KernelRecord's `graph_fragment` (its lines, `#` and indent removed) as a Fragment; FragmentError when it
    is missing or has a line this grammar does not read."""
    if not text:
        raise FragmentError("no graph fragment")
    fragment = Fragment()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        parse_line(line, fragment)
        if len(fragment.nodes) > MAX_NODES:
            raise FragmentError(f"more than {MAX_NODES} nodes")
    if not fragment.writes:
        raise FragmentError("the fragment names no write")
    return fragment


def parse_line(line: str, fragment: Fragment) -> None:
    read = _READ.match(line)
    if read is not None:  # a buffer Inductor knows no layout of has none here (the kernel's signature types it)
        fragment.reads.setdefault(read["name"], layout_of(read) if read["dtype"] else None)
        return
    node = _NODE.match(line)
    if node is not None:
        if len(node["args"]) + len(node["kwargs"]) > MAX_ARGUMENT_CHARS:
            raise FragmentError(f"arguments of {node['name']} too long")
        args = Parser(node["args"]).whole()
        kwargs = Parser(node["kwargs"]).whole()
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise FragmentError(f"arguments of {node['name']}")
        layout = layout_of(node) if node["dtype"] else None
        fragment.nodes.append(Node(node["name"], node["op"], args, kwargs, layout))
        return
    returned = _RETURN.match(line)
    if returned is not None:
        names = [part.strip() for part in returned["names"].split(",") if part.strip()]
        if not all(name.startswith("%") and _WORD.match(name[1:]) for name in names):
            raise FragmentError(f"return {returned['names'][:60]}")
        fragment.writes = [name[1:] for name in names]
        return
    raise FragmentError(f"line not understood: {line[:80]}")


def layout_of(match: re.Match) -> Layout:
    """The Layout of a `"f32[2, 64][64, 1]cuda:0"` annotation."""
    dtype = DTYPES.get(match["dtype"])
    if dtype is None:
        raise FragmentError(f"dtype {match['dtype']}")
    return Layout(dtype, integers(match["size"]), integers(match["stride"]))


def integers(text: str) -> Optional[tuple]:
    """`2, 64, 1` as a tuple of ints; None when a size is symbolic (`s0`)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(_INT.match(part) for part in parts):
        return None
    return tuple(int(part) for part in parts)


class Parser:
    """The arguments FX prints (`(%a, [2, 2], 1e-05, None)`, `{dtype: torch.float32, device: cuda:0}`) as values:
    Ref, Literal, int, float, bool, None, list, tuple, dict."""

    def __init__(self, text: str) -> None:
        self.text, self.position = text, 0

    def whole(self) -> Any:
        value = self.value()
        self.space()
        if self.position != len(self.text):
            raise FragmentError(f"unread text: {self.text[self.position:self.position + 40]}")
        return value

    def space(self) -> None:
        while self.position < len(self.text) and self.text[self.position] == " ":
            self.position += 1

    def value(self) -> Any:
        self.space()
        opening = self.text[self.position:self.position + 1]
        if opening in ("(", "["):
            items = self.items({"(": ")", "[": "]"}[opening])
            return tuple(items) if opening == "(" else list(items)
        if opening == "{":
            return self.mapping()
        return atom(self.token())

    def items(self, closing: str) -> list:
        self.position += 1
        found = []
        while True:
            self.space()
            if self.text[self.position:self.position + 1] == closing:
                self.position += 1
                return found
            found.append(self.value())
            self.space()
            following = self.text[self.position:self.position + 1]
            if following == ",":
                self.position += 1
            elif following != closing:
                raise FragmentError(f"expected , or {closing} at {self.text[self.position:self.position + 20]!r}")

    def mapping(self) -> dict:
        self.position += 1
        found = {}
        while True:
            self.space()
            if self.text[self.position:self.position + 1] == "}":
                self.position += 1
                return found
            key = self.token(stop=":")
            if not _WORD.match(key) or self.text[self.position:self.position + 1] != ":":
                raise FragmentError(f"keyword {key[:20]!r}")
            self.position += 1
            found[key] = self.value()
            self.space()
            if self.text[self.position:self.position + 1] == ",":
                self.position += 1

    def token(self, stop: str = "") -> str:
        start = self.position
        while self.position < len(self.text) and self.text[self.position] not in ",)]}" + stop:
            self.position += 1
        token = self.text[start:self.position].strip()
        if not token:
            raise FragmentError(f"empty value at {start}")
        return token


def atom(token: str) -> Any:
    """One printed value (module docstring)."""
    if token.startswith("%") and _WORD.match(token[1:]) and "." not in token:
        return Ref(token[1:])
    if _INT.match(token):
        return int(token)
    if _FLOAT.match(token):
        return float(token)
    if token in ("inf", "-inf", "nan"):
        return float(token)
    if token in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[token]
    if token.startswith("torch.") and token[6:] in TORCH_CONSTANTS:
        return Literal("torch", token)
    if _DEVICE.match(token):
        return Literal("device", token)
    if _WORD.match(token):
        return Literal("string", token)
    raise FragmentError(f"value {token[:40]!r}")


def refs(value: Any) -> list[str]:
    """The names every Ref inside a value points at."""
    if isinstance(value, Ref):
        return [value.name]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in refs(item)]
    if isinstance(value, dict):
        return [name for item in value.values() for name in refs(item)]
    return []
