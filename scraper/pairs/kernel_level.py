"""Kernel-level pairs: each Triton kernel of a graph as a short PyTorch -> Triton problem of its own.

For one kernel Inductor generated, from what its graph's output_code.py already says:

  * its `# Graph fragment:` (scraper.pairs.fragment): the buffers it reads (named after the FX nodes that made
    them, with their layouts), the FX nodes it fuses, what it writes;
  * its first launch in `call(args)` (scraper.pairs.wrapper): which buffer goes to each pointer parameter, the
    layout Inductor allocated each output with, the numel arguments;
  * its launch configuration (scraper.pairs.launch: recorded by the suite, else Inductor's heuristics).

the pair is

  python_code   a KernelBench problem: `Model.forward(<the kernel's inputs>)` computes what the kernel stores from
                the FX nodes it fuses (scraper.pairs.emit), `get_inputs()` makes inputs of the buffers' sizes,
                strides and dtypes (scraper.pairs.inputs: positive where the kernel takes sqrt/log/1/x of them,
                indices inside their range), `get_init_inputs()` is [];
  triton_code   the clean kernel and `class ModelNew` whose forward lays the inputs out as the kernel reads them,
                allocates the outputs as call() did, launches the kernel with call()'s grid and configuration and
                returns what Model returns.

Both return one tensor: the kernel's output, or, when it stores several, `pack(...)` of them (each flattened, as
float32, concatenated: KernelBench's evaluator compares one tensor). Inputs are cast to the kernel's dtype first, so
a harness that casts every input (KernelBench does, to float32) still runs the same computation; an input the
kernel also writes is copied first, so neither side changes its caller's tensors.

Naming the pointer parameters (`Mapper`, over every launch of the graph in call()'s order): a parameter whose
buffer an earlier launch wrote gets the name of what that launch stored there, a graph input its own name; the rest
go in order (Inductor numbers `in_ptr`s in the order of the loads and `out_ptr`s in the order of the stores, the
fragment's order), each checked against dtype and size; a write named after a buffer goes to the pointer of that
buffer, and what is left was stored in place (`in_out_ptr`: the last such write is what it holds). A parameter left
without a name, or a value the fused nodes do not compute from the inputs, gives no pair, with the reason.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from dataclasses import dataclass
from typing import Optional

from scraper.pairs.fragment import Fragment, FragmentError, Layout, Node, parse_fragment
from scraper.pairs.launch import PairError
from scraper.pairs.wrapper import Launch, Wrapper, note_writes
from scraper.records import KernelRecord

WRITE_PREFIXES = ("out_ptr", "in_out_ptr")
INDUCTOR_READ = re.compile(r"in_ptr\d+")
INTERNAL_BUFFER = re.compile(r"buf\d+")  # a buffer Inductor named, not an FX node
SIGNATURE_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64", "i64": "int64",
                    "i32": "int32", "i16": "int16", "i8": "int8", "u8": "uint8", "i1": "bool", "u32": "uint32",
                    "u16": "uint16", "u64": "uint64", "fp8e4nv": "float8_e4m3fn", "fp8e5": "float8_e5m2"}


@dataclass
class Pointer:
    """One pointer parameter of the kernel at a launch, and what it holds."""

    param: str
    dtype: Optional[str]  # torch dtype name of its signature type (*fp32 -> float32)
    buffer: str  # the call() name passed (for a reinterpret_tensor view: the name it views)
    view: Optional[tuple] = None  # (size, stride, offset) when call() passed reinterpret_tensor(...)
    written: bool = False  # an out_ptr / in_out_ptr (or a user kernel's mutated argument)
    entry: Optional[str] = None  # the fragment name of what it holds when the kernel starts (None: nothing read)
    exit: Optional[str] = None  # ... and when it ends (written pointers)
    partial: bool = False  # it ends holding a split reduction's partial results (the next kernel finishes them)


@dataclass
class Mapped:
    """A kernel whose first launch was named: its fragment, its pointers and the launch."""

    record: KernelRecord
    fragment: Fragment
    pointers: list
    launch: Launch

    @property
    def partial(self) -> bool:
        """It leaves partial results and no value: a pair needs the kernel that finishes them (Chain). (A kernel
        that also stores a value, a BatchNorm's mean beside its Welford M2 that only a later kernel reads, is a
        pair of its own: what holds no value is left out of its outputs.)"""
        written = [pointer for pointer in self.pointers if pointer.written]
        return any(p.partial for p in written) and all(p.exit is None for p in written)


class Chain:
    """The kernels one pair launches, in call()'s order: one, or a split reduction's first kernel (partial sums)
    and the kernel that finishes them. Its inputs are what its kernels read that none of them wrote before; its
    outputs what they leave in each buffer they write (the last value), partial results left out."""

    def __init__(self, members: list[Mapped]) -> None:
        self.members = members

    @property
    def records(self) -> list[KernelRecord]:
        return [member.record for member in self.members]

    def written_before(self, index: int, buffer: str) -> bool:
        return any(p.written and p.buffer == buffer for m in self.members[:index] for p in m.pointers)

    @property
    def inputs(self) -> list:
        """The distinct fragment names the chain reads from outside, in order."""
        names: list = []
        for index, member in enumerate(self.members):
            for pointer in member.pointers:
                if pointer.entry is not None and not self.written_before(index, pointer.buffer) \
                        and pointer.entry not in names:
                    names.append(pointer.entry)
        return names

    @property
    def outputs(self) -> list:
        """The written pointers whose buffers end holding a value (the last writer of each buffer), in order."""
        last: dict[str, Pointer] = {}
        for member in self.members:
            for pointer in member.pointers:
                if pointer.written:
                    last.pop(pointer.buffer, None)
                    last[pointer.buffer] = pointer
        return [pointer for pointer in last.values() if pointer.exit is not None]

    @property
    def nodes(self) -> list:
        seen, found = set(), []
        for member in self.members:
            for node in member.fragment.nodes:
                if node.name not in seen:
                    seen.add(node.name)
                    found.append(node)
        return found

    @property
    def reads(self) -> dict:
        found: dict = {}
        for member in self.members:
            for name, layout in member.fragment.reads.items():
                found.setdefault(name, layout)
        return found

    def fragment(self) -> Fragment:
        """One fragment of the whole chain (its reads, nodes and writes)."""
        return Fragment(self.reads, self.nodes, [w for m in self.members for w in m.fragment.writes])


class Mapper:
    """Names the pointer parameters of every kernel launch of one graph (module docstring); `results` holds, per
    kernel variable, the Mapped of its first launch or the PairError that stopped it."""

    def __init__(self, wrapper: Wrapper, records: dict[str, KernelRecord], graph_nodes: Optional[dict] = None
                 ) -> None:
        self.wrapper, self.records = wrapper, records
        self.graph_nodes = graph_nodes or {}  # name -> Node of the whole graph (scraper.pairs.fxgraph)
        self.pointwise = False  # the kind of the kernel being named
        self.origin: dict[str, Optional[str]] = {name: name for name in wrapper.inputs}
        self.results: dict[str, object] = {}

    def run(self) -> dict[str, object]:
        self.origin.update(extern_origins(self.wrapper, self.graph_nodes))
        for launch in self.wrapper.launches:
            record = self.records.get(launch.kernel)
            if record is not None:
                self.one(launch, record)
        return self.results

    def one(self, launch: Launch, record: KernelRecord) -> None:
        first = launch.kernel not in self.results
        try:
            pointers = pointers_of(launch, record)
        except PairError as exc:
            self.results.setdefault(launch.kernel, exc)
            return
        mapped = None
        self.pointwise = record.kind == "pointwise"
        if first:
            try:
                fragment = mutated_reads(parse_fragment(record.graph_fragment)) if record.graph_fragment else \
                    copy_fragment(pointers, self.wrapper)
                self.name_inputs(fragment, pointers, launch.index)
                self.name_outputs(fragment, pointers)
                mapped = Mapped(record, fragment, pointers, launch)
                self.results[launch.kernel] = mapped
            except (PairError, FragmentError) as exc:
                self.results[launch.kernel] = exc if isinstance(exc, PairError) else PairError(
                    "fragment_unreadable", str(exc))
        for pointer in pointers:  # what the launch leaves in its buffers (unknown unless it was just named)
            if pointer.written and pointer.view is None:
                self.origin[pointer.buffer] = pointer.exit if mapped is not None else None
        note_writes(self.wrapper, launch, [p.buffer for p in pointers if p.written])

    def known(self, name: str) -> Optional[str]:
        """What an earlier launch left in call() name `name` (following plain aliases `buf3 = buf2`)."""
        seen = set()
        while name is not None and name not in seen:
            seen.add(name)
            if name in self.origin:
                return self.origin[name]
            buffer = self.wrapper.buffers.get(name)
            name = buffer.base if buffer is not None and buffer.kind == "alias" else None
        return None

    def name_inputs(self, fragment: Fragment, pointers: list[Pointer], index: int) -> None:
        """The fragment read each input pointer holds; PairError("reads_unmatched"). An in_ptr is always read;
        an in_out_ptr is read when its buffer holds data from before (a read is left for it)."""
        reads = [name for name in fragment.reads if name not in fragment.writes]
        groups = pointer_groups(pointers)
        for group in groups:  # a read named after the storage itself (an extern result `buf107`, passed as a view)
            own = next((name for name in reads if name in self.aliases(group[0])), None)
            if own is not None:
                set_entry(group, own)
                reads.remove(own)
        for group in [g for g in groups if g[0].entry is None]:  # by what an earlier launch left there, or a graph
            # input's own name
            known = self.known(group[0].buffer) if group[0].view is None else None
            if known in reads and (group_reads(group) or self.wrapper.written_before(group[0].buffer, index)):
                set_entry(group, known)
                reads.remove(known)
        for group in [g for g in groups if group_reads(g) and g[0].entry is None]:  # the in_ptrs left, in order
            match = self.first_fit(reads, fragment, group[0])
            if match is None:
                raise PairError("reads_unmatched", f"{group[0].param} ({group[0].buffer}) matches no read")
            set_entry(group, match)
            reads.remove(match)
        for group in [g for g in groups if not group_reads(g) and g[0].entry is None]:  # in place: maybe read
            if not reads or not group[0].param.startswith("in_out"):
                continue
            match = self.first_fit(reads, fragment, group[0])
            if match is not None:
                set_entry(group, match)
                reads.remove(match)
        if reads:
            raise PairError("reads_unmatched", f"read {reads[0]} matches no pointer")

    def first_fit(self, reads: list, fragment: Fragment, pointer: Pointer) -> Optional[str]:
        """The first read whose layout is exactly the pointer's, else the first it may be seen through (a view of
        as many elements)."""
        for strict in (True, False):
            match = next((name for name in reads if fits(fragment.reads[name], pointer, self.wrapper, strict)), None)
            if match is not None:
                return match
        return None

    def name_outputs(self, fragment: Fragment, pointers: list[Pointer]) -> None:
        """What each written pointer holds when the kernel ends; PairError("writes_unmatched").

        Inductor numbers a kernel's outputs by its writes: `out_ptrK` is the K-th write that is not stored in
        place (writes into an `in_out_ptr` are not numbered; numbers of buffers it kept to itself, a layer norm's
        mean, are skipped in the signature). So the writes stored in place are the smallest set (those named after
        an in-place buffer included) that leaves, for every `out_ptrK`, a K-th remaining write that fits it, and
        gives every in-place pointer a write that fits it; its last one is what that pointer holds."""
        outputs = [p for p in pointers if p.written]
        in_place = [p for p in outputs if p.param.startswith("in_out")]
        numbered = {int(p.param[7:]): p for p in outputs if re.fullmatch(r"out_ptr\d+", p.param)}
        others = [p for p in outputs if p not in in_place and p not in numbered.values()]
        if others:  # a user kernel's mutated argument: no numbering to go by
            raise PairError("writes_unmatched", f"{others[0].param}: an output without Inductor's numbering")
        writes = list(fragment.writes)
        stored = self.in_place_writes(fragment, writes, numbered, in_place)
        if stored is None:
            raise PairError("writes_unmatched", "no way to match the writes to the pointers")
        rest = [w for w in writes if w not in stored]
        for number, pointer in numbered.items():
            pointer.exit = self.value_of(fragment, pointers, pointer, rest[number], writes)
        for pointer in in_place:
            mine = [w for w in stored if self.stores_into(fragment, w, pointer, writes)]
            values = [w for w in mine if self.is_value(fragment, w) and w not in self.aliases(pointer)]
            taken = self.extern_taken(fragment, pointer) if any(
                w in self.aliases(pointer) and not self.is_value(fragment, w) for w in mine) else None
            if taken is not None:  # what an extern op later reads from this buffer: the value stored last
                pointer.exit = taken
            else:
                pointer.exit = values[-1] if values else self.value_of(fragment, pointers, pointer, mine[-1], writes)

    def in_place_writes(self, fragment: Fragment, writes: list, numbered: dict, in_place: list) -> Optional[list]:
        """The writes stored in place (name_outputs), or None when no set fits."""
        fixed = [w for w in writes if any(w in self.aliases(p) for p in in_place)]
        free = [w for w in writes if w not in fixed and not any(w in self.aliases(p) for p in numbered.values())]
        if not in_place:
            free = []
        if len(free) > 12:
            raise PairError("writes_unmatched", f"{len(writes)} writes: too many to match")
        for size in range(len(free), -1, -1):  # the most: a value stored in place, then again in place, ends there
            for extra in itertools.combinations(free, size):
                stored = [w for w in writes if w in fixed or w in extra]
                if self.consistent(fragment, writes, stored, numbered, in_place):
                    return stored
        return None

    def consistent(self, fragment: Fragment, writes: list, stored: list, numbered: dict, in_place: list) -> bool:
        rest = [w for w in writes if w not in stored]
        for number, pointer in numbered.items():
            if number >= len(rest) or not self.stores_into(fragment, rest[number], pointer, writes):
                return False
        if any(not any(self.stores_into(fragment, w, p, writes) for p in in_place) for w in stored):
            return False
        return all(any(self.stores_into(fragment, w, p, writes) for w in stored) for p in in_place)

    def stores_into(self, fragment: Fragment, name: str, pointer: Pointer, writes: list) -> bool:
        """Whether write `name` can be what the kernel stores through `pointer`: named after its buffer, a value of
        its dtype and numel, or a name of Inductor's own (a mutation's buffer) right after a value that fits (what
        the mutation copies)."""
        if name in self.aliases(pointer):
            return True
        if self.is_value(fragment, name):
            return written_fits(self.layout(fragment, name), pointer, self.wrapper)
        before = writes[: writes.index(name)]
        return bool(before) and self.is_value(fragment, before[-1]) and written_fits(
            self.layout(fragment, before[-1]), pointer, self.wrapper)

    def value_of(self, fragment: Fragment, pointers: list, pointer: Pointer, name: str, writes: list) -> Optional[str]:
        """The value a pointer holds when its write is `name`: the value itself; for a name of Inductor's own the
        value written just before it (what the mutation copies); for a write named after its own buffer, the
        realized argument (copied) or, in a reduction, partial sums (pointer.partial, no value). (A reduction's
        fragment lists such a buffer among its placeholders too, `%buf37 = PlaceHolder[target=buf37]`: a Welford
        M2 no FX node computes.)"""
        internal = not self.pointwise and name in self.aliases(pointer) and fragment.node(name) is None \
            and name not in self.graph_nodes
        if self.is_value(fragment, name) and not internal:
            return name
        if name not in self.aliases(pointer):
            before = [w for w in writes[:writes.index(name)] if self.is_value(fragment, w)
                      and written_fits(self.layout(fragment, w), pointer, self.wrapper)]
            if before:
                return before[-1]
        if not self.pointwise:
            pointer.partial = True  # a split reduction's partial sums: no node computes them (see Chain)
            return None
        return self.copied(fragment, pointers, pointer)

    def extern_taken(self, fragment: Fragment, pointer: Pointer) -> Optional[str]:
        """The fragment value an extern call of call() reads from the pointer's buffer, when the kernel stores
        into it under Inductor's own name (`buf21`, then `convolution_backward(buf21, relu_12, primals_104, ...)`):
        the argument at that position of the fragment's one node of that op on the same graph inputs
        (`convolution_backward_2(mul_165, relu_12, primals_104, ...)`, while the kernel also lists `sub_31`, a
        value before it). None when no such call, or not exactly one answer."""
        from scraper.pairs.inputs import op_name

        aliases = self.aliases(pointer)
        found = set()
        for buffer in self.wrapper.buffers.values():
            positions = [i for i, name in enumerate(buffer.extern_args) if name in aliases]
            if not buffer.extern_op or not positions:
                continue
            for node in fragment.nodes:
                if op_name(node) != buffer.extern_op or tuple(sorted(node_inputs(
                        node, self.graph_nodes, set(self.wrapper.inputs)))) != buffer.extern_inputs:
                    continue
                found.update(node.args[i].name for i in positions
                             if i < len(node.args) and getattr(node.args[i], "name", None) is not None)
        if len(found) != 1:
            return None
        name = found.pop()
        return name if written_fits(self.layout(fragment, name), pointer, self.wrapper) else None

    def is_value(self, fragment: Fragment, name: str) -> bool:
        """Whether a write names a value some node computes (the fragment's, or the graph's) or a read."""
        return fragment.node(name) is not None or name in fragment.reads or name in self.graph_nodes

    def layout(self, fragment: Fragment, name: str) -> Optional[Layout]:
        """The layout of a written value: its fragment node's, its read's, else the graph node's."""
        node = fragment.node(name) or self.graph_nodes.get(name)
        return node.layout if node is not None else fragment.reads.get(name)

    def copied(self, fragment: Fragment, pointers: list[Pointer], pointer: Pointer) -> str:
        """What a pointer holds when the only write into it is a buffer no FX node made (Inductor realized an
        extern op's argument there: a convolution's input turned channels-last, an attention mask): among the
        values the kernel's nodes compute from its inputs (its inputs too), the one of the buffer's dtype and numel
        that an extern op of the fragment takes (the last such), else the only one. PairError("writes_unmatched")
        when there is none or no way to choose (a split reduction's partial sums: no node computes them)."""
        from scraper.pairs.emit import EmitError, needed

        inputs = {p.entry for p in pointers if p.entry is not None}
        size, _ = known_layout(pointer, self.wrapper)
        candidates = []
        for name in [*inputs, *(node.name for node in fragment.nodes)]:
            layout = self.layout(fragment, name)
            if layout is None or layout.numel is None or size is None or layout.numel != math.prod(size):
                continue
            if pointer.dtype is not None and layout.dtype != pointer.dtype:
                continue
            try:
                needed(fragment.nodes, inputs, [name], self.graph_nodes)
            except EmitError:
                continue
            candidates.append(name)
        taken = extern_arguments(fragment)
        preferred = [name for name in candidates if name in taken]
        if preferred:
            return preferred[-1]
        if len(candidates) == 1:
            return candidates[0]
        raise PairError("writes_unmatched", f"{pointer.param} holds no value the fragment names")

    def aliases(self, pointer: Pointer) -> set:
        """Every call() name sharing the pointer's storage (a write may be named after any of them)."""
        root = self.wrapper.root(pointer.buffer)
        if root is None:
            return {pointer.buffer}
        return {b.name for b in self.wrapper.buffers.values() if self.wrapper.root(b.name) is root}


def pointer_groups(pointers: list[Pointer]) -> list[list[Pointer]]:
    """The pointers by the storage they are passed (one buffer may go to an in_ptr and an out_ptr), in order; a
    view is a group of its own."""
    groups: dict[str, list[Pointer]] = {}
    for pointer in pointers:
        key = pointer.buffer if pointer.view is None else f"{pointer.param}:view"
        groups.setdefault(key, []).append(pointer)
    return list(groups.values())


def group_reads(group: list[Pointer]) -> bool:
    """Whether the kernel surely reads this storage: some pointer of it is an in_ptr (not written)."""
    return any(not pointer.written for pointer in group)


VIEW_OPS = {"expand", "view", "reshape", "permute", "unsqueeze", "squeeze", "clone", "slice", "alias", "t",
            "transpose", "_unsafe_view", "select", "contiguous"}


def extern_origins(wrapper: Wrapper, graph_nodes: dict) -> dict:
    """{call() name: FX node} for the results of extern calls (convolutions, matmuls) whose graph inputs (a weight)
    are those of exactly one node of the graph of that op: `buf22 = extern_kernels.convolution(buf21, arg31_1,
    ...)` is `convolution_6 = torch.ops.aten.convolution.default(relu_4, arg31_1, ...)`."""
    from scraper.pairs.inputs import op_name

    by_inputs: dict = {}
    for node in graph_nodes.values():
        op = op_name(node)
        if any(extern in op for extern in EXTERN_OPS):
            key = (op, tuple(sorted(node_inputs(node, graph_nodes, set(wrapper.inputs)))))
            by_inputs.setdefault(key, []).append(node.name)
    found = {}
    for buffer in wrapper.buffers.values():
        if buffer.extern_op and buffer.extern_inputs:
            names = by_inputs.get((buffer.extern_op, buffer.extern_inputs), [])
            if len(names) == 1:
                found[buffer.name] = names[0]
    return found


def node_inputs(node, graph_nodes: dict, inputs: set) -> set:
    """The graph inputs a node reads directly or through views."""
    from scraper.pairs.fragment import refs
    from scraper.pairs.inputs import op_name

    found, todo, seen = set(), refs(node.args), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        elif name in graph_nodes and op_name(graph_nodes[name]) in VIEW_OPS:
            todo += refs(graph_nodes[name].args[:1])
    return found


EXTERN_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product", "_flash_attention",
              "_efficient_attention", "cudnn", "linear", "matmul")


def extern_arguments(fragment: Fragment) -> set:
    """The names the fragment's extern ops (convolutions, matmuls, attention: computed outside the kernel) take, and
    what those come from through views (an `expand` of a mask)."""
    from scraper.pairs.fragment import refs
    from scraper.pairs.inputs import op_name

    views = {"expand", "view", "reshape", "permute", "unsqueeze", "squeeze", "clone", "slice", "alias", "t"}
    by_name = {node.name: node for node in fragment.nodes}
    found: set = set()
    todo = [ref for node in fragment.nodes if any(op in op_name(node) for op in EXTERN_OPS)
            for ref in refs(node.args)]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        node = by_name.get(name)
        if node is not None and op_name(node) in views:
            todo += refs(node.args[:1])
    return found


def mutated_reads(fragment: Fragment) -> Fragment:
    """The fragment with a read named after a `copy_` node it holds renamed to what that node copies into:
    Inductor names the buffer a mutation writes after the mutation (`%copy__4 = PlaceHolder[target=copy__4]`
    for `copy__4 = copy_(primals_10, add_7)`), while the nodes read its value before it as `primals_10`."""
    renamed = {}
    for name, layout in fragment.reads.items():
        node = fragment.node(name)
        target = node.args[0] if node is not None and node.op.endswith(".copy_.default") and node.args else None
        target = getattr(target, "name", None)
        if target is not None and target not in fragment.reads and fragment.node(target) is None:
            renamed[target] = layout
        else:
            renamed[name] = layout
    fragment.reads = renamed
    return fragment


def copy_fragment(pointers: list[Pointer], wrapper: Wrapper) -> Fragment:
    """The fragment of a kernel Inductor wrote none for (no FX node is its origin: it only copies a graph input
    into the layout an extern op wants, a weight turned channels-last): its input read under its own name, in the
    layout call() asserts, its output written under its buffer's. FragmentError for any other kernel."""
    reads = [p for p in pointers if not p.written]
    writes = [p for p in pointers if p.written]
    if len(reads) != 1 or len(writes) != 1 or reads[0].buffer not in wrapper.inputs:
        raise FragmentError("no graph fragment")
    buffer = wrapper.buffers[reads[0].buffer]
    if buffer.size is None or reads[0].dtype is None:
        raise FragmentError("no graph fragment, and no layout for the input")
    layout = Layout(reads[0].dtype, tuple(buffer.size), tuple(buffer.stride))
    return Fragment({reads[0].buffer: layout}, [], [writes[0].buffer])


def set_entry(group: list[Pointer], name: str) -> None:
    for pointer in group:
        pointer.entry = name


def signature_dtype(kind: object) -> Optional[str]:
    """`*fp32` -> "float32"."""
    return SIGNATURE_DTYPES.get(kind.lstrip("*")) if isinstance(kind, str) and kind.startswith("*") else None


def pointers_of(launch: Launch, record: KernelRecord) -> list[Pointer]:
    """The pointer parameters of `record`'s kernel with the call() names `launch` passes them; PairError when an
    argument is neither a name nor a reinterpret_tensor view of one."""
    signature = record.signature or {}
    params = [name for name, kind in signature.items() if kind != "constexpr"]
    if len(launch.args) < len(params):
        raise PairError("unknown_launch", f"{record.name}: {len(launch.args)} arguments, {len(params)} parameters")
    mutated = set(((record.launch or {}).get("inductor_meta") or {}).get("mutated_arg_names") or [])
    found = []
    for param, argument in zip(params, launch.args):
        kind = signature.get(param)
        if isinstance(kind, str) and kind.startswith("*"):
            buffer, view = argument_buffer(argument)
            # Inductor stores only through out_ptr / in_out_ptr: an in_ptr it lists as mutated shares its buffer
            # with an out_ptr (a BatchNorm's running mean: read, then written back), and is read, never written.
            written = param.startswith(WRITE_PREFIXES) or (param in mutated and not INDUCTOR_READ.fullmatch(param))
            if written and param.startswith(WRITE_PREFIXES) and only_loaded(record, param):
                written = False  # Inductor dropped the store (a value nothing uses later) but kept in_out_ptr
            found.append(Pointer(param, signature_dtype(kind), buffer, view, written))
    return found


def only_loaded(record: KernelRecord, param: str) -> bool:
    """Whether the kernel's body uses `param` only in `tl.load(param ...)`: no store or atomic goes through it
    (mobilenetv3's `in_out_ptr0` holds a convolution the kernel reads, and keeps, since what it would store is
    dead)."""
    lines = (record.original or record.code or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("def ")), len(lines))
    body = "\n".join(lines[start + 1:])  # a signature over several lines leaves its names here: not only loaded
    uses = len(re.findall(rf"\b{param}\b", body))
    return uses > 0 and uses == len(re.findall(rf"\btl\.load\(\s*{param}\b", body))


def argument_buffer(argument: ast.expr) -> tuple[str, Optional[tuple]]:
    """(call() name, view) of one launch argument."""
    if isinstance(argument, ast.Name):
        return argument.id, None
    if (isinstance(argument, ast.Call) and isinstance(argument.func, ast.Name)
            and argument.func.id == "reinterpret_tensor" and len(argument.args) >= 3
            and isinstance(argument.args[0], ast.Name)):
        try:
            size, stride = ast.literal_eval(argument.args[1]), ast.literal_eval(argument.args[2])
            offset = ast.literal_eval(argument.args[3]) if len(argument.args) > 3 else 0
        except (ValueError, SyntaxError):
            raise PairError("symbolic_sizes", ast.unparse(argument)[:60]) from None
        return argument.args[0].id, (tuple(size), tuple(stride), int(offset))
    raise PairError("unknown_argument", ast.unparse(argument)[:60])


def fits(layout: Optional[Layout], pointer: Pointer, wrapper: Wrapper, strict: bool = False) -> bool:
    """Whether a read's buffer layout can be what the pointer passes: the same dtype, and a layout call() gives
    the name, its storage or its view that agrees (same size and stride, or the same elements seen another way)."""
    if layout is None:
        return True
    if pointer.dtype is not None and layout.dtype != pointer.dtype:
        return False
    if layout.size is None:
        return True
    candidates = [known_layout(pointer, wrapper)]
    root = wrapper.root(pointer.buffer)
    if root is not None:
        candidates.append((root.size, root.stride))
    known = [(size, stride) for size, stride in candidates if size is not None]
    if not known:
        return True
    if any((tuple(size), tuple(stride or ())) == (layout.size, layout.stride) for size, stride in known):
        return True
    if strict:
        return False
    viewed = pointer.view is not None or (wrapper.buffers.get(pointer.buffer) or root).kind == "view"
    return viewed and any(math.prod(size) == math.prod(layout.size) for size, _ in known)


def written_fits(layout: Optional[Layout], pointer: Pointer, wrapper: Wrapper) -> bool:
    """Whether a written value of this layout can be what the pointer holds: dtype and numel."""
    if layout is None:
        return True
    if pointer.dtype is not None and layout.dtype != pointer.dtype:
        return False
    size, _ = known_layout(pointer, wrapper)
    return size is None or layout.numel is None or math.prod(size) == layout.numel


def known_layout(pointer: Pointer, wrapper: Wrapper) -> tuple[Optional[tuple], Optional[tuple]]:
    """(size, stride) call() gives the pointer's argument, (None, None) when it does not say."""
    if pointer.view is not None:
        return pointer.view[0], pointer.view[1]
    buffer = wrapper.buffers.get(pointer.buffer)
    if buffer is not None and buffer.size is None and buffer.kind == "alias":
        buffer = wrapper.root(pointer.buffer)
    return (buffer.size, buffer.stride) if buffer is not None else (None, None)


def storage_elements(layout: Layout) -> int:
    """How many elements a layout spans in its storage."""
    if not layout.size or not layout.stride:
        return 1
    return sum((n - 1) * s for n, s in zip(layout.size, layout.stride)) + 1 if all(layout.size) else 0


# ------------------------------------------------------------------------------------------------ the pair

_PACK = '''def pack(*outputs):
    """The kernel's outputs as one tensor (KernelBench's evaluator compares one): each flattened, as float32, in
    order."""
    return torch.cat([output.reshape(-1).to(torch.float32) for output in outputs])
'''

_STRIDED = '''def strided(x, size, stride, dtype, copy=False):
    """`x` as the kernel reads it: this dtype, size and stride (a copy when it is laid out otherwise, or when the
    kernel writes into it: the caller's tensor stays as it was)."""
    x = x.to(dtype)
    if not copy and tuple(x.shape) == size and tuple(x.stride()) == stride:
        return x
    out = torch.empty_strided(size, stride, dtype=dtype, device=x.device)
    out.copy_(x)
    return out
'''

MAX_ELEMENTS = 1 << 28  # the inputs and outputs of one kernel problem together (1 GiB of float32)


@dataclass
class KernelPair:
    """The texts of a kernel-level pair and what the stage records about it."""

    python_code: str
    triton_code: str
    inputs: list  # fragment names, in forward order
    input_kinds: dict  # name -> how get_inputs() fills it (scraper.pairs.inputs)
    outputs: list  # fragment names of what it returns, in order
    ops: list  # the ops Model calls
    config_source: str  # recorded | heuristics | decorator
    copy: bool = False  # the kernel only copies its input into another layout


def build_pair(chain: Chain, wrapper: Wrapper, kernels: list, description: str,
               graph_nodes: Optional[dict] = None) -> KernelPair:
    """The kernel-level pair of a chain of named kernels (one, or a split reduction's two); `kernels` are their
    scraper.pairs.triton_code.Kernel (jit function, parameters, launch configuration), `graph_nodes` the graph's
    nodes by name (scraper.pairs.fxgraph: what a fragment does not list). Raises PairError or EmitError."""
    from scraper.pairs import inputs as rules
    from scraper.pairs.emit import needed, statements, uses_device, variable

    if chain.members[-1].partial:
        raise PairError("partial_result", "a split reduction's partial sums, and no kernel here finishes them")
    fragment = chain.fragment()
    names = chain.inputs
    layouts = {name: fragment.reads.get(name) or call_layout(chain, name, wrapper) for name in names}
    if any(layout is None or layout.size is None for layout in layouts.values()):
        raise PairError("symbolic_sizes", "an input of unknown size")
    outputs = [pointer.exit for pointer in chain.outputs]
    if not outputs:
        raise PairError("writes_unmatched", "the kernel leaves no value")
    nodes = needed(with_extern_results(fragment, names), set(names), outputs, graph_nodes)
    unused_internal(names, nodes, outputs)
    body = statements(nodes)
    all_layouts = {**{n.name: n.layout for n in graph_nodes.values() if n.layout is not None}, **{
        n.name: n.layout for n in fragment.nodes if n.layout is not None}, **layouts} if graph_nodes else {
        **{n.name: n.layout for n in fragment.nodes if n.layout is not None}, **layouts}
    kinds = rules.input_kinds(nodes, layouts, all_layouts)
    check_size(layouts, chain, wrapper)
    device = uses_device(nodes)
    packed = must_pack(chain)
    model = model_text(names, layouts, body, outputs, device, variable, packed)
    problem = problem_text(description, model, names, layouts, kinds, packed, rules.MAKE_INPUT)
    new = model_new_text(chain, wrapper, kernels, names, layouts, packed)
    ops = sorted({node.op for node in nodes})
    sources = sorted({kernel.config.source for kernel in kernels})
    return KernelPair(problem, new, names, kinds, outputs, ops, "+".join(sources),
                      copy=not nodes and all(o in names for o in outputs))


def unused_internal(names: list, nodes: list, outputs: list) -> None:
    """PairError("reads_internal") when the kernel reads a buffer of Inductor's own (`bufN`: a Welford M2, partial
    sums) that Model never uses: the nodes recompute its value from other inputs, so random inputs would make the
    two sides disagree; the kernel that writes it belongs in the pair (chains_of), and was not found."""
    from scraper.pairs.fragment import refs

    used = {ref for node in nodes for ref in refs(node.args) + refs(node.kwargs)} | set(outputs)
    unused = [name for name in names if INTERNAL_BUFFER.fullmatch(name) and name not in used]
    if unused:
        raise PairError("reads_internal", f"{unused[0]}: a buffer of Inductor's own that Model does not use")


def call_layout(chain: Chain, name: str, wrapper: Wrapper) -> Optional[Layout]:
    """The layout call() gives the buffer of an input the fragment names without one (its signature's dtype)."""
    pointer = next((p for m in chain.members for p in m.pointers if p.entry == name), None)
    if pointer is None or pointer.dtype is None:
        return None
    size, stride = known_layout(pointer, wrapper)
    return Layout(pointer.dtype, tuple(size), tuple(stride)) if size is not None and stride is not None else None


def with_extern_results(fragment: Fragment, names: list) -> list:
    """The fragment's nodes, a convolution computed outside the kernel replaced by what the kernel does with it:
    Inductor runs the convolution without its bias (an extern kernel, its result read here as an unnamed buffer
    `bufN`) and adds the bias in the kernel. So `convolution = bufN + bias.reshape([1, C, 1, 1])`."""
    from scraper.pairs.fragment import Ref, refs
    from scraper.pairs.inputs import op_name

    used = {ref for node in fragment.nodes for ref in refs(node.args) + refs(node.kwargs)}
    unnamed = [name for name in names if name.startswith("buf") and name not in used]
    # The fragment may list earlier convolutions of the same shape too (their results reached this kernel through
    # a buffer it reads): the extern result is the latest convolution's, so they are matched from the end.
    results = {}
    for node in reversed(fragment.nodes):
        result = next((name for name in unnamed if same_shape(fragment.reads.get(name), node.layout)), None)
        if op_name(node) == "convolution" and result is not None and not all(
                isinstance(a, Ref) and a.name in names for a in node.args[:2]):
            unnamed.remove(result)
            results[node.name] = result
    nodes = []
    for node in fragment.nodes:
        result, args = results.get(node.name), node.args
        if result is not None:
            bias = args[2] if len(args) > 2 else None
            if isinstance(bias, Ref) and node.layout is not None and node.layout.size:
                shape = [1, node.layout.size[1]] + [1] * (len(node.layout.size) - 2)
                nodes.append(Node(f"{node.name}_bias", "torch.ops.aten.reshape.default", (bias, shape), {}, None))
                nodes.append(Node(node.name, "torch.ops.aten.add.Tensor", (Ref(result), Ref(f"{node.name}_bias")),
                                  {}, node.layout))
            else:
                nodes.append(Node(node.name, "torch.ops.aten.alias.default", (Ref(result),), {}, node.layout))
            continue
        nodes.append(node)
    return nodes


def same_shape(read: Optional[Layout], layout: Optional[Layout]) -> bool:
    return read is not None and layout is not None and read.size is not None and read.size == layout.size \
        and read.dtype == layout.dtype


def check_size(layouts: dict, chain: Chain, wrapper: Wrapper) -> None:
    """PairError("too_large") when the inputs and outputs together hold more than MAX_ELEMENTS."""
    total = sum(storage_elements(layout) for layout in layouts.values())
    for pointer in chain.outputs:
        size, _ = known_layout(pointer, wrapper)
        total += math.prod(size) if size else 0
    if total > MAX_ELEMENTS:
        raise PairError("too_large", f"{total} elements")


def forward_head(names: list, layouts: dict, variable) -> list[str]:
    """The first lines of both forwards: each input back in the kernel's dtype (a harness may have cast it)."""
    lines = []
    for name in names:
        if layouts[name].dtype != "float32":
            lines.append(f"{variable(name)} = {variable(name)}.to(torch.{layouts[name].dtype})")
    return lines


FLOATING = ("float32", "float16", "bfloat16", "float64")


def must_pack(chain: Chain) -> bool:
    """Whether the pair returns pack(...): several outputs, or one that is not floating point (KernelBench's
    allclose takes floats)."""
    outputs = chain.outputs
    return len(outputs) > 1 or any(p.dtype not in FLOATING for p in outputs)


def returns(values: list, packed: bool) -> str:
    """The forward's return statement."""
    return f"return pack({', '.join(values)})" if packed else f"return {values[0]}"


def model_text(names: list, layouts: dict, body: list, outputs: list, device: bool, variable, packed: bool) -> str:
    """class Model."""
    arguments = ", ".join(["self"] + [variable(n) for n in names])
    lines = forward_head(names, layouts, variable)
    if device:
        lines.append(f"device = {variable(names[0])}.device" if names else "device = self.anchor.device")
    lines += body
    lines.append(returns([variable(o) for o in outputs], packed))
    init = ("    def __init__(self):\n        super().__init__()\n"
            "        self.register_buffer(\"anchor\", torch.empty(0), persistent=False)  # where the model is\n\n"
            if device and not names else "")
    return ("class Model(nn.Module):\n" + init + f"    def forward({arguments}):\n"
            + "".join(f"        {line}\n" for line in lines))


def problem_text(description: str, model: str, names: list, layouts: dict, kinds: dict, packed: bool,
                 make_input: str) -> str:
    """The whole python_code."""
    rows = "".join(f"    ({name!r}, {layouts[name].size!r}, {layouts[name].stride!r}, torch.{layouts[name].dtype}, "
                   f"{kinds[name]!r}),\n" for name in names)
    parts = [f'"""{description}"""\n', "import torch\nfrom torch import nn\n"]
    if "torch.ops.prims." in model:  # the prims Inductor registers itself (_low_memory_max_pool_with_offsets, ...)
        parts[1] += "import torch._inductor.inductor_prims  # noqa: F401\n"
    if packed:
        parts.append(_PACK)
    parts.append(model)
    parts.append(f"# Each input: name, size, stride, dtype, values (scraper.pairs.inputs), as the kernel reads it.\n"
                 f"INPUTS = [\n{rows}]\n")
    parts.append(make_input)
    parts.append("def get_inputs():\n    return [make_input(*spec[1:]) for spec in INPUTS]\n")
    parts.append("def get_init_inputs():\n    return []\n")
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"


def model_new_text(chain: Chain, wrapper: Wrapper, kernels: list, names: list, layouts: dict, packed: bool) -> str:
    """class ModelNew (module docstring): the inputs in the kernels' layouts, the outputs allocated as call() did,
    the launches in order (a buffer one kernel writes is the one the next reads), what Model returns."""
    from scraper.pairs.emit import variable
    from scraper.pairs.triton_code import launch_text

    lines = forward_head(names, layouts, variable)
    device = f"{variable(names[0])}.device" if names else "self.anchor.device"
    locals_: dict[str, tuple] = {}  # call() name of a storage -> (local variable, its size)
    for index, (member, kernel) in enumerate(zip(chain.members, kernels)):
        arguments = []
        pointers = {pointer.param: pointer for pointer in member.pointers}
        params = launch_params(member.record)
        for param, text in zip(params, member.launch.texts):
            pointer = pointers.get(param)
            if pointer is None:
                arguments.append(scalar(text))
                continue
            arguments.append(pointer_argument(pointer, chain, index, wrapper, layouts, locals_, lines, device,
                                              variable))
        arguments += [scalar(text) for text in member.launch.texts[len(params):]]
        call_text = f"{member.launch.kernel}.run({', '.join(arguments)}, stream=stream0)"
        call = ast.parse(call_text).body[0].value
        lines.append(launch_text(kernel, call, [call_text]))
    lines.append(returns([returned_value(pointer, chain, locals_) for pointer in chain.outputs], packed))
    init = ("    def __init__(self):\n        super().__init__()\n"
            "        self.register_buffer(\"anchor\", torch.empty(0), persistent=False)  # where the model is\n\n"
            if not names else "")
    arguments_text = ", ".join(["self"] + [variable(n) for n in names])
    model_new = ("class ModelNew(nn.Module):\n" + init + f"    def forward({arguments_text}):\n"
                 + "".join(f"        {line}\n" for line in lines))
    return module_text(chain, kernels, model_new, packed)


def launch_params(record: KernelRecord) -> list:
    """The parameters a launch passes positionally (the signature's, without constexprs)."""
    return [name for name, kind in (record.signature or {}).items() if kind != "constexpr"]


def scalar(text: str) -> str:
    """A non-pointer launch argument: a number (a symbolic size has no value here: PairError)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise PairError("symbolic_sizes", text[:40]) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PairError("symbolic_sizes", text[:40])
    return repr(value)


def storage_key(pointer: Pointer) -> str:
    return pointer.buffer


def pointer_argument(pointer: Pointer, chain: Chain, index: int, wrapper: Wrapper, layouts: dict, locals_: dict,
                     lines: list, device: str, variable) -> str:
    """The launch argument of one pointer, defining the local of its storage the first time the chain uses it: a
    chain input in the kernel's layout (copied when a kernel of the chain writes it), else an allocation."""
    key = storage_key(pointer)
    if key not in locals_:
        group = [p for m in chain.members for p in m.pointers if storage_key(p) == key]
        entry = pointer.entry if not chain.written_before(index, pointer.buffer) else None
        entry = entry or next((p.entry for p in group if p.entry is not None and p.entry in layouts), None)
        if entry is not None and entry in layouts:
            layout = layouts[entry]
            copy = ", copy=True" if any(p.written for p in group) else ""
            lines.append(f"{pointer.param} = strided({variable(entry)}, {layout.size!r}, {layout.stride!r}, "
                         f"torch.{layout.dtype}{copy})")
            locals_[key] = (local_name(pointer, index), layout.size, layout.stride)
            lines[-1] = lines[-1].replace(f"{pointer.param} =", f"{local_name(pointer, index)} =", 1)
        else:
            size, stride, dtype = allocation(pointer, wrapper)
            lines.append(f"{local_name(pointer, index)} = torch.empty_strided({size!r}, {stride!r}, "
                         f"dtype=torch.{dtype}, device={device})")
            locals_[key] = (local_name(pointer, index), size, stride)
    local = locals_[key][0]
    if pointer.view is not None:
        size, stride, offset = pointer.view
        return f"torch.as_strided({local}, {tuple(size)!r}, {tuple(stride)!r}, {offset!r})"
    return local


def local_name(pointer: Pointer, index: int) -> str:
    """The local of a storage: named after the parameter it first goes to (a later kernel of a chain: numbered)."""
    return pointer.param if index == 0 else f"{pointer.param}_k{index}"


def allocation(pointer: Pointer, wrapper: Wrapper) -> tuple:
    """(size, stride, dtype) of an output buffer as call() allocated it; PairError("unknown_layout")."""
    buffer = wrapper.root(pointer.buffer) if pointer.view is not None else wrapper.buffers.get(pointer.buffer)
    if buffer is not None and buffer.size is None:
        buffer = wrapper.root(pointer.buffer)
    if buffer is None or buffer.size is None or buffer.stride is None:
        raise PairError("unknown_layout", f"{pointer.param} ({pointer.buffer})")
    dtype = buffer.dtype or pointer.dtype
    if dtype is None:
        raise PairError("unknown_layout", f"{pointer.param}: no dtype")
    return tuple(buffer.size), tuple(buffer.stride), dtype


def returned_value(pointer: Pointer, chain: Chain, locals_: dict) -> str:
    """What ModelNew returns for one output: its local (or the view call() passed), in the node's shape when the
    buffer was allocated in another shape with as many elements: the node's own strides where they are the
    buffer's, dims relabelled (a LayerNorm over channels stored in place into a channels-last convolution's buffer
    is that buffer permuted, not reshaped), else reshaped."""
    local, size, stride = locals_[storage_key(pointer)]
    if pointer.view is not None:
        size, stride, offset = pointer.view
        local = f"torch.as_strided({local}, {tuple(size)!r}, {tuple(stride)!r}, {offset!r})"
    fragment = chain.fragment()
    node = fragment.node(pointer.exit)
    layout = node.layout if node is not None else fragment.reads.get(pointer.exit)
    if layout is None or layout.size is None or size is None or tuple(size) == layout.size \
            or math.prod(size) != math.prod(layout.size):
        return local
    if layout.stride is not None and stride is not None and pointer.view is None \
            and sorted(zip(stride, size)) == sorted(zip(layout.stride, layout.size)):
        return f"torch.as_strided({local}, {layout.size!r}, {layout.stride!r})"
    return f"{local}.reshape({layout.size!r})"


def module_text(chain: Chain, kernels: list, model_new: str, packed: bool) -> str:
    """The whole triton_code: imports, the clean kernels, the helpers, ModelNew."""
    from scraper.pairs.triton_code import kernel_sources

    imports, definitions = kernel_sources(kernels)
    imports = [line for line in imports if line + "\n" not in PROLOGUE]
    what = (f"{chain.records[0].name} as Triton: the kernel PyTorch Inductor generated, launched as call() launched it."
            if len(kernels) == 1 else
            f"{' and '.join(r.name for r in chain.records)} as Triton: the kernels PyTorch Inductor generated (a split "
            "reduction: the first sums in parts, the second finishes), launched as call() launched them.")
    docstring = f'"""{what}\nModelNew has Model\'s interface."""\n' 
    parts = [docstring, PROLOGUE + "".join(line + "\n" for line in imports)]
    parts += [definition + "\n" for definition in definitions]
    parts.append(_STRIDED)
    if packed:
        parts.append(_PACK)
    parts.append(model_new)
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"


PROLOGUE = "import torch\nimport triton\nimport triton.language as tl\nfrom torch import nn\n"
