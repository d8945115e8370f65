"""The kernel level of the pair step: every Triton kernel of one graph as a PairRecord (scraper.pairs.kernel_level),
or a reject row with the reason it gives none.

For each graph the kernels' pointers are named once over the whole call() (kernel_level.Mapper), each kernel that
was named becomes a problem and a ModelNew, and the problem's reference is run on the CPU where its ops run there
(scraper.pairs.reference; a reference that is not finite, or that fails, drops the pair with that reason; one that
needs CUDA is marked `needs_cuda` and left to the GPU check). The same kernel seen again (the same id: many models
share a fused kernel) reuses the first verdict.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

from scraper.pairs.emit import EmitError
from scraper.pairs.fxgraph import GraphError, read_fx_graph
from scraper.pairs.kernel_level import Chain, Mapped, Mapper, build_pair
from scraper.pairs.launch import PairError, launch_config
from scraper.pairs.record import PairRecord
from scraper.pairs.reference import ReferencePool
from scraper.pairs.triton_code import Kernel, ParsedWrapper, jit_function
from scraper.pairs.wrapper import read_wrapper
from scraper.records import KernelRecord
from scraper.stats import Stats

log = logging.getLogger(__name__)


class KernelPairs:
    """Builds the kernel-level pairs of each graph unit (module docstring)."""

    def __init__(self, stats: Stats, runner: Optional[ReferencePool] = None) -> None:
        self.stats = stats
        self.runner = runner if runner is not None else ReferencePool()
        self.verdicts: dict[str, dict] = {}  # pair id -> the reference's answer

    def pairs(self, unit, parsed: ParsedWrapper, recorded: Optional[dict], provenance: dict) -> tuple[list, list]:
        """(PairRecords, reject rows) of one graph's kernels."""
        wrapper = read_wrapper(parsed.function, parsed.lines)
        graph_nodes = graph_nodes_of(unit.fx_graph)
        by_variable = {record.extra.get("variable") or record.name: record for record in unit.records}
        results = Mapper(wrapper, by_variable, graph_nodes).run()
        chains = chains_of(results)
        finishers = {member.record.name for chain in chains.values() for member in chain.members[1:]}
        built, rejects = [], []
        for variable, record in by_variable.items():
            result = results.get(variable) or PairError("not_launched", f"{record.name} is not launched by call()")
            if record.name in finishers:
                self.stats.inc("kernel_pairs_finishing_a_split_reduction")  # inside its first kernel's pair
                continue
            try:
                if isinstance(result, PairError):
                    raise result
                built.append(self.one(chains[variable], wrapper, recorded, provenance, graph_nodes, unit))
            except (PairError, EmitError) as exc:
                rejects.append(self.reject(exc, unit, record))
        self.run_references(built)
        pairs = []
        for pair in built:
            try:
                self.judge(pair)
            except PairError as exc:
                rejects.append(self.reject(exc, unit, pair))
                continue
            self.stats.inc("kernel_pairs")
            pairs.append(pair)
        return pairs, rejects

    def reject(self, exc, unit, what) -> dict:
        self.stats.inc(f"dropped_kernel_pair_{exc.reason}")
        kernel = getattr(what, "kernel", None) or what.name
        return {"reason": f"kernel_pair_{exc.reason}", "folder": unit.folder, "kernel": kernel,
                "model": what.model, "error": str(exc)[:500]}

    def run_references(self, pairs: list) -> None:
        """Run, in parallel, the references not run yet of the pairs that run on the CPU."""
        todo = {pair.id: pair.python_code for pair in pairs if not pair.needs_cuda and pair.id not in self.verdicts}
        for pair_id, verdict in zip(todo, self.runner.check_many(list(todo.values()))):
            self.verdicts[pair_id] = verdict

    def one(self, chain: Chain, wrapper, recorded: Optional[dict], provenance: dict, graph_nodes: dict,
            unit) -> PairRecord:
        record = chain.records[0]
        kernels = [kernel_of(member.record, recorded) for member in chain.members]
        built = build_pair(chain, wrapper, kernels, description(chain.records, provenance), graph_nodes)
        pair = PairRecord(python_code=built.python_code, triton_code=built.triton_code, **provenance)
        pair.pair_level, pair.kernel, pair.kernels = "kernel", record.name, [r.name for r in chain.records]
        pair.launch_configs = {}
        for kernel in kernels:
            pair.launch_configs[kernel.config.source] = pair.launch_configs.get(kernel.config.source, 0) + 1
        pair.ops = built.ops
        pair.original_triton_code = "\n\n".join(r.original or r.code for r in chain.records)
        pair.module_name = record.name
        pair.needs_cuda = any(needs_cuda(op) for op in built.ops)
        pair.identify()
        return pair

    def judge(self, pair: PairRecord) -> None:
        """Run the reference where it runs on the CPU; PairError when it is not finite or fails."""
        if pair.needs_cuda:
            self.stats.inc("kernel_pairs_needs_cuda")
            return
        if pair.id not in self.verdicts:
            self.verdicts[pair.id] = self.runner.check(pair.python_code)
        verdict = self.verdicts[pair.id]
        if verdict.get("error"):
            raise PairError("reference_failed", verdict["error"])
        if verdict.get("finite") is False:
            raise PairError("reference_not_finite", "Model's output on get_inputs() holds NaN or Inf")
        pair.reference_finite = verdict.get("finite")

    def close(self) -> None:
        self.runner.close()


def kernel_of(record: KernelRecord, recorded: Optional[dict]) -> Kernel:
    """The Kernel (jit function, parameters, launch configuration) of a record."""
    function = jit_function(record)
    return Kernel(record, function.name, [arg.arg for arg in function.args.args], launch_config(record, recorded))


MAX_CHAIN = 4  # kernels of one pair: resnet18's first training BatchNorm is 3 (a split Welford) + its normalize


def chains_of(results: dict) -> dict:
    """{kernel variable: the Chain its pair launches}: the kernel alone, or, when it leaves what no FX node names (a
    split reduction's partial sums, a Welford M2), that kernel and the later ones that read it, in order: the
    first that reads such a buffer of the chain, then again (at most MAX_CHAIN kernels). A chain whose last kernel
    still leaves only partial sums is the first kernel alone (its pair is dropped: partial_result)."""
    mapped = [result for result in results.values() if isinstance(result, Mapped)]
    chains = {}
    for variable, result in results.items():
        if not isinstance(result, Mapped):
            continue
        members = [result]
        while len(members) < MAX_CHAIN:
            reader = next_reader(members, mapped)
            if reader is None:
                break
            members.append(reader)
        chains[variable] = Chain(members if not members[-1].partial else [result])
    return chains


def next_reader(members: list, mapped: list) -> Optional[Mapped]:
    """The first kernel launched after the chain's last that reads a buffer a kernel of the chain left without a
    value (Pointer.exit None), before anything else writes it."""
    unnamed = {p.buffer for m in members for p in m.pointers if p.written and p.exit is None}
    after = sorted((m for m in mapped if m.launch.index > members[-1].launch.index and m not in members),
                   key=lambda m: m.launch.index)
    for kernel in after:
        if any(p.buffer in unnamed and not p.written for p in kernel.pointers):
            return kernel
        unnamed -= {p.buffer for p in kernel.pointers if p.written}
    return None


def graph_nodes_of(fx_graph: Optional[str]) -> dict:
    """The graph's nodes by name (empty when it has no readable fx_graph_readable.py)."""
    if not fx_graph:
        return {}
    try:
        return read_fx_graph(fx_graph).by_name
    except GraphError as exc:
        log.info("fx_graph_readable.py not read: %s", exc)
        return {}


def description(records: list, provenance: dict) -> str:
    """The docstring of a kernel-level problem."""
    first = records[0]
    model = provenance.get("model") or first.model
    suite = f" ({provenance['suite']} suite)" if provenance.get("suite") else ""
    what = f"{first.name}: one Triton kernel" if len(records) == 1 else \
        f"{' and '.join(r.name for r in records)}: a reduction Inductor splits in {len(records)} kernels"
    return (f"{what} PyTorch Inductor generated for {model}{suite}, graph {first.graph}.\n"
            "Model computes what it computes: the FX nodes it fuses, on the buffers it reads.")


@functools.lru_cache(maxsize=None)
def needs_cuda(op: str) -> bool:
    """Whether an op (`torch.ops.aten.X.Y`) has no kernel that runs on the CPU (fused attention, cuDNN ...)."""
    if not op.startswith("torch.ops."):
        return False
    import torch

    try:
        overload = functools.reduce(getattr, op.split(".")[1:], torch)
        name = overload.name()
    except (AttributeError, RuntimeError):
        return False
    keys = ("CPU", "CompositeImplicitAutograd", "CompositeExplicitAutograd",
            "CompositeExplicitAutogradNonFunctional")
    return not any(torch._C._dispatch_has_kernel_for_dispatch_key(name, key) for key in keys)
