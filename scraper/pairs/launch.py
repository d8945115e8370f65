"""How each kernel of a pair is launched: its launch configuration (constexpr block sizes, num_warps, num_stages)
and its grid.

Inductor launches a kernel as `kernel.run(*args, stream=...)`; the removed `@triton_heuristics.*` decorator holds
the candidate configurations and the grid rule (`inductor_meta["grid_type"]`). A pair launches it as plain Triton:
`kernel[grid](*args, XBLOCK=..., num_warps=..., num_stages=...)`. The configuration comes, in this order, from

  1. `recorded`: what Inductor's autotuner kept when the suite compiled the model (the pairing record's
     "kernels", by kernel file or name; scraper.worker.recording.kernel_configs);
  2. `heuristics`: the first configuration Inductor's own heuristics give for the decorator's arguments
     (`triton_heuristics.<pointwise|reduction|persistent_reduction>(..., return_configs=True)`), the call rebuilt
     from the record's JSON `launch` (nothing evaluated: known names only);
  3. `decorator`: templates carry num_warps/num_stages in the decorator (their block sizes are in the body);
     user-defined kernels their `configs` (first one) and `triton_meta["constants"]`.

Any configuration of a kernel's candidates computes the same result (they differ in speed only), so 2 is sound
for old debug roots; 1 reproduces the speed of the compiled model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from scraper.records import KernelRecord

log = logging.getLogger(__name__)

HEURISTICS = ("pointwise", "reduction", "persistent_reduction")
GRIDS = ("Grid1D", "Grid2D", "Grid3D", "Grid2DWithYZOverflow", "BatchMatmulGrid3D", "FixedGrid")
MAX_Y_GRID = 65535  # torch._inductor.runtime.runtime_utils.get_max_y_grid()


class PairError(Exception):
    """A pair cannot be built; `reason` is the name counted in stats.json and kept in rejects.jsonl."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class LaunchConfig:
    """Keyword arguments of one launch: constexpr values, num_warps / num_stages (None: Triton's default)."""

    kwargs: dict = field(default_factory=dict)
    num_warps: Optional[int] = None
    num_stages: Optional[int] = None
    source: str = "recorded"  # recorded | heuristics | decorator


def launch_config(record: KernelRecord, recorded: Optional[dict]) -> LaunchConfig:
    """The configuration to launch `record`'s kernel with (module docstring); raises PairError."""
    launch = record.launch or {}
    found = recorded_config(record, recorded or {})
    if found is not None:
        return found
    heuristic = launch.get("heuristic")
    if heuristic in HEURISTICS:
        return heuristic_config(launch)
    if heuristic == "template":
        return LaunchConfig({}, launch.get("num_warps"), launch.get("num_stages"), "decorator")
    if heuristic == "user_autotune":
        return user_config(record)
    raise PairError("unknown_kernel_kind", f"{record.name}: heuristic {heuristic!r}")


def recorded_config(record: KernelRecord, recorded: dict) -> Optional[LaunchConfig]:
    """The configuration the suite's autotuner kept for this kernel, if the pairing record has it."""
    config = (recorded.get("by_file") or {}).get(record.extra.get("kernel_path") or "")
    if config is None:
        config = (recorded.get("by_name") or {}).get(record.extra.get("variable") or record.name)
    if config is None:
        return None
    return LaunchConfig(dict(config.get("kwargs") or {}), config.get("num_warps"), config.get("num_stages"),
                        "recorded")


def user_config(record: KernelRecord) -> LaunchConfig:
    """A user-defined kernel: its constants, and its first autotune config (Triton's defaults without one)."""
    configs = (record.launch or {}).get("configs") or []
    first = configs[0] if configs and isinstance(configs[0], dict) else {}
    kwargs = {**(record.constants or {}), **(first.get("kwargs") or {})}
    return LaunchConfig(kwargs, first.get("num_warps"), first.get("num_stages"), "decorator")


def heuristic_config(launch: dict) -> LaunchConfig:
    """The first configuration of Inductor's heuristics for this decorator (needs torch); raises PairError."""
    try:
        configs = heuristic_configs(launch)
    except Exception as exc:  # an argument this torch's heuristics do not take, a missing torch, ...
        raise PairError("no_launch_config", f"{type(exc).__name__}: {exc}") from exc
    if not configs:
        raise PairError("no_launch_config", "the heuristics gave no configuration")
    config = configs[0]
    return LaunchConfig(dict(config.kwargs), config.num_warps, config.num_stages, "heuristics")


def heuristic_configs(launch: dict) -> list:
    """`triton_heuristics.<heuristic>(**decorator arguments, return_configs=True)` from the JSON form."""
    from torch._inductor.runtime import hints, triton_heuristics

    kwargs = {key: value for key, value in launch.items() if key not in ("heuristic", "decorator", "args")}
    kwargs["triton_meta"] = with_device(dict(kwargs.get("triton_meta") or {}), hints)
    kwargs["inductor_meta"] = dict(kwargs.get("inductor_meta") or {})
    kwargs["inductor_meta"]["autotune_hints"] = set()
    for key, enum in (("reduction_hint", "ReductionHint"), ("tile_hint", "TileHint")):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = getattr(getattr(hints, enum), kwargs[key].rsplit(".", 1)[-1])
    return list(getattr(triton_heuristics, launch["heuristic"])(**kwargs, return_configs=True))


def with_device(triton_meta: dict, hints) -> dict:
    """triton_meta with its "device" dict turned back into Inductor's DeviceProperties (the fields this torch
    knows)."""
    device = triton_meta.get("device")
    if isinstance(device, dict):
        fields = hints.DeviceProperties._fields
        triton_meta["device"] = hints.DeviceProperties(**{k: v for k, v in device.items() if k in fields})
    return triton_meta


# ------------------------------------------------------------------------------------------------------ grid


def grid_text(grid_type: str, numels: dict, config: LaunchConfig, extra: list) -> str:
    """The launch grid as Python source: `(triton.cdiv(xnumel, XBLOCK), ...)` with the call's own numel
    expressions, the three extra launcher arguments of a FixedGrid, or the numbers Grid2DWithYZOverflow works out.
    Raises PairError for grid types a plain launch cannot express here."""
    blocks = config.kwargs
    if grid_type == "FixedGrid":
        if len(extra) != 3:
            raise PairError("unknown_launch", f"FixedGrid with {len(extra)} grid arguments")
        return f"({', '.join(extra)})"
    if grid_type in ("Grid1D", "Grid2D", "Grid3D", "BatchMatmulGrid3D"):
        axes = {"Grid1D": "x", "Grid2D": "xy", "Grid3D": "xyz", "BatchMatmulGrid3D": "zyx"}[grid_type]
        parts = [cdiv(numels.get(f"{axis}numel"), blocks.get(f"{axis.upper()}BLOCK")) for axis in axes]
        return f"({', '.join(parts)},)" if len(parts) == 1 else f"({', '.join(parts)})"
    if grid_type == "Grid2DWithYZOverflow":
        return overflow_grid(numels, blocks)
    raise PairError("unknown_launch", f"grid type {grid_type}")


def cdiv(numel: Optional[str], block: Optional[int]) -> str:
    """`triton.cdiv(numel, block)`, or the numel alone when the kernel has no block for that axis."""
    if numel is None:
        raise PairError("unknown_launch", "a numel argument of the grid is missing")
    return numel if block in (None, 1) else f"triton.cdiv({numel}, {block})"


def overflow_grid(numels: dict, blocks: dict) -> str:
    """Grid2DWithYZOverflow: y blocks beyond CUDA's 65535 spill into z (as Inductor does); numbers only."""
    try:
        xnumel, ynumel = int(numels["xnumel"]), int(numels["ynumel"])
    except (KeyError, ValueError) as exc:
        raise PairError("unknown_launch", "Grid2DWithYZOverflow with symbolic sizes") from exc
    x_grid = -(-xnumel // blocks.get("XBLOCK", 1))
    y_raw = -(-ynumel // blocks.get("YBLOCK", 1))
    y_div = -(-y_raw // MAX_Y_GRID)
    y_grid = 0 if y_div == 0 else -(-y_raw // y_div)
    return f"({x_grid}, {y_grid}, {y_div})"
